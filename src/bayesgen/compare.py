"""``bayesgen compare``: several methods trained on equal footing, one report.

A preset (``conf/compare/<name>.yaml``, or any YAML file with ``config=``) names the Hydra
overrides that every run shares (data, network, optimizer, batch, EMA), a budget (steps, or
wall-clock seconds per method) and, per method, the overrides that select it. The runs train
one after the other in ``<out>/<name>/runs/<label>/`` exactly as ``bayesgen train`` would;
re-running the command skips finished runs and resumes interrupted ones from their
``last.ckpt``. Then each run's test bits/dim (its ``metrics.json``), its training speed (the
wall time inside training steps, `StepTimer`), its sampling speed at the configured steps and
the offline sample-quality score (`bayesgen.metrics.quality`) go into one table beside the
trivial baselines (`bayesgen.metrics.baselines`) and the real test images' own quality score,
written as ``report.md`` and ``report.html`` (figures inline, readable offline) with a plot of
validation bits/dim against steps and seconds, the sample grids and the commands.

The same helpers give ``bayesgen evaluate … quality=true`` and the summary at the end of
``bayesgen train`` when ``evaluate.quality`` / ``evaluate.baselines`` are set (the demo).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from bayesgen.metrics.summary import _num, _pct, baselines, quality_scorer, sample_and_score
from bayesgen.presets import PRESET_DIR, list_presets, load_preset  # noqa: F401

RESULT_FILE = "compare.json"


# --------------------------------------------------------------------------- training speed
class StepTimer(Callback):
    """Wall time spent inside training steps (forward, backward, optimizer step), without
    validation, checkpoints or data loading. Logged as ``time/train_seconds`` at every
    validation (beside ``val/bpd`` in ``logs/metrics.csv``) and kept in checkpoints, so a
    resumed run continues its count."""

    def __init__(self) -> None:
        self.seconds, self.steps, self._start = 0.0, 0, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start
            self.steps += 1
            self._start = None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log("time/train_seconds", self.seconds)

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds, "steps": self.steps}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.seconds, self.steps = float(state["seconds"]), int(state["steps"])


# --------------------------------------------------------------------------- quality
def evaluate_quality(cfg, task, n: int | None, seed: int = 0,
                     sample_kwargs: dict | None = None) -> dict:
    """``bayesgen evaluate … quality=true``: score ``n`` fresh samples (default: as many as
    the test split has, at most 1000) against the real test images at the same n."""
    from bayesgen.training.build import build_datamodule
    from bayesgen.training.outputs import sample_labels

    dm = build_datamodule(cfg)
    scorer = quality_scorer(dm)
    if scorer is None:
        from bayesgen.metrics.quality import RECIPES

        raise ValueError(f"quality=true has no classifier for data set {dm.info.name!r}; "
                         f"it supports {', '.join(RECIPES)}")
    n = n or min(len(dm.test), 1000)
    kwargs = dict(cfg.method.get("sample_kwargs", {}) or {}) | (sample_kwargs or {})
    out = sample_and_score(task.method, scorer, n, kwargs, seed, sample_labels(task, n))
    out["real_test"] = scorer.real_baseline(n)
    out["classifier"] = {k: scorer.meta.get(k) for k in ("key", "test_accuracy")}
    return out


# --------------------------------------------------------------------------- presets
def budget_overrides(budget: dict) -> list[str]:
    """``trainer.max_steps=N``, or Lightning's ``max_time`` (DD:HH:MM:SS) with a step cap of
    10⁹ (use a constant learning rate then: a cosine schedule would span the cap)."""
    if "steps" in budget:
        return [f"trainer.max_steps={int(budget['steps'])}"]
    s = int(budget["seconds"])
    return ["trainer.max_steps=1000000000",
            f"+trainer.max_time={s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:"
            f"{s % 60:02d}"]


def run_overrides(spec: dict, label: str, extra: list[str]) -> list[str]:
    return [*spec["overrides"], *budget_overrides(spec["budget"]), *spec["methods"][label],
            *extra, f"name={spec['name']}-{label}"]


# --------------------------------------------------------------------------- the command
def compare(spec: dict, out: str | Path = "compare", methods: list[str] | None = None,
            extra: list[str] | None = None, samples: int | None = None,
            report_only: bool = False, say: Callable[[str], None] = print) -> Path:
    """Train (or resume, or skip) every method of ``spec``, then write the report."""
    from omegaconf import OmegaConf

    from bayesgen.training.build import build_datamodule
    from bayesgen.training.validate import compose_checked, validate_config

    labels = methods or list(spec["methods"])
    missing = [m for m in labels if m not in spec["methods"]]
    if missing:
        raise ValueError(f"methods {missing} are not in the preset; it has "
                         + ", ".join(spec["methods"]))
    extra = list(extra or [])
    n = samples or spec["samples"]
    root = Path(out) / spec["name"]
    configs = {}
    for label in labels:  # every run's configuration checked before anything is written
        overrides = [*run_overrides(spec, label, extra), f"run_dir={root / 'runs' / label}"]
        configs[label] = compose_checked(overrides)
        validate_config(configs[label], overrides)
    (root / "runs").mkdir(parents=True, exist_ok=True)
    dm = build_datamodule(next(iter(configs.values())))
    scorer = quality_scorer(dm, say)
    if scorer is not None:  # the FD curve during training, at the report's n (FD depends on n)
        for cfg in configs.values():
            OmegaConf.update(cfg, "evaluate.quality", True)
            OmegaConf.update(cfg, "evaluate.quality_n", n)
    results = {}
    for label in labels:
        results[label] = _one_run(spec, label, configs[label], root / "runs" / label, extra,
                                  scorer, n, report_only, say)
    say("baselines: per-pixel histogram, full-covariance Gaussian")
    table = {"spec": {k: v for k, v in spec.items()}, "extra_overrides": extra, "samples": n,
             "runs": results, "baselines": baselines(dm, scorer, n),
             "real_test": scorer.real_baseline(n) if scorer is not None else None,
             "classifier": dict(scorer.meta) if scorer is not None else None,
             "machine": machine(), "written": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    (root / "results.json").write_text(json.dumps(table, indent=2, default=str) + "\n")
    write_report(root, table)
    say(f"wrote {root / 'report.md'}\nwrote {root / 'report.html'}")
    return root


def _one_run(spec: dict, label: str, cfg, run_dir: Path, extra: list[str], scorer, n: int,
             report_only: bool, say: Callable[[str], None]) -> dict:
    """Train one method unless finished, then sample, time and score it (cached in
    ``compare.json``, valid while the run's overrides stay the same)."""
    from bayesgen.training.build import build_datamodule, load_checkpoint
    from bayesgen.training.fit import run_training
    from bayesgen.training.outputs import sample_labels

    overrides = run_overrides(spec, label, extra)
    stamp = run_dir / "compare_overrides.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != overrides:
        raise ValueError(f"{run_dir} was trained with other overrides; delete it or pass "
                         "name=… to compare into a new folder")
    result_file = run_dir / RESULT_FILE
    if result_file.is_file():
        say(f"[{label}] finished earlier: {result_file}")
        return json.loads(result_file.read_text())
    if report_only:
        raise ValueError(f"report_only=true but run {label} has not finished ({run_dir})")
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(overrides) + "\n")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if not (run_dir / "metrics.json").is_file():
        say(f"[{label}] bayesgen train {' '.join(overrides)} run_dir={run_dir}")
        run_training(cfg, callbacks=[StepTimer()])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cfg, task, _ = load_checkpoint(run_dir)
    timer = _saved_timer(run_dir)
    sample_kwargs = dict(cfg.method.get("sample_kwargs", {}) or {})
    settings = ", ".join(f"{k}={v}" for k, v in sample_kwargs.items())
    say(f"[{label}] drawing {n} samples ({settings})")
    drawn = sample_and_score(task.method, scorer, n, sample_kwargs, cfg.seed,
                             sample_labels(task, n), build_datamodule(cfg).info)
    result = {"label": label, "method": cfg.method.name, "overrides": overrides,
              "parameters": sum(p.numel() for p in task.method.parameters()),
              "test": {k: metrics.get(k) for k in ("bpd", "bpd_se", "n_examples", "eval_kwargs")},
              "steps": metrics.get("steps"), "train_seconds": metrics.get("train_seconds"),
              "step_seconds": timer["seconds"] / timer["steps"] if timer["steps"] else None,
              "load_average": [load, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
              "samples_png": "samples.png" if (run_dir / "samples.png").is_file() else None,
              **drawn}
    result_file.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def _saved_timer(run_dir: Path) -> dict[str, float]:
    """The StepTimer state saved in ``last.ckpt`` (zeros when the run was trained without)."""
    from bayesgen.training.checkpoint import read_checkpoint

    ckpt = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")  # weights_only: no pickles
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("StepTimer"):
            return state
    return {"seconds": 0.0, "steps": 0}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "host": platform.node()}


