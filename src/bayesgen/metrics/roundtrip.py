"""Roundtrip error of an invertible map: x -> encode -> decode -> x_back.

`roundtrip_mse` is the Inflationary Flows image metric (calc_roundtrip_mse.py): the squared
error on the 0–255 pixel scale of the images as they would be saved as PNGs, averaged over
samples and dimensions. The reference subtracts the uint8 arrays and so wraps around modulo 256
(e.g. 0 − 1 = 255, squared 65025 instead of 1); here the pixels are subtracted in float64.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from bayesgen.metrics.fid import pixel_values


def roundtrip_mse(x: Tensor, x_back: Tensor, quantize: bool = True,
                  reduction: Literal["mean", "none"] = "mean") -> Tensor:
    """Mean squared error on the 0–255 scale (float64).

    With `quantize` (default) both images become the integer pixels a PNG would hold,
    p = clip(floor(127.5·x + 128), 0, 255) — (x + 1)·127.5 rounded half up and clipped, as EDM
    saves images (uint8 inputs are used as they are) — and MSE = mean over samples and
    dimensions of (p − p_back)², computed in float64 (no uint8 wraparound). Without
    `quantize`: mean of ((x − x_back)·127.5)², neither rounded nor clipped.
    `reduction="none"` returns the per-example mean over dimensions (B,).
    """
    if x.shape != x_back.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_back {tuple(x_back.shape)} differ in shape")
    if quantize:
        diff = pixel_values(x) - pixel_values(x_back)
    else:
        diff = (x.double() - x_back.double()) * 127.5
    per_example = diff.square().flatten(1).mean(1)
    return per_example if reduction == "none" else per_example.mean()


def relative_roundtrip_error(x: Tensor, x_back: Tensor) -> Tensor:
    """‖x − x_back‖₂ / ‖x‖₂ per example (B,), norms over all non-batch dims, in float64."""
    if x.shape != x_back.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_back {tuple(x_back.shape)} differ in shape")
    x, x_back = x.double().flatten(1), x_back.double().flatten(1)
    return torch.linalg.vector_norm(x - x_back, dim=1) / torch.linalg.vector_norm(x, dim=1)
