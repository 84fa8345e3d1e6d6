"""Sample quality against network calls for every sampler of every method (issue: fast samplers).

Trains (or, when its run folder has finished, loads) five models:

- ``digits-bsi``, ``digits-bfn`` (discretized), ``digits-vdm``: the ``compare preset=digits`` runs
  (MLP 1024 × 2 on the 8×8 digits; ``--digits-steps``, the preset's 5000 by default),
- ``mnist-bfn``: discrete BFN on binarized MNIST (the ``compare preset=mnist`` run;
  ``--mnist-steps``, the preset's 15000 by default),
- ``demo-bsi`` (not by default): the model of ``make demo`` (``experiment=digits-bsi``),
- ``text-bfn``: discrete BFN on tinyshakespeare (text8 symbols, 64 characters, a 4-layer 128-wide
  transformer; ``--text-steps``),

then draws ``--n`` samples with each sampler (ancestral, ode1, ode2, sde2) at 5, 10, 20, 50, 100 and
1000 network calls (one seed, the same for every row) and records the offline quality score (the
digits / MNIST classifier's Fréchet distance and confident share, as ``bayesgen compare``) or, for
text, the share of generated words that occur in the training text, with the wall time. Each
measurement is one JSON line (benchmarks/common.py), also kept in ``OUT/results.jsonl`` so that an
interrupted run resumes where it stopped. ``--plot`` draws FD against calls (log scale).

    python benchmarks/bench_samplers.py                       # everything, hours on 2 CPU cores
    python benchmarks/bench_samplers.py --models digits-bsi --calls 5,10 --n 100   # a quick look
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402

from bayesgen.compare import load_preset, run_overrides  # noqa: E402

SAMPLERS = ("ancestral", "ode1", "ode2", "sde2")
CALLS = (5, 10, 20, 50, 100, 1000)
TEXT = ["data=tinyshakespeare", "data.seq_len=64", "data.batch_size=64", "method=bfn_discrete",
        "method.beta_1=0.5625", "net=transformer", "net.n_layer=4", "net.n_head=4",
        "net.n_embd=128", "optim.lr=1e-3", "optim.warmup_steps=200", "optim.lr_schedule=cosine",
        "ema.decay=0.999", "ema.warmup_steps=200", "trainer.val_check_interval=1000",
        "checkpoint.every_n_train_steps=1000", "evaluate.max_batches=20",
        "method.sample_kwargs.n_steps=100", "name=bench-text-bfn"]


def model_overrides(name: str, args) -> list[str]:
    """The training overrides of one benchmark model."""
    if name == "demo-bsi":  # the demo's model exactly (make demo)
        return ["experiment=digits-bsi", "name=bench-demo-bsi"]
    if name == "text-bfn":
        return [*TEXT, f"trainer.max_steps={args.text_steps}"]
    preset, label = {"digits-bsi": ("digits", "bsi"), "digits-bfn": ("digits", "bfn"),
                     "digits-vdm": ("digits", "vdm"), "mnist-bfn": ("mnist", "bfn")}[name]
    spec = load_preset(preset)
    steps = args.digits_steps if preset == "digits" else args.mnist_steps
    return run_overrides(spec, label, [f"trainer.max_steps={steps}"])


def trained(name: str, args, say=print):
    """(cfg, task) of the finished run in OUT/runs/NAME, training it first when needed."""
    from bayesgen.training.build import compose_config, load_checkpoint
    from bayesgen.training.fit import run_training

    run_dir = Path(args.out) / "runs" / name
    if not (run_dir / "metrics.json").is_file():
        overrides = [*model_overrides(name, args), f"run_dir={run_dir}"]
        say(f"[{name}] bayesgen train {' '.join(overrides)}")
        start = time.perf_counter()
        run_training(compose_config(overrides))
        say(f"[{name}] trained in {time.perf_counter() - start:.0f} s")
    cfg, task, _ = load_checkpoint(run_dir)
    return cfg, task.eval()


def step_kwargs(method, sampler: str, calls: int) -> dict:
    """The step count that makes ``calls`` network calls: the ancestral BSI and BFN samplers
    call the network once more than they step; VDM and the solvers once per step."""
    from bayesgen.methods import BFN

    extra = int(sampler == "ancestral" and type(method).__name__ in ("BSI", "BFN"))
    key = "n_steps" if isinstance(method, BFN) else "k"
    return {key: calls - extra, "sampler": sampler}


class Counter:
    """Counts network calls through the sampler's callback (one per call)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, step, t, x_hat) -> None:
        self.n += 1


