"""Real-data check of BFN: discrete BFN on dynamically binarized MNIST for a fixed wall-clock
budget, then the test NLL in nats/image with the paper's 784-step loss (+ reconstruction).

    OMP_NUM_THREADS=2 python benchmarks/bench_bfn_mnist.py --minutes 30
    python benchmarks/bench_bfn_mnist.py --minutes 2 --test-examples 500   # smoke check

Trains through the engine (`bayesgen train experiment=mnist-bfn` with a small U-Net and
`trainer.max_time`), evaluates with `bayesgen evaluate n_steps=784`, and prints ONE JSON line
next to the paper's 77.87 nats/image (25M-parameter U-Net, 1M steps of batch 512 on a GPU,
2000 repeats of the test set). The official settings (lr 1e-4, dropout 0.5, EMA 0.9999 without
warm-up) are made for that budget; a short CPU run uses a higher learning rate, no dropout and
a warmed-up EMA instead (see OVERRIDES). Training logs go to <run dir>/bench.log.
Reads MNIST from ../shared/data/mnist (or $BAYESGEN_DATA_DIR/mnist); skips when absent.

Side-by-side mode (``--side-by-side``): the official network (``experiment=mnist-bfn``,
24.8M parameters) and the same architecture at the small proportions above (32 channels, one
block per level, no dropout; ≈1.1M), trained with identical settings — the official optimizer
(AdamW lr 1e-4, betas (0.9, 0.98), wd 0.01, grad clip 5), batch 64, raw weights (no EMA, which
at 0.9999 would still be the initialisation) — to each of ``--steps`` (default 300 and 1500;
every net at one budget before the next; later budgets resume the earlier run), each
checkpoint evaluated on the first ``--test-examples`` test images with the official 784-step
loss (per-coordinate receiver) and reconstruction. One JSON line per (net, steps):

    nice -n 10 OMP_NUM_THREADS=2 python benchmarks/bench_bfn_mnist.py --side-by-side \
        --test-examples 1000 --run-dir runs/bench-mnist-sbs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

PAPER_NATS_PER_IMAGE = 77.87

# the short-budget recipe on top of experiment=mnist-bfn (beta(1) = 9, grad clip 5, AdamW
# betas (0.9, 0.98) wd 0.01 stay as in the official config)
OVERRIDES = [
    "experiment=mnist-bfn",
    "net.net.channel_mult=[1,2,2]", "net.net.dropout=0.0",
    "optim.warmup_steps=100", "ema.decay=0.999", "ema.warmup_steps=0", "ema.power=0.6666667",
    "data.num_workers=0", "data.download=false", "data.eval_batch_size=500",
    "trainer.max_steps=100000000", "trainer.val_check_interval=1000",
    "trainer.limit_val_batches=1", "trainer.log_every_n_steps=50",
    "checkpoint.every_n_train_steps=500", "evaluate.max_batches=1",
    "sample.n=36", "method.sample_kwargs.n_steps=100",
]


# the side-by-side recipe on top of experiment=mnist-bfn: its optimizer, batch 64, raw weights
SIDE_BY_SIDE = [
    "experiment=mnist-bfn", "ema.enabled=false",
    "data.num_workers=0", "data.download=false", "data.eval_batch_size=10",
    "trainer.limit_val_batches=0", "trainer.log_every_n_steps=10", "evaluate.max_batches=1",
    "sample.n=1", "sample.animation=none", "sample.frames=1", "method.sample_kwargs.n_steps=2",
]
NETS = {  # name -> overrides of the inner U-Net
    "official": [],
    "small": ["net.net.model_channels=32", "net.net.num_res_blocks=1", "net.net.dropout=0.0"],
}


def side_by_side(args) -> int:
    """Train each net to each budget (resuming), evaluate every budget; one JSON line each."""
    import torch

    from bayesgen.cli import main as bayesgen
    from bayesgen.training.checkpoint import read_checkpoint

    root = Path(args.run_dir or tempfile.mkdtemp(prefix="bench_bfn_mnist_sbs_"))
    steps = sorted(int(s) for s in args.steps.split(","))
    n_test = min(args.test_examples, 10_000)
    batch = min(100, n_test)
    names = args.nets.split(",")
    unknown = sorted(set(names) - set(NETS))
    if unknown:
        raise SystemExit(f"--nets: unknown net(s) {unknown}; choose from {sorted(NETS)}")
    for budget in steps:  # every net at one budget before the next budget
        for name in names:
            run = root / name
            run.mkdir(parents=True, exist_ok=True)
            train = ["train", *SIDE_BY_SIDE, *NETS[name], f"data.batch_size={args.batch_size}",
                     f"optim.lr={args.lr}", f"seed={args.seed}", f"trainer.max_steps={budget}",
                     f"checkpoint.every_n_train_steps={args.checkpoint_every or steps[0]}",
                     f"run_dir={run}"]
            out = run / f"evaluate_784_step{budget}.json"
            evaluate = ["evaluate", f"ckpt={run}", "n_steps=784", "receiver=per_coordinate",
                        f"repeats={args.repeats}",
                        f"batch_size={batch}", f"max_batches={math.ceil(n_test / batch)}",
                        f"seed={args.seed}", f"out={out}"]
            print(f"{name}: training to {budget} steps on {torch.get_num_threads()} thread(s); "
                  f"log: {run / 'bench.log'}", file=sys.stderr, flush=True)
            start = time.time()
            with open(run / "bench.log", "a") as log, contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log):
                if bayesgen(train) != 0:
                    raise SystemExit(f"training failed; see {run / 'bench.log'}")
                train_seconds = time.time() - start
                if bayesgen(evaluate) != 0:
                    raise SystemExit(f"evaluation failed; see {run / 'bench.log'}")
            m = json.loads(out.read_text())
            ckpt = read_checkpoint(run / "checkpoints/last.ckpt")
            print(json.dumps({
                "benchmark": "bfn_binarized_mnist_side_by_side", "net": name,
                "parameters": sum(t.numel() for t in ckpt["state_dict"].values()),
                "steps": ckpt["global_step"], "batch_size": args.batch_size, "lr": args.lr,
                "test_nll_nats_per_image": round(m["nats_per_example"], 2),
                "test_nll_nats_per_image_se": round(m["nats_per_example_se"], 2),
                "l_recon_nats_per_image": round(m["l_recon_nats_per_dim"] * 784, 3),
                "l_recon_nats_per_image_se": round(m["l_recon_nats_per_dim_se"] * 784, 3),
                "l_transmit_nats_per_image": round(m["l_transmit_nats_per_dim"] * 784, 2),
                "n_test_examples": m["n_examples"], "repeats": m["repeats"],
                "receiver": m["receiver"],
                "train_minutes_this_leg": round(train_seconds / 60, 1),
                "eval_minutes": round((time.time() - start - train_seconds) / 60, 1),
                "threads": torch.get_num_threads(), "run_dir": str(run),
            }), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (wall clock)")
    parser.add_argument("--test-examples", type=int, default=10_000,
                        help="first N test images to evaluate (default: all 10,000)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="784-step loss estimates per test image (the paper: 2000)")
    parser.add_argument("--n-steps", type=int, default=784,
                        help="steps of the test loss (the paper: 784; fewer for smoke runs)")
    parser.add_argument("--channels", type=int, default=32, help="U-Net model_channels")
    parser.add_argument("--res-blocks", type=int, default=1,
                        help="U-Net residual blocks per level (the official net: 2, with "
                             "--channels 128: 24.5M parameters)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None,
                        help="default 1e-3; 1e-4 (the official rate) with --side-by-side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--overrides", nargs="*", default=[],
                        help="more `bayesgen train` overrides, applied last (smoke runs: "
                             "sample.n=4 data.eval_batch_size=16 ...)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="official vs small net at equal steps (see the module docstring)")
    parser.add_argument("--steps", default="300,1500", help="side-by-side: step budgets")
    parser.add_argument("--checkpoint-every", type=int, default=None,
                        help="side-by-side: checkpoint interval in steps (default: the first "
                        "budget); smaller keeps a slow run resumable after an interruption")
    parser.add_argument("--nets", default="small,official",
                        help="side-by-side: nets to train, in this order")
    args = parser.parse_args(argv)
    if args.side_by_side:
        args.lr = 1e-4 if args.lr is None else args.lr  # the official optimizer
        return side_by_side(args)
    args.lr = 1e-3 if args.lr is None else args.lr

    import torch

    from bayesgen.cli import main as bayesgen
    from bayesgen.data.images import BinarizedMNISTData
    from bayesgen.training.checkpoint import read_checkpoint

    result = {"benchmark": "bfn_binarized_mnist", "paper_nats_per_image": PAPER_NATS_PER_IMAGE}
    if BinarizedMNISTData(download=False)._find() is None:
        print(json.dumps(result | {"skipped": "MNIST not found (../shared/data/mnist)"}))
        return 0
    run = Path(args.run_dir or tempfile.mkdtemp(prefix="bench_bfn_mnist_"))
    run.mkdir(parents=True, exist_ok=True)
    seconds = round(args.minutes * 60)
    max_time = f"00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    train = ["train", *OVERRIDES, f"net.net.model_channels={args.channels}",
             f"net.net.num_res_blocks={args.res_blocks}",
             f"data.batch_size={args.batch_size}", f"optim.lr={args.lr}", f"seed={args.seed}",
             f"+trainer.max_time={max_time}", f"run_dir={run}", *args.overrides]
    n_test = min(args.test_examples, 10_000)
    batch = min(500, n_test)
    evaluate = ["evaluate", f"ckpt={run}", f"n_steps={args.n_steps}", f"repeats={args.repeats}",
                f"batch_size={batch}", f"max_batches={math.ceil(n_test / batch)}",
                f"seed={args.seed}", f"out={run / 'evaluate_784.json'}"]
    print(f"training for {args.minutes:g} min on {torch.get_num_threads()} thread(s); "
          f"log: {run / 'bench.log'}", file=sys.stderr, flush=True)
    start = time.time()
    with open(run / "bench.log", "w") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        if bayesgen(train) != 0:
            raise SystemExit(f"training failed; see {run / 'bench.log'}")
        run_seconds = time.time() - start
        print(f"evaluating {n_test} test images x {args.repeats} repeats", file=sys.__stderr__,
              flush=True)
        if bayesgen(evaluate) != 0:
            raise SystemExit(f"evaluation failed; see {run / 'bench.log'}")
    m = json.loads((run / "evaluate_784.json").read_text())
    trained = json.loads((run / "metrics.json").read_text())
    params = sum(t.numel() for t in
                 read_checkpoint(run / "checkpoints/last.ckpt")["state_dict"].values())
    result |= {
        "test_nll_nats_per_image": round(m["nats_per_example"], 2),
        "test_nll_nats_per_image_se": round(m["nats_per_example_se"], 2),
        "l_recon_nats_per_image": round(m["l_recon_nats_per_dim"] * 784, 3),
        "l_transmit_nats_per_image": round(m["l_transmit_nats_per_dim"] * 784, 2),
        "bits_per_dim": round(m["bpd"], 4),
        "n_test_examples": m["n_examples"], "repeats": m["repeats"], "n_steps": args.n_steps,
        "train_minutes": round(trained["train_seconds"] / 60, 1), "train_steps": trained["steps"],
        "batch_size": args.batch_size, "parameters": params,
        "continuous_time_bpd_500_test": round(trained["bpd"], 4),
        "eval_minutes": round((time.time() - start - run_seconds) / 60, 1),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(), "run_dir": str(run),
        "paper_setting": "25M-param U-Net, 1M steps x 512, 2000 repeats",
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
