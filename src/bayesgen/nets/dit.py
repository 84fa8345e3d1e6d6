"""Diffusion Transformer (Peebles & Xie 2023) in the variant used by BSI on ImageNet."""

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


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class SelfAttention(nn.Module):
    """Non-causal multi-head self-attention over tokens (B, N, D)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads, self.dropout = num_heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d",
                            three=3, h=self.num_heads)
        a = F.scaled_dot_product_attention(q, k, v,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(rearrange(a, "b h n d -> b n (h d)"))


class DiTBlock(nn.Module):
    """adaLN-Zero block: x += gate·attn(modulate(LN(x))); x += gate·MLP(modulate(LN(x))).

    The six modulation vectors come from Linear → SiLU → Linear of the conditioning (BSI's
    variant: a per-block Linear in front of the SiLU); the last Linear starts at zero, so every
    block starts as the identity.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=eps)
        self.attn = SelfAttention(dim, num_heads, dropout)
        hidden = int(mlp_ratio * dim)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, hidden),
                                 nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.modulation = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, -1)
        x = x + gate1 * self.attn(modulate(self.norm(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.norm(x), shift2, scale2))


def nyquist_2d(dim: int, grid_h: int, grid_w: int, rate: float) -> Tensor:
    """BSI's fixed 2-D patch positions (N, dim): ``NyquistEmbedding(dim // 2, rate)`` (BSI:
    rate = the image size in pixels) of the row and of the column position, each on [0, 1]
    (``linspace`` over the patches), concatenated."""
    emb = NyquistEmbedding(dim // 2, rate)
    rows = emb(torch.linspace(0, 1, grid_h)).repeat_interleave(grid_w, dim=0)
    cols = emb(torch.linspace(0, 1, grid_w)).repeat(grid_h, 1)
    return torch.cat([rows, cols], dim=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> Tensor:
    """Fixed 2-D position embedding (N, dim): half the channels embed the row, half the column."""
    emb = SinusoidalEmbedding(dim // 2, scale=1.0)
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([emb(rows.flatten().float()), emb(cols.flatten().float())], dim=1)


class DiT(nn.Module):
    """Patchify → linear patch embedding + fixed sinusoidal 2-D positions → ``depth`` adaLN-Zero
    blocks conditioned on a sinusoidal time embedding (plus class embedding) → LayerNorm →
    linear → unpatchify.

    Follows BSI's DiT: the raw sinusoidal embedding feeds a per-block Linear → SiLU → Linear
    modulation (no shared time MLP), dropout on attention weights and before the MLP, and a
    plain LayerNorm + Linear head (zero-initialised). DiT-L/2 (the defaults) on 3×32×32 has
    478.6M parameters. Optional VDM Fourier features of the input (BSI's configs use 6, 7, 8).
    ``embeddings="bsi"`` computes BSI's own function (what ``bayesgen convert
    format=bsi-lightning`` needs): Nyquist time embedding (rate ``time_scale``, BSI: 1000) and
    patch positions (``nyquist_2d``), block LayerNorm eps 1e-5; ``"sinusoidal"`` (the default)
    keeps the sinusoidal embeddings and eps 1e-6 of earlier bayesgen runs.
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 3,
        out_channels: int | None = None,
        hidden_size: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        num_classes: int = 0,
        fourier_exponents: Sequence[int] = (),
        time_scale: float = 1000.0,
        embeddings: str = "sinusoidal",
    ):
        super().__init__()
        if embeddings not in ("sinusoidal", "bsi"):
            raise ValueError(f"embeddings must be sinusoidal or bsi, not {embeddings!r}")
        if input_size % patch_size:
            raise ValueError(f"input_size {input_size} is not divisible by patch_size {patch_size}")
        self.input_size, self.patch_size = input_size, patch_size
        self.out_channels = out_channels or in_channels
        self.fourier = FourierFeatures(fourier_exponents)
        grid = input_size // patch_size
        patch_in = in_channels * (1 + self.fourier.multiplier) * patch_size**2
        self.patch_embed = nn.Linear(patch_in, hidden_size)
        bsi = embeddings == "bsi"
        positions = (nyquist_2d(hidden_size, grid, grid, input_size) if bsi else
                     sincos_2d(hidden_size, grid, grid))
        self.register_buffer("pos_embed", positions, persistent=False)
        self.time_emb = (NyquistEmbedding(hidden_size, time_scale) if bsi else
                         SinusoidalEmbedding(hidden_size, time_scale))
        self.label_emb = LabelEmbedding(num_classes, hidden_size)
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, dropout, eps=1e-5 if bsi else 1e-6)
            for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(hidden_size),
                                  nn.Linear(hidden_size, self.out_channels * patch_size**2))
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
        nn.init.zeros_(self.head[-1].weight)

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"DiT built for {self.input_size}×{self.input_size} inputs, "
                             f"got {tuple(x.shape[-2:])}; set input_size")
        c = self.time_emb(t)
        c = c + self.label_emb(class_labels, c)
        p = self.patch_size
        x = torch.cat([x, self.fourier(x)], dim=1)
        h = self.patch_embed(rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p))
        h = h + self.pos_embed.to(h.dtype)
        for block in self.blocks:
            h = block(h, c)
        h = self.head(h)
        n = self.input_size // p
        return rearrange(h, "b (h w) (p q c) -> b c (h p) (w q)", h=n, w=n, p=p, q=p)
