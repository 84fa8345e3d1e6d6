"""Bayesian Flow Networks (BFN) for continuous, discretized and discrete data.

Graves, Srivastava, Atkinson, Gomez, "Bayesian Flow Networks", arXiv 2308.07037. Equation
numbers refer to that paper (§4 continuous, §5 discretised, §6 discrete data).

The network never sees noisy data. It sees the parameters of a factorised *input
distribution* — Gaussian means μ (continuous and discretized data) or class probabilities θ
(discrete data) — refined by exact Bayesian updates with noisy samples y of the data, and it
outputs a distribution over the data. Training samples the input parameters directly from the
*Bayesian flow distribution* p_F(θ | x; t); sampling replaces the data by draws from the
network's output distribution.

Self-contained: depends on torch, einops and jaxtyping only. Copy this file into your project.

The network is any callable ``model(net_input, t, **model_kwargs)`` with ``t`` of shape ``(B,)``:

================  =====================  ===================================================
kind              net_input              output
================  =====================  ===================================================
``continuous``    μ ``(B, *D)``          ε̂ (``parameterization="eps"``) or x̂ (``"x"``),
                                         ``(B, *D)``
``discretized``   μ ``(B, *D)``          ``(B, 2·D[0], *D[1:])``: dim 1 doubled, the first
                                         half the mean and the second half the log-std (of
                                         ε for "eps", of x for "x"); flat data ``(D,)`` gives
                                         ``(B, 2·D)``
``discrete``      θ ``(B, *D, K)``       logits ``(B, *D, K)`` (a K = 2 network with one
                                         logit l can return ``[0, l]``)
================  =====================  ===================================================

Data: continuous and discretized ``x`` is float in [−1, 1] (discretized data is snapped to its
bin centre); discrete ``x`` is int64 class indices of shape ``(B, *D)``, or float class
probabilities ``(B, *D, K)`` used as soft targets e_x (and, for K = 2, float P(class 1) of shape
``(B, *D)``, the minimal MNIST example's "binarised" mode; losses on soft targets are training
signals, not likelihoods).

Units: ``continuous_loss``, ``n_step_loss``, ``recon_loss`` and ``elbo`` report nats per example
(summed over the D = prod(data_shape) dimensions); nats per dimension = nll / D and bits per
dimension = nll / (D ln 2). ``train_loss`` is L∞ / D (nats per dimension), the scale of the
official code, whose gradient-clipping settings assume it.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Float, Int
from torch import Tensor, nn
from torch.autograd import forward_ad
from torch.nn.attention import SDPBackend, sdpa_kernel

from bayesgen.methods.solvers import Sampler, check_sampler, solve

Kind = Literal["continuous", "discretized", "discrete"]
Inpaint = Literal["tweedie", "replace"]
# callback(step, t, x_hat) -> None: called once per network call of a sampler
Callback = Callable[[int, float, Tensor], None]

T_MIN = 1e-6  # below this t, x̂ = 0 (and std = 1); γ is evaluated at max(t, T_MIN)
DISCRETE_T_MAX = 1 - 1e-6  # the discrete flow clamps t to at most this
MIN_SQRT_BETA = 1e-10  # below this √β the discrete flow is uniform
LOG_STD_RANGE = 10.0  # network log-stds are clamped to [−10, 10]
MAX_STD = 10.0  # discretized output std is clamped to [min_std, 10]
MIN_PROB = 1e-5  # bin probabilities below this fall back to density × bin width
N_MC = 10  # Monte-Carlo samples of y in the n-step discretized and discrete losses
# first time of the fast solvers' grid (Xue et al.'s η: 0.01 for images, 0.001 for text8)
SOLVER_T_START = {"continuous": 1e-2, "discretized": 1e-2, "discrete": 1e-3}


def beta_1_from_max_sqrt_beta(max_sqrt_beta: float) -> float:
    """β(1) = max_sqrt_beta², the official configs' parameter of the discrete schedule.

    Official settings: binarized MNIST max_sqrt_beta 3 → β(1) = 9; text8 0.75 → 0.5625.
    """
    return float(max_sqrt_beta) ** 2


# ---- bins on [−1, 1] (§5) ---------------------------------------------------------------------
def bin_index(x: Float[Tensor, "*S"], num_bins: int) -> Int[Tensor, "*S"]:
    """Official bin of x: clamp(floor((x/2 + 1/2)·K), 0, K − 1)."""
    return torch.floor((x / 2 + 0.5) * num_bins).clamp(0, num_bins - 1).long()


def bin_centre(idx: Int[Tensor, "*S"], num_bins: int, dtype: torch.dtype) -> Float[Tensor, "*S"]:
    """Centre of bin idx: 2(idx + 1/2)/K − 1 (k_c = (2k − 1)/K − 1 for k = idx + 1)."""
    return 2 * (idx.to(dtype) + 0.5) / num_bins - 1


def quantize(x: Float[Tensor, "*S"], num_bins: int) -> Float[Tensor, "*S"]:
    """Snap x to the centre of its bin (the official ``quantize``)."""
    return bin_centre(bin_index(x, num_bins), num_bins, x.dtype)


def bin_centres(num_bins: int, dtype=torch.float64, device=None) -> Float[Tensor, " K"]:
    return bin_centre(torch.arange(num_bins, device=device), num_bins, dtype)


def discretized_normal_probs(mean: Float[Tensor, "*S"], std: Float[Tensor, "*S"],
                             num_bins: int) -> Float[Tensor, "*S K"]:
    """p_k = F(k_r) − F(k_l) of N(mean, std²) discretized into K bins (§5, output distribution);
    the first and last bins absorb the tails (F(k_l) = 0 for k = 1, F(k_r) = 1 for k = K)."""
    edges = 2 * torch.arange(1, num_bins, dtype=mean.dtype, device=mean.device) / num_bins - 1
    cdf = _normal_cdf((edges - mean[..., None]) / std[..., None])
    cdf = F.pad(cdf, (1, 0), value=0.0)
    cdf = F.pad(cdf, (0, 1), value=1.0)
    return cdf[..., 1:] - cdf[..., :-1]


def discretized_normal_log_prob(x: Float[Tensor, "*S"], mean: Float[Tensor, "*S"],
                                std: Float[Tensor, "*S"] | float, num_bins: int,
                                min_prob: float = MIN_PROB) -> Float[Tensor, "*S"]:
    """ln p(bin of x) under N(mean, std²) discretized into K bins with clipped tails.

    Bin probabilities below ``min_prob`` fall back to ln N(k_c | mean, std²) + ln(2/K)
    (density × bin width), as in the official code.
    """
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    idx = bin_index(x, num_bins)
    centre = bin_centre(idx, num_bins, mean.dtype)
    half = 1.0 / num_bins
    cdf_lo = torch.where(idx == 0, 0.0, _normal_cdf((centre - half - mean) / std))
    cdf_hi = torch.where(idx == num_bins - 1, 1.0, _normal_cdf((centre + half - mean) / std))
    prob = cdf_hi - cdf_lo
    density = _log_normal(centre, mean, std) + math.log(2.0 / num_bins)
    return torch.where(prob < min_prob, density, torch.log(prob.clamp_min(1e-10)))


# ---- Bayesian updates and receivers -----------------------------------------------------------
def bayesian_update_continuous(mu: Tensor, rho: Tensor | float, y: Tensor,
                               alpha: Tensor | float) -> tuple[Tensor, Tensor | float]:
    """ρ' = ρ + α (Eq. 49); μ' = (ρ·μ + α·y)/ρ' (Eq. 50)."""
    rho_new = rho + alpha
    return (rho * mu + alpha * y) / rho_new, rho_new


