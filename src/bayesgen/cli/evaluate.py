"""``bayesgen evaluate``: the ELBO of a trained run on the test (or val) split, with its
standard error, written to a new JSON file."""

from __future__ import annotations

from pathlib import Path

from bayesgen.cli.options import (
    BOOL,
    DEVICE,
    FLOAT,
    INT,
    INT_OR_INF,
    POSITIVE_INT,
    Command,
    Option,
    UsageError,
    choice,
    text,
)
from bayesgen.cli.sample import CKPT, accepts, fmt

# option -> the names it may have among the parameters of the method's elbo
ELBO_ARGS = {"k": ["k"], "n_steps": ["n_steps"], "samples": ["n_measure_samples", "n_samples"],
             "rtol": ["rtol"], "atol": ["atol"], "n_probes": ["n_probes"], "solver": ["solver"]}


def new_file(folder: Path, stem: str) -> Path:
    """``folder/stem.json``, or ``stem_2.json``, ``stem_3.json``, … — the first that is free,
    so that a second evaluation does not overwrite the first."""
    path, i = folder / f"{stem}.json", 1
    while path.exists():
        i += 1
        path = folder / f"{stem}_{i}.json"
    return path


def run(opts: dict) -> int:
    import torch

    from bayesgen.training.build import build_datamodule, load_checkpoint, resolve_device
    from bayesgen.training.checkpoint import run_dir_of
    from bayesgen.training.fit import likelihood_line
    from bayesgen.training.outputs import evaluate_bpd, write_json

    cfg, task, path = load_checkpoint(opts["ckpt"])
    task.to(resolve_device(opts["device"]))
    if opts["receiver"] is not None:
        if getattr(task.method, "kind", None) != "discrete":
            raise UsageError(f"receiver= applies to discrete BFN only, not {cfg.method._target_}")
        task.method.per_coordinate_receiver = opts["receiver"] == "per_coordinate"
    eval_kwargs = dict(task.eval_kwargs)
    for key, targets in ELBO_ARGS.items():
        if key in opts.given:
            target = next((t for t in targets if accepts(task.method.elbo, t)), None)
            if target is None:
                raise UsageError(f"{key}= does not apply to method {cfg.method.name}")
            eval_kwargs[target] = opts[key]
    if opts["batch_size"] is not None:
        cfg.data.eval_batch_size = opts["batch_size"]
    dm = build_datamodule(cfg)
    split = opts["split"]
    dm.setup("test" if split == "test" else "fit")
    loader = dm.test_dataloader() if split == "test" else dm.val_dataloader()
    with torch.no_grad():
        m = evaluate_bpd(task, loader, eval_kwargs, repeats=opts["repeats"],
                         max_batches=opts["max_batches"], seed=opts["seed"])
    m |= {"split": split, "checkpoint": str(path)}
    if getattr(task.method, "kind", None) == "discrete" and eval_kwargs.get("n_steps"):
        m["receiver"] = "per_coordinate" if task.method.per_coordinate_receiver else "joint"
        eval_kwargs["receiver"] = m["receiver"]
    if opts["quality"]:
        from bayesgen.compare import evaluate_quality

        m["quality"] = evaluate_quality(cfg, task, opts["quality_n"], opts["seed"])
    out = Path(opts["out"]) if opts["out"] else new_file(run_dir_of(path), f"evaluate_{split}")
    write_json(m, out)
    print(f"{likelihood_line(m, dm.info, split, task.method)} | {m['nats_per_example']:.2f} "
          f"nats/example ({m['n_examples']} examples × {m['repeats']} repeats, "
          f"{fmt(eval_kwargs)})")
    for term in getattr(type(task.method), "elbo_terms", ()):
        print(f"  {term}: {m[f'{term}_nats_per_dim']:.4f} ± {m[f'{term}_nats_per_dim_se']:.4f} "
              "nats/dim")
    if "quality" in m:
        q = m["quality"]
        s, r = q["quality"], q["real_test"]
        print(f"quality ({s['n']} samples, {fmt(q['sample_kwargs'])}; classifier "
              f"{q['classifier']['key']}): classifier FD {s['fd']:.2f} (real test images: "
              f"{r['fd']:.2f}) | confident {100 * s['confident_share']:.1f}% (real: "
              f"{100 * r['confident_share']:.1f}%) | {q['samples_per_second']:.1f} samples/s")
    print(f"wrote {out}")
    return 0


COMMANDS = [Command(
    "evaluate", "bits/dim (nats/dim for densities) with its standard error -> JSON", run,
    description="The ELBO on the test (or val) split with its standard error: bits/dim of "
    "discrete data, nats/dim of continuous densities. Writes RUN/evaluate_<split>.json, or "
    "evaluate_<split>_2.json, … when that exists (out= names the file), and prints the path.",
    options=[
        CKPT,
        Option("k", INT_OR_INF, help="BSI, VDM: infinite-step ELBO (inf, the default) or the "
               "N-step ELBO"),
        Option("n_steps", INT_OR_INF, help="BFN: the N-step loss, or continuous time (inf)"),
        Option("samples", POSITIVE_INT, help="Monte-Carlo samples of the measurement / "
               "diffusion loss (BSI, BFN, VDM)"),
        Option("rtol", FLOAT, help="IF: ODE relative tolerance"),
        Option("atol", FLOAT, help="IF: ODE absolute tolerance"),
        Option("n_probes", POSITIVE_INT, help="IF: Hutchinson probes"),
        Option("solver", text("NAME", "euler"), help="IF: ODE solver"),
        Option("receiver", choice("per_coordinate", "joint"), help="discrete BFN n-step loss: "
               "the official code's receiver or the paper's Eq. 190 (default: the config's)"),
        Option("repeats", POSITIVE_INT, 1, "estimates averaged per example"),
        Option("quality", BOOL, False, "also the offline sample-quality score (classifier FD, "
               "confident share; digits, mnist, binarized_mnist, fashion_mnist)"),
        Option("quality_n", POSITIVE_INT, help="samples for quality= (default: the test split's "
               "size, at most 1000)"),
        Option("split", choice("test", "val"), "test", "the split evaluated"),
        Option("max_batches", POSITIVE_INT, help="evaluate only the first N batches"),
        Option("batch_size", POSITIVE_INT, help="evaluation batch size"),
        Option("seed", INT, 0, "random seed"),
        Option("device", DEVICE, help="device (default: cuda when there is one)"),
        Option("out", text("FILE.json"), help="the JSON file to write"),
    ])]
