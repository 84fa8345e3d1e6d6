"""Trivial likelihood baselines for discrete data: what a generative model must beat.

Both work on grey-level indices v ∈ {0, …, K − 1} per dimension and report bits per dimension
of the test split; both can also draw samples, so that the sample-quality score has reference
rows (blob-like and noise-like pictures).

* **Per-pixel histogram**: independent categorical distributions, one per dimension, fitted
  to the training split with add-one (Laplace) smoothing: p_d(v) = (n_dv + 1)/(N + K).
* **Full-covariance Gaussian with uniform dequantization** (Theis et al. 2016): a Gaussian
  N(μ, Σ) fitted to u = v + U[0, 1) on the training split; bits/dim = −E_u log₂ p(v + u)/D,
  an upper bound on the discrete model's −log₂ P(v)/D (Jensen), averaged over ``draws``
  dequantization draws of the test split.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def to_levels(x: Tensor, levels: int) -> Tensor:
    """Data → grey-level indices (int64): class indices stay, floats in [−1, 1] on the grid
    of ``levels`` values with both ends included (the digits' v/8 − 1, 8-bit p/127.5 − 1)."""
    if not x.is_floating_point():
        return x.long()
    return torch.round((x.double() + 1) / 2 * (levels - 1)).clamp(0, levels - 1).long()


class HistogramBaseline:
    """Independent per-dimension categorical distributions with add-one smoothing."""

    def __init__(self, train: Tensor, levels: int):
        v = train.flatten(1)
        counts = torch.zeros(v.shape[1], levels, dtype=torch.float64)
        counts.scatter_add_(1, v.T.contiguous(), torch.ones(v.T.shape, dtype=torch.float64))
        self.levels, self.shape = levels, train.shape[1:]
        self.log_p = torch.log((counts + 1) / (len(v) + levels))  # (D, K)

    def bpd(self, test: Tensor) -> Tensor:
        """−Σ_d log₂ p_d(v_d) / D per example."""
        v = test.flatten(1)
        log_p = self.log_p.gather(1, v.T.contiguous()).T  # (B, D)
        return -log_p.mean(1) / math.log(2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.multinomial(self.log_p.exp(), n, replacement=True, generator=generator)
        return idx.T.reshape(n, *self.shape)


class GaussianBaseline:
    """A full-covariance Gaussian on uniformly dequantized indices v + U[0, 1)."""

    def __init__(self, train: Tensor, levels: int, generator: torch.Generator | None = None):
        v = train.flatten(1).double()
        u = v + torch.rand(v.shape, generator=generator, dtype=torch.float64)
        self.levels, self.shape = levels, train.shape[1:]
        mean = u.mean(0)
        cov = torch.cov(u.T) + 1e-9 * torch.eye(u.shape[1], dtype=torch.float64)
        self.dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)

    def bpd(self, test: Tensor, draws: int = 10,
            generator: torch.Generator | None = None) -> Tensor:
        """−E_u log₂ p(v + u) / D per example, the mean over ``draws`` dequantizations."""
        v = test.flatten(1).double()
        nll = torch.zeros(len(v), dtype=torch.float64)
        for _ in range(draws):
            u = v + torch.rand(v.shape, generator=generator, dtype=torch.float64)
            nll -= self.dist.log_prob(u) / draws
        return nll / (v.shape[1] * math.log(2))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Samples rounded down to the grey levels (and clipped to them)."""
        eps = torch.randn((n, self.dist.loc.numel()), generator=generator, dtype=torch.float64)
        u = self.dist.loc + eps @ self.dist.scale_tril.T
        return torch.floor(u).clamp(0, self.levels - 1).long().reshape(n, *self.shape)


def baseline_rows(train: Tensor, test: Tensor, levels: int, seed: int = 0) -> dict[str, dict]:
    """Test bits/dim (mean ± standard error over examples) of both baselines, plus each
    baseline's fitted object under ``"model"`` (for samples) and its examples' bits/dim under
    ``"per_example"`` (for paired comparisons; neither is JSON)."""
    gen = torch.Generator().manual_seed(seed)
    train_v, test_v = to_levels(train, levels), to_levels(test, levels)
    rows = {}
    for name, model in (("per-pixel histogram", HistogramBaseline(train_v, levels)),
                        ("Gaussian, full covariance, dequantized",
                         GaussianBaseline(train_v, levels, gen))):
        bpd = model.bpd(test_v, generator=gen) if isinstance(model, GaussianBaseline) else \
            model.bpd(test_v)
        se = (bpd.std() / math.sqrt(len(bpd))).item() if len(bpd) > 1 else float("nan")
        rows[name] = {"bpd": bpd.mean().item(), "bpd_se": se, "n_examples": len(bpd),
                      "model": model, "per_example": bpd}
    return rows
