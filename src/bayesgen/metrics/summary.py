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


def baselines(dm, scorer=None, n_samples: int = 0, seed: int = 0) -> dict[str, dict]:
    """Test bits/dim of the trivial baselines (and, with a scorer, the quality score of
    ``n_samples`` of their samples); {} for continuous data."""
    from bayesgen.metrics.baselines import baseline_rows

    levels = levels_of(dm.info)
    if not levels or dm.info.kind != "image":
        return {}
    dm.setup("fit")
    rows = baseline_rows(_stack(dm.train), _stack(dm.test), levels, seed)
    gen = torch.Generator().manual_seed(seed)
    for row in rows.values():
        model = row.pop("model")
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


def summary_lines(model: dict, real: dict | None, rows: dict[str, dict]) -> list[str]:
    """The demo's comparison: this model, the real test images and the baselines."""
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
    best = min((row["bpd"] for row in rows.values()), default=None)
    if best is not None:
        margin = (best - bpd) / bpd_se if bpd_se > 0 else math.nan
        lines.append(f"  -> {best - bpd:.3f} bits/dim ({margin:.1f} standard errors) "
                     f"below the best trivial baseline" if margin > 2 else
                     f"  -> NOT clearly below the best trivial baseline ({best:.3f} bits/dim)")
    return lines


def train_summary(cfg, dm, samples: torch.Tensor, metrics: dict,
                  say: Callable[[str], None] = print) -> tuple[dict, list[str]]:
    """After ``bayesgen train``: with ``evaluate.quality`` the classifier score of the samples
    drawn at the end of training (and of as many real test images); with
    ``evaluate.baselines`` the trivial baselines' bits/dim. Returns the entries for
    ``metrics.json`` and the lines of the comparison."""
    scorer = quality_scorer(dm, say) if cfg.evaluate.get("quality") else None
    out: dict[str, Any] = {}
    real = None
    if scorer is not None:
        out["quality"] = scorer.score(samples)
        real = out["quality_real_test"] = scorer.real_baseline(len(samples))
    rows = baselines(dm, scorer, len(samples), cfg.seed) if cfg.evaluate.get("baselines") else {}
    if rows:
        out["baselines"] = rows
    return out, (summary_lines(metrics | out, real, rows) if out else [])