# --------------------------------------------------------------------------- the report
def read_curve(run_dir: Path) -> list[dict[str, float]]:
    """(step, val/bpd, time/train_seconds, quality/fd) rows of a run's ``logs/metrics.csv``
    (``quality/fd``: the classifier FD watched during training, logged on val/bpd's row)."""
    path = run_dir / "logs" / "metrics.csv"
    if not path.is_file():
        return []
    rows = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get("val/bpd"):
                step = int(float(row["step"]))
                rows.setdefault(step, {"step": step})["bpd"] = float(row["val/bpd"])
            if row.get("time/train_seconds"):
                step = int(float(row["step"]))
                rows.setdefault(step, {"step": step})["seconds"] = float(row["time/train_seconds"])
            if row.get("quality/fd"):
                step = int(float(row["step"]))
                rows.setdefault(step, {"step": step})["fd"] = float(row["quality/fd"])
    return [rows[s] for s in sorted(rows) if "bpd" in rows[s]]


def plot_top(finals: list[float], baselines: list[float]) -> float:
    """Upper limit of the bits/dim axis: every method's final value and every baseline in view
    (a method far above the others stays on the chart; early values may be cut off)."""
    return 1.3 * max([*finals, *baselines])


def plot_curves(root: Path, table: dict) -> Path | None:
    """Validation bits/dim against steps and against training seconds, one line per method,
    the baselines as dashed lines; beside them the classifier FD watched during training
    against steps, with the real test images' FD at the same n as a dotted line. A bare
    ``Figure`` (no pyplot): the caller's backend stays."""
    from matplotlib.figure import Figure

    curves = {label: read_curve(root / "runs" / label) for label in table["runs"]}
    if not any(curves.values()):
        return None
    watched = {label: [r for r in c if "fd" in r] for label, c in curves.items()}
    fig = Figure(figsize=(16 if any(watched.values()) else 11, 4), dpi=100)
    axes = fig.subplots(1, 3 if any(watched.values()) else 2)
    finals = [c[-1]["bpd"] for c in curves.values() if c]
    top = plot_top(finals, [r["bpd"] for r in table["baselines"].values()])
    for label, curve in curves.items():
        axes[0].plot([r["step"] for r in curve], [r["bpd"] for r in curve], "o-", label=label)
        timed = [r for r in curve if "seconds" in r]
        if timed:
            axes[1].plot([r["seconds"] for r in timed], [r["bpd"] for r in timed], "o-",
                         label=label)
    if any(watched.values()):
        for label, rows in watched.items():
            if rows:
                axes[2].plot([r["step"] for r in rows], [r["fd"] for r in rows], "o-",
                             label=label)
        real = (table.get("real_test") or {}).get("fd")
        if real is not None:
            axes[2].axhline(real, color="0.5", linestyle=":", label="real test images")
        axes[2].set_xlabel("training steps")
        axes[2].set_ylabel("classifier FD during training (lower is better)")
        axes[2].set_ylim(bottom=0)
        axes[2].grid(alpha=0.3)
        axes[2].legend(fontsize=8)
    for ax, xlabel in zip(axes[:2], ("training steps", "training seconds (inside steps)"),
                          strict=True):
        for (name, row), style in zip(table["baselines"].items(), (":", "--"), strict=False):
            ax.axhline(row["bpd"], color="0.5", linestyle=style, label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation bits/dim")
        ax.set_ylim(bottom=0, top=top)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = root / "val_bpd.png"
    fig.savefig(path)
    return path


def _rows(table: dict) -> list[list[str]]:
    rows = []
    for label, r in table["runs"].items():
        q = r.get("quality") or {}
        kwargs = r.get("sample_kwargs") or {}
        steps = ", ".join([r.get("sampler") or kwargs.get("solver") or "ancestral"]
                          + [f"{k}={v}" for k, v in kwargs.items()
                             if k in ("k", "n_steps", "steps")])
        nfe = f", {r['network_evaluations']} NFE" if r.get("network_evaluations") else ""
        rows.append([label, r["method"], f"{r['test']['bpd']:.3f} ± {r['test']['bpd_se']:.3f}",
                     _num(q.get("fd"), ".1f"), _pct(q.get("confident_share")),
                     _num(r.get("step_seconds"), ".3f"),
                     f"{r['samples_per_second']:.1f} ({steps}{nfe})", str(r["steps"]),
                     f"{r['parameters'] / 1e6:.2f}M"])
    real = table.get("real_test")
    if real:
        rows.append([f"*real test images ({real['n']})*", "", "—", _num(real["fd"], ".1f"),
                     _pct(real["confident_share"]), "", "", "", ""])
    for name, b in table["baselines"].items():
        q = b.get("quality") or {}
        rows.append([f"*{name}*", "baseline", f"{b['bpd']:.3f} ± {b['bpd_se']:.3f}",
                     _num(q.get("fd"), ".1f"), _pct(q.get("confident_share")), "", "", "", ""])
    return rows


HEADER = ["run", "method", "test bits/dim ± SE", "classifier FD", "confident share",
          "train s/step", "samples/s (sampler)", "steps", "parameters"]


def _notes(table: dict) -> list[str]:
    spec, n = table["spec"], table["samples"]
    m = table["machine"]
    loads = [x for r in table["runs"].values() for x in (r.get("load_average") or []) if x]
    budget = spec["budget"]
    notes = [
        f"Budget per method: {budget.get('steps', '')} steps" if "steps" in budget else
        f"Budget per method: {budget['seconds']} s of wall clock",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['threads']} threads)"
        + (f", {m['cuda']}" if m.get("cuda") else "") + f"; report written {table['written']}"
        + (f"; 1-minute load average {min(loads):.1f}–{max(loads):.1f} at the runs' start/end"
           if loads else ""),
        "Test bits/dim: each method's own estimator on the whole test split, as "
        "`bayesgen train` reports it (`method.eval_kwargs` of the run); ± one standard error "
        "over examples.",
        "train s/step: wall time inside training steps (forward, backward, optimizer) over "
        "the steps taken; samples/s: drawing the quality samples with the configured sampler.",
    ]
    c = table.get("classifier")
    if c:
        notes.append(
            f"Classifier FD and confident share (max class probability ≥ 0.9) of {n} samples "
            f"per method, by the offline classifier `{c.get('key')}` (test accuracy "
            f"{100 * c.get('test_accuracy', float('nan')):.1f}%); the real test images' row is "
            f"the same score of {table['real_test']['n']} test images: FD is biased upward at "
            "small n, so compare rows at equal n.")
    if table["baselines"]:
        notes.append("Baselines on the same test split: per-pixel histogram (add-one "
                     "smoothing) and a full-covariance Gaussian on uniformly dequantized grey "
                     "levels; their FD and confident share are of their own samples.")
    return notes


