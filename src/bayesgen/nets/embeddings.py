"""Embeddings shared by the networks: time, Fourier features of the input, class labels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _compute_dtype(x: Tensor) -> torch.dtype:
    """Sines of large arguments need at least float32 (float64 stays float64)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class SinusoidalEmbedding(nn.Module):
    """[cos(s·t·ω_i), sin(s·t·ω_i)] with ω_i = max_period^(−i/half), i = 0 … half − 1.

    The Transformer / DDPM embedding of the scaled time s·t. With t ∈ [0, 1] the default
    ``scale=1000`` gives DDPM's integer-step range; use ``scale=1`` when the caller already
    passes a noise label of that range (EDM's and Inflationary Flows' c_noise = 999·t) or for
    integer positions.
    """

    def __init__(self, dim: int, scale: float = 1000.0, max_period: float = 10_000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"SinusoidalEmbedding needs an even dim, got {dim}")
        self.dim, self.scale, self.max_period = dim, scale, max_period

    def forward(self, t: Tensor) -> Tensor:
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}; flatten it first")
        half = self.dim // 2
        dtype = _compute_dtype(t)
        omega = torch.exp(
            -math.log(self.max_period) * torch.arange(half, device=t.device, dtype=dtype) / half
        )
        angle = (self.scale * t.to(dtype))[:, None] * omega
        return torch.cat([angle.cos(), angle.sin()], dim=-1).to(t.dtype)


class NyquistEmbedding(nn.Module):
    """BSI's time embedding: sin(2π·f_i·t), cos(2π·f_i·t) interleaved, for ``size // 2``
    frequencies f_i spaced geometrically from 1/8 to (expected_rate / 2) / (2φ), φ the golden
    ratio: the slowest feature is nearly linear on [0, 1], the fastest stays below the Nyquist
    frequency of ``expected_rate`` evaluations per unit time. ``t`` is used as given (∈ [0, 1]).
    """

    def __init__(self, size: int = 32, expected_rate: float = 100.0):
        super().__init__()
        if size % 2:
            raise ValueError(f"NyquistEmbedding needs an even size, got {size}")
        self.size = size
        golden = (1 + math.sqrt(5)) / 2
        freqs = torch.logspace(math.log10(1 / 8), math.log10(expected_rate / 2 / (2 * golden)),
                               size // 2, dtype=torch.float64)
        self.register_buffer("omega", (2 * math.pi * freqs).float(), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}; flatten it first")
        dtype = _compute_dtype(t)
        angle = t.to(dtype)[:, None] * self.omega.to(dtype)
        return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1).to(t.dtype)


class FourierFeatures(nn.Module):
    """VDM's Fourier features sin(2π·2ⁿ·x), cos(2π·2ⁿ·x) of every input channel.

    Maps (B, C, ...) to (B, C·2·len(exponents), ...), ordered channel-major; works for images
    (B, C, H, W) and flat data (B, D) alike. Concatenate the result to the input channels.
    """

    def __init__(self, exponents: Sequence[int] = (6, 7, 8)):
        super().__init__()
        self.exponents = tuple(exponents)

    @property
    def multiplier(self) -> int:
        """Output channels per input channel."""
        return 2 * len(self.exponents)

    def forward(self, x: Tensor) -> Tensor:
        dtype = _compute_dtype(x)
        freqs = 2 * math.pi * 2.0 ** torch.tensor(self.exponents, device=x.device, dtype=dtype)
        angle = x.to(dtype).unsqueeze(2) * freqs.view(1, 1, -1, *[1] * (x.ndim - 2))
        features = torch.cat([angle.sin(), angle.cos()], dim=2)  # (B, C, 2N, ...)
        return features.flatten(1, 2).to(x.dtype)


class LabelEmbedding(nn.Module):
    """Learned class embedding with ``num_classes + 1`` rows; the last row is the null label.

    Labels ``-1`` (any negative label) or ``num_classes`` select the null row, used for label
    dropout and classifier-free guidance; ``class_labels=None`` means all null. With
    ``num_classes=0`` the module holds no parameters, returns zeros and refuses labels.
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, dim) if num_classes > 0 else None

    def forward(self, class_labels: Tensor | None, like: Tensor) -> Tensor:
        """Embeddings (B, dim) shaped, typed and placed like ``like``."""
        if self.embedding is None:
            if class_labels is not None:
                raise ValueError(
                    "this network is unconditional (num_classes=0) but got class_labels; "
                    "build it with num_classes=... or drop class_labels"
                )
            return torch.zeros_like(like)
        if class_labels is None:
            class_labels = torch.full(like.shape[:1], self.num_classes, device=like.device)
        if class_labels.shape != like.shape[:1]:
            raise ValueError(
                f"class_labels must have shape ({like.shape[0]},), got {tuple(class_labels.shape)}"
            )
        class_labels = class_labels.long()
        null = torch.full_like(class_labels, self.num_classes)
        return self.embedding(torch.where(class_labels < 0, null, class_labels)).to(like.dtype)
