"""Inflationary Flows on a trained toy: roundtrip error and network evaluations (NFE) of the
Euler, Heun and adaptive (dopri5) solvers, the NFE and wall time each needs to bring the
roundtrip error to ≤ 1e-3, and the test log-likelihood in bits/dim. One JSON line per
measurement.

Trains circles PR-preserving through the engine unless --run points at a run:
    bayesgen train experiment=circles-if-prp-fast net.hidden=128 net.depth=3 trainer.max_steps=10000
(ToyNet 128×3, 167k parameters — the experiment's 1.05M-parameter net trains at ~0.08 s/step on
one CPU core, this one at ~0.02 s/step; ≈ 9 min). The experiment feeds the network's time
embedding 0.01·c_noise; --net-time-scale 1 trains with c_noise = 999·t as given (EDM's and the
reference's convention), whose high-frequency time features make the vector field ripple.

Roundtrip: x → encode (t_start → t_max) → decode → x', relative error ‖x − x'‖/‖x‖ per example
(mean and max over --n test points). Fixed-step solvers use the uniform grid on [0, t_max]
(Euler with 701 points is the reference's toy setting, h = 1e-2); the adaptive solver's
tolerance is swept. "encode_error" is the one-way error of the latents against a float64
dopri5 solve at rtol = atol = 1e-9 (a roundtrip hides part of Euler's error: forward and
backward steps on the same grid cancel to first order).

usage: OMP_NUM_THREADS=1 python benchmarks/bench_if_solvers.py [--run DIR] [--out DIR]
           [--train-steps 10000] [--n 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

TARGET = 1e-3


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def train(out: Path, steps: int, time_scale: float | None = None) -> Path:
    from bayesgen.cli import main

    extra = [] if time_scale is None else [f"net.time_scale={time_scale}"]
    run = out / ("circles-if-prp" + ("" if time_scale is None else f"-ts{time_scale:g}"))
    if (run / "checkpoints" / "last.ckpt").is_file():
        return run
    start = time.time()
    code = main(["train", "experiment=circles-if-prp-fast", "net.hidden=128", "net.depth=3",
                 f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps // 4}",
                 f"checkpoint.every_n_train_steps={steps // 4}", "sample.n=2000", *extra,
                 f"run_dir={run}"])
    if code != 0:
        raise SystemExit(f"training failed ({code})")
    metrics = json.loads((run / "metrics.json").read_text())
    emit(measurement="training", run=str(run), steps=metrics["steps"],
         seconds=round(time.time() - start, 1), train_seconds=metrics["train_seconds"],
         test_bpd_at_eval_settings=metrics["bpd"], eval_kwargs=metrics["eval_kwargs"])
    return run


def roundtrip(flow, x, reference_z, **kw) -> dict:
    from bayesgen.metrics import relative_roundtrip_error

    start = time.time()
    z = flow.encode(x, **kw)
    nfe_encode = flow.last_nfe
    x_back = flow.decode(z, **kw)
    nfe_decode = flow.last_nfe
    seconds = time.time() - start
    rel = relative_roundtrip_error(x, x_back)
    enc = (z.double() - reference_z).norm(dim=1) / reference_z.norm(dim=1)
    return {"nfe_encode": nfe_encode, "nfe_decode": nfe_decode,
            "nfe_total": nfe_encode + nfe_decode, "roundtrip_error_mean": float(rel.mean()),
            "roundtrip_error_max": float(rel.max()), "encode_error_mean": float(enc.mean()),
            "seconds": round(seconds, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="an existing IF run directory (else train one)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_if"))
    p.add_argument("--train-steps", type=int, default=10_000)
    p.add_argument("--n", type=int, default=1000, help="test points for the roundtrips")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--net-time-scale", type=float, default=None,
                   help="train with net.time_scale=… (ToyNet's embedding of c_noise = 999·t)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from bayesgen.training.build import build_datamodule, load_checkpoint
    from bayesgen.training.outputs import evaluate_bpd

    run = args.run or train(args.out, args.train_steps, args.net_time_scale)
    cfg, task, path = load_checkpoint(run)
    flow = task.method
    dm = build_datamodule(cfg)
    dm.setup("test")
    x = torch.stack([dm.test[i][0] for i in range(args.n)])
    n_params = sum(p.numel() for p in flow.model.parameters())
    common = {"run": str(run), "net_time_scale": cfg.net.get("time_scale"),
              "data": cfg.data.name, "schedule": "PRP" if flow.dims_to_keep == flow.data_dim
              else f"PRRto{flow.dims_to_keep}D", "n": args.n, "net_parameters": n_params,
              "dtype": "float32", "threads": args.threads}

    # reference latents: float64 copy, dopri5 at 1e-9 (cached in the run directory)
    cache = Path(run) / f"bench_reference_latents_n{args.n}.pt"
    if cache.is_file():
        reference_z = torch.load(cache)
    else:
        import copy

        flow64 = copy.deepcopy(flow).double()
        start = time.time()
        reference_z = flow64.encode(x.double(), rtol=1e-9, atol=1e-9)
        emit(measurement="reference_latents", solver="adaptive", rtol=1e-9, atol=1e-9,
             reference_dtype="float64", nfe=flow64.last_nfe,
             seconds=round(time.time() - start, 2), **common)
        torch.save(reference_z, cache)
        del flow64

    def fixed(solver: str, points: int) -> dict:
        return roundtrip(flow, x, reference_z, solver=solver, n_steps=points - 1)

    # the three solvers at their usual settings
    for solver, points in (("euler", 701), ("heun", 701), ("heun", 256)):
        emit(measurement="roundtrip", solver=solver, grid_points=points, **fixed(solver, points),
             **common)
    for tol in (1e-5, 1e-3):
        emit(measurement="roundtrip", solver="adaptive", rtol=tol, atol=tol,
             **roundtrip(flow, x, reference_z, solver="adaptive", rtol=tol, atol=tol),
             **common)

    # cheapest setting reaching an error ≤ TARGET (mean over the test points): the roundtrip
    # error, and the one-way error of the latents against the reference solve
    for criterion in ("roundtrip_error_mean", "encode_error_mean"):
        name = f"cheapest_to_{TARGET:g}_{criterion.removesuffix('_mean')}"
        for solver in ("euler", "heun"):
            for points in (6, 11, 21, 41, 81, 161, 321, 641, 1281, 2561, 5121):
                r = fixed(solver, points)
                if r[criterion] <= TARGET:
                    emit(measurement=name, solver=solver, grid_points=points, reached=True,
                         **r, **common)
                    break
            else:
                emit(measurement=name, solver=solver, grid_points=points, reached=False, **r,
                     **common)
        for tol in (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6, 3e-7):
            r = roundtrip(flow, x, reference_z, solver="adaptive", rtol=tol, atol=tol)
            if r[criterion] <= TARGET:
                emit(measurement=name, solver="adaptive", rtol=tol, atol=tol, reached=True,
                     **r, **common)
                break
        else:
            emit(measurement=name, solver="adaptive", rtol=tol, atol=tol, reached=False, **r,
                 **common)

    # test log-likelihood (exact divergence, D = 2) in bits/dim, whole test split
    loader = dm.test_dataloader()
    for tol in (1e-5, 1e-3):
        start = time.time()
        kwargs = {"rtol": tol, "atol": tol, "exact_divergence": True}
        with torch.no_grad():
            m = evaluate_bpd(task, loader, kwargs, progress=False)
        emit(measurement="test_log_likelihood", solver="adaptive", rtol=tol, atol=tol,
             divergence="exact", bpd=m["bpd"], bpd_se=m["bpd_se"],
             nats_per_example=m["nats_per_example"], n_examples=m["n_examples"],
             nfe_last_batch=flow.last_nfe, seconds=round(time.time() - start, 2),
             **{k: v for k, v in common.items() if k != "n"})
    # context: the best Gaussian's bits/dim on the same test set (fit on the training data)
    dm.setup("fit")
    train_x = torch.stack([dm.train[i][0] for i in range(len(dm.train))]).double()
    test_x = torch.stack([dm.test[i][0] for i in range(len(dm.test))]).double()
    gauss = torch.distributions.MultivariateNormal(train_x.mean(0), torch.cov(train_x.T))
    bpd = float(-gauss.log_prob(test_x).mean() / (test_x.shape[1] * math.log(2)))
    emit(measurement="gaussian_baseline_bpd", bpd=bpd, n_examples=len(test_x),
         data=cfg.data.name)


if __name__ == "__main__":
    main()