def word_share(texts: list[str], vocabulary: set[str]) -> float:
    """Share of the generated words (the first and last of each sample, which may be cut,
    left out) that occur as words of the training text."""
    words = [w for text in texts for w in re.findall(r"[a-z]+", text)[1:-1]]
    return sum(w in vocabulary for w in words) / max(len(words), 1)


def scorer_for(cfg, name: str, n: int):
    """A function samples → {score fields}, and the same for n real test examples."""
    from bayesgen.metrics.summary import quality_scorer
    from bayesgen.training.build import build_datamodule

    dm = build_datamodule(cfg)
    dm.setup("fit")
    if name != "text-bfn":
        scorer = quality_scorer(dm)

        def score(x):
            q = scorer.score(x, dm.info)
            return {"fd": q["fd"], "confident_share": q["confident_share"]}

        real = scorer.real_baseline(n)
        return score, {"fd": real["fd"], "confident_share": real["confident_share"]}
    train_text = dm.info.decode(dm.train.data)
    vocabulary = set(re.findall(r"[a-z]+", train_text))
    dm.setup("test")
    test = [dm.info.decode(dm.test[i][0]) for i in range(min(len(dm.test), n))]

    def score(x):
        return {"word_share": word_share([dm.info.decode(row) for row in x.cpu()], vocabulary)}

    return score, score_text(test, vocabulary)


def score_text(texts: list[str], vocabulary: set[str]) -> dict:
    return {"word_share": word_share(texts, vocabulary)}


def done_keys(path: Path) -> dict[tuple, dict]:
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["model"], r["sampler"], r["calls"]): r for r in rows if "sampler" in r}


def run(args) -> list[dict]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    done = done_keys(results)
    rows = list(done.values())
    for name in args.models:
        cfg, task = trained(name, args)
        n = args.text_n if name == "text-bfn" else args.n
        score, real = scorer_for(cfg, name, n)
        if (name, "real", 0) not in done:
            row = record("samplers", model=name, sampler="real", calls=0, **real)
            rows.append(row)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
        method = task.method
        from bayesgen.training.outputs import sample_labels

        labels = sample_labels(task, n)
        for calls in args.calls:
            for sampler in args.samplers:
                if (name, sampler, calls) in done:
                    continue
                kw = step_kwargs(method, sampler, calls)
                counter = Counter()
                gen = torch.Generator().manual_seed(args.seed)
                torch.manual_seed(args.seed)
                start = time.perf_counter()
                with torch.no_grad():
                    x = method.sample(n, generator=gen, callback=counter, **kw, **labels)
                seconds = time.perf_counter() - start
                if counter.n != calls:
                    raise RuntimeError(f"{name} {sampler}: {counter.n} network calls, not {calls}")
                row = record("samplers", model=name, sampler=sampler, calls=calls,
                             steps=kw.get("k", kw.get("n_steps")), n=n,
                             seconds=round(seconds, 3), **score(x))
                rows.append(row)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict], model: str) -> str:
    """A markdown table: one row per call count, per sampler its score (and seconds)."""
    mine = [r for r in rows if r["model"] == model and r["sampler"] != "real"]
    key = "word_share" if model == "text-bfn" else "fd"
    samplers = [s for s in SAMPLERS if any(r["sampler"] == s for r in mine)]
    calls = sorted({r["calls"] for r in mine})
    by = {(r["sampler"], r["calls"]): r for r in mine}
    head = "| calls | " + " | ".join(samplers) + " |"
    lines = [head, "|" + "---|" * (len(samplers) + 1)]
    for c in calls:
        cells = []
        for s in samplers:
            r = by.get((s, c))
            if r is None:
                cells.append("—")
            elif key == "fd":
                cells.append(f"{r['fd']:.1f} / {100 * r['confident_share']:.0f}% "
                             f"({r['seconds']:.1f} s)")
            else:
                cells.append(f"{100 * r['word_share']:.1f}% ({r['seconds']:.1f} s)")
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    real = [r for r in rows if r["model"] == model and r["sampler"] == "real"]
    if real:
        r = real[0]
        lines.append("| *real test data* | " + (
            f"{r['fd']:.1f} / {100 * r['confident_share']:.0f}%" if key == "fd"
            else f"{100 * r['word_share']:.1f}%") + " |" + " |" * (len(samplers) - 1))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    styles = {"ancestral": "-", "ode1": ":", "ode2": "--", "sde2": "-."}
    for model in sorted({r["model"] for r in rows if "fd" in r and r["sampler"] != "real"}):
        colour = None
        for s in SAMPLERS:
            pts = sorted((r["calls"], r["fd"]) for r in rows
                         if r["model"] == model and r["sampler"] == s and "fd" in r)
            if pts:
                (line,) = ax.plot(*zip(*pts, strict=True), styles[s], marker="o", ms=3,
                                  color=colour, label=f"{model} {s}")
                colour = line.get_color()
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network calls per sample")
    ax.set_ylabel("classifier Fréchet distance")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def closed_form(n: int = 20000) -> list[dict]:
    """Gaussian data N(0.1, 0.3²) in 2-D with each method's exact denoiser, float64: the
    samples' mean and std at 5, 10 and 20 network calls (tests/test_samplers.py checks them)."""
    from bayesgen import BFN, BSI
    from bayesgen.methods import VDM

    m, s = 0.1, 0.3

    def post(z, a, sd):  # E[x | z] for z = a·x + sd·ε
        return m + a * s * s / (a * a * s * s + sd * sd) * (z - a * m)

    def bfn_scale(t):
        g = (1 - 1e-3 ** (2 * t))[:, None]
        return g, (g * (1 - g)).clamp_min(1e-300).sqrt()

    def discretized(mu, t):
        g, sd = bfn_scale(t)
        mean = post(mu, g, sd)
        return torch.cat([mean, (0.5 * torch.log(s * s * sd * sd / (g * g * s * s + sd * sd))
                                 ).expand_as(mean)], 1)

    bsi = BSI(None, (2,), preconditioning=None)
    bsi.model = lambda mu, t: post(mu, (1 - bsi.lambda_0 / bsi.icdf(t))[:, None],
                                   bsi.icdf(t)[:, None].rsqrt())
    vdm = VDM(None, (2,), parameterization="x")
    vdm.model = lambda z, t: post(z, vdm.alpha(t)[:, None], vdm.sigma(t)[:, None])
    methods = {"bsi": bsi, "vdm": vdm,
               "bfn-continuous": BFN.continuous(lambda mu, t: post(mu, *bfn_scale(t)), (2,),
                                                parameterization="x"),
               "bfn-discretized": BFN.discretized(discretized, (2,), parameterization="x")}
    rows = []
    for name, method in methods.items():
        for sampler in SAMPLERS:
            for calls in (5, 10, 20, 100):
                kw = step_kwargs(method, sampler, calls)
                x = method.sample(n, generator=torch.Generator().manual_seed(0),
                                  dtype=torch.float64, **kw)
                rows.append(record("samplers_closed_form", model=name, sampler=sampler,
                                   calls=calls, n=n, mean=round(x.mean().item(), 4),
                                   std=round(x.std().item(), 4), true_mean=m, true_std=s))
    return rows