def bayesian_update_discrete(theta: Float[Tensor, "*S K"],
                             y: Float[Tensor, "*S K"]) -> Float[Tensor, "*S K"]:
    """θ' = e^y·θ / Σ_k e^(y_k)·θ_k (§6, Bayesian update function), as softmax(ln θ + y)."""
    return torch.softmax(torch.log(theta) + y, dim=-1)


def discrete_log_receiver(y: Float[Tensor, "*S K"], log_p: Float[Tensor, "*S K"],
                          alpha: Tensor | float,
                          per_coordinate: bool = False) -> Float[Tensor, "*S"]:
    """ln p_R(y | θ; α) for one discrete variable (summed over the K coordinates of y).

    Joint (Eq. 190): ln Σ_k p̂_k N(y | α(K e_k − 1), αK I)
      = ln N(y | −α, αK I) + logsumexp_k(ln p̂_k + y_k) + α − αK/2,
    since N(y | α(K e_k − 1), αK I) = N(y | −α, αK I)·exp(y_k + α − αK/2).
    Per coordinate (the official code): Σ_j ln[p̂_j N(y_j | α(K − 1), αK)
      + (1 − p̂_j) N(y_j | −α, αK)], a mixture per coordinate of y.
    """
    K = y.shape[-1]
    alpha = torch.as_tensor(alpha, dtype=y.dtype, device=y.device)
    var = alpha * K
    if per_coordinate:
        log_on = log_p + _log_normal(y, alpha * (K - 1), var**0.5)
        log_off = _log1mexp(log_p) + _log_normal(y, -alpha * torch.ones_like(y), var**0.5)
        return torch.logaddexp(log_on, log_off).sum(-1)
    base = _log_normal(y, -alpha * torch.ones_like(y), var**0.5).sum(-1)
    shift = (alpha - var / 2).expand_as(y[..., :1])[..., 0]
    return base + torch.logsumexp(log_p + y, dim=-1) + shift


def discretized_log_receiver(y: Float[Tensor, "*S"], probs: Float[Tensor, "*S K"],
                             alpha: Tensor | float) -> Float[Tensor, "*S"]:
    """ln p_R(y | θ; α) = ln Σ_k p_k N(y | k_c, 1/α) for discretized data (§5)."""
    K = probs.shape[-1]
    centres = bin_centres(K, y.dtype, y.device)
    std = torch.as_tensor(alpha, dtype=y.dtype, device=y.device).rsqrt()
    log_comp = _log_normal(y[..., None], centres, std[..., None] if std.ndim else std)
    log_w = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return torch.logsumexp(log_w + log_comp, dim=-1)


