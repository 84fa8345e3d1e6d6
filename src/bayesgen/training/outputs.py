"""What a run leaves behind: bits/dim with its standard error, sample pictures, animations."""

from __future__ import annotations

import inspect
import json
import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress
from torch import Tensor, nn

from bayesgen import viz
from bayesgen.extras import MissingDependency
from bayesgen.training.checkpoint import NonFiniteError, atomic_path, atomic_write, write_text

# keys of ``sample_history`` that hold per-step states in data space, best first
FRAME_KEYS = ("frames", "x_hat", "probs", "trajectory", "x_traj", "mu")


@torch.no_grad()
def evaluate_bpd(task, loader, eval_kwargs: dict | None = None, repeats: int = 1,
                 max_batches: int | None = None, seed: int = 0,
                 progress: bool = True, keep_per_example: bool = False) -> dict[str, Any]:
    """Bits/dim of ``task.method`` on ``loader``: mean over examples of the mean over
    ``repeats`` Monte-Carlo estimates, with the standard error over examples.

    A method whose class names the loss terms that ``elbo`` returns after (value, bpd) in
    ``elbo_terms`` (nats per example, e.g. BFN's ``("l_recon", "l_transmit")``) also gets each
    term in nats per dimension with its standard error, like BFN's official test script.
    ``keep_per_example`` adds the examples' bits/dim as a tensor under ``"per_example_bpd"``
    (for paired comparisons on the same examples; pop it before writing JSON)."""
    method = task.method
    device = next(method.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    accepts_gen = "generator" in inspect.signature(method.elbo).parameters
    term_names = tuple(getattr(method, "elbo_terms", ()))
    per_example: list[Tensor] = []
    per_term: list[list[Tensor]] = [[] for _ in term_names]
    total = len(loader) if max_batches is None else min(max_batches, len(loader))
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("evaluating", total=total * repeats)
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            kwargs = dict(eval_kwargs or {}) | task.model_kwargs(y, train=False)
            if accepts_gen:
                kwargs["generator"] = gen
            runs = []
            for _ in range(repeats):
                out = method.elbo(x, **kwargs)
                runs.append(torch.stack([o.double().cpu() for o in out[1:2 + len(term_names)]]))
                bar.advance(job)
            mean = torch.stack(runs).mean(0)
            per_example.append(mean[0])
            for j in range(len(term_names)):
                per_term[j].append(mean[1 + j])
    bpd = torch.cat(per_example)
    n, dim = len(bpd), math.prod(method.data_shape)
    se = (bpd.std() / math.sqrt(n)).item() if n > 1 else float("nan")
    nats_dim = bpd.mean().item() * math.log(2)
    metrics = {"bpd": bpd.mean().item(), "bpd_se": se, "nats_per_dim": nats_dim,
               "nats_per_dim_se": se * math.log(2), "nats_per_example": nats_dim * dim,
               "nats_per_example_se": se * math.log(2) * dim}
    for name, values in zip(term_names, per_term, strict=True):
        v = torch.cat(values) / dim
        v_se = (v.std() / math.sqrt(n)).item() if n > 1 else float("nan")
        metrics |= {f"{name}_nats_per_dim": v.mean().item(), f"{name}_nats_per_dim_se": v_se}
    if getattr(task, "num_labels", 0):
        # A class-conditional model with the uniform label prior p(y) = 1/K models
        # p(x) = Σ_y p(y)·p(x|y) ≥ p(y)·p(x|y): −log2 p(x) ≤ −log2 p(x|y) + log2 K per example.
        metrics |= {"conditional": True, "label_prior": "uniform", "num_labels": task.num_labels,
                    "bpd_marginal": metrics["bpd"] + math.log2(task.num_labels) / dim,
                    "bpd_marginal_se": se}
    if keep_per_example:
        metrics["per_example_bpd"] = bpd
    return metrics | {"n_examples": n, "repeats": repeats, "eval_kwargs": dict(eval_kwargs or {})}


def _json_safe(value: Any, key: str, path: Path) -> Any:
    """``value`` with an undefined standard error (one example) as null; any other NaN or
    infinity is refused."""
    if isinstance(value, dict):
        return {k: _json_safe(v, k, path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, key, path) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        if key.endswith("_se") and math.isnan(value):
            return None
        raise NonFiniteError(f"refusing to write {path}: {key} is {value}")
    return value


def write_json(data: dict, path: str | Path) -> Path:
    """``data`` as JSON, atomically; NaN/inf refused (a standard error of one example: null)."""
    path = Path(path)
    return write_text(path, json.dumps(_json_safe(data, "", path), indent=2) + "\n")


def sample_labels(task, n: int, label: int | None = None) -> dict[str, Tensor]:
    """Class labels for conditional sampling: one class per grid row, or ``label`` for all
    (refused, not ignored, by a model without classes or outside its classes)."""
    if label is not None:
        check_label(task.num_labels, label)
    if not task.num_labels:
        return {}
    device = next(task.method.parameters()).device
    if label is not None:
        labels = torch.full((n,), int(label), device=device)
    else:
        labels = torch.arange(n, device=device) % task.num_labels
    return {"class_labels": labels}


def check_label(num_labels: int, label: int) -> None:
    """A ValueError naming the fix unless ``label`` is a class of a model with ``num_labels``."""
    if not num_labels:
        raise ValueError(f"label={label} needs a class-conditional model (trained with "
                         "conditional.enabled=true); this one has no classes, drop label=")
    if not 0 <= label < num_labels:
        raise ValueError(f"label={label} is not a class of this model; it has {num_labels} "
                         f"classes: label=0 … {num_labels - 1}")


def write_samples(method: nn.Module, info, out_dir: str | Path, n: int = 64,
                  sample_kwargs: dict | None = None, model_kwargs: dict | None = None,
                  frames: int = 20, animation: str = "gif", seed: int = 0) -> dict[str, Path]:
    """Draw ``n`` samples and write the raw tensor, a picture and an animation of sampling."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(method.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    history = method.sample_history(n, generator=gen, **(sample_kwargs or {}),
                                    **(model_kwargs or {}))
    x = history["x"]
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"sampling produced non-finite values; nothing written to {out}")
    paths = {"tensor": out / "samples.pt"}
    atomic_write(paths["tensor"], lambda f: torch.save(x.cpu(), f))
    steps = _frames(history, x, frames)
    kind, num_classes = info.kind, getattr(info, "num_classes", None)
    if kind == "text":
        decode = info.decode
        text = [decode(row) for row in x.cpu()]
        paths["text"] = write_text(out / "samples.txt", "\n\n".join(text) + "\n")
        return paths
    if kind == "image":
        paths["image"] = _save(viz.save_image,
                               viz.image_grid(viz.to_unit_images(x, num_classes)),
                               out / "samples.png")
        pictures = [viz.image_grid(viz.to_unit_images(f, num_classes)) for f in steps]
    elif x.shape[1] in (2, 3):
        lims = (-3.5, 3.5)
        try:
            picture = viz.scatter(x, title="samples", lims=lims)
        except MissingDependency as e:
            print(f"no samples.png: {e}")
            return paths
        paths["image"] = _save(viz.save_image, picture, out / "samples.png")
        pictures = [viz.scatter(f, title=f"step {i + 1}/{len(steps)}", lims=lims)
                    for i, f in enumerate(steps)]
    else:
        return paths
    if animation != "none" and len(pictures) > 1:  # about 3 s, whatever the frame count
        duration = max(40, min(150, 3000 // len(pictures)))
        paths["animation"] = _save(partial(viz.save_animation, duration_ms=duration), pictures,
                                   out / f"sampling.{animation}")
    return paths


def _save(save, data, path: Path) -> Path:
    """``save(data, tmp)`` to a temporary file renamed to ``path`` (atomic)."""
    with atomic_path(path) as tmp:
        save(data, tmp)
    return path


def _frames(history: dict[str, Tensor], x: Tensor, n_frames: int) -> list[Tensor]:
    for key in FRAME_KEYS:
        v = history.get(key)
        if v is not None and v.ndim == x.ndim + 1 and v.shape[1:] == x.shape:
            return list(viz.pick_frames_by_change(v, n_frames))
        if v is not None and v.ndim == x.ndim + 2 and v.shape[1:-1] == x.shape:  # probabilities
            return list(viz.pick_frames_by_change(v, n_frames))
    return [x]
