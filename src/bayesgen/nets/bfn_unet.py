"""The VDM U-Net as BFN's official code builds it for CIFAR-10 (``networks/unet_vdm.py``, from
Dittadi's VDM port, with BFN's input and output adapters)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayesgen.nets.embeddings import FourierFeatures, LabelEmbedding
from bayesgen.nets.unet import AttentionBlock, zero_init


def vdm_time_embedding(t: Tensor, dim: int, offset: float = 1e-3,
                       scale: float = 1000.0) -> Tensor:
    """[sin(s(t + offset)·ω_i), cos(s(t + offset)·ω_i)] with ω_i = 10⁴^(−i/(dim/2 − 1)),
    i = 0 … dim/2 − 1: the VDM code's embedding (note the −1: both 1 and 10⁻⁴ are frequencies);
    BFN adds the offset 1e-3 so that t = 0 is not embedded as all sines zero."""
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}; flatten it first")
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    omega = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=dtype)
                      / max(half - 1, 1))
    angle = (scale * (t.to(dtype) + offset))[:, None] * omega
    return torch.cat([angle.sin(), angle.cos()], dim=-1).to(t.dtype)


class AdditiveResBlock(nn.Module):
    """GroupNorm → SiLU → 3×3 conv → + W·c → GroupNorm → SiLU → dropout → 3×3 conv, plus a
    (1×1-projected) skip. W (no bias) and the last conv start at zero."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0,
                 groups: int = 32):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.cond = zero_init(nn.Linear(emb_dim, out_ch, bias=False))
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.cond(c)[..., None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class BFNVDMUNet(nn.Module):
    """BFN's CIFAR-10 network (``UNetVDM`` with ``FourierImageInputAdapter`` and
    ``OutputAdapter``): no downsampling.

    Input + Fourier features (2π·2ⁿ, n = 5, 6) → 3×3 conv → ``n_blocks`` residual blocks →
    res, attention (1×1 convs), res → ``n_blocks + 1`` residual blocks on features concatenated
    with the down path's inputs and output → GroupNorm → SiLU → 3×3 conv to ``width`` features,
    which are concatenated with the input and mapped per pixel by a Linear (the output adapter)
    to ``out_channels``. Time: ``vdm_time_embedding`` (width features) → Linear → SiLU → Linear
    → SiLU to 4·width, added (projected) after every block's first conv. With
    ``attention_everywhere`` every down/up block also attends. 30,722,188 parameters at 3 → 3
    channels, 30,722,584 at 3 → 6 (BFN's discretized output: means and log-stds).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        width: int = 128,
        n_blocks: int = 32,
        num_heads: int = 1,
        dropout: float = 0.1,
        groups: int = 32,
        fourier_exponents: Sequence[int] = (5, 6),
        attention_everywhere: bool = False,
        num_classes: int = 0,
        time_offset: float = 1e-3,
        time_scale: float = 1000.0,
    ):
        super().__init__()
        emb_dim = 4 * width
        self.width, self.time_offset, self.time_scale = width, time_offset, time_scale
        self.label_emb = LabelEmbedding(num_classes, width)
        self.time_map = nn.Sequential(nn.Linear(width, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim), nn.SiLU())
        self.fourier = FourierFeatures(fourier_exponents)
        self.encode = nn.Conv2d(in_channels * (1 + self.fourier.multiplier), width, 3, padding=1)

        def block(ch_in: int) -> nn.ModuleList:
            attn = [AttentionBlock(width, num_heads, groups)] if attention_everywhere else []
            return nn.ModuleList([AdditiveResBlock(ch_in, width, emb_dim, dropout, groups), *attn])

        self.down = nn.ModuleList(block(width) for _ in range(n_blocks))
        self.middle = nn.ModuleList([AdditiveResBlock(width, width, emb_dim, dropout, groups),
                                     AttentionBlock(width, num_heads, groups),
                                     AdditiveResBlock(width, width, emb_dim, dropout, groups)])
        self.up = nn.ModuleList(block(2 * width) for _ in range(n_blocks + 1))
        self.out = nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(),
                                 zero_init(nn.Conv2d(width, width, 3, padding=1)))
        self.head = nn.Conv2d(in_channels + width, out_channels or in_channels, 1)

    @staticmethod
    def _run(layers: nn.ModuleList, h: Tensor, c: Tensor) -> Tensor:
        h = layers[0](h, c)
        return layers[1](h) if len(layers) > 1 else h

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        e = vdm_time_embedding(t, self.width, self.time_offset, self.time_scale)
        c = self.time_map(e + self.label_emb(class_labels, e))
        h = self.encode(torch.cat([x, self.fourier(x)], dim=1))
        skips = [h]
        for layers in self.down:
            h = self._run(layers, h, c)
            skips.append(h)
        first, attn, second = self.middle
        h = second(attn(first(h, c)), c)
        for layers in self.up:
            h = self._run(layers, torch.cat([h, skips.pop()], dim=1), c)
        return self.head(torch.cat([x, self.out(h)], dim=1))
