"""Bayesian Sample Inference (BSI).

Lienen, Kollovieh, Günnemann, "Generative Modeling with Bayesian Sample Inference",
arXiv 2502.07580. A sample is *inferred*: starting from a broad Gaussian belief
N(0, λ0⁻¹·I), the sampler repeatedly takes a noisy measurement y ~ N(x̂, α⁻¹·I) of the
network's current guess x̂ and updates the belief by exact Gaussian Bayes. Training teaches the
network to predict x from a belief mean μ.

Self-contained: depends on torch, einops and jaxtyping only. Copy this file into your project.
The model is any callable ``model(mu, t, **model_kwargs)`` with ``t`` of shape ``(B,)``.
"""

from __future__ import annotations

import math
import operator
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, repeat
from jaxtyping import Float
from torch import Tensor, nn
from torch.autograd import forward_ad
from torch.nn.attention import SDPBackend, sdpa_kernel

from bayesgen.methods.solvers import Sampler, check_sampler, solve

Schedule = Literal["linear", "cosine", "edm", "edm7"]
Inpaint = Literal["tweedie", "replace"]
# callback(step, t, x_hat) -> None: called once per network call of a sampler
Callback = Callable[[int, float, Tensor], None]


@dataclass(frozen=True)
class Discretization:
    """K equally spaced values on [min, max] (bin centres); ``image_8bit()`` is (-1, 1, 256)."""

    min: float
    max: float
    k: int

    @classmethod
    def image_8bit(cls) -> Discretization:
        return cls(-1.0, 1.0, 256)

    @property
    def bin_width(self) -> float:
        return (self.max - self.min) / (self.k - 1)

    def boundaries(self, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
        """The k + 1 bin edges linspace(min − dx/2, max + dx/2, k + 1)."""
        dx = self.bin_width
        return torch.linspace(self.min - dx / 2, self.max + dx / 2, self.k + 1,
                              dtype=dtype, device=device)

    def bucket(self, x: Tensor) -> Tensor:
        """Index of the bin holding each value: clamp(floor((x − (min − dx/2))/dx), 0, k − 1)."""
        dx = self.bin_width
        return torch.floor((x - (self.min - dx / 2)) / dx).clamp(0, self.k - 1).long()

    def log_prob(self, x: Tensor, mean: Tensor, std: float | Tensor) -> Tensor:
        """log P(bin of x) under N(mean, std²) discretized into the bins, per element.

        P = Φ(right) − Φ(left); the first bin takes the whole left tail and the last bin the
        whole right tail; log P is clamped at ln(1e-20).
        """
        dx = self.bin_width
        idx = self.bucket(x)
        left = self.min - dx / 2 + idx.to(mean.dtype) * dx
        normal = torch.distributions.Normal(mean, std)
        cdf_left = torch.where(idx == 0, torch.zeros_like(mean), normal.cdf(left))
        cdf_right = torch.where(idx == self.k - 1, torch.ones_like(mean), normal.cdf(left + dx))
        return torch.log((cdf_right - cdf_left).clamp_min(1e-20))


class BSI(nn.Module):
    """Bayesian Sample Inference around a denoiser ``model(mu, t) -> x̂`` (or EDM's F).

    Precisions λ are log-uniform on [λ0, λ_M] with λ_M = λ0 + α_M; the network's time input is
    t = cdf(λ) ∈ [0, 1], t = 0 being the noisiest belief.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        data_shape: Sequence[int],
        lambda_0: float = 1e-2,
        alpha_M: float = 1e6,
        alpha_R: float | None = None,
        k: int = 50,
        preconditioning: Literal["edm"] | None = "edm",
        discretization: Discretization | None = None,
        low_discrepancy_sampling: bool = True,
        schedule: Schedule = "linear",
        weight_cap: float | None = None,
    ):
        super().__init__()
        if preconditioning not in ("edm", None):
            raise ValueError(f"preconditioning must be 'edm' or None, got {preconditioning!r}")
        if lambda_0 <= 0 or alpha_M <= 0 or (alpha_R is not None and alpha_R <= 0):
            raise ValueError("lambda_0, alpha_M and alpha_R must be positive precisions")
        if weight_cap is not None and not weight_cap > 0:
            raise ValueError(f"weight_cap must be a positive precision or None, got {weight_cap}")
        if int(k) < 1:
            raise ValueError(f"k must be a positive number of steps, got {k}")
        self.model = model
        self.data_shape = tuple(int(d) for d in data_shape)
        self.lambda_0 = float(lambda_0)
        self.alpha_M = float(alpha_M)
        self.alpha_R = float(2 * alpha_M if alpha_R is None else alpha_R)
        self.lambda_M = self.lambda_0 + self.alpha_M
        self.k = int(k)
        self.preconditioning = preconditioning
        self.discretization = discretization
        self.low_discrepancy_sampling = low_discrepancy_sampling
        self.schedule = schedule
        self.weight_cap = None if weight_cap is None else float(weight_cap)
        self.L = math.log(self.lambda_M) - math.log(self.lambda_0)

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)

    # ---- precision schedule: λ log-uniform on [λ0, λ_M] --------------------------------
    def cdf(self, lam: Tensor) -> Tensor:
        """t = (ln λ − ln λ0) / L."""
        return (torch.log(lam) - math.log(self.lambda_0)) / self.L

    def icdf(self, t: Tensor) -> Tensor:
        """λ = exp(L·t + ln λ0)."""
        return torch.exp(self.L * t + math.log(self.lambda_0))

    # ---- prediction x̂(μ, t) ---------------------------------------------------------------
    def predict(self, mu: Float[Tensor, " B *D"], t: Float[Tensor, " B"], **model_kwargs) -> Tensor:
        """x̂ = F(μ, t) without preconditioning, else EDM's c_skip·μ + c_out·F(c_in·μ, t)."""
        if self.preconditioning is None:
            return self.model(mu, t, **model_kwargs)
        c_skip, c_out, c_in = (_bcast(c, mu) for c in self.edm_coefficients(t))
        return c_skip * mu + c_out * self.model(c_in * mu, t, **model_kwargs)

    def edm_coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in) with σ_data = 1: α = λ − λ0, κ = 1 + α·(α/λ)."""
        lam = self.icdf(t)
        alpha = lam - self.lambda_0
        kappa = 1 + alpha * (alpha / lam)
        return alpha / kappa, kappa.rsqrt(), (lam / kappa).sqrt()

    # ---- sampling the belief marginal q(μ | x, λ) = N(((λ − λ0)/λ)·x, λ⁻¹·I) ----------------
    def sample_belief(self, x: Tensor, lam: Tensor, generator=None) -> Tensor:
        lam = _bcast(lam, x)
        eps = _randn_like(x, generator)
        return ((lam - self.lambda_0) / lam) * x + lam.rsqrt() * eps

    def sample_t(self, n: int, batch: int, like: Tensor, generator=None) -> Float[Tensor, " n B"]:
        """t of shape (n, B): low-discrepancy (stratified, one random offset) or i.i.d. U[0, 1)."""
        dev, dt = like.device, like.dtype
        if not self.low_discrepancy_sampling:
            return torch.rand((n, batch), generator=generator, device=dev, dtype=dt)
        u0 = torch.rand((), generator=generator, device=dev, dtype=dt)
        perm = torch.randperm(n * batch, generator=generator, device=dev).to(dt)
        grid = perm / (1 + n * batch)
        return rearrange((grid + u0) % 1.0, "(n b) -> n b", n=n)

    # ---- losses -----------------------------------------------------------------------------
    def train_loss(self, x: Float[Tensor, " B *D"], generator=None, **model_kwargs) -> Tensor:
        """Per-example loss w(λ)·L·mean_d (x − x̂(μ, cdf λ))² with λ ~ p(λ) (1/p(λ) = λ·L).

        w(λ) = λ is the paper's ELBO weighting (the infinite-step measurement loss L_M). With
        ``weight_cap=c`` it is λ·c/(λ + c): the ELBO's weight below c, at most c above — the
        sigmoid weighting of Kingma & Gao (2023, "Understanding Diffusion Objectives"), which
        trades bits/dim for sample quality. Evaluation (``elbo``) is unaffected."""
        self._check_data(x)
        t = self.sample_t(1, x.shape[0], x, generator)[0]
        lam = self.icdf(t)
        mu = self.sample_belief(x, lam, generator)
        x_hat = self.predict(mu, t, **model_kwargs)
        weight = lam if self.weight_cap is None else lam * self.weight_cap / (lam + self.weight_cap)
        return weight * self.L * _sum_dims(torch.square(x - x_hat)) / self.data_dim

    def measurement_loss(self, x: Tensor, n_samples: int = 10, generator=None,
                         **model_kwargs) -> Float[Tensor, " n B"]:
        """Infinite-step measurement loss L_M = ½·λ·L·Σ_d (x − x̂)², λ ~ p(λ); n samples each."""
        self._check_data(x)
        n, b = _count(n_samples, "n_samples"), x.shape[0]
        t = self.sample_t(n, b, x, generator).reshape(n * b)
        xs = repeat(x, "b ... -> (n b) ...", n=n)
        lam = self.icdf(t)
        x_hat = self.predict(self.sample_belief(xs, lam, generator), t,
                             **_repeat_kwargs(model_kwargs, n, b))
        return (0.5 * lam * self.L * _sum_dims(torch.square(xs - x_hat))).reshape(n, b)

    def finite_measurement_loss(self, x: Tensor, k: int | None = None, t: Tensor | None = None,
                                n_samples: int = 10, generator=None,
                                **model_kwargs) -> Float[Tensor, " n B"]:
        """k-step measurement loss ½·k·α_i·Σ_d (x − x̂(μ, t_i))², i ~ U{0..k−1}, μ ~ q(μ|x, λ_i)."""
        self._check_data(x)
        ts = self.schedule_t(k, t, x)
        k = ts.numel() - 1
        lam = self.icdf(ts)
        alpha = lam[1:] - lam[:-1]
        n, b = _count(n_samples, "n_samples"), x.shape[0]
        i = torch.randint(0, k, (n * b,), generator=generator, device=x.device)
        xs = repeat(x, "b ... -> (n b) ...", n=n)
        x_hat = self.predict(self.sample_belief(xs, lam[i], generator), ts[i],
                             **_repeat_kwargs(model_kwargs, n, b))
        return (0.5 * k * alpha[i] * _sum_dims(torch.square(xs - x_hat))).reshape(n, b)

    def reconstruction_loss(self, x: Tensor, n_samples: int = 1, generator=None,
                            **model_kwargs) -> Float[Tensor, " n B"]:
        """−log p(x | x̂(μ, 1)) with μ ~ q(μ | x, λ_M) and p = N(x̂, α_R⁻¹), discretized if set."""
        self._check_data(x)
        n, b = _count(n_samples, "n_samples"), x.shape[0]
        xs = repeat(x, "b ... -> (n b) ...", n=n)
        lam = torch.full((n * b,), self.lambda_M, dtype=x.dtype, device=x.device)
        t = torch.ones_like(lam)
        x_hat = self.predict(self.sample_belief(xs, lam, generator), t,
                             **_repeat_kwargs(model_kwargs, n, b))
        std = self.alpha_R ** -0.5
        if self.discretization is not None:
            log_p = self.discretization.log_prob(xs, x_hat, std)
        else:
            log_p = torch.distributions.Normal(x_hat, std).log_prob(xs)
        return -_sum_dims(log_p).reshape(n, b)

    def elbo(self, x: Float[Tensor, " B *D"], n_recon_samples: int = 1,
             n_measure_samples: int = 10, k: int | None = None, t: Tensor | None = None,
             return_variance: bool = False, generator=None, **model_kwargs):
        """Monte-Carlo ELBO per example: −(mean L_R + mean L_M); no prior term.

        With ``k``/``t`` the k-step measurement loss replaces the infinite-step one.
        Returns ``(elbo, bpd, l_recon, l_measure)`` (nats per example, bpd = −elbo/(D ln 2)),
        plus the variance of the bpd estimate when ``return_variance``:
        (1/(D ln 2))²·(Var L_R/n_R + Var L_M/n_M).
        """
        _count(n_recon_samples, "n_recon_samples")
        _count(n_measure_samples, "n_measure_samples")
        l_r = self.reconstruction_loss(x, n_recon_samples, generator, **model_kwargs)
        if k is None and t is None:
            l_m = self.measurement_loss(x, n_measure_samples, generator, **model_kwargs)
        else:
            l_m = self.finite_measurement_loss(x, k, t, n_measure_samples, generator,
                                               **model_kwargs)
        l_recon, l_measure = l_r.mean(0), l_m.mean(0)
        elbo = -(l_recon + l_measure)
        scale = 1.0 / (self.data_dim * math.log(2))
        bpd = -elbo * scale
        if not return_variance:
            return elbo, bpd, l_recon, l_measure
        var = _var(l_r) / n_recon_samples + _var(l_m) / n_measure_samples
        return elbo, bpd, l_recon, l_measure, scale**2 * var

    def finite_elbo(self, x: Tensor, k: int | None = None, t: Tensor | None = None,
                    **kwargs):
        """ELBO of the k-step sampler (schedule ``t`` or ``self.schedule`` with k steps)."""
        return self.elbo(x, k=k if k is not None or t is not None else self.k, t=t, **kwargs)

    # ---- sampling -----------------------------------------------------------------------------
    def schedule_t(self, k: int | None = None, t: Tensor | None = None, like: Tensor | None = None,
                   schedule: Schedule | None = None) -> Tensor:
        """The k + 1 network times t_0 = 0 < … < t_k = 1 of a named schedule (or ``t`` as given)."""
        dtype = like.dtype if like is not None else torch.float64
        device = like.device if like is not None else None
        if t is not None:
            t = torch.as_tensor(t, dtype=dtype, device=device)
            if t.ndim != 1 or t.numel() < 2 or bool((t[1:] <= t[:-1]).any()):
                raise ValueError("t must be a 1-D increasing schedule with at least 2 points")
            return t
        k = self.k if k is None else _count(k, "k")
        u = torch.linspace(0, 1, k + 1, dtype=torch.float64)
        name = schedule or self.schedule
        s0, s1 = self.lambda_0 ** -0.5, self.lambda_M ** -0.5
        if name == "linear":
            ts = u
        elif name == "cosine":
            var = (1 / self.lambda_0 - 1 / self.lambda_M) * torch.cos(math.pi * u / 2) ** 2
            ts = self.cdf(1 / (var + 1 / self.lambda_M))
        elif name == "edm":
            ts = self.cdf((s0 + u * (s1 - s0)) ** -2)
        elif name == "edm7":
            rho = 7.0
            std = (s0 ** (1 / rho) + u * (s1 ** (1 / rho) - s0 ** (1 / rho))) ** rho
            ts = self.cdf(std**-2)
        else:
            raise ValueError(f"unknown schedule {name!r}; use linear, cosine, edm or edm7")
        ts = ts.clamp(0, 1)
        ts[0], ts[-1] = 0.0, 1.0
        return ts.to(dtype=dtype, device=device)

    @torch.no_grad()
    def sample(self, n_samples: int, k: int | None = None, t: Tensor | None = None,
               schedule: Schedule | None = None, generator=None, device=None, dtype=None,
               callback: Callback | None = None, observed: Tensor | None = None,
               mask: Tensor | None = None, inpaint: Inpaint = "tweedie", inpaint_iters: int = 4,
               sampler: Sampler = "ancestral", **model_kwargs) -> Float[Tensor, " n *D"]:
        """k-step BSI sampler: x̂ = x̂(μ, t_i); y = x̂ + α_i^(−1/2)·ε;
        μ ← (α_i·y + λ_i·μ)/λ_{i+1}; return x̂(μ, 1). k + 1 network calls.

        ``callback(step, t, x_hat)`` is called after each of the k + 1 network calls (step
        0 … k, t the network time as a float, x̂ the current prediction (n, *D); the last call
        has t = 1 and the sample). It may not modify x̂.

        Conditioning by inference: with ``observed`` (values, broadcastable to (n, *D)) and
        ``mask`` (bool, broadcastable to (n, *D), True where ``observed`` holds known values)
        the known entries are observed exactly — they come back equal to ``observed`` — and the
        rest is drawn from the conditional distribution. ``inpaint="tweedie"`` (default)
        corrects the unknown part of x̂ by the posterior covariance: Cov[x | μ] = J/(a·λ) with
        J = ∂x̂/∂μ for the belief μ = a·x + λ^(−1/2)·ε (Tweedie), so E[x_u | μ, x_o] ≈
        x̂_u + J_uo·J_oo⁻¹·(x_o − x̂_o), exact for Gaussian data; J_oo⁻¹ is applied by at most
        ``inpaint_iters`` conjugate-gradient iterations, each one Jacobian-vector product
        (forward-mode AD through the network), so a step costs one network call plus up to
        ``inpaint_iters`` JVPs (CG stops early once converged: one JVP when one coordinate per
        example is known). ``inpaint="replace"`` is the cheap baseline (one network call per
        step): the known part of μ is re-drawn from q(μ | x_o, λ) at every step, which leaves
        the unknown part biased towards the unconditional distribution.

        ``sampler``: ``"ancestral"`` (the paper's sampler above, k + 1 network calls) or a
        probability-flow solver of the belief process μ | x ~ N(a·x, λ⁻¹·I), a = (λ − λ0)/λ
        (the marginal of the measurements, spec "Belief marginal"), on the same grid t_0 … t_k:
        ``"ode1"``/``"ode2"`` (DPM-Solver++(1)/(2M)) and ``"sde2"`` (SDE-DPM-Solver++(2M)),
        see :mod:`bayesgen.methods.solvers`. They call the network at t_0 … t_{k−1} (k calls)
        and return x̂(μ, t_{k−1}); x̂ is clipped to the discretization's range when there is
        one. With λ0 → 0 the first-order SDE step is exactly the ancestral step above
        (e^(−2h) = λ_i/λ_{i+1}), so ``"sde2"`` is its second-order refinement.
        """
        return self._run_sampler(n_samples, k, t, schedule, generator, device, dtype, False,
                                 model_kwargs, callback, observed, mask, inpaint,
                                 inpaint_iters, sampler)["x"]

    @torch.no_grad()
    def sample_history(self, n_samples: int, k: int | None = None, t: Tensor | None = None,
                       schedule: Schedule | None = None, generator=None, device=None, dtype=None,
                       callback: Callback | None = None, observed: Tensor | None = None,
                       mask: Tensor | None = None, inpaint: Inpaint = "tweedie",
                       inpaint_iters: int = 4, sampler: Sampler = "ancestral",
                       **model_kwargs) -> dict[str, Tensor]:
        """The sampler's every belief mean μ_i (k + 1), prediction x̂_i (k + 1, the last being
        the sample) and measurement y_i (k), stacked on dim 0; the sample itself under ``"x"``.
        The solvers (``sampler`` other than ancestral) record the k beliefs and predictions at
        which they call the network and no measurements. Other arguments as for
        :meth:`sample`."""
        return self._run_sampler(n_samples, k, t, schedule, generator, device, dtype, True,
                                 model_kwargs, callback, observed, mask, inpaint, inpaint_iters,
                                 sampler)

    def _run_sampler(self, n_samples, k, t, schedule, generator, device, dtype, keep: bool,
                     model_kwargs: dict, callback: Callback | None = None,
                     observed: Tensor | None = None, mask: Tensor | None = None,
                     inpaint: Inpaint = "tweedie", inpaint_iters: int = 4,
                     sampler: Sampler = "ancestral") -> dict[str, Tensor]:
        n_samples = _count(n_samples, "n_samples")
        check_sampler(sampler, "BSI")
        device, dtype = _device_dtype(self.model, device, dtype)
        shape = (n_samples, *self.data_shape)
        cond = self._check_observed(observed, mask, shape, device, dtype, inpaint,
                                    inpaint_iters)
        # The per-step constants in float64 on the host, moved once: the loop never syncs.
        ts64 = self.schedule_t(k, t, torch.empty((), dtype=torch.float64), schedule)
        lams = self.icdf(ts64)
        alphas = lams[1:] - lams[:-1]
        ts, noise_std, weight = (v.to(device=device, dtype=dtype) for v in
                                 (ts64, alphas.rsqrt(), alphas / lams[1:]))
        t_host = ts64.tolist()
        # re-noising the known part ("replace"): μ_o ~ q(μ | x_o, λ_{i+1}) = N(a·x_o, λ⁻¹)
        a_next = ((lams[1:] - self.lambda_0) / lams[1:]).tolist()
        std_next = lams[1:].rsqrt().tolist()

        def randn() -> Tensor:
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        def prediction(mu: Tensor, t_i: Tensor) -> Tensor:
            t_b = t_i.expand(n_samples)
            if cond is None:
                return self.predict(mu, t_b, **model_kwargs)
            obs, x_o = cond
            if inpaint == "tweedie":
                x_hat = _condition_prediction(lambda m: self.predict(m, t_b, **model_kwargs),
                                              mu, obs, x_o, inpaint_iters)
            else:
                x_hat = self.predict(mu, t_b, **model_kwargs)
            return torch.where(obs, x_o, x_hat)

        mu = self.lambda_0 ** -0.5 * randn()
        if sampler != "ancestral":
            return self._solve(mu, lams, ts, t_host, sampler, prediction, randn, keep, callback,
                               cond, inpaint == "replace", a_next, std_next)
        hist: dict[str, list[Tensor]] = {"mu": [mu], "x_hat": [], "y": []}
        for i in range(ts.numel() - 1):
            x_hat = prediction(mu, ts[i])
            if callback is not None:
                callback(i, t_host[i], x_hat)
            y = torch.addcmul(x_hat, noise_std[i], randn())  # x̂ + α_i^(−1/2)·ε
            mu = torch.lerp(mu, y, weight[i])  # (α_i·y + λ_i·μ)/λ_{i+1}, weight = α_i/λ_{i+1}
            if cond is not None and inpaint == "replace":
                mu = torch.where(cond[0], a_next[i] * cond[1] + std_next[i] * randn(), mu)
            if keep:
                hist["mu"].append(mu)
                hist["x_hat"].append(x_hat)
                hist["y"].append(y)
        x = prediction(mu, torch.ones((), device=device, dtype=dtype))
        if callback is not None:
            callback(ts.numel() - 1, t_host[-1], x)
        if not keep:
            return {"x": x}
        hist["x_hat"].append(x)
        return {**{key: torch.stack(v) for key, v in hist.items()}, "t": ts, "x": x}

    def _solve(self, mu: Tensor, lams: Tensor, ts: Tensor, t_host: list[float], sampler: str,
               prediction: Callable[[Tensor, Tensor], Tensor], randn: Callable[[], Tensor],
               keep: bool, callback: Callback | None, cond: tuple[Tensor, Tensor] | None,
               replace: bool, a_next: list[float], std_next: list[float]) -> dict[str, Tensor]:
        """The probability-flow solvers on μ_i ~ N(a_i·x, λ_i⁻¹), a_i = (λ_i − λ0)/λ_i."""
        d = self.discretization
        hist: dict[str, list[Tensor]] = {"mu": [], "x_hat": []}

        def predict(z: Tensor, i: int) -> Tensor:
            x_hat = prediction(z, ts[i])
            if d is not None:
                x_hat = x_hat.clamp(d.min, d.max)
                if cond is not None:
                    x_hat = torch.where(cond[0], cond[1], x_hat)
            if callback is not None:
                callback(i, t_host[i], x_hat)
            return x_hat

        def record(z: Tensor, x_hat: Tensor) -> None:
            hist["mu"].append(z)
            hist["x_hat"].append(x_hat)

        def reset_known(z: Tensor, i: int) -> Tensor:  # μ_o ~ q(μ | x_o, λ_i)
            return torch.where(cond[0], a_next[i - 1] * cond[1] + std_next[i - 1] * randn(), z)

        lam = lams.tolist()
        x = solve(mu, [(v - self.lambda_0) / v for v in lam], [v**-0.5 for v in lam],
                  predict, sampler, randn, after_step=reset_known if replace else None,
                  record=record if keep else None)
        if not keep:
            return {"x": x}
        return {**{key: torch.stack(v) for key, v in hist.items()}, "t": ts[:-1], "x": x}

    def _check_observed(self, observed, mask, shape: tuple[int, ...], device, dtype,
                        inpaint, inpaint_iters) -> tuple[Tensor, Tensor] | None:
        """(mask, observed) broadcast to the samples' shape, after checking them; None when
        neither is given."""
        if inpaint not in ("tweedie", "replace"):
            raise ValueError(f"inpaint must be 'tweedie' or 'replace', got {inpaint!r}")
        _count(inpaint_iters, "inpaint_iters")
        if observed is None and mask is None:
            return None
        obs, x_o = _broadcast_observed(observed, mask, shape, "BSI")
        if not x_o.is_floating_point():
            raise ValueError(f"BSI: observed must be floating-point data, got dtype {x_o.dtype}; "
                             "convert it with observed.float()")
        d = self.discretization
        lo, hi = (-math.inf, math.inf) if d is None else (d.min - d.bin_width / 2,
                                                          d.max + d.bin_width / 2)
        _check_observed_values(x_o, obs, lo, hi, "BSI")
        return obs.to(device), x_o.to(device=device, dtype=dtype)

    # ---- input checks -------------------------------------------------------------------------
    def _check_data(self, x: Tensor) -> None:
        """x: a non-empty float batch (B, *data_shape) of finite values on the model's device,
        inside the discretization's range when there is one."""
        _check_batch(x, self.data_shape, self.model)
        if not x.is_floating_point():
            raise ValueError(f"BSI: x must be floating-point data, got dtype {x.dtype}; "
                             "convert it with x.float()")
        d = self.discretization
        if d is None:
            _check_values(x)
        else:
            tol = d.bin_width / 2
            _check_values(x, d.min - tol, d.max + tol,
                          f"the discretization expects [{d.min}, {d.max}]; rescale it "
                          "(e.g. 2·x − 1 for data in [0, 1]) or change discretization=")

