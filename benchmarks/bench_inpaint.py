"""Conditioning by inference against the exact conditional, with exact (closed-form) denoisers.

    python benchmarks/bench_inpaint.py                 # 20 000 samples, 200 steps, float64
    python benchmarks/bench_inpaint.py --n 4000 --methods bsi bfn_continuous

2-D Gaussian data (mean 0, std 0.5, correlation 0.8), first coordinate observed at 0.5: the
second is exactly N(0.4, 0.3²). BSI, continuous BFN and discretized BFN (256 bins) sample it with
``inpaint="replace"`` and ``"tweedie"``; discrete BFN samples two tokens with a known 3 × 3
joint table conditional on the first one (0 or 2) and is compared with the exact conditional
row. The denoisers are those of tests/test_inpaint.py. One line per method and variant: mean
and std of the unobserved coordinate (or the sampled and exact conditional probabilities), the
observed entries' exactness, network calls and JVPs per step, and seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bayesgen import BFN  # noqa: E402
from test_inpaint import (  # noqa: E402
    JOINT,
    MASK,
    OBSERVED,
    BFNOracle,
    JointPosterior,
    make_bsi,
)

F64 = torch.float64


class Counter(torch.nn.Module):
    """Wraps a network and counts its calls (forward-mode JVPs call it too)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, 0
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, *args):
        self.calls += 1
        return self.net(*args)


def build(name: str):
    if name == "bsi":
        return make_bsi(), {"k": 200}
    if name == "bfn_continuous":
        return BFN.continuous(BFNOracle(1e-3), (2,), parameterization="x"), {"n_steps": 200}
    if name == "bfn_discretized":
        return (BFN.discretized(BFNOracle(1e-3, std=True), (2,), num_bins=256,
                                parameterization="x"), {"n_steps": 200})
    return BFN.discrete(JointPosterior(), (2,), num_classes=3, beta_1=20.0), {"n_steps": 200}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--methods", nargs="+", default=["bsi", "bfn_continuous",
                                                         "bfn_discretized", "bfn_discrete"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.methods:
        for inpaint in ("replace", "tweedie"):
            method, kw = build(name)
            counter = Counter(method.model)
            method.model = counter
            steps = next(iter(kw.values()))
            firsts = (0, 2) if name == "bfn_discrete" else (None,)
            for first in firsts:
                counter.calls = 0
                observed = OBSERVED if first is None else torch.tensor([first, 0])
                start = time.perf_counter()
                x = method.sample(args.n, generator=torch.Generator().manual_seed(0),
                                  dtype=F64, observed=observed, mask=MASK, inpaint=inpaint, **kw)
                seconds = time.perf_counter() - start
                exact_obs = bool((x[:, 0] == x[0, 0]).all())
                calls = counter.calls / (steps + 1)
                if first is None:
                    result = (f"mean {x[:, 1].mean().item():.4f} std {x[:, 1].std().item():.4f} "
                              "(exact 0.4000 / 0.3000)")
                else:
                    freq = torch.bincount(x[:, 1], minlength=3).double() / len(x)
                    exact = JOINT[first] / JOINT[first].sum()
                    result = (f"x1={first}: P(x2) = {[round(v, 4) for v in freq.tolist()]} "
                              f"(exact {[round(v, 4) for v in exact.tolist()]}, max error "
                              f"{(freq - exact).abs().max().item():.4f})")
                print(f"{name:16s} {inpaint:8s} {result} | observed exact: {exact_obs} | "
                      f"{calls:.2f} network passes per step | {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    main()
