"""Training throughput (images/s) and model FLOPs utilization (MFU) of the published BSI
configurations, in float32 and bf16 mixed precision.

    python benchmarks/bench_training.py                     # CPU-sized defaults (below)
    python benchmarks/bench_training.py --batch 128 --dit-depth 24 --steps 20   # on a GPU

Configurations: experiment=cifar10-vdm (the 27.6M VDM U-Net) and experiment=imagenet32-dit
(DiT-L/2, 478.7M); both are built from their experiment files. The CPU defaults keep a run
short: batch 2 and DiT-L/2 cut to --dit-depth 4 of its 24 blocks (same width, heads and patch,
so the same work per block; the full net needs ~8 GB for weights and AdamW state).

One step = what the engine does per batch: forward of method.train_loss under autocast (bf16:
`torch.autocast(dtype=bfloat16)`, weights and loss in float32, as Lightning's bf16-mixed),
backward, gradient clipping at 1, AdamW, EMA update of the weights. Synthetic 8-bit images.
Model FLOPs: forward + backward of one step counted by `torch.utils.flop_counter.FlopCounterMode`
(matmuls, convolutions, attention; the optimizer is not model FLOPs). MFU = model FLOPs per
second / peak; the peak is measured on the spot as the best of dense N×N matmuls in the same
dtype and thread count (on a CPU there is no datasheet number to trust), unless --peak-tflops
gives one (e.g. 989 for an H100 SXM in bf16). On a CPU the step time is the process's CPU time
(the steady measure on a shared machine; wall time beside it); on a GPU, wall time.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import record, setup, synchronize
from torch.utils.flop_counter import FlopCounterMode

from bayesgen.training.build import build_datamodule, build_method, compose_config

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int | None = None) -> float:
    """FLOP/s of the fastest of a few dense n×n matmuls (CPU: process CPU time)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best = float("inf")
    for _ in range(4):
        a @ b
        synchronize(device)
        start = time.perf_counter() if device.type == "cuda" else time.process_time()
        for _ in range(3):
            a @ b
        synchronize(device)
        stop = time.perf_counter() if device.type == "cuda" else time.process_time()
        best = min(best, (stop - start) / 3)
    return 2 * n**3 / best


def build(experiment: str, overrides: list[str], device: torch.device):
    cfg = compose_config([f"experiment={experiment}", *overrides])
    method = build_method(cfg, build_datamodule(cfg)).to(device)
    opt = torch.optim.AdamW(method.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                            weight_decay=cfg.optim.weight_decay)
    return cfg, method, opt


def measure(experiment: str, overrides: list[str], batch: int, precision: str, steps: int,
            compile_loss: bool, peak: float, device: torch.device) -> dict:
    cfg, method, opt = build(experiment, overrides, device)
    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    x = (torch.randint(0, 256, (batch, *method.data_shape), device=device).float() / 127.5 - 1)
    loss_fn = torch.compile(method.train_loss) if compile_loss else method.train_loss
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def forward_backward():
        with autocast:
            loss = loss_fn(x).mean()
        loss.backward()

    def step():
        opt.zero_grad(set_to_none=True)
        forward_backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.trainer.gradient_clip_val or float("inf"))
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1 - 0.9999)

    with FlopCounterMode(display=False) as counter:
        forward_backward()
    flops = counter.get_total_flops()
    step()  # warm-up (and compilation)
    synchronize(device)
    walls, cpus = [], []
    for _ in range(steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        synchronize(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    wall, cpu = sorted(walls)[len(walls) // 2], sorted(cpus)[len(cpus) // 2]
    seconds = wall if device.type == "cuda" else cpu
    n_params = sum(p.numel() for p in method.parameters())
    return {
        "config": experiment, "overrides": overrides, "parameters": n_params, "batch": batch,
        "precision": precision, "compiled": compile_loss, "device": device.type,
        "clock": "wall" if device.type == "cuda" else "cpu",
        "step_s": round(seconds, 4), "step_wall_s": round(wall, 4),
        "images_per_s": round(batch / seconds, 3),
        "images_per_wall_s": round(batch / wall, 3),
        "model_gflop_per_image": round(flops / batch / 1e9, 2),
        "achieved_tflops": round(flops / seconds / 1e12, 4),
        "peak_tflops": round(peak / 1e12, 4),
        "mfu": round(flops / seconds / peak, 4),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["cifar10-vdm", "imagenet32-dit"])
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dit-depth", type=int, default=4, help="DiT blocks (DiT-L/2: 24)")
    p.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    p.add_argument("--compile", action="store_true", help="torch.compile the train loss")
    p.add_argument("--overrides", nargs="*", default=[],
                   help="more Hydra overrides for every config, e.g. net.n_blocks=1 (smoke runs)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="peak to compute MFU against (default: measured matmul peak)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    device = setup(args.threads)
    for precision in args.precisions:
        if args.peak_tflops:
            peak, source = args.peak_tflops * 1e12, "given"
        else:
            peak, source = matmul_peak(DTYPES[precision], device), "measured matmul"
        for experiment in args.configs:
            overrides = [f"net.depth={args.dit_depth}"] if "dit" in experiment else []
            overrides += args.overrides
            result = measure(experiment, overrides, args.batch, precision, args.steps,
                             args.compile, peak, device)
            record("training_throughput", **result, peak_source=source)


if __name__ == "__main__":
    main()
