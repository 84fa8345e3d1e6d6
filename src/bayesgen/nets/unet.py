"""Convolutional U-Nets: VDM's full-resolution U-Net as BSI builds it, and improved-diffusion's
U-Net with the options BFN's official MNIST network adds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from bayesgen.nets.embeddings import (
    FourierFeatures,
    LabelEmbedding,
    NyquistEmbedding,
    SinusoidalEmbedding,
)


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → condition → GroupNorm → SiLU → dropout → conv, plus skip.

    The conditioning vector c enters as a scale and shift of the second normalization
    (``scale_shift=True``: GN(h)·(1 + s) + b) or is added before it (``False``). The last conv
    starts at zero, so every block starts as its skip connection.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0,
                 groups: int = 32, scale_shift: bool = True):
        super().__init__()
        self.scale_shift = scale_shift
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch if scale_shift else out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        e = self.emb(F.silu(c))[..., None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Residual multi-head self-attention over the pixels: x + proj(attn(GroupNorm(x)))."""

    def __init__(self, channels: int, num_heads: int = 1, groups: int = 32, eps: float = 1e-5):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels, eps=eps)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three h d) x y -> three b h (x y) d",
                            three=3, h=self.num_heads)
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(a, "b h (x y) d -> b (h d) x y", x=x.shape[-2]))


class EmbedSequential(nn.Sequential):
    """nn.Sequential that hands the conditioning vector to its residual blocks."""

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        for layer in self:
            x = layer(x, c) if isinstance(layer, ResBlock) else layer(x)
        return x


class ModulatedResBlock(nn.Module):
    """BSI's residual block: GroupNorm → SiLU → 3×3 conv → h·(1 + scale) + shift → SiLU →
    dropout → 3×3 conv, plus a (1×1-projected) skip; scale and shift are a Linear of the
    conditioning vector. No second normalization and no zero initialisation (PyTorch defaults).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0,
                 groups: int = 32):
        super().__init__()
        self.scale_shift = nn.Linear(emb_dim, 2 * out_ch)
        self.norm = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        scale, shift = self.scale_shift(c)[..., None, None].chunk(2, dim=1)
        h = self.conv1(F.silu(self.norm(x)))
        h = self.conv2(self.dropout(F.silu(h * (1 + scale) + shift)))
        return self.skip(x) + h


class ConvAttention(nn.Module):
    """BSI's attention over the pixels with 3×3 convolutions for q, k, v and the output:
    x + out(attn(GroupNorm(x)))."""

    def __init__(self, channels: int, num_heads: int = 1, groups: int = 32):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 3, padding=1)
        self.out = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(self.norm(x)), "b (three h d) x y -> three b h (x y) d",
                            three=3, h=self.num_heads)
        a = F.scaled_dot_product_attention(q, k, v)
        return x + self.out(rearrange(a, "b h (x y) d -> b (h d) x y", x=x.shape[-2]))


class VDMUNet(nn.Module):
    """The VDM U-Net without downsampling as the BSI repository builds it
    (``bsi/models/vdm_unet.py``, ``DenoisingVDMUNet``), the network of BSI's CIFAR-10 run.

    Input + Fourier features (2π·2ⁿ, n ∈ ``fourier_exponents``) → 3×3 conv → ``n_blocks``
    residual blocks at full resolution → res, attention (3×3 q/k/v and output convs), res →
    ``n_blocks`` residual blocks on the features concatenated with the mirrored down-path
    outputs → 1×1 conv. Time: BSI's Nyquist embedding (``time_size`` features, t as given)
    → Linear → SiLU → Linear → SiLU to ``time_mult·time_size`` features, which enter every block
    as a scale and shift (``ModulatedResBlock``). 28,093,059 parameters at the defaults
    (3 channels).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        width: int = 128,
        n_blocks: int = 32,
        attention: bool = True,
        num_heads: int = 1,
        dropout: float = 0.1,
        fourier_exponents: Sequence[int] = (6, 7, 8),
        num_classes: int = 0,
        groups: int = 32,
        time_size: int = 32,
        time_mult: int = 4,
        expected_rate: float = 100.0,
    ):
        super().__init__()
        emb_dim = time_size * time_mult
        self.time_emb = NyquistEmbedding(time_size, expected_rate)
        self.label_emb = LabelEmbedding(num_classes, time_size)
        self.time_map = nn.Sequential(nn.Linear(time_size, emb_dim), nn.SiLU(),
                                      nn.Linear(emb_dim, emb_dim), nn.SiLU())
        self.fourier = FourierFeatures(fourier_exponents)
        self.encode = nn.Conv2d(in_channels * (1 + self.fourier.multiplier), width, 3, padding=1)
        block = dict(emb_dim=emb_dim, dropout=dropout, groups=groups)
        self.down = nn.ModuleList(ModulatedResBlock(width, width, **block)
                                  for _ in range(n_blocks))
        self.middle = nn.ModuleList([
            ModulatedResBlock(width, width, **block),
            ConvAttention(width, num_heads, groups) if attention else nn.Identity(),
            ModulatedResBlock(width, width, **block),
        ])
        self.up = nn.ModuleList(ModulatedResBlock(2 * width, width, **block)
                                for _ in range(n_blocks))
        self.decode = nn.Conv2d(width, out_channels or in_channels, 1)

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        e = self.time_emb(t)
        c = self.time_map(e + self.label_emb(class_labels, e))
        h = self.encode(torch.cat([x, self.fourier(x)], dim=1))
        skips = []
        for block in self.down:
            h = block(h, c)
            skips.append(h)
        first, attn, second = self.middle
        h = second(attn(first(h, c)), c)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), c)
        return self.decode(h)


