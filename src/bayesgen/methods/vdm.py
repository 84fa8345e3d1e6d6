"""Variational Diffusion Models (VDM), continuous time.

Kingma, Salimans, Poole, Ho, "Variational Diffusion Models", NeurIPS 2021, arXiv 2107.00630;
the baseline of the BSI paper (Lienen et al. 2025), with the settings of the BSI authors' VDM
(a fixed linear log-SNR schedule; its endpoints are not learned).

Forward process (VDM Eq. 1–2): q(z_t | x) = N(α_t·x, σ_t²·I), variance preserving
(α_t² + σ_t² = 1), with t = 0 the data end and t = 1 the noise end. The schedule is the
log-SNR γ(t) = −ln SNR(t), linear in t:

    γ(t) = lerp(−ln snr_max, −ln snr_min, t),  σ_t² = sigmoid(γ(t)),  α_t² = sigmoid(−γ(t)),
    SNR(t) = α_t²/σ_t² = exp(−γ(t)),  SNR′(t) = −γ′·SNR(t),  γ′ = ln(snr_max/snr_min).

The negative ELBO of x has three terms, VDM's prior loss, reconstruction loss and diffusion
loss:

    −ELBO(x) = KL(q(z_1 | x) ‖ N(0, I)) + E_q(z_0|x)[−ln p(x | z_0)] + L(x),

with the diffusion loss L the T-step bound L_T(x) = ½·T·E_i[(SNR(s) − SNR(t))·‖x − x̂(z_t, t)‖²]
(s = (i − 1)/T, t = i/T, i ~ U{1..T}) or its T → ∞ limit L_∞(x) = −½·E_t[SNR′(t)·‖x − x̂‖²],
t ~ U(0, 1). p(x | z_0) ∝ q(z_0 | x) per dimension: N(z_0/α_0, σ_0²/α_0²), or — for data on K
bins (``discretization``) — that density evaluated at the K bin centres and normalised over
them, as the VDM paper and the BSI authors' VDM do. The sampler is ancestral:
z_s ~ q(z_s | z_t, x = x̂(z_t, t)) from z_1 ~ N(0, I), and the sample is z_0/α_0.

The network is any callable ``model(z_t, t, **model_kwargs)`` with ``t`` of shape ``(B,)`` in
VDM's convention. It predicts the noise ε (``parameterization="eps"``, the default and the
reference's: x̂ = (z_t − σ_t·ε̂)/α_t) or the data x (``"x"``). With ε-prediction every loss is
computed from ‖ε − ε̂‖² = SNR(t)·‖x − x̂‖², which stays exact near t = 0 in float32.

Depends on torch, einops and jaxtyping, and on the sibling ``bsi.py`` for ``Discretization``
(the bins of 8-bit images and other quantised data, shared so that one object describes the
data for every method): copy both files.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Float
from torch import Tensor, nn

from bayesgen.methods.bsi import Discretization
from bayesgen.methods.solvers import Sampler, check_sampler, solve

Parameterization = Literal["eps", "x"]
# callback(step, t, x_hat) -> None: called once per network call of a sampler
Callback = Callable[[int, float, Tensor], None]

SNR_MIN = math.exp(-5.0)  # ≈ 6.738e-3: α_1² ≈ 0.0067 of the data is left at t = 1
SNR_MAX = math.exp(13.3)  # ≈ 597195.6: σ_0/α_0 ≈ 1.3e-3 at t = 0
BIN_CHUNK = 64  # bins per chunk of the discretized reconstruction's normaliser (bounds memory)


class VDM(nn.Module):
    """A continuous-time Variational Diffusion Model around ``model(z_t, t) -> ε̂`` (or x̂)."""

    elbo_terms = ("l_prior", "l_recon", "l_diff")  # what elbo returns after (elbo, bpd)

    def __init__(
        self,
        model: Callable[..., Tensor],
        data_shape: Sequence[int],
        snr_min: float = SNR_MIN,
        snr_max: float = SNR_MAX,
        k: int = 50,
        parameterization: Parameterization = "eps",
        discretization: Discretization | None = None,
        low_discrepancy_sampling: bool = True,
    ):
        super().__init__()
        if parameterization not in ("eps", "x"):
            raise ValueError(f"parameterization must be 'eps' or 'x', got {parameterization!r}")
        if not 0 < snr_min < snr_max:
            raise ValueError(f"need 0 < snr_min < snr_max, got snr_min={snr_min}, "
                             f"snr_max={snr_max}")
        if int(k) < 1:
            raise ValueError(f"k must be a positive number of steps, got {k}")
        self.model = model
        self.data_shape = tuple(int(d) for d in data_shape)
        if len(self.data_shape) == 0:
            raise ValueError("data_shape must have at least one dimension, e.g. (2,)")
        self.snr_min, self.snr_max = float(snr_min), float(snr_max)
        self.gamma_0 = -math.log(self.snr_max)  # γ(0), the data end
        self.gamma_1 = -math.log(self.snr_min)  # γ(1), the noise end
        self.k = int(k)
        self.parameterization = parameterization
        self.discretization = discretization
        self.low_discrepancy_sampling = low_discrepancy_sampling

    def extra_repr(self) -> str:
        return (f"data_shape={self.data_shape}, snr_min={self.snr_min:.4g}, "
                f"snr_max={self.snr_max:.4g}, k={self.k}, "
                f"parameterization={self.parameterization!r}")

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)

    # ---- noise schedule: γ(t) linear in t ---------------------------------------------------
    @property
    def gamma_prime(self) -> float:
        """γ′ = γ(1) − γ(0) = ln(snr_max/snr_min), constant for the linear schedule."""
        return self.gamma_1 - self.gamma_0

    def gamma(self, t: Tensor) -> Tensor:
        """γ(t) = −ln SNR(t) = lerp(−ln snr_max, −ln snr_min, t)."""
        return self.gamma_0 + self.gamma_prime * t

    def sigma2(self, t: Tensor) -> Tensor:
        """σ_t² = sigmoid(γ(t))."""
        return torch.sigmoid(self.gamma(t))

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma2(t).sqrt()

    def alpha(self, t: Tensor) -> Tensor:
        """α_t = sqrt(sigmoid(−γ(t))) (not sqrt(1 − σ_t²), which cancels near t = 0)."""
        return torch.sigmoid(-self.gamma(t)).sqrt()

    def snr(self, t: Tensor) -> Tensor:
        """SNR(t) = α_t²/σ_t² = exp(−γ(t))."""
        return torch.exp(-self.gamma(t))

    def snr_prime(self, t: Tensor) -> Tensor:
        """dSNR/dt = −γ′·SNR(t) (negative: the SNR falls from the data to the noise end)."""
        return -self.gamma_prime * self.snr(t)

    # ---- forward process and prediction -----------------------------------------------------
    def sample_z(self, x: Float[Tensor, " B *D"], t: Float[Tensor, " B"],
                 generator=None) -> tuple[Tensor, Tensor]:
        """(z_t, ε) with z_t = α_t·x + σ_t·ε ~ q(z_t | x) (VDM Eq. 1)."""
        eps = _randn_like(x, generator)
        return torch.addcmul(_bcast(self.alpha(t), x) * x, _bcast(self.sigma(t), x), eps), eps

    def predict(self, z: Float[Tensor, " B *D"], t: Float[Tensor, " B"],
                **model_kwargs) -> Tensor:
        """x̂(z_t, t): the network's x, or (z_t − σ_t·ε̂)/α_t from its ε̂."""
        out = self.model(z, t, **model_kwargs)
        if self.parameterization == "x":
            return out
        return (z - _bcast(self.sigma(t), z) * out) / _bcast(self.alpha(t), z)

    def scaled_error(self, x: Float[Tensor, " B *D"], t: Float[Tensor, " B"], generator=None,
                     **model_kwargs) -> Float[Tensor, " B"]:
        """SNR(t)·‖x − x̂(z_t, t)‖² with z_t ~ q(z_t | x); = ‖ε − ε̂‖² for ε-prediction."""
        z, eps = self.sample_z(x, t, generator)
        out = self.model(z, t, **model_kwargs)
        if self.parameterization == "eps":
            return _sum_dims(torch.square(eps - out))
        return self.snr(t) * _sum_dims(torch.square(x - out))

    def sample_t(self, n: int, batch: int, like: Tensor, generator=None) -> Float[Tensor, " n B"]:
        """t of shape (n, B): VDM's low-discrepancy draws (a permuted grid i/(nB + 1) shifted by
        one u0 ~ U[0, 1), modulo 1) or i.i.d. U[0, 1)."""
        dev, dt = like.device, like.dtype
        if not self.low_discrepancy_sampling:
            return torch.rand((n, batch), generator=generator, device=dev, dtype=dt)
        u0 = torch.rand((), generator=generator, device=dev, dtype=dt)
        perm = torch.randperm(n * batch, generator=generator, device=dev).to(dt)
        return rearrange((perm / (1 + n * batch) + u0) % 1.0, "(n b) -> n b", n=n)

    # ---- the three terms of −ELBO (nats per example) ------------------------------------------
    def prior_loss(self, x: Float[Tensor, " B *D"]) -> Float[Tensor, " B"]:
        """KL(q(z_1 | x) ‖ N(0, I)) = ½·Σ_d (σ_1² + α_1²·x² − ln σ_1² − 1)."""
        self._check_data(x)
        g1 = torch.tensor(self.gamma_1, dtype=x.dtype, device=x.device)
        a2 = torch.sigmoid(-g1)  # α_1²; σ_1² − 1 = −α_1² and −ln σ_1² = softplus(−γ_1)
        return 0.5 * _sum_dims(a2 * (torch.square(x) - 1) + F.softplus(-g1))

    def reconstruction_loss(self, x: Float[Tensor, " B *D"], n_samples: int = 1,
                            generator=None) -> Float[Tensor, " n B"]:
        """−ln p(x | z_0) with z_0 ~ q(z_0 | x), p(x | z_0) = N(z_0/α_0, σ_0²/α_0²) per dimension,
        or that density at the bin centres normalised over the bins (``discretization``).
        Needs no network: at SNR(0) the data are all but visible."""
        self._check_data(x)
        n_samples = _count(n_samples, "n_samples")
        xs = repeat(x, "b ... -> (n b) ...", n=n_samples)
        t0 = x.new_zeros(())
        z0, _ = self.sample_z(xs, t0.expand(xs.shape[0]), generator)
        a0 = self.alpha(t0)
        mean, std = z0 / a0, self.sigma(t0) / a0
        if self.discretization is None:
            log_p = torch.distributions.Normal(mean, std, validate_args=False).log_prob(xs)
        else:
            log_p = _centre_normalised_log_prob(self.discretization, xs, mean, std)
        return rearrange(-_sum_dims(log_p), "(n b) -> n b", n=n_samples)

    def diffusion_loss(self, x: Float[Tensor, " B *D"], n_samples: int = 1, generator=None,
                       **model_kwargs) -> Float[Tensor, " n B"]:
        """L_∞ = −½·SNR′(t)·‖x − x̂(z_t, t)‖² = ½·γ′·SNR(t)·‖x − x̂‖², t ~ U(0, 1) (low-
        discrepancy over all n·B draws); ``n_samples`` estimates per example."""
        self._check_data(x)
        n, b = _count(n_samples, "n_samples"), x.shape[0]
        t = self.sample_t(n, b, x, generator).reshape(n * b)
        xs = repeat(x, "b ... -> (n b) ...", n=n)
        err = self.scaled_error(xs, t, generator, **_repeat_kwargs(model_kwargs, n, b))
        return rearrange(0.5 * self.gamma_prime * err, "(n b) -> n b", n=n)

    def finite_diffusion_loss(self, x: Float[Tensor, " B *D"], k: int | None = None,
                              t: Tensor | None = None, n_samples: int = 1, generator=None,
                              **model_kwargs) -> Float[Tensor, " n B"]:
        """L_T = ½·T·(SNR(s) − SNR(t))·‖x − x̂(z_t, t)‖² for one step s → t, i ~ U{1..T}, of the
        grid 0 = t_0 < … < t_T = 1 (``t``, or T = ``k`` equal steps);
        SNR(s) − SNR(t) = SNR(t)·expm1(γ(t) − γ(s))."""
        self._check_data(x)
        ts = self.schedule_t(k, t, x)
        steps = ts.numel() - 1
        n, b = _count(n_samples, "n_samples"), x.shape[0]
        i = torch.randint(1, steps + 1, (n * b,), generator=generator, device=x.device)
        t_i, s_i = ts[i], ts[i - 1]
        xs = repeat(x, "b ... -> (n b) ...", n=n)
        err = self.scaled_error(xs, t_i, generator, **_repeat_kwargs(model_kwargs, n, b))
        gap = torch.expm1(self.gamma(t_i) - self.gamma(s_i))
        return rearrange(0.5 * steps * gap * err, "(n b) -> n b", n=n)

    def train_loss(self, x: Float[Tensor, " B *D"], generator=None,
                   **model_kwargs) -> Float[Tensor, " B"]:
        """One draw of L_∞ per example divided by D (nats per dimension): the reference's loss,
        whose scale does not depend on the data's size."""
        return self.diffusion_loss(x, 1, generator, **model_kwargs)[0] / self.data_dim

    def elbo(self, x: Float[Tensor, " B *D"], k: int | None = None, t: Tensor | None = None,
             n_recon_samples: int = 1, n_measure_samples: int = 10,
             return_variance: bool = False, generator=None, **model_kwargs):
        """Monte-Carlo ELBO per example, −(l_prior + l_recon + l_diff), in nats.

        l_diff is L_∞ (``k`` and ``t`` None) or the k-step L_k (``k`` equal steps or the grid
        ``t``), averaged over ``n_measure_samples`` draws; l_recon over ``n_recon_samples``.
        Returns ``(elbo, bpd, l_prior, l_recon, l_diff)`` with bpd = −elbo/(D ln 2), plus the
        variance of the bpd estimate when ``return_variance``.
        """
        _count(n_recon_samples, "n_recon_samples")
        _count(n_measure_samples, "n_measure_samples")
        l_p = self.prior_loss(x)
        l_r = self.reconstruction_loss(x, n_recon_samples, generator)
        if k is None and t is None:
            l_d = self.diffusion_loss(x, n_measure_samples, generator, **model_kwargs)
        else:
            l_d = self.finite_diffusion_loss(x, k, t, n_measure_samples, generator,
                                             **model_kwargs)
        l_recon, l_diff = l_r.mean(0), l_d.mean(0)
        elbo = -(l_p + l_recon + l_diff)
        scale = 1.0 / (self.data_dim * math.log(2))
        bpd = -elbo * scale
        if not return_variance:
            return elbo, bpd, l_p, l_recon, l_diff
        var = _var(l_r) / n_recon_samples + _var(l_d) / n_measure_samples
        return elbo, bpd, l_p, l_recon, l_diff, scale**2 * var

    def finite_elbo(self, x: Tensor, k: int | None = None, t: Tensor | None = None, **kwargs):
        """ELBO of the k-step model (``t`` or ``self.k`` equal steps)."""
        return self.elbo(x, k=k if k is not None or t is not None else self.k, t=t, **kwargs)

    # ---- ancestral sampling -------------------------------------------------------------------
    def schedule_t(self, k: int | None = None, t: Tensor | None = None,
                   like: Tensor | None = None) -> Tensor:
        """The grid 0 = t_0 < … < t_k = 1: ``t`` as given (checked) or k + 1 equal steps."""
        dtype = like.dtype if like is not None else torch.float64
        device = like.device if like is not None else None
        if t is not None:
            t = torch.as_tensor(t, dtype=dtype, device=device)
            if (t.ndim != 1 or t.numel() < 2 or bool((t[1:] <= t[:-1]).any())
                    or float(t[0]) != 0 or float(t[-1]) != 1):
                raise ValueError("t must be an increasing 1-D grid from 0 to 1, e.g. "
                                 "torch.linspace(0, 1, k + 1)")
            return t
        k = self.k if k is None else _count(k, "k")
        return torch.linspace(0, 1, k + 1, dtype=dtype, device=device)

    @torch.no_grad()
    def sample(self, n_samples: int, k: int | None = None, t: Tensor | None = None,
               generator=None, device=None, dtype=None, callback: Callback | None = None,
               sampler: Sampler = "ancestral", **model_kwargs) -> Float[Tensor, " n *D"]:
        """k-step ancestral sampler: z_1 ~ N(0, I); for t = t_k … t_1 (s the next lower time)
        z_s ~ q(z_s | z_t, x̂(z_t, t)); return z_0/α_0. k network calls.

        ``callback(step, t, x_hat)`` is called after each of the k network calls (step 0 …
        k − 1, t from 1 down to t_1 as a float) with the prediction x̂(z_t, t) (n, *D).

        ``sampler``: ``"ancestral"`` (the above) or a solver of the probability-flow ODE
        (``"ode1"``/``"ode2"``, DPM-Solver++(1)/(2M)) or of the reverse SDE (``"sde2"``,
        SDE-DPM-Solver++(2M)) of z_t | x ~ N(α_t·x, σ_t²·I) (VDM Eq. 1–2), see
        :mod:`bayesgen.methods.solvers`, on the same grid (uniform in t, so uniform in log-SNR)
        from z_1 ~ N(0, I): k network calls at t = 1 … 1/k, returning the last x̂; x̂ is
        clipped to the discretization's range when there is one."""
        return self._run_sampler(n_samples, k, t, generator, device, dtype, False,
                                 model_kwargs, callback, sampler)["x"]

    @torch.no_grad()
    def sample_history(self, n_samples: int, k: int | None = None, t: Tensor | None = None,
                       generator=None, device=None, dtype=None, callback: Callback | None = None,
                       sampler: Sampler = "ancestral", **model_kwargs) -> dict[str, Tensor]:
        """The sampler's every latent ``"z"`` (k + 1, z_1 first), prediction ``"x_hat"`` (k + 1,
        the last being the sample z_0/α_0) and time ``"t"`` (k + 1, from 1 down to 0), stacked on
        dim 0; the sample itself under ``"x"`` (the solvers: the k latents, predictions and
        times of their network calls). ``callback`` and ``sampler`` as for :meth:`sample`."""
        return self._run_sampler(n_samples, k, t, generator, device, dtype, True, model_kwargs,
                                 callback, sampler)

    def _run_sampler(self, n_samples, k, t, generator, device, dtype, keep: bool,
                     model_kwargs: dict, callback: Callback | None = None,
                     sampler: Sampler = "ancestral") -> dict[str, Tensor]:
        n_samples = _count(n_samples, "n_samples")
        check_sampler(sampler, "VDM")
        device, dtype = _device_dtype(self.model, device, dtype)
        if sampler != "ancestral":
            return self._solve(n_samples, k, t, generator, device, dtype, keep, model_kwargs,
                               callback, sampler)
        # q(z_s | z_t, x) = N(α_s·lerp(z_t/α_t, x, c), σ_s²·c·I), c = 1 − SNR(t)/SNR(s)
        # = −expm1(γ(s) − γ(t)) (VDM's posterior, written stably in γ). With x = x̂ the mean is
        # (α_s/α_t)·(z_t − c·σ_t·ε̂) for ε-prediction and (α_s/α_t)(1 − c)·z_t + α_s·c·x̂ for
        # x-prediction: a·z_t + b·out. Per-step constants in float64 on the host, moved once, so
        # the loop never syncs; an update is two addcmul kernels.
        ts = self.schedule_t(k, t, torch.empty((), dtype=torch.float64)).flip(0)  # 1 → 0
        t_hi, t_lo = ts[:-1], ts[1:]
        c = -torch.expm1(self.gamma(t_lo) - self.gamma(t_hi))
        ratio = self.alpha(t_lo) / self.alpha(t_hi)
        if self.parameterization == "eps":
            a, b = ratio, -ratio * c * self.sigma(t_hi)
        else:
            a, b = ratio * (1 - c), self.alpha(t_lo) * c
        noise_std = self.sigma(t_lo) * c.sqrt()
        ts_d, a, b, noise_std = (v.to(device=device, dtype=dtype) for v in (ts, a, b, noise_std))
        t_host = ts.tolist()
        final_scale = math.sqrt(1 + math.exp(self.gamma_0))  # 1/α_0, α_0² = sigmoid(−γ(0))
        shape = (n_samples, *self.data_shape)

        def randn() -> Tensor:
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        z = randn()
        hist: dict[str, list[Tensor]] = {"z": [z], "x_hat": []}
        for i in range(ts.numel() - 1):
            t_i = ts_d[i].expand(n_samples)
            out = self.model(z, t_i, **model_kwargs)
            if keep or callback is not None:
                x_hat = out if self.parameterization == "x" else (
                    (z - _bcast(self.sigma(t_i), z) * out) / _bcast(self.alpha(t_i), z))
                if keep:
                    hist["x_hat"].append(x_hat)
                if callback is not None:
                    callback(i, t_host[i], x_hat)
            z = torch.addcmul(torch.addcmul(a[i] * z, b[i], out), noise_std[i], randn())
            if keep:
                hist["z"].append(z)
        x = z * final_scale
        if not keep:
            return {"x": x}
        hist["x_hat"].append(x)
        return {**{key: torch.stack(v) for key, v in hist.items()}, "t": ts_d, "x": x}

    def _solve(self, n_samples: int, k, t, generator, device, dtype, keep: bool,
               model_kwargs: dict, callback: Callback | None, sampler: str) -> dict[str, Tensor]:
        """The probability-flow solvers on z_t ~ N(α_t·x, σ_t²), from t = 1 down to 0."""
        ts64 = self.schedule_t(k, t, torch.empty((), dtype=torch.float64)).flip(0)
        ts, t_host = ts64.to(device=device, dtype=dtype), ts64.tolist()
        alpha, sigma = self.alpha(ts64).tolist(), self.sigma(ts64).tolist()
        shape = (n_samples, *self.data_shape)
        d = self.discretization
        hist: dict[str, list[Tensor]] = {"z": [], "x_hat": []}

        def randn() -> Tensor:
            return torch.randn(shape, generator=generator, device=device, dtype=dtype)

        def predict(z: Tensor, i: int) -> Tensor:
            out = self.model(z, ts[i].expand(n_samples), **model_kwargs)
            x_hat = out if self.parameterization == "x" else (z - sigma[i] * out) / alpha[i]
            if d is not None:
                x_hat = x_hat.clamp(d.min, d.max)
            if callback is not None:
                callback(i, t_host[i], x_hat)
            return x_hat

        x = solve(randn(), alpha, sigma, predict, sampler, randn,
                  record=(lambda z, xh: (hist["z"].append(z), hist["x_hat"].append(xh)))
                  if keep else None)
        if not keep:
            return {"x": x}
        return {**{key: torch.stack(v) for key, v in hist.items()}, "t": ts[:-1], "x": x}

    # ---- input checks -------------------------------------------------------------------------
    def _check_data(self, x: Tensor) -> None:
        """x: a non-empty float batch (B, *data_shape) of finite values on the model's device,
        inside the discretization's range when there is one (value checks sync with the host
        and are skipped under torch.compile)."""
        _check_batch(x, self.data_shape, self.model)
        if not x.is_floating_point():
            raise ValueError(f"VDM: x must be floating-point data, got dtype {x.dtype}; "
                             "convert it with x.float()")
        d = self.discretization
        if d is None:
            _check_values(x)
        else:
            tol = d.bin_width / 2
            _check_values(x, d.min - tol, d.max + tol,
                          f"the discretization expects [{d.min}, {d.max}]; rescale it "
                          "(e.g. 2·x − 1 for data in [0, 1]) or change discretization=")