# ---- the method -------------------------------------------------------------------------------
class BFN(nn.Module):
    """A Bayesian Flow Network around ``model``; build it with :meth:`continuous`,
    :meth:`discretized` or :meth:`discrete`.

    Schedules: continuous and discretized data use β(t) = σ1^(−2t) − 1 (Eq. 72),
    γ(t) = β/(1 + β) = 1 − σ1^(2t) (Eq. 80); discrete data β(t) = β(1)·t² (Eq. 182).
    """

    elbo_terms = ("l_recon", "l_transmit")  # what elbo returns after (nll, bpd)

    def __init__(
        self,
        model: Callable[..., Tensor],
        data_shape: Sequence[int],
        kind: Kind,
        *,
        sigma_1: float = 1e-3,
        parameterization: Literal["eps", "x"] = "eps",
        num_bins: int = 256,
        min_std: float = 1e-3,
        recon_num_bins: int | None = None,
        recon_std: float | None = None,
        num_classes: int = 2,
        beta_1: float = 1.0,
        per_coordinate_receiver: bool = False,
        low_discrepancy_sampling: bool = True,
        train_loss_ln_sigma: bool = True,
    ):
        super().__init__()
        if kind not in ("continuous", "discretized", "discrete"):
            raise ValueError(f"kind must be continuous, discretized or discrete, got {kind!r}")
        if parameterization not in ("eps", "x"):
            raise ValueError(f"parameterization must be 'eps' or 'x', got {parameterization!r}")
        if not 0 < sigma_1 < 1:
            raise ValueError(f"sigma_1 must lie in (0, 1), got {sigma_1}")
        if num_bins < 2 or (recon_num_bins is not None and recon_num_bins < 2):
            raise ValueError("num_bins and recon_num_bins must be at least 2")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if beta_1 <= 0 or min_std <= 0:
            raise ValueError("beta_1 and min_std must be positive")
        self.model = model
        self.data_shape = tuple(int(d) for d in data_shape)
        if len(self.data_shape) == 0:
            raise ValueError("data_shape must have at least one dimension, e.g. (2,)")
        self.kind = kind
        self.sigma_1 = float(sigma_1)
        self.parameterization = parameterization
        self.num_bins = int(num_bins)
        self.min_std = float(min_std)
        self.recon_num_bins = recon_num_bins
        self.recon_std = float(sigma_1 if recon_std is None else recon_std)
        self.num_classes = int(num_classes)
        self.beta_1 = float(beta_1)
        self.per_coordinate_receiver = per_coordinate_receiver
        self.low_discrepancy_sampling = low_discrepancy_sampling
        self.train_loss_ln_sigma = train_loss_ln_sigma

    @classmethod
    def continuous(cls, model: Callable[..., Tensor], data_shape: Sequence[int],
                   sigma_1: float = 1e-3, parameterization: Literal["eps", "x"] = "eps",
                   recon_num_bins: int | None = None, recon_std: float | None = None,
                   low_discrepancy_sampling: bool = True,
                   train_loss_ln_sigma: bool = True) -> BFN:
        """Continuous data in [−1, 1]; σ1 is the flow's final std (official min_variance = σ1²).

        The reconstruction loss is −ln N(x | x̂, σ1²); with ``recon_num_bins`` it is the
        Gaussian N(x̂, recon_std²) (recon_std defaults to σ1) discretized into that many bins, as
        the official "continuous" CIFAR-10 configs evaluate it (256 bins and std σ1 for
        σ1² = 1e-6; 16 bins and std 0.7·σ1 for σ1² = 1e-3). ``train_loss_ln_sigma=False``
        drops the constant factor −ln σ1 of L∞ from ``train_loss`` (the BSI repository's BFN
        baseline; it matters where gradients are clipped).
        """
        return cls(model, data_shape, "continuous", sigma_1=sigma_1,
                   parameterization=parameterization, recon_num_bins=recon_num_bins,
                   recon_std=recon_std, low_discrepancy_sampling=low_discrepancy_sampling,
                   train_loss_ln_sigma=train_loss_ln_sigma)

    @classmethod
    def discretized(cls, model: Callable[..., Tensor], data_shape: Sequence[int],
                    num_bins: int = 256, sigma_1: float = 1e-3,
                    parameterization: Literal["eps", "x"] = "eps", min_std: float = 1e-3,
                    low_discrepancy_sampling: bool = True) -> BFN:
        """K = ``num_bins`` bins on [−1, 1]; the output is a Gaussian per dimension discretized
        into the bins (network output: dim 1 doubled, mean then log-std)."""
        return cls(model, data_shape, "discretized", sigma_1=sigma_1, num_bins=num_bins,
                   parameterization=parameterization, min_std=min_std,
                   low_discrepancy_sampling=low_discrepancy_sampling)

    @classmethod
    def discrete(cls, model: Callable[..., Tensor], data_shape: Sequence[int], *,
                 num_classes: int, beta_1: float, per_coordinate_receiver: bool = False,
                 low_discrepancy_sampling: bool = True) -> BFN:
        """K = ``num_classes`` classes with β(t) = β(1)·t². Official configs name
        max_sqrt_beta; use ``beta_1_from_max_sqrt_beta``. ``per_coordinate_receiver`` evaluates
        the n-step receiver per coordinate of y, as the official code does."""
        return cls(model, data_shape, "discrete", num_classes=num_classes, beta_1=beta_1,
                   per_coordinate_receiver=per_coordinate_receiver,
                   low_discrepancy_sampling=low_discrepancy_sampling)

    def extra_repr(self) -> str:
        if self.kind == "discrete":
            return (f"discrete, data_shape={self.data_shape}, num_classes={self.num_classes}, "
                    f"beta_1={self.beta_1}")
        bins = f", num_bins={self.num_bins}" if self.kind == "discretized" else ""
        return (f"{self.kind}, data_shape={self.data_shape}, sigma_1={self.sigma_1}{bins}, "
                f"parameterization={self.parameterization!r}")

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)

    # ---- accuracy schedules -------------------------------------------------------------------
    def gamma(self, t: Tensor) -> Tensor:
        """γ(t) = 1 − σ1^(2t) (Eq. 80)."""
        return 1 - self.sigma_1 ** (2 * t)

    def beta(self, t: Tensor) -> Tensor:
        """β(t) = σ1^(−2t) − 1 (Eq. 72), or β(1)·t² for discrete data (Eq. 182)."""
        if self.kind == "discrete":
            return self.beta_1 * t**2
        return self.sigma_1 ** (-2 * t) - 1

    def alpha(self, i: Tensor | int, n: int) -> Tensor | float:
        """α_i = β(i/n) − β((i−1)/n): σ1^(−2i/n)·(1 − σ1^(2/n)) (Eq. 95), or β(1)(2i − 1)/n²."""
        if self.kind == "discrete":
            return self.beta_1 * (2 * i - 1) / n**2
        return self.sigma_1 ** (-2 * i / n) * (1 - self.sigma_1 ** (2 / n))

    # ---- Bayesian flow distribution p_F(θ | x; t) ----------------------------------------------
    def flow(self, x: Tensor, t: Float[Tensor, " B"], generator=None) -> Tensor:
        """A sample of the input parameters at time t given data x: μ (B, *D) or θ (B, *D, K)."""
        return self._flow(self._target(x), t, generator)

    def _flow(self, target: Tensor, t: Tensor, generator) -> Tensor:
        if self.kind == "discrete":
            return self._discrete_flow(target, t, generator)
        gamma = _bcast(self.gamma(t), target)
        return gamma * target + (gamma * (1 - gamma)).sqrt() * _randn_like(target, generator)

    def _discrete_flow(self, e_x: Float[Tensor, "B *D K"], t: Tensor, generator) -> Tensor:
        """θ = softmax(y), y ~ N(β(K e_x − 1), βK I) (§6, Bayesian flow distribution), with
        t ≤ 1 − 1e-6; uniform where √β < 1e-10."""
        K = self.num_classes
        beta = self.beta(t.clamp(max=DISCRETE_T_MAX))
        b = _bcast(beta, e_x)
        y = b * (K * e_x - 1) + (b * K).sqrt() * _randn_like(e_x, generator)
        theta = torch.softmax(y, dim=-1)
        return torch.where(_bcast(beta.sqrt() < MIN_SQRT_BETA, e_x), 1.0 / K, theta)

    # ---- output distribution p_O(x | θ; t) ----------------------------------------------------
    def x_hat(self, mu: Float[Tensor, "B ..."], t: Float[Tensor, " B"], **model_kwargs) -> Tensor:
        """Continuous data: x̂(μ, t) = μ/γ − √((1−γ)/γ)·ε̂(μ, t) (Eq. 84), γ at max(t, 1e-6),
        x̂ = 0 where t < 1e-6; or the network's x̂ directly; clipped to [−1, 1]."""
        out = self._net(mu, t, model_kwargs)
        if self.parameterization == "eps":
            out = self._from_eps(mu, out, t)[0]
        return out.clamp(-1, 1)

    def output_normal(self, mu: Float[Tensor, "B ..."], t: Float[Tensor, " B"],
                      **model_kwargs) -> tuple[Tensor, Tensor]:
        """Discretized data: the (mean, std) of the Gaussian that is discretized into the bins.

        "eps": mean = μ/γ − s·ε̂_mean and std = s·exp(ε̂_logstd) with s = √((1−γ)/γ) (Eq. 84),
        mean 0 and std 1 where t < 1e-6; "x": mean and exp(logstd) directly. Log-stds are
        clamped to [−10, 10] and std to [min_std, 10].
        """
        out = self._net(mu, t, model_kwargs)
        mean, log_std = out.chunk(2, dim=1)
        std = log_std.clamp(-LOG_STD_RANGE, LOG_STD_RANGE).exp()
        if self.parameterization == "eps":
            mean, scale = self._from_eps(mu, mean, t)
            std = torch.where(_bcast(t < T_MIN, std), 1.0, scale * std)
        return mean, std.clamp(self.min_std, MAX_STD)

    def output_log_probs(self, theta: Float[Tensor, "B *D K"], t: Float[Tensor, " B"],
                         **model_kwargs) -> Float[Tensor, "B *D K"]:
        """Discrete data: ln p̂(k | θ; t) = log_softmax of the network's logits."""
        return torch.log_softmax(self._net(theta, t, model_kwargs), dim=-1)

    def _from_eps(self, mu: Tensor, eps: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """x̂ = μ/γ − s·ε̂ with s = √((1−γ)/γ), γ = γ(max(t, 1e-6)); x̂ = 0 where t < 1e-6."""
        gamma = _bcast(self.gamma(t.clamp(min=T_MIN)), mu)
        scale = ((1 - gamma) / gamma).sqrt()
        x_hat = torch.where(_bcast(t < T_MIN, mu), 0.0, mu / gamma - scale * eps)
        return x_hat, scale

    def _discretized_probs(self, mu: Tensor, t: Tensor, model_kwargs: dict) -> Tensor:
        mean, std = self.output_normal(mu, t, **model_kwargs)
        return discretized_normal_probs(mean, std, self.num_bins)

    def _net(self, net_input: Tensor, t: Tensor, model_kwargs: dict) -> Tensor:
        out = self.model(net_input, t, **model_kwargs)
        b, d = net_input.shape[0], self.data_shape
        want = {"continuous": (b, *d), "discretized": (b, 2 * d[0], *d[1:]),
                "discrete": (b, *d, self.num_classes)}[self.kind]
        if tuple(out.shape) != want:
            raise ValueError(f"the {self.kind} BFN expects the model to return shape {want}, got "
                             f"{tuple(out.shape)}; see the table in the bfn module docstring")
        return out

    # ---- losses (nats per example, summed over dimensions) ---------------------------------------
    def train_loss(self, x: Tensor, generator=None, **model_kwargs) -> Float[Tensor, " B"]:
        """L∞(x) / D with t ~ U(0, 1): the continuous-time loss in nats per dimension; divided
        by −ln σ1 (σ1^(−2t)·mean squared error) when ``train_loss_ln_sigma`` is off."""
        loss = self.continuous_loss(x, generator=generator, **model_kwargs) / self.data_dim
        if not self.train_loss_ln_sigma and self.kind != "discrete":
            loss = loss / -math.log(self.sigma_1)
        return loss

    def continuous_loss(self, x: Tensor, t: Tensor | None = None, generator=None,
                        **model_kwargs) -> Float[Tensor, " B"]:
        """Continuous-time loss L∞(x) at t ~ U(0, 1) (or the given t), nats per example.

        Continuous / discretized data: −ln σ1 · σ1^(−2t) · ‖x − x̂(θ, t)‖² (Eq. 101; §5 with
        x̂ = Σ_k p_k k_c, the mean of the discretized output). Discrete data:
        K·β(1)·t·‖e_x − p̂(θ, t)‖² (Eq. 205).
        """
        target = self._target(x)
        if t is None:
            t = self._sample_u(target.shape[0], target, generator)
        elif not torch.is_tensor(t) or t.shape not in ((), (target.shape[0],)):
            raise ValueError(f"t must be a tensor of shape (B,) = ({target.shape[0]},) or a "
                             f"scalar tensor, got {getattr(t, 'shape', type(t).__name__)}")
        theta = self._flow(target, t, generator)
        if self.kind == "discrete":
            p_hat = self.output_log_probs(theta, t, **model_kwargs).exp()
            sq = _sum_dims(torch.square(target - p_hat))
            return self.num_classes * self.beta_1 * t * sq
        if self.kind == "continuous":
            x_hat = self.x_hat(theta, t, **model_kwargs)
        else:
            probs = self._discretized_probs(theta, t, model_kwargs)
            x_hat = (probs * bin_centres(self.num_bins, probs.dtype, probs.device)).sum(-1)
        return -math.log(self.sigma_1) * self.sigma_1 ** (-2 * t) * _sum_dims(
            torch.square(target - x_hat))

    def n_step_loss(self, x: Tensor, n_steps: int, generator=None,
                    **model_kwargs) -> Float[Tensor, " B"]:
        """n-step loss L^n(x) = n·E_i KL(p_S(· | x; α_i) ‖ p_R(· | θ_{i−1}; t_{i−1}, α_i)),
        one i ~ U{1..n} per example (i = ⌊u·n⌋ + 1 with u as for t), t_{i−1} = (i − 1)/n,
        θ_{i−1} ~ p_F(· | x; t_{i−1}); nats per example.

        Continuous: n·α_i/2·‖x − x̂‖² (Eq. 96). Discretized: n × mean over 10 samples
        y ~ N(x, 1/α_i) of ln N(y | x, 1/α_i) − ln Σ_k p_k N(y | k_c, 1/α_i) (§5). Discrete:
        n × mean over 10 samples y ~ N(α_i(K e_x − 1), α_i K I) of ln p_S(y) − ln p_R(y)
        (Eqs. 189–190), see ``discrete_log_receiver``.
        """
        n = _count(n_steps, "n_steps")
        target = self._target(x)
        u = self._sample_u(target.shape[0], target, generator)
        i = torch.floor(u * n).clamp(max=n - 1) + 1
        t = (i - 1) / n
        alpha = self.alpha(i, n)
        theta = self._flow(target, t, generator)
        if self.kind == "continuous":
            x_hat = self.x_hat(theta, t, **model_kwargs)
            return n * alpha / 2 * _sum_dims(torch.square(target - x_hat))
        if self.kind == "discretized":
            probs = self._discretized_probs(theta, t, model_kwargs)
            a = _bcast(alpha, target)
            kl = 0.0
            for _ in range(N_MC):
                y = target + a.rsqrt() * _randn_like(target, generator)
                kl = kl + _log_normal(y, target, a.rsqrt()) - discretized_log_receiver(y, probs, a)
            return n * _sum_dims(kl / N_MC)
        log_p = self.output_log_probs(theta, t, **model_kwargs)
        a = _bcast(alpha, target)
        K = self.num_classes
        kl = 0.0
        for _ in range(N_MC):
            y = a * (K * target - 1) + (a * K).sqrt() * _randn_like(target, generator)
            log_sender = _log_normal(y, a * (K * target - 1), (a * K).sqrt()).sum(-1)
            kl = kl + log_sender - discrete_log_receiver(y, log_p, a, self.per_coordinate_receiver)
        return n * _sum_dims(kl / N_MC)

    def recon_loss(self, x: Tensor, generator=None, **model_kwargs) -> Float[Tensor, " B"]:
        """Reconstruction loss −ln p_O(x | θ(1); 1) with θ(1) ~ p_F(· | x; 1), nats per example.

        Continuous: −ln N(x | x̂(μ, 1), σ1²) (§4), or its discretized form with
        ``recon_num_bins``; discretized: −ln of the bin probability (§5); discrete: −Σ_k e_k ln p̂_k
        (§6; cross-entropy for soft targets).
        """
        target = self._target(x)
        t = torch.ones(target.shape[0], dtype=target.dtype, device=target.device)
        theta = self._flow(target, t, generator)
        if self.kind == "discrete":
            log_p = self.output_log_probs(theta, t, **model_kwargs)
            return -_sum_dims(target * log_p)
        if self.kind == "discretized":
            mean, std = self.output_normal(theta, t, **model_kwargs)
            return -_sum_dims(discretized_normal_log_prob(target, mean, std, self.num_bins))
        x_hat = self.x_hat(theta, t, **model_kwargs)
        if self.recon_num_bins is None:
            return -_sum_dims(_log_normal(target, x_hat, self.sigma_1))
        return -_sum_dims(discretized_normal_log_prob(target, x_hat, self.recon_std,
                                                      self.recon_num_bins))

    def elbo(self, x: Tensor, n_steps: int | None = None, n_samples: int = 1, generator=None,
             **model_kwargs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Negative ELBO per example, averaged over ``n_samples`` draws of t (and of the flow).

        Returns ``(nll, bpd, l_recon, l_transmit)``: nll = l_recon + l_transmit in nats per
        example (an upper bound on −ln p(x)), bpd = nll / (D ln 2); nats per dimension is nll / D.
        l_transmit is L∞ (``n_steps=None``) or the n-step loss L^n (``n_steps=n``).
        """
        n_samples = _count(n_samples, "n_samples")
        if n_steps is not None:
            _count(n_steps, "n_steps")
        self._target(x)  # checks x before it is repeated
        b = x.shape[0]
        xs = repeat(x, "b ... -> (n b) ...", n=n_samples)
        kwargs = _repeat_kwargs(model_kwargs, n_samples, b)
        if n_steps is None:
            l_t = self.continuous_loss(xs, generator=generator, **kwargs)
        else:
            l_t = self.n_step_loss(xs, n_steps, generator=generator, **kwargs)
        l_r = self.recon_loss(xs, generator=generator, **kwargs)
        l_transmit = rearrange(l_t, "(n b) -> n b", n=n_samples).mean(0)
        l_recon = rearrange(l_r, "(n b) -> n b", n=n_samples).mean(0)
        nll = l_recon + l_transmit
        return nll, nll / (self.data_dim * math.log(2)), l_recon, l_transmit

    # ---- sampling -------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n_samples: int, n_steps: int = 100, generator=None, device=None, dtype=None,
               return_probs: bool = False, callback: Callback | None = None,
               observed: Tensor | None = None, mask: Tensor | None = None,
               inpaint: Inpaint = "tweedie", inpaint_iters: int = 4,
               sampler: Sampler = "ancestral", **model_kwargs) -> Tensor:
        """n-step sampler (§4–§6 sample generation): for i = 1..n, t = (i − 1)/n, draw from the
        output distribution (x̂ for continuous data, a bin centre, a class k), send
        y ~ p_S(· | ·; α_i), update the input parameters by Bayes; finally return x̂(μ, 1), the
        mode bin centre, or the most probable class (``return_probs``: p̂(k | θ(1); 1), shape
        (n, *D, K), discrete data only). n + 1 network calls.

        ``callback(step, t, x_hat)`` is called after each of the n + 1 network calls (step
        0 … n, t = step/n as a float) with the current prediction: x̂ (continuous), the mean
        bin centre Σ p_k k_c (discretized) or the class probabilities p̂ (n, *D, K) (discrete).

        Conditioning by inference: ``observed`` (broadcastable to (n, *D): values in [−1, 1],
        or class indices for discrete data) and ``mask`` (bool, broadcastable to (n, *D), True
        where ``observed`` is known) — inpainting, or completing a text prefix. Known entries
        come back exactly (discretized: as their bin centres) and are sent to the input
        distribution at every step as the data themselves. ``inpaint="tweedie"`` (default)
        conditions the prediction on them through the posterior covariance, the Jacobian of
        the prediction w.r.t. the input parameters: continuous/discretized data μ = γ·x +
        √(γ(1−γ))·ε give ∂x̂/∂μ ∝ Cov[x | μ], so x̂_u + J_uo·J_oo⁻¹·(x_o − x̂_o) (exact for
        Gaussian data); discrete data give ∂p̂/∂ln θ = Cov[e_x | θ], so p̂_u is regressed on the
        indicators of the known classes (exact for one known token). J_oo⁻¹ costs up to
        ``inpaint_iters`` conjugate-gradient iterations of one Jacobian-vector product
        (forward-mode AD) each, per step, on top of the network call. ``inpaint="replace"``
        is the cheap baseline (no extra cost): the known part of the input parameters is
        re-drawn from the flow p_F(· | x_o; t) at every step, biased towards the unconditional
        distribution.

        ``sampler``: ``"ancestral"`` (the paper's sampler above) or a fast solver of the
        flow's SDE/ODE (Xue et al. 2024, :mod:`bayesgen.methods.solvers`), n network calls:
        the Bayesian flow μ | x ~ N(γ·x, γ(1 − γ)·I) (Eq. 77, 80) for continuous and
        discretized data, with x̂ the output's mean (Eq. 84; discretized: Σ_k p_k k_c, already
        in [−1, 1]; continuous x̂ is clipped to [−1, 1]) — ``"ode1"``/``"ode2"`` BFN-Solver++1/
        ++2 (Alg. 1–2), ``"sde2"`` SDE-BFN-Solver++2 (Alg. 3); for discrete data the logits
        y | x ~ N(β(K·e_x − 1), βK·I) of θ = softmax(y) (§6) with x̂ = p̂ − 1/K — BFN-Solver1/2
        (Alg. 6–7) and SDE-BFN-Solver2 (Alg. 5). The grid is the sampler's own, uniform in t,
        from t_start = SOLVER_T_START (η of Xue et al.) to 1; the network is called at its
        first n points and the last prediction is returned: x̂ (continuous), the mode bin of
        the output distribution (discretized), the most probable class (discrete). The start
        is the ℓ → −∞ limit (see ``solve``'s ``limit_start``): μ = √(γ(1 − γ))·ε at t_start,
        its mean supplied by the first prediction.
        """
        return self._run_sampler(n_samples, n_steps, generator, device, dtype, False,
                                 return_probs, model_kwargs, callback, observed, mask, inpaint,
                                 inpaint_iters, sampler)["x"]

    @torch.no_grad()
    def sample_history(self, n_samples: int, n_steps: int = 100, generator=None, device=None,
                       dtype=None, return_probs: bool = False, callback: Callback | None = None,
                       observed: Tensor | None = None, mask: Tensor | None = None,
                       inpaint: Inpaint = "tweedie", inpaint_iters: int = 4,
                       sampler: Sampler = "ancestral", **model_kwargs) -> dict[str, Tensor]:
        """The sampler's every step, stacked on dim 0, for animations: input parameters
        ``"mu"`` or ``"theta"`` (n + 1, the prior first), the output's ``"x_hat"`` (continuous:
        x̂; discretized: mean bin centre Σ p_k k_c) or ``"probs"`` (discrete) (n + 1, the last at
        t = 1), the draws ``"k"`` (discretized and discrete) and ``"y"`` (n), the times ``"t"``
        (n + 1) and the samples ``"x"``. After i updates the input parameters are distributed as
        the flow at t = i/n when the output distribution is exact. The solvers (``sampler``
        other than ancestral) record the n states at which they call the network (``"mu"``, or
        ``"theta"`` = softmax of the logits), their predictions and times, and no draws. Other
        arguments as for :meth:`sample`."""
        return self._run_sampler(n_samples, n_steps, generator, device, dtype, True,
                                 return_probs, model_kwargs, callback, observed, mask, inpaint,
                                 inpaint_iters, sampler)

    def _run_sampler(self, n_samples, n_steps, generator, device, dtype, keep: bool,
                     return_probs: bool, model_kwargs: dict, callback: Callback | None = None,
                     observed: Tensor | None = None, mask: Tensor | None = None,
                     inpaint: Inpaint = "tweedie", inpaint_iters: int = 4,
                     sampler: Sampler = "ancestral") -> dict[str, Tensor]:
        n_samples, n = _count(n_samples, "n_samples"), _count(n_steps, "n_steps")
        if return_probs and self.kind != "discrete":
            raise ValueError("return_probs=True is only defined for discrete data")
        check_sampler(sampler, f"the {self.kind} BFN")
        device, dtype = _device_dtype(self.model, device, dtype)
        ts = torch.arange(n + 1, device=device, dtype=dtype) / n
        shape = (n_samples, *self.data_shape)
        K = self.num_classes
        cond = self._check_observed(observed, mask, shape, device, dtype, inpaint,
                                    inpaint_iters)
        tweedie = cond is not None and inpaint == "tweedie"
        replace = cond is not None and inpaint == "replace"

        def randn(like: Tensor) -> Tensor:
            return torch.randn(like.shape, generator=generator, device=device, dtype=dtype)

        def report(i: int, x_hat: Tensor) -> None:
            if callback is not None:
                callback(i, i / n, x_hat)

        hist: dict[str, list[Tensor]] = {}

        def record(**tensors: Tensor) -> None:
            if keep:
                for key, v in tensors.items():
                    hist.setdefault(key, []).append(v)

        if self.kind == "discrete":
            if cond is not None:
                known, x_o = cond
                e_o = F.one_hot(x_o, K).to(dtype)
                obs_k = known[..., None] & e_o.bool()  # the indicator of each known class

            def output_probs(log_theta: Tensor, t: Tensor) -> Tensor:
                t_b = t.expand(n_samples)
                if not tweedie:
                    return self.output_log_probs(log_theta.exp(), t_b, **model_kwargs).exp()

                def probs_of(log_th: Tensor) -> Tensor:  # p̂ as a function of ln θ
                    return self.output_log_probs(torch.softmax(log_th, -1), t_b,
                                                 **model_kwargs).exp()

                p = _condition_prediction(probs_of, log_theta, obs_k, torch.ones_like(e_o),
                                          inpaint_iters).clamp_min(0)
                p = torch.where(known[..., None], e_o, p)
                return p / p.sum(-1, keepdim=True)

            if sampler != "ancestral":
                return self._solve_discrete(shape, n, sampler, output_probs, randn, keep,
                                            callback, cond, replace, return_probs, generator,
                                            device, dtype)
            log_theta = torch.full((*shape, K), -math.log(K), device=device, dtype=dtype)
            record(theta=log_theta.exp())
            for i in range(1, n + 1):
                alpha = self.alpha(i, n)
                probs = output_probs(log_theta, ts[i - 1])
                report(i - 1, probs)
                k = _sample_categorical(probs, generator)
                if cond is not None:
                    k = torch.where(known, x_o, k)
                e_k = F.one_hot(k, K).to(dtype)
                y = alpha * (K * e_k - 1) + math.sqrt(alpha * K) * randn(e_k)
                log_theta = torch.log_softmax(log_theta + y, dim=-1)  # θ' ∝ θ·e^y
                if replace:  # re-draw the known part from the flow p_F(θ | x_o; t_i)
                    flow = self._discrete_flow(e_o, ts[i].expand(n_samples), generator)
                    log_theta = torch.where(known[..., None], flow.log(), log_theta)
                record(theta=log_theta.exp(), probs=probs, k=k, y=y)
            probs = output_probs(log_theta, ts[-1])
            report(n, probs)
            x = probs if return_probs else probs.argmax(-1)
            if cond is not None:
                x = (torch.where(known[..., None], e_o, probs) if return_probs
                     else torch.where(known, x_o, x))
            record(probs=probs)
        else:
            def predict(mu: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
                """(x̂ conditioned on the known part, output mean and std (discretized))."""
                t_b = t.expand(n_samples)
                if self.kind == "continuous":
                    f = lambda m: self.x_hat(m, t_b, **model_kwargs)  # noqa: E731
                    mean = std = None
                else:
                    mean, std = self.output_normal(mu, t_b, **model_kwargs)
                    f = lambda m: self._bin_mean(*self.output_normal(m, t_b,  # noqa: E731
                                                                     **model_kwargs))
                if tweedie:
                    pred = None if mean is None else self._bin_mean(mean, std)
                    x_hat = _condition_prediction(f, mu, cond[0], cond[1], inpaint_iters, pred)
                    if mean is not None:  # shift the output Gaussian by the correction
                        mean = mean + (x_hat - pred)
                elif (self.kind == "continuous" or keep or callback is not None
                      or sampler != "ancestral"):
                    x_hat = f(mu) if mean is None else self._bin_mean(mean, std)
                else:
                    x_hat = mean  # not used
                if cond is not None:
                    x_hat = torch.where(cond[0], cond[1], x_hat)
                return x_hat, mean, std

            if sampler != "ancestral":
                return self._solve_continuous(shape, n, sampler, predict, randn, keep, callback,
                                              cond, replace, generator, device, dtype)
            mu, rho = torch.zeros(shape, device=device, dtype=dtype), 1.0
            record(mu=mu)
            for i in range(1, n + 1):
                alpha = self.alpha(i, n)
                x_hat, mean, std = predict(mu, ts[i - 1])
                report(i - 1, x_hat)
                if self.kind == "continuous":
                    k = x_hat  # a point mass at x̂
                else:  # a bin centre drawn from the discretized Gaussian
                    k = quantize(mean + std * randn(mean), self.num_bins)
                    if cond is not None:
                        k = torch.where(cond[0], cond[1], k)
                y = k + alpha**-0.5 * randn(k)
                mu, rho = bayesian_update_continuous(mu, rho, y, alpha)
                if replace:  # re-draw the known part from the flow p_F(μ | x_o; t_i)
                    mu = torch.where(cond[0], self._flow(cond[1], ts[i].expand(n_samples),
                                                         generator), mu)
                record(mu=mu, x_hat=x_hat, y=y, **({"k": k} if self.kind == "discretized" else {}))
            x_hat, mean, std = predict(mu, ts[-1])
            report(n, x_hat)
            if self.kind == "continuous":
                x = x_hat
            else:
                probs = discretized_normal_probs(mean, std, self.num_bins)
                x = bin_centre(probs.argmax(-1), self.num_bins, dtype)
                if cond is not None:
                    x = torch.where(cond[0], cond[1], x)
            record(x_hat=x_hat)
        if not keep:
            return {"x": x}
        return {**{key: torch.stack(v) for key, v in hist.items()}, "t": ts, "x": x}

    def _solver_grid(self, n: int) -> list[float]:
        """The fast solvers' n + 1 times, uniform from SOLVER_T_START[kind] to 1."""
        t0 = SOLVER_T_START[self.kind]
        return [t0 + (1 - t0) * i / n for i in range(n + 1)]

    def _solve_continuous(self, shape, n: int, sampler: str, predict, randn, keep: bool,
                          callback: Callback | None, cond, replace: bool, generator, device,
                          dtype) -> dict[str, Tensor]:
        """BFN-Solver(++) on the flow μ ~ N(γ·x, γ(1 − γ)) (continuous, discretized data)."""
        times = self._solver_grid(n)
        ts = torch.tensor(times, device=device, dtype=dtype)
        gam = [1 - self.sigma_1 ** (2 * v) for v in times]
        std = [math.sqrt(g * (1 - g)) for g in gam]
        hist: dict[str, list[Tensor]] = {"mu": [], "x_hat": []}
        last: dict[str, Tensor] = {}

        def f(mu: Tensor, i: int) -> Tensor:
            x_hat, last["mean"], last["std"] = predict(mu, ts[i])
            if callback is not None:
                callback(i, times[i], x_hat)
            return x_hat

        def reset_known(mu: Tensor, i: int) -> Tensor:  # μ_o ~ p_F(μ | x_o; t_i)
            return torch.where(cond[0], self._flow(cond[1], ts[i].expand(shape[0]), generator), mu)

        x = solve(std[0] * randn(torch.empty(shape, device=device)), gam, std, f, sampler,
                  lambda: randn(ts.new_empty(shape)), limit_start=True,
                  after_step=reset_known if replace else None,
                  record=(lambda z, xh: (hist["mu"].append(z), hist["x_hat"].append(xh)))
                  if keep else None)
        if self.kind == "discretized":
            probs = discretized_normal_probs(last["mean"], last["std"], self.num_bins)
            x = bin_centre(probs.argmax(-1), self.num_bins, dtype)
            if cond is not None:
                x = torch.where(cond[0], cond[1], x)
        if not keep:
            return {"x": x}
        return {**{key: torch.stack(v) for key, v in hist.items()}, "t": ts[:-1], "x": x}

    def _solve_discrete(self, shape, n: int, sampler: str, output_probs, randn, keep: bool,
                        callback: Callback | None, cond, replace: bool, return_probs: bool,
                        generator, device, dtype) -> dict[str, Tensor]:
        """BFN-Solver1/2 and SDE-BFN-Solver2 on the logits y ~ N(β(K·e_x − 1), βK·I), whose
        u = √(Kβ) ∝ t (β = β(1)·t², Eq. 182): x̂ = p̂ − 1/K is expanded in u (solve's "u")."""
        K = self.num_classes
        times = self._solver_grid(n)
        ts = torch.tensor(times, device=device, dtype=dtype)
        a = [K * self.beta_1 * v * v for v in times]
        std = [math.sqrt(v) for v in a]
        hist: dict[str, list[Tensor]] = {"theta": [], "probs": []}
        last: dict[str, Tensor] = {}
        full = (*shape, K)

        def f(y: Tensor, i: int) -> Tensor:
            last["probs"] = probs = output_probs(torch.log_softmax(y, -1), ts[i])
            if callback is not None:
                callback(i, times[i], probs)
            if keep:
                hist["theta"].append(torch.softmax(y, -1))
                hist["probs"].append(probs)
            return probs - 1 / K

        def reset_known(y: Tensor, i: int) -> Tensor:  # the known logits from p_F(θ | x_o; t_i)
            e_o = F.one_hot(cond[1], K).to(dtype)
            flow = self._discrete_flow(e_o, ts[i].expand(shape[0]), generator).log()
            return torch.where(cond[0][..., None], flow, y)

        solve(std[0] * randn(torch.empty(full, device=device)), a, std, f, sampler,
              lambda: randn(ts.new_empty(full)), expansion="u", limit_start=True,
              after_step=reset_known if replace else None)
        probs = last["probs"]
        x = probs if return_probs else probs.argmax(-1)
        if cond is not None:
            known, x_o = cond
            x = (torch.where(known[..., None], F.one_hot(x_o, K).to(dtype), probs)
                 if return_probs else torch.where(known, x_o, x))
        if not keep:
            return {"x": x}
        return {**{key: torch.stack(v) for key, v in hist.items()}, "t": ts[:-1], "x": x}

    def _check_observed(self, observed, mask, shape: tuple[int, ...], device, dtype,
                        inpaint, inpaint_iters) -> tuple[Tensor, Tensor] | None:
        """(mask, observed) broadcast to the samples' shape after checking them (discretized:
        snapped to bin centres; discrete: int64 classes); None when neither is given."""
        if inpaint not in ("tweedie", "replace"):
            raise ValueError(f"inpaint must be 'tweedie' or 'replace', got {inpaint!r}")
        _count(inpaint_iters, "inpaint_iters")
        if observed is None and mask is None:
            return None
        name = f"the {self.kind} BFN"
        known, x_o = _broadcast_observed(observed, mask, shape, name)
        known = known.to(device)
        if self.kind == "discrete":
            if x_o.is_floating_point() or x_o.is_complex():
                raise ValueError(f"{name}: observed must hold int64 class indices, got dtype "
                                 f"{x_o.dtype}; convert it with observed.long()")
            _check_observed_values(x_o.long(), known.to(x_o.device), 0, self.num_classes - 1,
                                   name, f"class indices must lie in [0, {self.num_classes - 1}]")
            return known, torch.where(known, x_o.to(device).long(), 0)
        if not x_o.is_floating_point():
            raise ValueError(f"{name}: observed must be floating-point data in [-1, 1], got "
                             f"dtype {x_o.dtype}; convert it with observed.float()")
        _check_observed_values(x_o, known.to(x_o.device), -1 - 1e-5, 1 + 1e-5, name,
                               "rescale it to [-1, 1] (e.g. 2·x − 1 for data in [0, 1])")
        x_o = torch.where(known, x_o.to(device=device, dtype=dtype), 0.0)
        if self.kind == "discretized":
            x_o = quantize(x_o, self.num_bins)
        return known, x_o

    def _bin_mean(self, mean: Tensor, std: Tensor) -> Tensor:
        """Σ_k p_k k_c, the mean of the discretized output distribution, summed by parts:
        k_c(K) − (2/K)·Σ_{k<K} F(k_r) with F the Gaussian's CDF at the inner bin edges."""
        K = self.num_bins
        edges = 2 * torch.arange(1, K, dtype=mean.dtype, device=mean.device) / K - 1
        cdf = _normal_cdf((edges - mean[..., None]) / std[..., None])
        return (1 - 1 / K) - (2 / K) * cdf.sum(-1)

    # ---- data checks and targets ----------------------------------------------------------------
    def _sample_u(self, batch: int, like: Tensor, generator) -> Float[Tensor, " B"]:
        """U(0, 1) per example; low-discrepancy: (arange(B)/B + u0) mod 1 with one u0 ~ U(0, 1)."""
        dev, dt = like.device, like.dtype
        if not self.low_discrepancy_sampling:
            return torch.rand(batch, generator=generator, device=dev, dtype=dt)
        u0 = torch.rand((), generator=generator, device=dev, dtype=dt)
        return (torch.arange(batch, device=dev, dtype=dt) / batch + u0) % 1.0

    def _target(self, x: Tensor) -> Tensor:
        """x (continuous data), its bin centre (discretized), e_x (B, *D, K) (discrete), after
        checking it: a non-empty batch on the model's device, finite, in [−1, 1] or valid
        classes (value checks sync with the host and are skipped under torch.compile)."""
        name = f"the {self.kind} BFN"
        if self.kind == "discrete":
            return self._class_probs(x)
        _check_batch(x, self.data_shape, self.model, name)
        if not x.is_floating_point():
            raise ValueError(f"{name}: x must be floating-point data in [-1, 1], got dtype "
                             f"{x.dtype}; convert it with x.float()")
        _check_values(x, name, -1 - 1e-5, 1 + 1e-5, "rescale it to [-1, 1] (e.g. 2·x − 1 for "
                      "data in [0, 1])")
        return quantize(x, self.num_bins) if self.kind == "discretized" else x

    def _class_probs(self, x: Tensor) -> Float[Tensor, "B *D K"]:
        K, d, name = self.num_classes, self.data_shape, "the discrete BFN"
        dims = ", ".join(map(str, d))
        if torch.is_tensor(x) and x.is_floating_point():
            if tuple(x.shape[1:]) == d and K == 2:
                _check_batch(x, d, self.model, name)
                x = torch.stack([1 - x, x], dim=-1)
            elif tuple(x.shape[1:]) != (*d, K):
                raise ValueError(f"{name}: x must be int64 class indices of shape (B, {dims}) or "
                                 f"float class probabilities of shape (B, {dims}, {K}), got "
                                 f"dtype {x.dtype} of shape {tuple(x.shape)}")
            _check_batch(x, (*d, K), self.model, name)
            _check_values(x, name, 0.0, 1.0, "soft targets are probabilities in [0, 1]")
            if not torch.compiler.is_compiling() and (x.sum(-1) - 1).abs().max().item() > 1e-4:
                raise ValueError(f"{name}: x holds soft targets that do not sum to 1 over the "
                                 "last (class) dimension; normalise them")
            return x
        _check_batch(x, d, self.model, name)
        x = x.long() if x.dtype == torch.bool else x
        if x.is_complex():
            raise ValueError(f"{name}: x must be int64 class indices, got dtype {x.dtype}")
        _check_values(x, name, 0, K - 1, f"class indices must lie in [0, {K - 1}] "
                      f"(num_classes={K})")
        _, dtype = _device_dtype(self.model, x.device, None)
        return F.one_hot(x.long(), K).to(dtype)


# ---- conditioning by inference (the same helpers live in bsi.py) ------------------------------
def _condition_prediction(f: Callable[[Tensor], Tensor], inp: Tensor, obs: Tensor,
                          target: Tensor, iters: int, pred: Tensor | None = None) -> Tensor:
    """E[z_u | inp, z_o = target] ≈ f_u + J_uo·J_oo⁻¹·(target − f_o) with J = ∂f/∂inp.

    For a posterior mean f of an exponential-family belief, J is the posterior covariance up
    to a positive factor (Tweedie; for discrete data f = p̂(ln θ) and J = Cov[e_x | θ]), so
    this is Gaussian conditioning of the posterior on the observed entries ``obs`` (inputs and
    outputs share one shape; each example maps independently). J_oo⁻¹ is applied per example
    by conjugate gradients, one forward-mode Jacobian-vector product per iteration, at most
    ``iters`` of them, stopping once the residual is 1e-6 of the initial one or pᵀJ_oo p ≤ 0
    (0 where x̂ is clipped).
    """
    pred = f(inp) if pred is None else pred  # f(inp) when the caller has it already
    r = torch.where(obs, target - pred, 0.0)
    p, correction = r, torch.zeros_like(pred)
    rs = _sum_dims(r * r)
    stop = 1e-12 * rs
    active = rs > stop  # examples still iterating: not converged, no breakdown (pᵀJp ≤ 0)
    for _ in range(iters):
        if not bool(active.any()):
            break
        jp = _jvp(f, inp, p)
        jp_o = torch.where(obs, jp, 0.0)
        pap = _sum_dims(p * jp_o)
        active = active & (pap > 0)
        step = torch.where(active, rs / pap.clamp_min(1e-300), 0.0)
        correction = correction + _bcast(step, jp) * jp  # J·v accumulated, v = Σ step·p
        r = r - _bcast(step, jp_o) * jp_o
        rs_new = _sum_dims(r * r)
        p = r + _bcast(torch.where(active, rs_new / rs.clamp_min(1e-300), 0.0), p) * p
        rs = rs_new
        active = active & (rs > stop)
    return pred + correction


def _jvp(f: Callable[[Tensor], Tensor], x: Tensor, v: Tensor) -> Tensor:
    """J·v for J = ∂f/∂x by forward-mode AD (one pass of f on dual numbers; works under
    no_grad)."""
    with forward_ad.dual_level():
        with warnings.catch_warnings():  # torch's first make_dual scripts decompositions
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated",
                                    FutureWarning)
            dual = forward_ad.make_dual(x, v)
        try:  # attention by the math kernel: the fused ones have no forward-AD formulas
            with sdpa_kernel(SDPBackend.MATH):
                out = f(dual)
        except (RuntimeError, NotImplementedError) as e:
            raise ValueError(f"inpaint='tweedie' needs forward-mode AD through the network, "
                             f"which failed ({str(e).splitlines()[0]}); use inpaint='replace'"
                             ) from e
        tangent = forward_ad.unpack_dual(out).tangent
    return torch.zeros_like(out) if tangent is None else tangent


def _broadcast_observed(observed, mask, shape: tuple[int, ...], name: str
                        ) -> tuple[Tensor, Tensor]:
    """(mask, observed) expanded to ``shape`` after checking types and shapes."""
    if observed is None or mask is None:
        raise ValueError(f"{name}: observed= and mask= go together; pass both (mask True where "
                         "observed holds known values)")
    if not torch.is_tensor(observed) or not torch.is_tensor(mask):
        raise ValueError(f"{name}: observed and mask must be tensors, got "
                         f"{type(observed).__name__} and {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise ValueError(f"{name}: mask must be a bool tensor (True where observed holds known "
                         f"values), got dtype {mask.dtype}; use mask.bool() or mask > 0.5")
    want = ", ".join(map(str, shape))
    for label, v in (("observed", observed), ("mask", mask)):
        try:
            ok = torch.broadcast_shapes(v.shape, shape) == torch.Size(shape)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"{name}: {label} of shape {tuple(v.shape)} does not broadcast to "
                             f"the samples' shape ({want}); give it shape ({want}) or drop "
                             "leading dimensions")
    return mask.expand(shape), observed.expand(shape)


def _check_observed_values(x_o: Tensor, obs: Tensor, lo: float, hi: float, name: str,
                           fix: str) -> None:
    """The observed entries (where ``obs``) are finite and inside [lo, hi]."""
    if not bool(obs.any()):
        return
    known = x_o[obs].double()
    if not bool(torch.isfinite(known).all()):
        raise ValueError(f"{name}: observed holds NaN or infinite values where mask is True; "
                         "only the masked entries must be valid")
    a, b = known.min().item(), known.max().item()
    if a < lo or b > hi:
        raise ValueError(f"{name}: observed holds values in [{a:.3g}, {b:.3g}] where mask is "
                         f"True; {fix}")


# ---- small helpers ------------------------------------------------------------------------------
def _normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def _log_normal(x: Tensor, mean: Tensor | float, std: Tensor | float) -> Tensor:
    """ln N(x | mean, std²), elementwise."""
    var = torch.as_tensor(std, dtype=x.dtype, device=x.device) ** 2
    return -0.5 * (math.log(2 * math.pi) + torch.log(var) + (x - mean) ** 2 / var)


def _log1mexp(log_p: Tensor) -> Tensor:
    """ln(1 − p) from ln p, stable for p near 0 and near 1."""
    log_p = log_p.clamp(max=-torch.finfo(log_p.dtype).eps)
    return torch.where(log_p > -math.log(2), torch.log(-torch.expm1(log_p)),
                       torch.log1p(-torch.exp(log_p)))


def _sample_categorical(probs: Float[Tensor, "*S K"], generator) -> Int[Tensor, "*S"]:
    flat = rearrange(probs, "... k -> (...) k")
    k = torch.multinomial(flat, 1, generator=generator).squeeze(-1)
    return k.reshape(probs.shape[:-1])


def _bcast(c: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example (B,) tensor to broadcast against (B, ...)."""
    return c.reshape(-1, *([1] * (like.ndim - 1))) if torch.is_tensor(c) and c.ndim == 1 else c


def _sum_dims(x: Tensor) -> Tensor:
    return x.flatten(1).sum(1)


def _randn_like(x: Tensor, generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _repeat_kwargs(kwargs: dict, n: int, b: int) -> dict:
    """Repeat per-example model kwargs (first dim B) to match an (n·B) batch."""
    if n == 1:
        return kwargs
    return {key: repeat(v, "b ... -> (n b) ...", n=n) if torch.is_tensor(v) and v.ndim > 0
            and v.shape[0] == b else v for key, v in kwargs.items()}


def _device_dtype(model, device, dtype) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's parameters, unless given (the default dtype otherwise);
    a given device must be the parameters' and a given dtype floating-point."""
    param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if device is not None:
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device={device!r} is not a device; use e.g. 'cpu' or "
                             "'cuda'") from None
        if param is not None and (device.type != param.device.type or device.index not in (
                None, param.device.index)):
            raise ValueError(f"device={str(device)!r} but the model is on {param.device}; move the "
                             "model (bfn.to(device)) or leave device= out")
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    if dtype is None:
        dtype = param.dtype if param is not None else torch.get_default_dtype()
    return torch.device(device), dtype


def _check_batch(x, data_shape: tuple[int, ...], model, name: str) -> None:
    """x is a non-empty tensor (B, *data_shape) that holds values on the model's device."""
    dims = ", ".join(map(str, data_shape))
    if not torch.is_tensor(x):
        raise ValueError(f"{name}: x must be a torch.Tensor of shape (B, {dims}), got "
                         f"{type(x).__name__}")
    if tuple(x.shape[1:]) != data_shape:
        raise ValueError(f"{name}: x must have shape (B, {dims}), got {tuple(x.shape)}; "
                         "set data_shape= to match your data")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: x is an empty batch of shape {tuple(x.shape)}; pass at least "
                         "one example")
    if x.is_meta:
        raise ValueError(f"{name}: x is on the meta device and holds no values; pass real data")
    param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    if param is not None and param.device != x.device and not torch.compiler.is_compiling():
        raise ValueError(f"{name}: x is on {x.device} but the model is on {param.device}; move "
                         "one of them (x.to(device) or bfn.to(device))")


def _check_values(x: Tensor, name: str, lo: float, hi: float, fix: str) -> None:
    """x is finite and inside [lo, hi]: one host sync, skipped while torch.compile traces."""
    if torch.compiler.is_compiling():
        return
    a, b = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(a) and math.isfinite(b)):
        kind = "NaN" if math.isnan(a) or math.isnan(b) else "infinite"
        raise ValueError(f"{name}: x contains {kind} values; clean the data first "
                         "(torch.isfinite(x).all() must hold)")
    if a < lo or b > hi:
        raise ValueError(f"{name}: x holds values in [{a:.3g}, {b:.3g}]; {fix}")


def _count(n, name: str) -> int:
    """A positive integer argument; bools and non-integral numbers are refused."""
    try:
        if isinstance(n, bool):
            raise TypeError
        value = operator.index(n)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {n!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value
