"""Non-causal GPT-style transformer for sequences of class probabilities (BFN on text8)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bayesgen.nets.dit import SelfAttention
from bayesgen.nets.embeddings import LabelEmbedding, SinusoidalEmbedding


class Block(nn.Module):
    """Pre-LayerNorm transformer block (nanoGPT) without a causal mask."""

    def __init__(self, n_embd: int, n_head: int, dropout: float = 0.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = SelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dropout(self.attn(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))


def bfn_position_encoding(seq_len: int, dim: int, base: float = 1000.0) -> Tensor:
    """BFN's fixed text positions (``utils_model.pe_encode``): even features
    sin(p / base^(j/dim)) at even j, odd features cos(p / base^(j/dim)) at odd j. It departs
    from "Attention is all you need" (base 10⁴, one exponent per sin/cos pair);
    ``Transformer(position_encoding="transformer")`` gives that one."""
    pos = torch.arange(seq_len, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / base ** (j / dim)
    return torch.where(j % 2 == 0, angle.sin(), angle.cos()).float()


class Transformer(nn.Module):
    """BFN's text8 network (``networks/transformer.py``, nanoGPT without a causal mask, with
    the ``TextInputAdapter``): (B, L, K) probabilities θ → (B, L, K) logits.

    Tokens: Linear(2θ − 1) + fixed positions + Linear(2t − 1) (+ a class embedding);
    ``n_layer`` pre-LN blocks; a final LayerNorm whose output is concatenated with the input
    tokens (``skip``) before the linear head. ``vocab_size`` is K (27 for text8);
    ``num_classes`` the number of *conditioning* classes. 170,175,003 parameters at the
    defaults; nanoGPT initialisation. ``time_embedding="sinusoidal"`` and
    ``position_encoding="transformer"`` give bayesgen's earlier variant (a sinusoidal time
    embedding through a Linear, the paper's positions; 170,764,059 parameters).
    """

    def __init__(
        self,
        vocab_size: int = 27,
        seq_len: int = 256,
        n_layer: int = 24,
        n_head: int = 12,
        n_embd: int = 768,
        dropout: float = 0.0,
        num_classes: int = 0,
        skip: bool = True,
        time_embedding: str = "linear",
        position_encoding: str = "bfn",
        time_scale: float = 1000.0,
    ):
        super().__init__()
        if time_embedding not in ("linear", "sinusoidal"):
            raise ValueError(f"time_embedding must be linear or sinusoidal, not {time_embedding!r}")
        if position_encoding not in ("bfn", "transformer"):
            raise ValueError("position_encoding must be bfn or transformer, "
                             f"not {position_encoding!r}")
        self.vocab_size, self.seq_len, self.skip = vocab_size, seq_len, skip
        self.embed = nn.Linear(vocab_size, n_embd)
        positions = (bfn_position_encoding(seq_len, n_embd) if position_encoding == "bfn" else
                     SinusoidalEmbedding(n_embd, scale=1.0)(torch.arange(seq_len).float()))
        self.register_buffer("pos_embed", positions, persistent=False)
        self.time_emb = (nn.Linear(1, n_embd) if time_embedding == "linear" else
                         nn.Sequential(SinusoidalEmbedding(n_embd, time_scale),
                                       nn.Linear(n_embd, n_embd)))
        self.linear_time = time_embedding == "linear"
        self.label_emb = LabelEmbedding(num_classes, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear((2 if skip else 1) * n_embd, vocab_size)
        self._init(n_layer)

    def _init(self, n_layer: int) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        for block in self.blocks:  # GPT-2's scaled init of the residual projections
            nn.init.normal_(block.attn.proj.weight, std=0.02 / math.sqrt(2 * n_layer))
            nn.init.normal_(block.mlp[2].weight, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, x: Tensor, t: Tensor, class_labels: Tensor | None = None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.vocab_size or x.shape[1] > self.seq_len:
            raise ValueError(f"expected probabilities (B, L ≤ {self.seq_len}, {self.vocab_size}), "
                             f"got {tuple(x.shape)}")
        if t.ndim != 1:
            raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}; flatten it first")
        c = self.time_emb((2 * t - 1)[:, None] if self.linear_time else t)
        c = c + self.label_emb(class_labels, c)
        tokens = self.embed(2 * x - 1) + self.pos_embed[: x.shape[1]].to(x.dtype) + c[:, None]
        h = self.drop(tokens)
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        return self.head(torch.cat([h, tokens], dim=-1) if self.skip else h)