def _centre_normalised_log_prob(d: Discretization, x: Tensor, mean: Tensor,
                                std: Tensor) -> Tensor:
    """ln P(bin of x) with P(bin j) ∝ N(c_j | mean, std²) over the bin centres c_j, per element.

    The normaliser log Σ_j exp(−½((c_j − mean)/std)²) is accumulated over chunks of bins, so
    memory grows with ``BIN_CHUNK`` and not with the number of bins.
    """
    centres = torch.linspace(d.min, d.max, d.k, dtype=mean.dtype, device=mean.device)
    log_num = -0.5 * torch.square((centres[d.bucket(x)] - mean) / std)
    log_norm = None
    for chunk in centres.split(BIN_CHUNK):
        part = torch.logsumexp(-0.5 * torch.square((chunk - mean[..., None]) / std), dim=-1)
        log_norm = part if log_norm is None else torch.logaddexp(log_norm, part)
    return log_num - log_norm


def _check_batch(x, data_shape: tuple[int, ...], model) -> None:
    """x is a non-empty tensor (B, *data_shape) that holds values on the model's device."""
    dims = ", ".join(map(str, data_shape))
    if not torch.is_tensor(x):
        raise ValueError(f"VDM: x must be a torch.Tensor of shape (B, {dims}), got "
                         f"{type(x).__name__}")
    if tuple(x.shape[1:]) != data_shape:
        raise ValueError(f"VDM: x must have shape (B, {dims}), got {tuple(x.shape)}; "
                         "set data_shape= to match your data")
    if x.shape[0] == 0:
        raise ValueError(f"VDM: x is an empty batch of shape {tuple(x.shape)}; pass at least "
                         "one example")
    if x.is_meta:
        raise ValueError("VDM: x is on the meta device and holds no values; pass real data")
    param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    if param is not None and param.device != x.device and not torch.compiler.is_compiling():
        raise ValueError(f"VDM: x is on {x.device} but the model is on {param.device}; move "
                         "one of them (x.to(device) or vdm.to(device))")


def _check_values(x: Tensor, lo: float = -math.inf, hi: float = math.inf, fix: str = "") -> None:
    """x is finite and inside [lo, hi]: one host sync, skipped while torch.compile traces."""
    if torch.compiler.is_compiling():
        return
    a, b = torch.stack(torch.aminmax(x.detach())).tolist()
    if not (math.isfinite(a) and math.isfinite(b)):
        kind = "NaN" if math.isnan(a) or math.isnan(b) else "infinite"
        raise ValueError(f"VDM: x contains {kind} values; clean the data first "
                         "(torch.isfinite(x).all() must hold)")
    if a < lo or b > hi:
        raise ValueError(f"VDM: x lies in [{a:.3g}, {b:.3g}], outside the range; {fix}")


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
                             "model (vdm.to(device)) or leave device= out")
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    if dtype is None:
        dtype = param.dtype if param is not None else torch.get_default_dtype()
    return torch.device(device), dtype