# ---- conditioning by inference (the same helpers live in bfn.py) ------------------------------
def _condition_prediction(f: Callable[[Tensor], Tensor], inp: Tensor, obs: Tensor,
                          target: Tensor, iters: int, pred: Tensor | None = None) -> Tensor:
    """E[z_u | inp, z_o = target] ≈ f_u + J_uo·J_oo⁻¹·(target − f_o) with J = ∂f/∂inp.

    For a posterior mean f(μ) = E[z | μ] of a belief μ = a·z + λ^(−1/2)·ε, J = a·λ·Cov[z | μ]
    (Tweedie), so this is Gaussian conditioning of the posterior on the observed entries ``obs``
    (exact for Gaussian data; the factor a·λ cancels). ``f`` must map each example
    independently (inputs and outputs of one shape, no batch coupling). J_oo⁻¹ is applied
    per example by conjugate gradients, one forward-mode Jacobian-vector product per iteration,
    at most ``iters`` of them, stopping once the residual is 1e-6 of the initial one or
    pᵀJ_oo·p ≤ 0 (J_oo is symmetric positive semi-definite for an exact posterior mean).
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


def _check_observed_values(x_o: Tensor, obs: Tensor, lo: float, hi: float, name: str) -> None:
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
                         f"True, outside the data range [{lo:.3g}, {hi:.3g}]; rescale it "
                         "(e.g. 2·x − 1 for data in [0, 1])")


def _check_batch(x, data_shape: tuple[int, ...], model) -> None:
    """x is a non-empty tensor (B, *data_shape) that holds values on the model's device."""
    dims = ", ".join(map(str, data_shape))
    if not torch.is_tensor(x):
        raise ValueError(f"BSI: x must be a torch.Tensor of shape (B, {dims}), got "
                         f"{type(x).__name__}")
    if tuple(x.shape[1:]) != data_shape:
        raise ValueError(f"BSI: x must have shape (B, {dims}), got {tuple(x.shape)}; "
                         "set data_shape= to match your data")
    if x.shape[0] == 0:
        raise ValueError(f"BSI: x is an empty batch of shape {tuple(x.shape)}; pass at least "
                         "one example")
    if x.is_meta:
        raise ValueError("BSI: x is on the meta device and holds no values; pass real data")
    param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    if param is not None and param.device != x.device and not torch.compiler.is_compiling():
        raise ValueError(f"BSI: x is on {x.device} but the model is on {param.device}; move "
                         "one of them (x.to(device) or bsi.to(device))")