def _commands(table: dict) -> list[str]:
    spec = table["spec"]
    src = spec["source"]
    preset = Path(src).stem
    base = (f"bayesgen compare preset={preset}" if Path(src).parent == PRESET_DIR
            else f"bayesgen compare config={src}")
    extra = " ".join(table["extra_overrides"])
    lines = [f"{base} samples={table['samples']}" + (f" {extra}" if extra else ""),
             "# or each run by itself:"]
    for label, r in table["runs"].items():
        lines.append("bayesgen train " + " ".join(r["overrides"]) + f" run_dir=runs/{label}")
    return lines


def write_report(root: Path, table: dict) -> None:
    """``report.md`` (figures as files beside it) and ``report.html`` (figures inline)."""
    plot = plot_curves(root, table)
    spec = table["spec"]
    rows = _rows(table)
    md = [f"# Comparison `{spec['name']}`", ""]
    if spec.get("description"):
        md += [spec["description"].strip(), ""]
    md += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += [""] + [f"- {note}" for note in _notes(table)] + [""]
    if plot is not None:
        md += ["## Validation bits/dim and sample quality during training", "",
               f"![validation bits/dim]({plot.name})", ""]
    labels = [lab for lab, r in table["runs"].items() if r.get("samples_png")]
    if labels:
        md += ["## Samples (64 per method, drawn at the end of training)", "",
               "| " + " | ".join(labels) + " |", "|" + "---|" * len(labels),
               "| " + " | ".join(f"![{lab}](runs/{lab}/samples.png)" for lab in labels) + " |",
               ""]
    md += ["## Reproduce", "", "```sh", *_commands(table), "```", ""]
    (root / "report.md").write_text("\n".join(md))
    (root / "report.html").write_text(_html(root, table, rows, plot, labels))


