"""Memory per GPU and tokens/s of DiT-L/2 (experiment=imagenet32-dit) in bf16 under FSDP2
(`fully_shard` of each block, as `trainer=fsdp2` does) next to DDP, on every GPU of the machine:

    torchrun --nproc-per-node=<GPUs> benchmarks/bench_fsdp.py --batch 64 --steps 10
    torchrun --nproc-per-node=2 benchmarks/bench_fsdp.py --dry-run   # CPU, gloo, tiny DiT

One step: forward of method.train_loss under bf16 autocast, backward, AdamW. Prints one JSON
line per strategy (rank 0): peak memory allocated per GPU (torch.cuda.max_memory_allocated),
median step time, tokens/s over all ranks (a 32×32 image at patch 2 is 256 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from bayesgen.training.build import build_datamodule, build_method, compose_config
from bayesgen.training.task import shard_blocks


def measure(strategy: str, overrides: list[str], batch: int, steps: int,
            device: torch.device) -> dict:
    from torch.distributed.fsdp import fully_shard

    cfg = compose_config(["experiment=imagenet32-dit", *overrides])
    torch.manual_seed(0)
    method = build_method(cfg, build_datamodule(cfg)).to(device)
    if strategy == "fsdp2":
        shard_blocks(method.model, fully_shard)
        model = method
    else:
        model = DistributedDataParallel(method, device_ids=[device] if device.type == "cuda"
                                        else None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, *method.data_shape, device=device) * 2 - 1
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = (model.module if strategy == "ddp" else model).train_loss(x).mean()
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    world = dist.get_world_size()
    patch = int(cfg.net.get("patch_size", 2))
    tokens = batch * world * (method.data_shape[-1] // patch) ** 2
    memory = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
              else None)
    return {"benchmark": "fsdp", "strategy": strategy, "world_size": world,
            "device": device.type, "parameters": sum(p.numel() for p in method.parameters()),
            "batch_per_rank": batch, "step_s": round(seconds, 4),
            "tokens_per_s": round(tokens / seconds, 1),
            "max_memory_gib_per_gpu": None if memory is None else round(memory, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64, help="images per rank")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--strategies", nargs="+", default=["ddp", "fsdp2"])
    p.add_argument("--dry-run", action="store_true", help="CPU, gloo, a 1-block 64-wide DiT")
    args = p.parse_args()
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29561")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    cuda = torch.cuda.is_available() and not args.dry_run
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    overrides = (["net.depth=1", "net.hidden_size=64", "net.num_heads=2"] if args.dry_run
                 else [])
    batch, steps = (2, 2) if args.dry_run else (args.batch, args.steps)
    try:
        for strategy in args.strategies:
            row = measure(strategy, overrides, batch, steps, device)
            if dist.get_rank() == 0:
                print(json.dumps(row), flush=True)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