def _check_values(x: Tensor, lo: float = -math.inf, hi: float = math.inf, fix: str = "") -> None:
    """x is finite and inside [lo, hi]: one host sync, skipped while torch.compile traces."""
    if torch.compiler.is_compiling():
        return
    a, b = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(a) and math.isfinite(b)):
        kind = "NaN" if math.isnan(a) or math.isnan(b) else "infinite"
        raise ValueError(f"BSI: x contains {kind} values; clean the data first "
                         "(torch.isfinite(x).all() must hold)")
    if a < lo or b > hi:
        raise ValueError(f"BSI: x lies in [{a:.3g}, {b:.3g}], outside the range; {fix}")


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


def _bcast(c: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-example (B,) tensor to broadcast against (B, *D)."""
    return c.reshape(-1, *([1] * (like.ndim - 1))) if c.ndim == 1 else c


def _sum_dims(x: Tensor) -> Tensor:
    return x.flatten(1).sum(1)


def _var(x: Float[Tensor, " n B"]) -> Tensor:
    return x.var(0) if x.shape[0] > 1 else torch.zeros_like(x[0])


def _randn_like(x: Tensor, generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _repeat_kwargs(kwargs: dict, n: int, b: int) -> dict:
    """Repeat per-example model kwargs (first dim B) to match an (n·B) batch."""
    if n == 1:
        return kwargs
    return {key: repeat(v, "b ... -> (n b) ...", n=n) if torch.is_tensor(v) and v.ndim > 0
            and v.shape[0] == b else v for key, v in kwargs.items()}


def _device_dtype(model, device, dtype) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's parameters, unless given (float32 on CPU otherwise);
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
                             "model (bsi.to(device)) or leave device= out")
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    if dtype is None:
        dtype = param.dtype if param is not None else torch.get_default_dtype()
    return torch.device(device), dtype
