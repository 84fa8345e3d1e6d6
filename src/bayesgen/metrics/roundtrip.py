"""Roundtrip error of an invertible map: x -> encode -> decode -> x_back.

`roundtrip_mse` is the Inflationary Flows image metric (calc_roundtrip_mse.py): the squared
error on the 0–255 pixel scale of the images as they would be saved as PNGs, averaged over
samples and dimensions. The reference subtracts *and squares* the uint8 arrays, so each squared
difference is d² mod 256 (numpy sums the uint8 squares in a wider type): the sign wrap of the
subtraction cancels ((256 − d)² ≡ d² mod 256), differences below 16 are exact and larger ones
are reduced (e.g. d = 16 counts 0 instead of 256), so the reference can only under-report.
Here the pixels are subtracted and squared in float64 (`reference_uint8_squared_error` gives
the reference's per-pixel value).
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
    dimensions of (p − p_back)², computed in float64 (no uint8 d² mod 256). Without
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


def reference_uint8_squared_error(p: Tensor, p_back: Tensor) -> Tensor:
    """The reference's per-pixel squared error of uint8 pixels: (p − p_back)² computed in uint8,
    i.e. |p − p_back|² mod 256 (exact below a difference of 16, smaller above), as int64."""
    d = p.to(torch.uint8) - p_back.to(torch.uint8)
    return (d * d).to(torch.int64)
