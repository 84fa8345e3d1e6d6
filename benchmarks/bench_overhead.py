"""Method overhead: what a training step costs on top of the network it trains.

    python benchmarks/bench_overhead.py                      # toy and image size, all methods
    python benchmarks/bench_overhead.py --sizes image --batch-image 32 --threads 2

For each method (BSI, BFN continuous / discretized / discrete, IF, VDM) and size, three timings on
one network and one batch, interleaved round by round (median):
  net     the network alone: zero_grad, forward on an input of the shape the method feeds it,
          mean-square loss, backward;
  method  zero_grad, method.train_loss(x).mean(), backward;
  step    method + AdamW step — the full training step (torch's default AdamW, as the
          engine builds it; --fused-adamw for the fused kernel).
ratio = step / net is the issue's overhead (target ≤ 1.25 on CPU, ≤ 1.10 on GPU), in CPU time
of the process on a CPU (steady on a shared machine; wall-clock ratio_wall beside it) and wall
time on a GPU;
ratio_method = method / net isolates the method's own code (sampling t and noise, the
preconditioning, the loss); step − method is the optimizer. Sizes: "toy" = the 2-layer MLP
(256 wide) on 2-D data, "image" = a small VDM U-Net (width 32, 2 + 2 blocks, attention) on
3×32×32. One JSON line per method and size. --compile compiles the network (for net) and
method.train_loss (for method and step) with torch.compile.
"""

from __future__ import annotations

import argparse
import math

import torch
from common import record, setup, time_interleaved

from bayesgen.methods.bfn import BFN
from bayesgen.methods.bsi import BSI, Discretization
from bayesgen.methods.inflationary import InflationaryFlow
from bayesgen.methods.vdm import VDM
from bayesgen.nets import MLP, BinaryImageAdapter, VDMUNet

METHODS = ("bsi", "bfn_continuous", "bfn_discretized", "bfn_discrete", "if", "vdm")
TOY_CLASSES = 4  # discrete BFN on the toy size: 2 variables with 4 classes each


def build(method: str, size: str, batch: int, device: torch.device):
    """(method module, net, training batch x, the net's input, its time input)."""
    g = torch.Generator().manual_seed(0)
    if size == "toy":
        shape = (2,)
        out = {"bfn_discretized": 4}.get(method)
        net_shape = (2, TOY_CLASSES) if method == "bfn_discrete" else shape
        net = MLP(data_shape=net_shape, hidden=256, depth=2, out_features=out)
        x = torch.randn(batch, *shape, generator=g).clamp(-1, 1)
    else:
        shape = (3, 32, 32)
        out = 6 if method == "bfn_discretized" else None
        net = VDMUNet(in_channels=3, out_channels=out, width=32, n_blocks=2, attention=True)
        x = torch.randint(0, 256, (batch, *shape), generator=g).float() / 127.5 - 1
    if method == "bsi":
        disc = Discretization.image_8bit() if size == "image" else None
        m = BSI(net, shape, discretization=disc)
    elif method == "vdm":
        disc = Discretization.image_8bit() if size == "image" else None
        m = VDM(net, shape, discretization=disc)
    elif method == "bfn_continuous":
        m = BFN.continuous(net, shape)
    elif method == "bfn_discretized":
        m = BFN.discretized(net, shape, num_bins=256)
    elif method == "bfn_discrete":
        k = TOY_CLASSES if size == "toy" else 2
        if size == "image":
            net = BinaryImageAdapter(net)
        m = BFN.discrete(net, shape, num_classes=k, beta_1=3.0)
        x = torch.randint(0, k, (batch, *shape), generator=g)
    else:  # IF as the engine builds it: PCA buffers in float64 (toy: fitted; image: placeholder)
        data = torch.randn(2000, *shape, generator=g) if size == "toy" else None
        m = InflationaryFlow.from_data(net, data, data_shape=shape, centre=size == "toy")
    m = m.to(device)
    net_in_shape = (batch, *shape, k) if method == "bfn_discrete" else (batch, *shape)
    net_in = torch.randn(net_in_shape, generator=g)
    if method == "bfn_discrete":
        net_in = net_in.softmax(-1)
    t = torch.rand(batch, generator=g)
    return m, net, x.to(device), net_in.to(device), t.to(device)


def measure(method: str, size: str, batch: int, repeats: int, device: torch.device,
            compile: bool = False, fused: bool = False) -> dict:
    m, net, x, net_in, t = build(method, size, batch, device)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=fused or None)
    torch._dynamo.reset()
    net_fn = torch.compile(net) if compile else net
    loss_fn = torch.compile(m.train_loss) if compile else m.train_loss

    def net_only():
        opt.zero_grad(set_to_none=True)
        net_fn(net_in, t).square().mean().backward()

    def method_only():
        opt.zero_grad(set_to_none=True)
        loss_fn(x).mean().backward()

    def step():
        method_only()
        opt.step()

    times = time_interleaved({"net": net_only, "method": method_only, "step": step},
                             repeats, warmup=3, device=device)
    # a GPU's work is asynchronous: wall time; a (shared) CPU's: the process's CPU time
    clock = "wall" if device.type == "cuda" else "cpu"
    t = {name: v[clock] for name, v in times.items()}
    n_params = sum(p.numel() for p in net.parameters())
    return {
        "method": method, "size": size, "batch": batch, "net_parameters": n_params,
        "device": device.type, "clock": clock, "compiled": compile,
        "adamw": "fused" if fused else "default",
        "net_ms": round(1e3 * t["net"], 3),
        "method_ms": round(1e3 * t["method"], 3),
        "step_ms": round(1e3 * t["step"], 3),
        "optimizer_ms": round(1e3 * (t["step"] - t["method"]), 3),
        "ratio": round(t["step"] / t["net"], 3),
        "ratio_method": round(t["method"] / t["net"], 3),
        "ratio_wall": round(times["step"]["wall"] / times["net"]["wall"], 3),
        "target": 1.10 if device.type == "cuda" else 1.25,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--sizes", nargs="+", default=["toy", "image"], choices=["toy", "image"])
    p.add_argument("--batch-toy", type=int, default=256)
    p.add_argument("--batch-image", type=int, default=8)
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds (default: 60 toy, 6 image)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (net) and method.train_loss (method, step)")
    p.add_argument("--fused-adamw", action="store_true",
                   help="AdamW(fused=True) instead of torch's default (what the engine uses)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    device = setup(args.threads)
    for size in args.sizes:
        batch = args.batch_toy if size == "toy" else args.batch_image
        repeats = args.repeats or (60 if size == "toy" else 6)
        for method in args.methods:
            result = measure(method, size, batch, repeats, device, args.compile, args.fused_adamw)
            record("method_overhead", **result)
            assert math.isfinite(result["ratio"])


if __name__ == "__main__":
    main()