class Downsample(nn.Conv2d):
    """Strided 3×3 conv: H → ⌈H/2⌉ (28 → 14 → 7)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, stride=2, padding=1)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 followed by a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ImprovedUNet(nn.Module):
    """The U-Net of improved-diffusion (Nichol & Dhariwal 2021) as used by BFN on MNIST.

    ``len(channel_mult)`` levels of ``num_res_blocks`` residual blocks with a strided-conv
    downsampling between levels, a middle block (res, attention, res), and a mirrored up path
    of ``num_res_blocks + 1`` blocks per level on skip-concatenated features.
    ``attention_resolutions`` lists downsampling *factors* (1 = input resolution, 2 = half, …)
    whose blocks get attention, as in improved-diffusion's ``UNetModel``; the default (and
    BFN's [8, 16] on 28×28 input) leaves attention in the middle block only. Spatial sizes
    must halve evenly except at the last level (28 → 14 → 7 works).

    Options of BFN's official MNIST network (``networks/unet_improved.py`` with its
    ``FourierImageInputAdapter``; all three on there): ``time_channel`` appends 2t − 1 to the
    input as one more channel; ``project_input`` maps every pixel's input channels linearly to
    ``model_channels`` before the first conv; ``skip`` concatenates that (projected) input to
    the output conv's ``model_channels`` features and maps them per pixel (a Linear) to
    ``out_channels``. BFN's MNIST net also scales time by 4000 (``time_scale``): 24,808,961
    parameters at in_channels 1, out_channels 1 with the three options on.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        num_heads: int = 4,
        num_classes: int = 0,
        scale_shift: bool = False,
        time_scale: float = 1000.0,
        time_channel: bool = False,
        project_input: bool = False,
        skip: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or in_channels
        self.time_channel = time_channel
        in_channels += int(time_channel)
        self.project = nn.Conv2d(in_channels, model_channels, 1) if project_input else None
        if project_input:
            in_channels = model_channels
        emb_dim = 4 * model_channels
        self.time_emb = nn.Sequential(
            SinusoidalEmbedding(model_channels, time_scale),
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim),
        )
        self.label_emb = LabelEmbedding(num_classes, emb_dim)

        def res(ch_in: int, ch_out: int) -> ResBlock:
            return ResBlock(ch_in, ch_out, emb_dim, dropout, scale_shift=scale_shift)

        def attention(ch: int, ds: int) -> list[nn.Module]:
            return [AttentionBlock(ch, num_heads)] if ds in attention_resolutions else []

        self.down = nn.ModuleList(
            [EmbedSequential(nn.Conv2d(in_channels, model_channels, 3, padding=1))])
        chans, ch, ds = [model_channels], model_channels, 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(EmbedSequential(res(ch, mult * model_channels),
                                                 *attention(mult * model_channels, ds)))
                ch = mult * model_channels
                chans.append(ch)
            if level < len(channel_mult) - 1:
                self.down.append(EmbedSequential(Downsample(ch)))
                chans.append(ch)
                ds *= 2

        self.middle = EmbedSequential(res(ch, ch), AttentionBlock(ch, num_heads), res(ch, ch))

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [res(ch + chans.pop(), mult * model_channels)]
                ch = mult * model_channels
                layers += attention(ch, ds)
                if level > 0 and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.up.append(EmbedSequential(*layers))

        out_conv = nn.Conv2d(ch, model_channels if skip else out_channels, 3, padding=1)
        self.out = nn.Sequential(nn.GroupNorm(32, ch), nn.SiLU(), zero_init(out_conv))
        self.head = nn.Conv2d(in_channels + model_channels, out_channels, 1) if skip else None

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        c = self.time_emb(t)
        c = c + self.label_emb(class_labels, c)
        if self.time_channel:
            plane = (2 * t - 1).to(x.dtype).view(-1, 1, *[1] * (x.ndim - 2))
            x = torch.cat([x, plane.expand(-1, 1, *x.shape[2:])], dim=1)
        if self.project is not None:
            x = self.project(x)
        skips = []
        h = x
        for layer in self.down:
            h = layer(h, c)
            skips.append(h)
        h = self.middle(h, c)
        for layer in self.up:
            h = layer(torch.cat([h, skips.pop()], dim=1), c)
        h = self.out(h)
        return h if self.head is None else self.head(torch.cat([x, h], dim=1))
