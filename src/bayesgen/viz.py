"""Pictures of data and samples: image grids, 2-D/3-D scatter plots, animations, text."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid


def to_unit_images(x: Tensor, num_classes: int | None = None) -> Tensor:
    """Map samples to grey/RGB values in [0, 1]: class indices → index/(K − 1), class
    probabilities (trailing K) → expected index/(K − 1), continuous data in [−1, 1] → (x + 1)/2."""
    x = x.detach().cpu()
    if num_classes and x.is_floating_point() and x.ndim >= 2 and x.shape[-1] == num_classes:
        levels = torch.arange(num_classes, dtype=x.dtype)
        return (x * levels).sum(-1) / (num_classes - 1)
    if num_classes and not x.is_floating_point():
        return x.float() / (num_classes - 1)
    if num_classes:  # probabilities of the last class, e.g. P(pixel on) for K = 2
        return x.float().clamp(0, 1)
    return ((x.float() + 1) / 2).clamp(0, 1)


def image_grid(images: Tensor, nrow: int | None = None, min_size: int = 32) -> np.ndarray:
    """(n, C, H, W) images in [0, 1] → one uint8 (H', W', 3) grid, upscaled so that each image
    is at least ``min_size`` pixels wide."""
    n = images.shape[0]
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    scale = max(1, -(-min_size // images.shape[-1]))
    if scale > 1:
        images = images.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_image(array: np.ndarray, path: str | Path) -> Path:
    Image.fromarray(array).save(path)
    return Path(path)


def scatter(points: Tensor, reference: Tensor | None = None, title: str = "",
            lims: Sequence[float] | None = None) -> np.ndarray:
    """A 2-D or 3-D scatter plot (reference points in grey behind) rendered to an RGB array.
    Drawn on a bare ``Figure`` (no pyplot), so the caller's matplotlib backend, e.g. a
    notebook's inline one, stays as it is."""
    from bayesgen.extras import require

    require("matplotlib", "plots", "a scatter plot of 2-D/3-D samples")
    from matplotlib.figure import Figure

    pts = points.detach().cpu().float().numpy()
    dim = pts.shape[1]
    fig = Figure(figsize=(5, 5), dpi=80)
    ax = fig.add_subplot(projection="3d" if dim == 3 else None)
    if reference is not None:
        ref = reference.detach().cpu().float().numpy()
        ax.scatter(*ref[:, :dim].T, s=2, c="0.75", label="data")
    ax.scatter(*pts[:, :dim].T, s=2, c="tab:blue", label="samples")
    if lims is not None:
        ax.set_xlim(*lims)
        ax.set_ylim(*lims)
    ax.set_title(title)
    if reference is not None:
        ax.legend(loc="upper right")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return np.asarray(Image.open(buf).convert("RGB"))


def save_animation(frames: Sequence[np.ndarray], path: str | Path, duration_ms: int = 150,
                   hold_last_ms: int = 1500) -> Path:
    """An animated GIF or WebP (by the suffix of ``path``) of uint8 RGB frames."""
    path = Path(path)
    if path.suffix.lower() not in (".gif", ".webp"):
        raise ValueError(f"animation must be a .gif or .webp file, got {path.name}")
    images = [Image.fromarray(f) for f in frames]
    durations = [duration_ms] * (len(images) - 1) + [hold_last_ms]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)
    return path


def pick_frames(history: Tensor, n_frames: int) -> Tensor:
    """``n_frames`` evenly spaced entries along dim 0 of a stacked history, first and last kept."""
    idx = torch.linspace(0, history.shape[0] - 1, min(n_frames, history.shape[0])).round().long()
    return history[idx]


def pick_frames_by_change(history: Tensor, n_frames: int) -> Tensor:
    """``n_frames`` entries along dim 0 of a stacked history, first and last kept, spaced evenly
    in the accumulated change (mean absolute difference between consecutive entries) rather
    than in steps: a sampler whose prediction settles early (continuous BFN, whose accuracy
    β(t) = σ1^(−2t) − 1 grows exponentially in t) is shown while it settles. A steady change
    gives evenly spaced steps; a history that does not change falls back to even spacing."""
    n = history.shape[0]
    if n <= n_frames:
        return history
    flat = history.detach().reshape(n, -1).double()
    change = torch.cat([flat.new_zeros(1), (flat[1:] - flat[:-1]).abs().mean(1).cumsum(0)])
    if not bool(torch.isfinite(change).all()) or change[-1] <= 0:
        return pick_frames(history, n_frames)
    targets = torch.linspace(0, float(change[-1]), n_frames, dtype=torch.float64)
    idx = torch.searchsorted(change, targets).clamp(max=n - 1)
    chosen: list[int] = []
    for k, i in enumerate(idx.tolist()):  # strictly increasing, room left for the rest
        chosen.append(0 if k == 0 else min(max(i, chosen[-1] + 1), n - n_frames + k))
    chosen[-1] = n - 1
    return history[torch.tensor(chosen, device=history.device)]
