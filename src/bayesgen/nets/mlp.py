"""Fully connected networks for flat, low-dimensional data (toys, tabular, small vectors)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bayesgen.nets.embeddings import FourierFeatures, LabelEmbedding, SinusoidalEmbedding

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _output_shape(data_shape: Sequence[int], out_features: int | None,
                  out_channels: int | None = None) -> tuple[int, ...]:
    """data_shape with its last axis replaced by ``out_features`` and its first (the channels
    of an image) by ``out_channels`` (default: unchanged)."""
    shape = list(data_shape)
    shape[-1] = out_features or shape[-1]
    if out_channels:
        if len(shape) < 2:
            raise ValueError("out_channels needs data with a channel axis, e.g. (C, H, W)")
        shape[0] = out_channels
    return tuple(shape)


class MLP(nn.Module):
    """BSI's denoising MLP: flatten x, concatenate the time embedding (plus the class
    embedding) and Fourier features of x, ``depth`` hidden layers of width ``hidden``.

    The output has shape ``(B, *data_shape)``; ``out_features`` replaces the size of the last
    axis, i.e. ``(B, *data_shape[:-1], out_features)`` (e.g. data (2,) and out_features=4 for
    a mean and a log-std per dimension gives (B, 4); data (L, K) gives per-position outputs);
    ``out_channels`` replaces the channels of images, e.g. (2, 8, 8) for (1, 8, 8) digits.
    ``dropout`` > 0 adds dropout after every hidden layer (small data sets: the digits).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        hidden: int = 256,
        depth: int = 2,
        time_dim: int = 32,
        time_scale: float = 1000.0,
        fourier_exponents: Sequence[int] = (6, 7, 8),
        num_classes: int = 0,
        out_features: int | None = None,
        activation: str = "silu",
        out_channels: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.data_shape = tuple(data_shape)
        self.out_shape = _output_shape(data_shape, out_features, out_channels)
        self.time_emb = SinusoidalEmbedding(time_dim, time_scale)
        self.label_emb = LabelEmbedding(num_classes, time_dim)
        self.fourier = FourierFeatures(fourier_exponents)
        act = ACTIVATIONS[activation]
        widths = [math.prod(data_shape) * (1 + self.fourier.multiplier) + time_dim]
        widths += [hidden] * depth
        layers = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), act(), *([nn.Dropout(dropout)] if dropout else [])]
        self.layers = nn.Sequential(*layers, nn.Linear(widths[-1], math.prod(self.out_shape)))

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        x = x.flatten(1)
        c = self.time_emb(t)
        c = c + self.label_emb(class_labels, c)
        h = self.layers(torch.cat([x, self.fourier(x), c], dim=1))
        return h.unflatten(1, self.out_shape)


class ToyBlock(nn.Module):
    """Pre-norm residual MLP block conditioned by adding a projection of c."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1, self.cond, self.fc2 = (nn.Linear(hidden, hidden) for _ in range(3))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = nn.functional.silu(self.fc1(self.norm(x)) + self.cond(c))
        return x + self.fc2(h)


class ToyNet(nn.Module):
    """Residual MLP for 2-D/3-D toy data with the time (and class) conditioning in every block.

    Default size (1.05M parameters for 2-D data) matches the capacity of the network that the
    Inflationary Flows reference trains on its toys (``ToyConvUNet``, 1.12M). Its time input
    defaults to ``time_scale=1`` because that method passes EDM's c_noise = 999·t.
    Output shape as for ``MLP``.
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        hidden: int = 256,
        depth: int = 5,
        time_scale: float = 1.0,
        fourier_exponents: Sequence[int] = (),
        num_classes: int = 0,
        out_features: int | None = None,
    ):
        super().__init__()
        self.data_shape = tuple(data_shape)
        self.out_shape = _output_shape(data_shape, out_features)
        self.time_emb = SinusoidalEmbedding(hidden, time_scale)
        self.time_mlp = nn.Linear(hidden, hidden)
        self.label_emb = LabelEmbedding(num_classes, hidden)
        self.fourier = FourierFeatures(fourier_exponents)
        self.inp = nn.Linear(math.prod(data_shape) * (1 + self.fourier.multiplier), hidden)
        self.blocks = nn.ModuleList(ToyBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(),
                                 nn.Linear(hidden, math.prod(self.out_shape)))

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        x = x.flatten(1)
        c = self.time_mlp(self.time_emb(t))
        c = nn.functional.silu(c + self.label_emb(class_labels, c))
        h = self.inp(torch.cat([x, self.fourier(x)], dim=1))
        for block in self.blocks:
            h = block(h, c)
        return self.out(h).unflatten(1, self.out_shape)
