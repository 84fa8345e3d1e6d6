"""Sampling throughput: samples per second of each method at 50 and 256 steps, eager and with
the network under ``torch.compile`` (and CUDA graphs, ``mode="reduce-overhead"``, on a GPU).

    python benchmarks/bench_sampling.py                         # toy size, all methods
    python benchmarks/bench_sampling.py --sizes toy image --n-image 16

Steps: BSI k steps (k + 1 network calls), BFN n steps (n + 1 calls), IF fixed-step Heun with n
steps (2n calls), VDM k ancestral steps (k calls). The sampler loops stay in Python; the
compiled variants compile the network (`method.model = torch.compile(net)`). The first call of a
compiled variant includes its compilation: reported as warmup_s (first call minus a steady
call). Sizes as in bench_overhead.py: "toy" = the MLP on 2-D data (n = 1024 samples), "image" =
the small VDM U-Net on 3×32×32. One JSON line per method, size, variant and step count;
samples_per_s is wall clock, samples_per_cpu_s the process's CPU time (steadier on a shared
CPU), and sampler_overhead the sampler's CPU time over that of its network calls alone (1 = the
loop costs nothing beyond the network).
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_overhead import METHODS, build
from common import record, setup, synchronize, time_interleaved


def sampler(method: str, m, n: int, steps: int):
    if method in ("bsi", "vdm"):
        return lambda: m.sample(n, k=steps)
    if method.startswith("bfn"):
        return lambda: m.sample(n, n_steps=steps)
    return lambda: m.sample(n, solver="heun", n_steps=steps)


def network_calls(method: str, steps: int) -> int:
    return {"if": 2 * steps, "vdm": steps}.get(method, steps + 1)


def net_input(method: str, m, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """An input of the shape the sampler feeds the network, and its time input."""
    shape = (n, *m.data_shape) + ((m.num_classes,) if method == "bfn_discrete" else ())
    x = torch.randn(shape, device=device)
    return (x.softmax(-1) if method == "bfn_discrete" else x), torch.rand(n, device=device)


def variants(device: torch.device) -> dict[str, dict]:
    out = {"eager": None, "compile": {}}
    if device.type == "cuda":
        out["cudagraphs"] = {"mode": "reduce-overhead"}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--sizes", nargs="+", default=["toy"], choices=["toy", "image"])
    p.add_argument("--steps", nargs="+", type=int, default=[50, 256])
    p.add_argument("--n-toy", type=int, default=1024)
    p.add_argument("--n-image", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=None,
                   help="eager compile cudagraphs (default: eager and compile, + cudagraphs on "
                        "a GPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    device = setup(args.threads)
    chosen = variants(device)
    if args.variants:
        chosen = {k: v for k, v in chosen.items() if k in args.variants}
    for size in args.sizes:
        n = args.n_toy if size == "toy" else args.n_image
        for method in args.methods:
            m, net, *_ = build(method, size, n, device)
            net.eval()
            for variant, options in chosen.items():
                torch._dynamo.reset()
                m.model = net if options is None else torch.compile(net, **options)
                start = time.perf_counter()
                sampler(method, m, n, args.steps[0])()
                synchronize(device)
                first = time.perf_counter() - start
                x, t = net_input(method, m, n, device)

                @torch.no_grad()
                def net_call(x=x, t=t, model=m.model):
                    return model(x, t)

                for steps in args.steps:
                    times = time_interleaved({"s": sampler(method, m, n, steps), "net": net_call},
                                             args.repeats, warmup=1, device=device)
                    net_s = times.pop("net")
                    times = times["s"]
                    if steps == args.steps[0]:
                        warmup = first - times["wall"]
                    record("sampling_throughput", method=method, size=size, variant=variant,
                           steps=steps, network_calls=network_calls(method, steps),
                           n_samples=n, device=device.type,
                           seconds=round(times["wall"], 4),
                           samples_per_s=round(n / times["wall"], 1),
                           samples_per_cpu_s=round(n / times["cpu"], 1),
                           warmup_s=round(warmup, 2) if variant != "eager" else None,
                           sampler_overhead=round(
                               times["cpu"] / (network_calls(method, steps) * net_s["cpu"]), 3))
            m.model = net


if __name__ == "__main__":
    main()
