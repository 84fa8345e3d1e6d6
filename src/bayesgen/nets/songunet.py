"""EDM's DDPM++ U-Net (``SongUNet`` in NVlabs/edm), used by Inflationary Flows on images."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bayesgen.nets.bfn_unet import vdm_time_embedding
from bayesgen.nets.embeddings import LabelEmbedding, SinusoidalEmbedding
from bayesgen.nets.unet import AttentionBlock

SKIP_SCALE = math.sqrt(0.5)


def group_norm(channels: int) -> nn.GroupNorm:
    """EDM's GroupNorm: 32 groups of at least 4 channels, eps 1e-6."""
    return nn.GroupNorm(min(32, channels // 4), channels, eps=1e-6)


def resample(x: Tensor, up: bool, down: bool) -> Tensor:
    """DDPM++'s [1, 1] resampling filter: 2×2 box average down, nearest-neighbour up."""
    if down:
        return F.avg_pool2d(x, 2)
    if up:
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return x


class SongBlock(nn.Module):
    """DDPM++ residual block, optionally resampling and followed by self-attention.

    h = conv1(dropout(SiLU(GN(conv0(resample(SiLU(GN(x)))) + A·c)))); x ← (h + skip(x))·√½;
    with attention x ← (x + attn(x))·√½.
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float,
                 up: bool = False, down: bool = False, attention: bool = False):
        super().__init__()
        self.in_ch, self.up, self.down = in_ch, up, down
        self.norm0 = group_norm(in_ch)
        self.conv0 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.affine = nn.Linear(emb_dim, out_ch)
        self.norm1 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        resampling = up or down
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch or resampling else None
        self.attn = None
        if attention:
            norm = group_norm(out_ch)
            self.attn = AttentionBlock(out_ch, 1, groups=norm.num_groups, eps=norm.eps)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv0(resample(F.silu(self.norm0(x)), self.up, self.down))
        h = F.silu(self.norm1(h + self.affine(c)[..., None, None]))
        h = self.conv1(self.dropout(h))
        x = resample(x, self.up, self.down)
        x = (h + (self.skip(x) if self.skip is not None else x)) * SKIP_SCALE
        return self.attn(x) * SKIP_SCALE if self.attn is not None else x


class EDMPositionalEmbedding(nn.Module):
    """EDM's DDPM++ time embedding (``PositionalEmbedding(endpoint=True)`` followed by
    SongUNet's sin/cos swap): [sin(s·t·ω_i), cos(s·t·ω_i)], ω_i = 10⁴^(−i/(half − 1))."""

    def __init__(self, dim: int, scale: float = 1.0):
        super().__init__()
        self.dim, self.scale = dim, scale

    def forward(self, t: Tensor) -> Tensor:
        return vdm_time_embedding(t, self.dim, offset=0.0, scale=self.scale)


class SongUNet(nn.Module):
    """DDPM++ (Song et al. 2021) as reimplemented by EDM (Karras et al. 2022).

    Encoder: conv, then per level (a downsampling block and) ``num_blocks`` blocks; decoder:
    per level (two blocks, the first with attention, at the bottom; an upsampling block
    elsewhere) and ``num_blocks + 1`` blocks on skip-concatenated features, then
    GroupNorm → SiLU → conv. Attention at ``attn_resolutions`` (pixels). At EDM's CIFAR-10
    setting (the defaults) it has 55.7M parameters. The time input is used as is
    (``time_scale=1``): EDM and Inflationary Flows pass c_noise = 999·t. ``augment_dim`` > 0
    adds EDM's augmentation-label input: ``augment_labels`` (B, augment_dim) from the
    augmentation pipeline enter the embedding through a bias-free Linear (none at sampling).
    ``time_embedding="edm"`` embeds time exactly as EDM's SongUNet (frequencies
    10⁴^(−i/(half − 1)), sin before cos; what ``bayesgen convert format=if-edm`` needs);
    ``"ddpm"`` (the default) is the DDPM embedding ([cos, sin], 10⁴^(−i/half)).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        resolution: int = 32,
        model_channels: int = 128,
        channel_mult: Sequence[int] = (2, 2, 2),
        num_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.13,
        num_classes: int = 0,
        time_scale: float = 1.0,
        augment_dim: int = 0,
        time_embedding: str = "ddpm",
    ):
        super().__init__()
        if time_embedding not in ("ddpm", "edm"):
            raise ValueError(f"time_embedding must be ddpm or edm, not {time_embedding!r}")
        emb_dim = 4 * model_channels
        self.time_emb = (SinusoidalEmbedding(model_channels, time_scale) if time_embedding == "ddpm"
                         else EDMPositionalEmbedding(model_channels, time_scale))
        self.label_emb = LabelEmbedding(num_classes, model_channels)
        self.augment_emb = (nn.Linear(augment_dim, model_channels, bias=False)
                            if augment_dim else None)
        self.map = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(),
                                 nn.Linear(emb_dim, emb_dim), nn.SiLU())
        block = dict(emb_dim=emb_dim, dropout=dropout)

        self.encode = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.enc = nn.ModuleList()
        skips, ch = [model_channels], model_channels
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            if level > 0:
                self.enc.append(SongBlock(ch, ch, down=True, **block))
                skips.append(ch)
            for _ in range(num_blocks):
                self.enc.append(SongBlock(ch, model_channels * mult,
                                          attention=res in attn_resolutions, **block))
                ch = model_channels * mult
                skips.append(ch)

        self.dec = nn.ModuleList()  # blocks whose in_ch exceeds the running width take a skip
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = resolution >> level
            if level == len(channel_mult) - 1:
                self.dec.append(SongBlock(ch, ch, attention=True, **block))
                self.dec.append(SongBlock(ch, ch, **block))
            else:
                self.dec.append(SongBlock(ch, ch, up=True, **block))
            for i in range(num_blocks + 1):
                attention = i == num_blocks and res in attn_resolutions
                self.dec.append(SongBlock(ch + skips.pop(), model_channels * mult,
                                          attention=attention, **block))
                ch = model_channels * mult
        self.out = nn.Sequential(group_norm(ch), nn.SiLU(),
                                 nn.Conv2d(ch, out_channels or in_channels, 3, padding=1))
        self._edm_init()

    def _edm_init(self) -> None:
        """Xavier-uniform weights, zero biases; residual branch ends and output start ≈ 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, SongBlock):
                    m.conv1.weight.mul_(1e-5)
                if isinstance(m, AttentionBlock):
                    m.qkv.weight.mul_(math.sqrt(0.2))
                    m.proj.weight.mul_(1e-5)
            self.out[-1].weight.mul_(1e-5)

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None,
                augment_labels: Tensor | None = None) -> Tensor:
        c = self.time_emb(t)
        c = c + self.label_emb(class_labels, c)
        if augment_labels is not None:
            if self.augment_emb is None:
                raise ValueError("got augment_labels but the network has no augmentation input; "
                                 "build it with augment_dim=9 (EDM's pipeline)")
            c = c + self.augment_emb(augment_labels.to(c.dtype))
        c = self.map(c)
        h = self.encode(x)
        skips = [h]
        for block in self.enc:
            h = block(h, c)
            skips.append(h)
        for block in self.dec:
            if block.in_ch != h.shape[1]:
                h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, c)
        return self.out(h)