def _img(path: Path) -> str:
    mime = "image/gif" if path.suffix == ".gif" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:{mime};base64,{data}" alt="{html.escape(path.name)}">'


def _html(root: Path, table: dict, rows: list[list[str]], plot: Path | None,
          labels: list[str]) -> str:
    spec = table["spec"]
    esc = html.escape
    cells = "".join("<tr>" + "".join(f"<td>{esc(c.strip('*'))}</td>" for c in r) + "</tr>"
                    for r in rows)
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>bayesgen compare {esc(spec['name'])}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}"
        "figure{display:inline-block;margin:8px;text-align:center}"
        "img{image-rendering:pixelated}pre{background:#f4f4f4;padding:8px;overflow-x:auto}"
        "</style></head><body>",
        f"<h1>Comparison {esc(spec['name'])}</h1>",
        f"<p>{esc(spec.get('description', '').strip())}</p>",
        f"<table><tr>{head}</tr>{cells}</table><ul>",
        *(f"<li>{esc(n)}</li>" for n in _notes(table)), "</ul>",
    ]
    if plot is not None:
        parts += ["<h2>Validation bits/dim and sample quality during training</h2>", _img(plot)]
    if labels:
        parts.append("<h2>Samples</h2>")
        for lab in labels:
            gif = root / "runs" / lab / "sampling.gif"
            pics = _img(root / "runs" / lab / "samples.png")
            if gif.is_file():
                pics += " " + _img(gif)
            parts.append(f"<figure>{pics}<figcaption>{esc(lab)}</figcaption></figure>")
    parts += ["<h2>Reproduce</h2>", f"<pre>{esc(chr(10).join(_commands(table)))}</pre>",
              "</body></html>"]
    return "\n".join(parts)
