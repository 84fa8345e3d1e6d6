"""How sharp the README's 2-D example draws its shapes, and which setting makes it so.

    python benchmarks/bench_toy_sharpness.py                       # the four variants below
    python benchmarks/bench_toy_sharpness.py --variants default --data moons

Each variant is ``bayesgen train data=DATA method=bsi net=mlp`` (the README's command) through
the engine with a few overrides; its 2000 end-of-training samples (``samples.pt``) are scored
against 20 000 training points: the share of samples farther than 0.1 (z-scored units; the
moons' noise is about 0.1) from every data point ("off the shape", the blur between the arcs)
and the mean distance to the nearest data point. 2000 held-out test points give the floor.
One JSON line per variant (benchmarks/common.py's record), plus its training seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record  # noqa: E402

VARIANTS = {
    "default": [],                                          # MLP 256 x 3, lr 1e-3
    "depth2": ["net.depth=2"],
    "lr3e-4": ["optim.lr=3e-4"],
    "before": ["net.depth=2", "optim.lr=3e-4"],             # the defaults before this change
}
THRESHOLD = 0.1


def off_shape(samples: torch.Tensor, reference: torch.Tensor) -> tuple[float, float]:
    """Share of samples farther than THRESHOLD from every reference point; mean NN distance."""
    d = torch.cdist(samples.double(), reference.double()).min(1).values
    return (d > THRESHOLD).double().mean().item(), d.mean().item()


def main() -> None:
    from bayesgen.data import build_datasets
    from bayesgen.training.build import compose_config
    from bayesgen.training.fit import run_training

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="moons")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=None, help="trainer.max_steps (default: "
                        "the configuration's, 10000)")
    parser.add_argument("--run-dir", default=None, help="keep the runs here (default: a "
                        "temporary folder)")
    args = parser.parse_args()
    train, _, test, _ = build_datasets(args.data)
    reference = torch.stack([train[i][0] for i in range(min(20_000, len(train)))])
    held_out = torch.stack([test[i][0] for i in range(min(2000, len(test)))])
    floor = off_shape(held_out, reference)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.run_dir or tmp)
        for name in args.variants:
            overrides = [f"data={args.data}", "method=bsi", "net=mlp", "logger=csv",
                         *VARIANTS[name]]
            if args.steps:
                overrides.append(f"trainer.max_steps={args.steps}")
            start = time.perf_counter()
            run_dir = run_training(compose_config(overrides), run_dir=root / name)
            seconds = time.perf_counter() - start
            samples = torch.load(Path(run_dir) / "samples.pt")
            share, mean_nn = off_shape(samples, reference)
            record("toy_sharpness", variant=name, overrides=overrides, n_samples=len(samples),
                   off_shape_share=round(share, 4), mean_nn_distance=round(mean_nn, 4),
                   test_points_off_shape_share=round(floor[0], 4),
                   test_points_mean_nn_distance=round(floor[1], 4),
                   seconds_all_told=round(seconds, 1))


if __name__ == "__main__":
    main()
