"""Scoring a trained model against the trivial baselines: the offline quality score of its
samples, the baselines' bits/dim, and the summary lines `bayesgen train` prints at the end (with
``evaluate.quality`` / ``evaluate.baselines``). `bayesgen compare` uses the same pieces."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch


def _stack(ds, n: int | None = None) -> torch.Tensor:
    """The first ``n`` (default all) items' data of a data set, drawn under a fixed seed."""
    n = len(ds) if n is None else min(n, len(ds))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return torch.stack([torch.as_tensor(ds[i][0]) for i in range(n)])


def levels_of(info) -> int | None:
    """Number of grey levels (or classes) of discrete data, None for continuous data."""
    return getattr(info, "num_bins", None) or getattr(info, "num_classes", None)


def baselines(dm, scorer=None, n_samples: int = 0, seed: int = 0,
              keep_per_example: bool = False) -> dict[str, dict]:
    """Test bits/dim of the trivial baselines (and, with a scorer, the quality score of
    ``n_samples`` of their samples); {} for continuous data. ``keep_per_example`` keeps each
    test example's bits/dim (a tensor) under ``"per_example"``."""
    from bayesgen.metrics.baselines import baseline_rows

    levels = levels_of(dm.info)
    if not levels or dm.info.kind != "image":
        return {}
    dm.setup("fit")
    rows = baseline_rows(_stack(dm.train), _stack(dm.test), levels, seed)
    gen = torch.Generator().manual_seed(seed)
    for row in rows.values():
        model = row.pop("model")
        if not keep_per_example:
            del row["per_example"]
        if scorer is not None and n_samples >= 2:
            unit = model.sample(n_samples, generator=gen).float() / (levels - 1)
            row["quality"] = scorer.score_unit(unit)
    return rows


def quality_scorer(dm, say: Callable[[str], None] = print):
    """The data set's quality scorer (trained once, then cached), or None when the data set
    has no classifier."""
    from bayesgen.metrics.quality import RECIPES, QualityScorer

    if dm.info.name not in RECIPES:
        return None
    dm.setup("fit")
    return QualityScorer.for_data(dm.train, dm.test, dm.info, say=say)


def sampler_of(method, sample_kwargs: dict) -> str:
    """The sampler ``method.sample(**sample_kwargs)`` uses: ``sampler=`` (``solver=`` for
    Inflationary Flows) or the signature's default ("ancestral", IF "adaptive")."""
    import inspect

    params = inspect.signature(method.sample).parameters
    for key in ("sampler", "solver"):
        if sample_kwargs.get(key) is not None:
            return str(sample_kwargs[key])
    for key in ("sampler", "solver"):
        if key in params and params[key].default not in (None, inspect.Parameter.empty):
            return str(params[key].default)
    return "ancestral"