def closed_form_table(rows: list[dict]) -> str:
    calls = sorted({r["calls"] for r in rows})
    lines = ["| method | sampler | " + " | ".join(f"std at {c} calls" for c in calls) + " |",
             "|---|---|" + "---|" * len(calls)]
    by = {(r["model"], r["sampler"], r["calls"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        for sampler in SAMPLERS:
            cells = [f"{by[model, sampler, c]['std']:.3f}" for c in calls]
            lines.append(f"| {model} | {sampler} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_samplers")
    p.add_argument("--models", default="digits-bsi,digits-bfn,digits-vdm,mnist-bfn,text-bfn")
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--calls", default=",".join(map(str, CALLS)))
    p.add_argument("--n", type=int, default=500, help="samples per measurement (images)")
    p.add_argument("--text-n", type=int, default=200, help="samples per measurement (text)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--digits-steps", type=int, default=5000)
    p.add_argument("--mnist-steps", type=int, default=15000)
    p.add_argument("--text-steps", type=int, default=4000)
    p.add_argument("--plot", default=None, help="write the FD-against-calls plot here (PNG)")
    p.add_argument("--tables", action="store_true", help="print markdown tables at the end")
    p.add_argument("--closed-form", action="store_true",
                   help="only the Gaussian closed-form check (seconds): std against calls")
    args = p.parse_args()
    if args.closed_form:
        print(closed_form_table(closed_form()))
        return
    args.models = args.models.split(",")
    args.samplers = args.samplers.split(",")
    args.calls = [int(c) for c in args.calls.split(",")]
    rows = run(args)
    if args.plot:
        plot(rows, Path(args.plot))
        print(f"wrote {args.plot}")
    if args.tables:
        for model in args.models:
            print(f"\n{model}\n{table(rows, model)}")


if __name__ == "__main__":
    main()
