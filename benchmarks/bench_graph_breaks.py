"""torch.compile friendliness: graph breaks of each method's train_loss and sampler.

    python benchmarks/bench_graph_breaks.py
    python benchmarks/bench_graph_breaks.py --sizes toy image

`torch._dynamo.explain` traces method.train_loss(x) and method.sample(n, <3 steps>) (the loop
unrolled) for BSI, BFN continuous / discretized / discrete, IF (fixed-step Heun) and VDM, on the
networks of bench_overhead.py. One JSON line per method, size and function: the number of
graphs and graph breaks, and each distinct break's reason and source line. A break is also a
host-device synchronization on a GPU when its reason is a Tensor.item() or a branch on a tensor.
"""

from __future__ import annotations

import argparse
import logging

import torch
from bench_overhead import METHODS, build
from common import record, setup


def explain(fn, *args, **kwargs) -> dict:
    torch._dynamo.reset()
    ex = torch._dynamo.explain(fn)(*args, **kwargs)
    reasons = []
    for b in ex.break_reasons:
        where = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in b.user_stack[-2:]]
        reason = {"reason": b.reason.splitlines()[0][:160], "where": where}
        if reason not in reasons:
            reasons.append(reason)
    return {"graphs": ex.graph_count, "graph_breaks": ex.graph_break_count, "reasons": reasons}


def sampler_call(method: str, m, n: int):
    if method in ("bsi", "vdm"):
        return lambda: m.sample(n, k=3)
    if method.startswith("bfn"):
        return lambda: m.sample(n, n_steps=3)
    return lambda: m.sample(n, solver="heun", n_steps=3)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--sizes", nargs="+", default=["toy"], choices=["toy", "image"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    device = setup(args.threads)
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    for size in args.sizes:
        for method in args.methods:
            m, net, x, *_ = build(method, size, 4, device)
            record("graph_breaks", method=method, size=size, function="train_loss",
                   **explain(m.train_loss, x))
            net.eval()
            record("graph_breaks", method=method, size=size, function="sample",
                   **explain(sampler_call(method, m, 4)))


if __name__ == "__main__":
    main()