def sample_and_score(method, scorer, n: int, sample_kwargs: dict, seed: int = 0,
                     model_kwargs: dict | None = None, info=None) -> dict[str, Any]:
    """Draw ``n`` samples with the configured sampler settings (timed), then score them as
    data of the form ``info`` describes (default: the scorer's data)."""
    device = next(method.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        x = method.sample(n, generator=gen, **sample_kwargs, **(model_kwargs or {}))
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {"n": n, "sample_seconds": seconds, "samples_per_second": n / seconds,
                           "sampler": sampler_of(method, sample_kwargs),
                           "sample_kwargs": sample_kwargs}
    if getattr(method, "last_nfe", None) is not None:
        out["network_evaluations"] = method.last_nfe
    if scorer is not None:
        out["quality"] = scorer.score(x, info)
    return out


# --------------------------------------------------------------------------- summaries
def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def paired_margin(model_bpd: torch.Tensor, baseline_bpd: torch.Tensor,
                  offset: float = 0.0) -> tuple[float, float] | None:
    """Mean and standard error of baseline − (model + offset) bits/dim over the same test
    examples (a paired difference: the examples' shared difficulty cancels), or None when the
    two were not evaluated on the same number of examples."""
    if len(model_bpd) != len(baseline_bpd) or len(model_bpd) < 2:
        return None
    diff = baseline_bpd.double() - (model_bpd.double() + offset)
    return diff.mean().item(), (diff.std() / math.sqrt(len(diff))).item()


def summary_lines(model: dict, real: dict | None, rows: dict[str, dict],
                  per_example: torch.Tensor | None = None) -> list[str]:
    """The demo's comparison: this model, the real test images and the baselines. With the
    model's ``per_example`` bits/dim (and the baselines' in ``rows``), the margin to the best
    baseline is a paired difference on the same test examples; otherwise unpaired."""
    q = model.get("quality") or {}
    n = q.get("n", "?")
    lines = [f"{'':44s}{'bits/dim':>16s}{'classifier FD':>15s}{'confident':>11s}"]

    def line(label: str, bpd: str, quality: dict | None) -> None:
        quality = quality or {}
        lines.append(f"  {label:42s}{bpd:>16s}{_num(quality.get('fd'), '.1f'):>15s}"
                     f"{_pct(quality.get('confident_share')):>11s}")

    bpd, bpd_se = model["bpd"], model["bpd_se"]
    if "bpd_marginal" in model:  # class-conditional: the bound on −log2 p(x) is comparable
        bpd, bpd_se = model["bpd_marginal"], model["bpd_marginal_se"]
        k = model.get("num_labels", "K")
        lines.append(f"  class-conditional model with a uniform label prior: bits/dim of p(x) ≤ "
                     f"p(x|y)'s {model['bpd']:.3f} + log2({k})/D")
    line(f"this model ({n} samples)", f"{bpd:.3f} ± {bpd_se:.3f}", q)
    if real is not None:
        line(f"real test images ({real['n']})", "—", real)
    for name, row in rows.items():
        line(name, f"{row['bpd']:.3f} ± {row['bpd_se']:.3f}", row.get("quality"))
    if not rows:
        return lines
    name, best = min(rows.items(), key=lambda item: item[1]["bpd"])
    paired = best_margin(model, rows, per_example)
    if paired is not None:
        gap, gap_se = paired
        how = "paired over the same test images"
    else:
        gap, gap_se = best["bpd"] - bpd, bpd_se
        how = "unpaired"
    margin = gap / gap_se if gap_se > 0 else math.nan
    lines.append(f"  -> {gap:.3f} ± {gap_se:.3f} bits/dim ({margin:.1f} standard errors, {how}) "
                 f"below the best trivial baseline ({name})" if margin > 2 else
                 f"  -> NOT clearly below the best trivial baseline ({name}, {best['bpd']:.3f} "
                 f"bits/dim): {gap:+.3f} ± {gap_se:.3f} ({how})")
    return lines


def best_margin(model: dict, rows: dict[str, dict],
                per_example: torch.Tensor | None) -> tuple[float, float] | None:
    """Paired margin of the model (its p(x) bound when class-conditional) to the baseline with
    the lowest bits/dim, or None without per-example values on both sides."""
    best = min(rows.values(), key=lambda row: row["bpd"])
    if per_example is None or best.get("per_example") is None:
        return None
    return paired_margin(per_example, best["per_example"],
                         model.get("bpd_marginal", model["bpd"]) - model["bpd"])


def train_summary(cfg, dm, samples: torch.Tensor, metrics: dict,
                  say: Callable[[str], None] = print,
                  per_example: torch.Tensor | None = None) -> tuple[dict, list[str]]:
    """After ``bayesgen train``: with ``evaluate.quality`` the classifier score of the samples
    drawn at the end of training (and of as many real test images); with
    ``evaluate.baselines`` the trivial baselines' bits/dim (the margin to the best one paired
    on the test examples when ``per_example`` holds the model's bits/dim of each). Returns the
    entries for ``metrics.json`` and the lines of the comparison."""
    scorer = quality_scorer(dm, say) if cfg.evaluate.get("quality") else None
    out: dict[str, Any] = {}
    real = None
    if scorer is not None:
        out["quality"] = scorer.score(samples)
        real = out["quality_real_test"] = scorer.real_baseline(len(samples))
    rows = (baselines(dm, scorer, len(samples), cfg.seed, keep_per_example=True)
            if cfg.evaluate.get("baselines") else {})
    lines = summary_lines(metrics | out, real, rows, per_example) if (rows or out) else []
    if rows:
        out["baselines"] = {name: {k: v for k, v in row.items() if k != "per_example"}
                            for name, row in rows.items()}
        if (paired := best_margin(metrics, rows, per_example)) is not None:
            out["margin_to_best_baseline"] = {"bpd": paired[0], "bpd_se": paired[1],
                                              "paired": True}
    return out, lines
