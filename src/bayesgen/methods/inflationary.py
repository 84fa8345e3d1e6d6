"""Inflationary Flows (IF).

de Albuquerque & Pearson, "Inflationary Flows: Calibrated Bayesian Inference with
Diffusion-Based Models", NeurIPS 2024, arXiv 2407.08843 (schedule, preconditioning and ODE as in
the authors' code, built on NVlabs/edm). A diffusion model whose noise *inflates* the data
covariance so that a probability-flow ODE (pfODE) maps data deterministically and invertibly
onto a Gaussian latent space, optionally compressing all but the first k principal directions.

Coordinates (all computations are diagonal in the PCA eigenbasis "ES" of the data):
- data x (any shape ``data_shape``; "IS") ↔ ES: y = Wᵀ(flat(x) − μ), x = W·y + μ, with W the
  eigenvectors (columns) and μ the optional data centre (``mean``; None = 0);
- x̃: unscaled noisy data, x̃ = y + n with n ~ N(0, diag γ(t)) in ES;
- the pfODE state is the *scaled* ES vector x = s(t)·x̃ of shape (B, D). Latents z are this
  state at t_max (ES, scaled): ≈ N(0, A0²) in the kept dims, ≈ 0 in the compressed ones.

Schedule (per ES dim i): γ_i(t) = γ0·exp(ρ(1 + g_i)·t), s(t) = A0/√(ξ* + γ0·e^{ρ(1+g*)t}),
with ξ* = max λ and g* = max g. pfODE (ES):
    dx/dt = (ṡ/s + ½γ̇/γ) ⊙ x − ½·s·(γ̇/γ) ⊙ D(x/s, t).

The network: with ``preconditioning=None`` it is the denoiser itself, ``model(x̃, t) -> D``
with x̃ in data coordinates (``space="IS"``, shape ``data_shape``, centre added back) or as ES
coefficients laid out in ``data_shape`` (``space="ES"``). With ``preconditioning="ifs"`` it is F
in D = c_skip ⊙ x̃ + c_out ⊙ F(c_in ⊙ x̃, 999·t) (ES); in IS mode F sees W·(c_in ⊙ x̃) (whitened
noisy data rotated back to the data layout, no centre) and its output is rotated to ES.

Depends on torch, jaxtyping and the sibling ``ode.py`` (torch + torchdiffeq).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from bayesgen.methods.ode import (
    ODEResult,
    Solver,
    draw_probes,
    hutchinson_divergence,
    integrate_with_divergence,
    solve,
)
from bayesgen.methods.ode import exact_divergence as exact_trace

Inflation = Literal["orig", "constant_inflation_gap"]
# callback(step, t, x_hat) -> None: called once per solver step (see InflationaryFlow.integrate)
Callback = Callable[[int, float, Tensor], None]

# Default solve: adaptive dopri5 with rtol = atol = 1e-5 (see InflationaryFlow.encode).
RTOL = 1e-5
ATOL = 1e-5
# Steps on [t_start, t_max] when a fixed-step solver is asked for without n_steps / h / grid.
FIXED_STEPS = {"euler": 2000, "heun": 255}


def inflation_rates(data_dim: int, dims_to_keep: int | None = None, inflation: Inflation = "orig",
                    inflation_gap: float | None = None, g_rescaling: float = 1.0
                    ) -> Float[Tensor, " D"]:
    """The rate vector g (float64) of γ_i(t) = γ0·exp(ρ(1 + g_i)t).

    PR-preserving (k = D): g = 0. PR-reducing to k dims: g_i = 1 for the first k dims and, for
    the others, −k/(D − k) ("orig", authors' code) or −inflation_gap
    ("constant_inflation_gap", dannyfa/Inflationary_Flows). Finally g ← g·g_rescaling.

    The paper's inflation gap (arXiv 2407.08843 §B.2) is IG = g* − g_i; with g* = 1 the
    constant-gap schedule therefore has IG = 1 + inflation_gap (before rescaling), e.g.
    inflation_gap = 0.02 for the published IG = 1.02 runs. ``inflation_gap`` must exceed −1
    so that the compressed dims inflate more slowly than the kept ones (IG > 0).
    """
    k = data_dim if dims_to_keep is None else dims_to_keep
    if not 1 <= k <= data_dim:
        raise ValueError(f"dims_to_keep must lie in [1, {data_dim}], got {dims_to_keep}")
    if inflation not in ("orig", "constant_inflation_gap"):
        raise ValueError(f"unknown inflation {inflation!r}; use 'orig' or "
                         "'constant_inflation_gap'")
    if inflation == "constant_inflation_gap" and (inflation_gap is None or inflation_gap <= -1):
        raise ValueError("inflation='constant_inflation_gap' needs inflation_gap > −1 "
                         "(compressed dims get g_i = −inflation_gap; the paper's "
                         "IG = g* − g_i = 1 + inflation_gap, e.g. 0.02 for IG = 1.02)")
    g = torch.zeros(data_dim, dtype=torch.float64, device="cpu")
    if k < data_dim:
        g[:k] = 1.0
        g[k:] = -k / (data_dim - k) if inflation == "orig" else -float(inflation_gap)
    return g * g_rescaling


def reference_grid(kind: Literal["toy", "image"], n: int, h: float = 1e-2, t_max: float = 15.01,
                   eps: float = 1e-2) -> Float[Tensor, " n"]:
    """The authors' time grids (float64): toys ``linspace(0, n·h, n)`` (Euler, e.g. n = 701,
    h = 1e-2 → T = 7.01); images linear from ``t_max`` down to ``eps`` with n points (Heun,
    n = 256 → 510 network calls). Encode/decode orient any grid themselves."""
    if kind == "toy":
        return torch.linspace(0.0, n * h, n, dtype=torch.float64)
    if kind == "image":
        return torch.linspace(t_max, eps, n, dtype=torch.float64)
    raise ValueError(f"unknown grid kind {kind!r}; use 'toy' or 'image'")


class InflationSchedule(nn.Module):
    """Noise covariance C(t) = W·diag γ(t)·Wᵀ, scale s(t) and the data ↔ ES coordinates.

    Buffers: ``lam`` (λ, D), ``W`` (D, D, eigenvectors as columns), ``g`` (D), ``mean``
    (D or None). Every function casts them to the dtype/device of its input.
    """

    def __init__(self, data_shape: Sequence[int], eigvals: Tensor, eigvecs: Tensor, g: Tensor,
                 gamma0: float = 5e-4, rho: float = 1.0, end_vars: float = 1.0,
                 mean: Tensor | None = None):
        super().__init__()
        self.data_shape = tuple(int(d) for d in data_shape)
        dim = math.prod(self.data_shape)
        eigvals = torch.as_tensor(eigvals, dtype=torch.float64).flatten()
        eigvecs = torch.as_tensor(eigvecs, dtype=torch.float64)
        if eigvals.shape != (dim,) or eigvecs.shape != (dim, dim) or g.shape != (dim,):
            raise ValueError(f"data_shape {self.data_shape} has D = {dim}: need eigvals (D,) and "
                             f"eigvecs (D, D) with eigenvectors as columns, got "
                             f"{tuple(eigvals.shape)} and {tuple(eigvecs.shape)}")
        if not eigvals.is_meta and not torch.all(eigvals > 0):
            raise ValueError("eigvals must be positive; drop or floor degenerate directions "
                             "(InflationaryFlow.from_data floors them at 1e-12·max λ)")
        self.gamma0, self.rho, self.end_vars = float(gamma0), float(rho), float(end_vars)
        self.register_buffer("lam", eigvals)
        self.register_buffer("W", eigvecs)
        # a float32 copy for float32 data: casting the (D, D) basis at every use costs a third
        # of an image training step; refreshed whenever a state dict is loaded
        self.register_buffer("W_f32", eigvecs.float(), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _: module._refresh_basis())
        self.register_buffer("g", g.to(torch.float64))
        mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float64).flatten()
        self.register_buffer("mean", mean)

    def _refresh_basis(self) -> None:
        self.W_f32 = self.W.detach().float()

    def basis(self, like: Tensor) -> Tensor:
        """W in the dtype/device of ``like`` (the cached float32 copy for float32 data)."""
        if like.dtype == self.W_f32.dtype and like.device == self.W_f32.device:
            return self.W_f32
        return self.W.to(like)

    @property
    def data_dim(self) -> int:
        return self.lam.numel()

    def xi_star(self, like: Tensor) -> Tensor:
        """ξ* = max λ (from the buffer, so a loaded state dict wins), dtype/device of ``like``."""
        return self.lam.amax().to(like)

    def g_star(self, like: Tensor) -> Tensor:
        """g* = max g (from the buffer), dtype/device of ``like``."""
        return self.g.amax().to(like)

    # ---- schedule -----------------------------------------------------------------------------
    def gamma(self, t: Float[Tensor, " *T"]) -> Float[Tensor, "*T D"]:
        """γ(t) = γ0·exp(ρ(1 + g)t), the diagonal of C(t) in ES."""
        return self.gamma0 * torch.exp(self.gamma_rate(t) * t[..., None])

    def gamma_rate(self, like: Tensor) -> Float[Tensor, " D"]:
        """γ̇/γ = ρ(1 + g) (time-independent)."""
        return self.rho * (1 + self.g.to(like))

    def gamma_dot(self, t: Float[Tensor, " *T"]) -> Float[Tensor, "*T D"]:
        """γ̇ = ρ(1 + g) ⊙ γ."""
        return self.gamma_rate(t) * self.gamma(t)

    def gamma_star(self, t: Tensor) -> Tensor:
        """γ_{g*}(t) = γ0·exp(ρ(1 + g*)t)."""
        return self.gamma0 * torch.exp(self.rho * (1 + self.g_star(t)) * t)

    def s(self, t: Tensor) -> Tensor:
        """s(t) = A0/√(ξ* + γ_{g*}(t))."""
        return self.end_vars / torch.sqrt(self.xi_star(t) + self.gamma_star(t))

    def s_dot(self, t: Tensor) -> Tensor:
        """ṡ = −½·A0·ρ(1 + g*)·γ_{g*}·(ξ* + γ_{g*})^(−3/2)."""
        gs = self.gamma_star(t)
        rate = self.rho * (1 + self.g_star(t))
        return -0.5 * self.end_vars * rate * gs * (self.xi_star(t) + gs) ** -1.5

    def state_var(self, t: Tensor) -> Float[Tensor, "*T D"]:
        """s(t)²·(λ + γ(t)): per-ES-dim variance of the scaled state for data N(μ, W diag λ Wᵀ),
        i.e. the exact Gaussian the schedule implies (the latent base at t_max)."""
        return self.s(t)[..., None] ** 2 * (self.lam.to(t) + self.gamma(t))

    # ---- coordinates --------------------------------------------------------------------------
    def to_es(self, x: Float[Tensor, " B *S"]) -> Float[Tensor, "B D"]:
        """y = Wᵀ(flat(x) − μ)."""
        x = x.flatten(1)
        if self.mean is not None:
            x = x - self.mean.to(x)
        return x @ self.basis(x)

    def from_es(self, y: Float[Tensor, "B D"]) -> Float[Tensor, " B *S"]:
        """x = W·y + μ, reshaped to data_shape."""
        x = y @ self.basis(y).T
        if self.mean is not None:
            x = x + self.mean.to(y)
        return x.reshape(-1, *self.data_shape)

    def rotate_to_is(self, y: Float[Tensor, "B D"]) -> Float[Tensor, " B *S"]:
        """W·y in the data layout (a direction: no centre)."""
        return (y @ self.basis(y).T).reshape(-1, *self.data_shape)

    def rotate_to_es(self, x: Float[Tensor, " B *S"]) -> Float[Tensor, "B D"]:
        """Wᵀ·flat(x) (a direction: no centre)."""
        return x.flatten(1) @ self.basis(x)


class InflationaryFlow(nn.Module):
    """Inflationary Flow around a denoiser (``preconditioning=None``) or the F of the IF
    preconditioning (``"ifs"``); see the module docstring for coordinates.

    Args:
        model: ``model(x, t, **model_kwargs)``; may be None and assigned later (``flow.model =
            GaussianDenoiser(flow.schedule)``).
        data_shape: shape of one example; D = prod(data_shape).
        eigvals, eigvecs: PCA of the data, eigenvalues λ (D,) sorted descending and
            eigenvectors as columns (D, D); the first ``dims_to_keep`` columns are kept.
        dims_to_keep: k (None = D, PR-preserving).
        rho, gamma0, end_vars: ρ, γ0 and A0 of the schedule.
        t_min, t_max: training times t ~ U[t_min, t_max]; t_max is also the latent time T.
        inflation, inflation_gap, g_rescaling: the rate vector g (:func:`inflation_rates`).
        preconditioning: "ifs" or None. space: "IS" (default) or "ES", what the network sees.
        mean: data centre μ subtracted before the PCA rotation (None = 0; toys are centred).
        t_sampling: "uniform" on [t_min, t_max] or "normal" N(12, 1.2²) (authors' image option).
        t_start: time at which the state is the data (start of inflation, end of generation).
    """

    def __init__(self, model: Callable[..., Tensor] | None, data_shape: Sequence[int],
                 eigvals: Tensor, eigvecs: Tensor, dims_to_keep: int | None = None,
                 rho: float = 1.0, gamma0: float = 5e-4, t_min: float = 1e-7,
                 t_max: float = 15.01, end_vars: float = 1.0, inflation: Inflation = "orig",
                 inflation_gap: float | None = None, g_rescaling: float = 1.0,
                 preconditioning: Literal["ifs"] | None = "ifs",
                 space: Literal["IS", "ES"] = "IS", mean: Tensor | None = None,
                 t_sampling: Literal["uniform", "normal"] = "uniform", t_start: float = 0.0):
        super().__init__()
        if preconditioning not in ("ifs", None):
            raise ValueError(f"preconditioning must be 'ifs' or None, got {preconditioning!r}")
        if space not in ("IS", "ES"):
            raise ValueError(f"space must be 'IS' or 'ES', got {space!r}")
        if t_sampling not in ("uniform", "normal"):
            raise ValueError(f"t_sampling must be 'uniform' or 'normal', got {t_sampling!r}")
        if not 0 <= t_start < t_max:
            raise ValueError(f"need 0 ≤ t_start < t_max, got t_start={t_start}, t_max={t_max}")
        self.model = model
        self.data_shape = tuple(int(d) for d in data_shape)
        dim = math.prod(self.data_shape)
        self.dims_to_keep = dim if dims_to_keep is None else int(dims_to_keep)
        g = inflation_rates(dim, self.dims_to_keep, inflation, inflation_gap, g_rescaling)
        self.schedule = InflationSchedule(self.data_shape, eigvals, eigvecs, g, gamma0, rho,
                                          end_vars, mean)
        self.t_min, self.t_max, self.t_start = float(t_min), float(t_max), float(t_start)
        self.preconditioning, self.space, self.t_sampling = preconditioning, space, t_sampling
        self.last_nfe = 0

    @classmethod
    def from_data(cls, model: Callable[..., Tensor] | None, data: Float[Tensor, " N *S"] | None,
                  dims_to_keep: int | None = None, centre: bool = True,
                  data_shape: Sequence[int] | None = None, **kwargs) -> InflationaryFlow:
        """Fit the PCA: eigh of the covariance (about the mean, denominator n − 1), sorted
        descending, eigenvalues floored at 1e-12·max λ. ``centre=True`` also makes the flow
        act on x − mean (toys); ``centre=False`` keeps the data as it is (the authors' images).

        ``data=None`` (with ``data_shape``) builds the flow with placeholder statistics (λ = 1,
        W = I, mean 0 when centred) of the right shapes, for loading a saved state dict into:
        λ, W, g and the mean are buffers, so ``load_state_dict`` restores the fitted PCA."""
        if data is None:
            if data_shape is None:
                raise ValueError("from_data(data=None) needs data_shape= (placeholder PCA to be "
                                 "replaced by load_state_dict)")
            dim = math.prod(data_shape)
            return cls(model, data_shape=data_shape,
                       eigvals=torch.ones(dim, dtype=torch.float64, device="cpu"),
                       eigvecs=torch.eye(dim, dtype=torch.float64, device="cpu"),
                       dims_to_keep=dims_to_keep,
                       mean=torch.zeros(dim, dtype=torch.float64, device="cpu") if centre
                       else None, **kwargs)
        if data_shape is not None and tuple(data_shape) != tuple(data.shape[1:]):
            raise ValueError(f"data_shape {tuple(data_shape)} does not match the data "
                             f"{tuple(data.shape[1:])}")
        x = data.flatten(1).to(torch.float64)
        if x.shape[0] < 2:
            raise ValueError("from_data needs at least 2 examples to estimate a covariance")
        mu = x.mean(0)
        cov = (x - mu).T @ (x - mu) / (x.shape[0] - 1)
        lam, W = torch.linalg.eigh(cov)
        lam, W = lam.flip(0), W.flip(1)
        lam = lam.clamp_min(1e-12 * lam[0])
        return cls(model, data_shape=data.shape[1:], eigvals=lam, eigvecs=W,
                   dims_to_keep=dims_to_keep, mean=mu if centre else None, **kwargs)

    @property
    def data_dim(self) -> int:
        return self.schedule.data_dim

    # ---- denoiser, score, velocity --------------------------------------------------------------
    def preconditioning_coefficients(self, t: Float[Tensor, " B"]
                                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """c_in = 1/√(σd + σn), c_skip = σd/(σd + σn), c_out = √(σd·σn/(σd + σn)) (B, D) with
        σd = λ, σn = γ(t), and c_noise = 999·t (B,)."""
        sigma_d, sigma_n = self.schedule.lam.to(t), self.schedule.gamma(t)
        c_in = (sigma_d + sigma_n).rsqrt()
        c_skip = sigma_d / (sigma_d + sigma_n)
        c_out = (sigma_d * sigma_n / (sigma_d + sigma_n)).sqrt()
        return c_in, c_skip, c_out, 999 * t

    def denoise_es(self, x_tilde: Float[Tensor, "B D"], t: Float[Tensor, " B"],
                   **model_kwargs) -> Float[Tensor, "B D"]:
        """D(x̃, t) in ES for x̃ in ES."""
        if self.model is None:
            raise ValueError("the flow has no model; assign one, e.g. "
                             "flow.model = GaussianDenoiser(flow.schedule)")
        sched = self.schedule
        if self.preconditioning is None:
            if self.space == "ES":
                out = self.model(x_tilde.reshape(-1, *self.data_shape), t, **model_kwargs)
                return out.flatten(1)
            return sched.to_es(self.model(sched.from_es(x_tilde), t, **model_kwargs))
        c_in, c_skip, c_out, c_noise = self.preconditioning_coefficients(t)
        f_in = c_in * x_tilde
        f_in = sched.rotate_to_is(f_in) if self.space == "IS" else f_in.reshape(
            -1, *self.data_shape)
        f_out = self.model(f_in, c_noise, **model_kwargs)
        f_out = sched.rotate_to_es(f_out) if self.space == "IS" else f_out.flatten(1)
        return c_skip * x_tilde + c_out * f_out

    def denoise(self, x_tilde: Float[Tensor, " B *S"], t: float | Tensor,
                **model_kwargs) -> Float[Tensor, " B *S"]:
        """D(x̃, t) in data coordinates."""
        self._check_data(x_tilde)
        y = self.schedule.to_es(x_tilde)
        return self.schedule.from_es(self.denoise_es(y, _t_batch(t, y), **model_kwargs))

    def score(self, x_tilde: Float[Tensor, " B *S"], t: float | Tensor,
              **model_kwargs) -> Float[Tensor, " B *S"]:
        """∇ log p_t(x̃) = C(t)⁻¹·(D(x̃, t) − x̃), in data coordinates."""
        self._check_data(x_tilde)
        y = self.schedule.to_es(x_tilde)
        t = _t_batch(t, y)
        score_es = (self.denoise_es(y, t, **model_kwargs) - y) / self.schedule.gamma(t)
        return self.schedule.rotate_to_is(score_es)

    def velocity(self, x: Float[Tensor, "B D"], t: float | Tensor,
                 **model_kwargs) -> Float[Tensor, "B D"]:
        """pfODE right-hand side for the scaled ES state x (spec, authors' ES flow):
        dx/dt = (ṡ/s + ½γ̇/γ) ⊙ x − ½·s·(γ̇/γ) ⊙ D(x/s, t)."""
        return self._velocity(x, t, model_kwargs)[0]

    def _velocity(self, x: Tensor, t: float | Tensor, model_kwargs: dict
                  ) -> tuple[Tensor, Tensor]:
        """(dx/dt, D(x/s, t) in ES)."""
        t = _t_batch(t, x)
        s, s_dot = self.schedule.s(t)[:, None], self.schedule.s_dot(t)[:, None]
        rate = self.schedule.gamma_rate(x)
        denoised = self.denoise_es(x / s, t, **model_kwargs)
        return (s_dot / s + 0.5 * rate) * x - 0.5 * s * rate * denoised, denoised

    # ---- training -----------------------------------------------------------------------------
    def sample_t(self, n: int, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """t ~ U[t_min, t_max], or N(12, 1.2²) with ``t_sampling="normal"``."""
        kw = dict(generator=generator, dtype=like.dtype, device=like.device)
        if self.t_sampling == "normal":
            return 12.0 + 1.2 * torch.randn(n, **kw)
        return self.t_min + (self.t_max - self.t_min) * torch.rand(n, **kw)

    def train_loss(self, x: Float[Tensor, " B *S"], generator: torch.Generator | None = None,
                   t: Tensor | None = None, **model_kwargs) -> Float[Tensor, " B"]:
        """Σ_i (w_i·(D(y + n, t) − y)_i)² in ES with y = Wᵀ(x − μ), n ~ N(0, diag γ(t)) and
        w = 1/c_out (also with ``preconditioning=None``); equal to the IS form since W is
        orthogonal. ``t`` (B,) overrides the sampled times."""
        self._check_data(x)
        y = self.schedule.to_es(x)
        t = self.sample_t(y.shape[0], y, generator) if t is None else _t_batch(t, y)
        gamma = self.schedule.gamma(t)
        n = gamma.sqrt() * torch.randn(y.shape, generator=generator, dtype=y.dtype,
                                       device=y.device)
        weight = 1 / self.preconditioning_coefficients(t)[2]
        denoised = self.denoise_es(y + n, t, **model_kwargs)
        return ((weight * (denoised - y)) ** 2).sum(1)

    # ---- integration --------------------------------------------------------------------------
    def time_grid(self, solver: Solver = "adaptive", n_steps: int | None = None,
                  h: float | None = None, grid: Tensor | None = None,
                  like: Tensor | None = None) -> Float[Tensor, " n"]:
        """Increasing grid on [t_start, t_max]: ``grid`` as given (re-oriented), else n_steps
        (or ⌈(t_max − t_start)/h⌉) equal steps; defaults: [t_start, t_max] for the adaptive
        solver (output times only), FIXED_STEPS[solver] steps otherwise."""
        if solver not in ("euler", "heun", "adaptive"):
            raise ValueError(f"unknown solver {solver!r}; use 'euler', 'heun' or 'adaptive'")
        dtype = like.dtype if like is not None else torch.float64
        device = like.device if like is not None else None
        if grid is not None:
            grid = torch.as_tensor(grid).to(dtype=dtype, device=device)
            return grid.flip(0) if grid.numel() > 1 and grid[0] > grid[-1] else grid
        if n_steps is not None:
            n_steps = _count(n_steps, "n_steps")
        if h is not None:
            if not h > 0:
                raise ValueError(f"h must be a positive step size, got {h!r}")
            n_steps = max(1, math.ceil((self.t_max - self.t_start) / h - 1e-9))
        if n_steps is None:
            n_steps = 1 if solver == "adaptive" else FIXED_STEPS[solver]
        return torch.linspace(self.t_start, self.t_max, n_steps + 1, dtype=dtype, device=device)

    def state_scale(self, grid: Tensor) -> Float[Tensor, " D"]:
        """σ_i = min_t s(t)·√(λ_i + γ_i(t)) over [grid ends]: the smallest natural scale of each
        ES dim of the state (≈ s(T)·√λ_i-small for compressed dims of a PR-reducing flow)."""
        t = torch.linspace(float(grid[0]), float(grid[-1]), 257, dtype=grid.dtype,
                           device=grid.device)
        return self.schedule.state_var(t).amin(0).sqrt()

    def integrate(self, x: Float[Tensor, "B D"], grid: Tensor, solver: Solver = "adaptive",
                  rtol: float = RTOL, atol: float = ATOL, return_trajectory: bool = False,
                  callback: Callback | None = None, **model_kwargs) -> ODEResult:
        """Solve the pfODE for the scaled ES state along ``grid`` (either direction);
        differentiable, sets ``last_nfe``. The adaptive solver's absolute tolerance is per ES
        dim, atol·σ_i (:meth:`state_scale`), so that every direction — the compressed ones of
        a PR-reducing flow included — is resolved to the same relative accuracy.

        ``callback(step, t, x_hat)`` gets the denoiser's prediction x̂ = D(x/s, t) in data
        coordinates (B, *S): once per step at the step's start time for the fixed-step solvers
        (Euler: every evaluation; Heun: its first evaluation of each step), and once per
        function evaluation for the adaptive one (step = evaluation index, rejected trial
        steps and dopri5's intermediate stages included, so t is not monotone; the initial
        step-size probe may even lie outside the interval)."""
        _check_tolerances(rtol, atol)
        evals = 0

        def field(t: Tensor, xt: Tensor) -> Tensor:
            nonlocal evals
            v, denoised = self._velocity(xt, t, model_kwargs)
            if callback is not None and (solver != "heun" or evals % 2 == 0):
                step = evals // 2 if solver == "heun" else evals
                callback(step, float(t), self.schedule.from_es(denoised))
            evals += 1
            return v

        res = solve(field, x, grid, solver, rtol, atol * self.state_scale(grid),
                    return_trajectory)
        self.last_nfe = res.nfe
        return res

    @torch.no_grad()
    def encode(self, x: Float[Tensor, " B *S"], solver: Solver = "adaptive",
               n_steps: int | None = None, h: float | None = None, grid: Tensor | None = None,
               rtol: float = RTOL, atol: float = ATOL, return_trajectory: bool = False,
               **model_kwargs) -> Float[Tensor, "B D"] | ODEResult:
        """Inflation ("melt"): x̃ = data in ES at t_start, x = s·x̃, integrated forward to t_max.

        Returns the latents z (B, D), scaled ES coordinates; with ``return_trajectory`` the
        :class:`ODEResult` (``trajectory`` of scaled ES states at ``times``).

        Default solver: dopri5 with rtol = atol = 1e-5 for every element (max-norm error
        control; atol per ES dim, see :meth:`integrate`): on Gaussian data with the exact
        denoiser (D = 3 and 64, PR-preserving and -reducing) mean roundtrip errors of 3e-6–4e-5
        relative for 85–215 network calls per direction; on a trained circles flow (ToyNet,
        time_scale 0.01) 6e-5 for 160 calls in all (benchmarks/bench_if_solvers.py).
        ``solver="heun"`` with 255 steps (510 calls) is the authors' image setting and
        ``"euler"`` on ``reference_grid("toy", 701)`` their toy one (roundtrip ~4e-4); without
        n_steps / h / grid the fixed-step solvers take FIXED_STEPS steps.
        """
        self._check_data(x)
        y = self.schedule.to_es(x)
        grid = self.time_grid(solver, n_steps, h, grid, like=y)
        res = self.integrate(self.schedule.s(grid[0]) * y, grid, solver, rtol, atol,
                             return_trajectory, **model_kwargs)
        return res if return_trajectory else res.x

    @torch.no_grad()
    def decode(self, z: Float[Tensor, "B D"], solver: Solver = "adaptive",
               n_steps: int | None = None, h: float | None = None, grid: Tensor | None = None,
               rtol: float = RTOL, atol: float = ATOL, return_trajectory: bool = False,
               callback: Callback | None = None,
               **model_kwargs) -> Float[Tensor, " B *S"] | ODEResult:
        """Generation: integrate the latents z (scaled ES, B × D) backward from t_max to
        t_start and map x̃ = x/s to data coordinates. With ``return_trajectory`` the
        :class:`ODEResult` whose ``x`` is the data and ``trajectory`` the scaled ES states.
        ``callback(step, t, x_hat)``: see :meth:`integrate`."""
        self._check_data(z, "z")
        grid = self.time_grid(solver, n_steps, h, grid, like=z).flip(0)
        res = self.integrate(z, grid, solver, rtol, atol, return_trajectory, callback,
                             **model_kwargs)
        x = self.schedule.from_es(res.x / self.schedule.s(grid[-1]))
        if return_trajectory:
            return ODEResult(x, res.nfe, res.trajectory, res.times)
        return x

    def roundtrip(self, x: Float[Tensor, " B *S"], **kwargs) -> Float[Tensor, " B *S"]:
        """decode(encode(x)); keyword arguments go to both. ``last_nfe`` counts both ways."""
        z = self.encode(x, **kwargs)
        nfe = self.last_nfe
        x_back = self.decode(z, **kwargs)
        self.last_nfe += nfe
        return x_back

    # ---- sampling -----------------------------------------------------------------------------
    def latent_std(self, eps: float | None = None, like: Tensor | None = None) -> Tensor:
        """Standard deviations of the latent prior: A0 for the first k dims (spec: variance 1
        at A0 = 1), √eps for the compressed ones; eps = None takes the variance the schedule
        implies at t_max, s(T)²(λ_i + γ_i(T))."""
        if eps is not None and not (isinstance(eps, int | float) and 0 < eps < math.inf):
            raise ValueError(f"eps must be a positive variance (or None), got {eps!r}")
        like = like if like is not None else self.schedule.lam
        std = torch.full((self.data_dim,), self.schedule.end_vars, dtype=like.dtype,
                         device=like.device)
        k = self.dims_to_keep
        if k < self.data_dim:
            t_max = torch.tensor(self.t_max, dtype=like.dtype, device=like.device)
            var = self.schedule.state_var(t_max)[k:] if eps is None else torch.full_like(
                std[k:], eps)
            std[k:] = var.sqrt()
        return std

    def sample_latents(self, n_samples: int, eps: float | None = None,
                       generator: torch.Generator | None = None, device=None, dtype=None
                       ) -> Float[Tensor, "n D"]:
        """z ~ N(0, diag(A0², …, A0², eps, …, eps)) in scaled ES coordinates (see latent_std)."""
        n_samples = _count(n_samples, "n_samples")
        device, dtype = self._device_dtype(device, dtype)
        noise = torch.randn(n_samples, self.data_dim, generator=generator, device=device,
                            dtype=dtype)
        return self.latent_std(eps, like=noise) * noise

    @torch.no_grad()
    def sample(self, n_samples: int, eps: float | None = None,
               generator: torch.Generator | None = None, solver: Solver = "adaptive",
               n_steps: int | None = None, h: float | None = None, grid: Tensor | None = None,
               rtol: float = RTOL, atol: float = ATOL, device=None, dtype=None,
               callback: Callback | None = None, sampler: Solver | None = None,
               **model_kwargs) -> Float[Tensor, " n *S"]:
        """decode(z) for latents z ~ :meth:`sample_latents` (dtype/device of the model's
        parameters unless given; float32 on CPU for parameter-free models). ``sampler`` names
        the solver as for the other methods (``"euler"``, ``"heun"``, ``"adaptive"``) and
        takes the place of ``solver``.

        ``callback(step, t, x_hat)`` gets the denoised prediction in data coordinates once per
        solver step (Euler, Heun: n_steps calls, t from t_max down) or once per function
        evaluation (adaptive: ``last_nfe`` calls); see :meth:`integrate`."""
        solver = _pick_solver(solver, sampler)
        z = self.sample_latents(n_samples, eps, generator, device, dtype)
        return self.decode(z, solver, n_steps, h, grid, rtol, atol, callback=callback,
                           **model_kwargs)

    @torch.no_grad()
    def sample_history(self, n_samples: int, eps: float | None = None,
                       generator: torch.Generator | None = None, solver: Solver = "adaptive",
                       n_steps: int | None = None, h: float | None = None,
                       grid: Tensor | None = None, rtol: float = RTOL, atol: float = ATOL,
                       device=None, dtype=None, callback: Callback | None = None,
                       sampler: Solver | None = None, **model_kwargs) -> dict[str, Tensor]:
        """The generation trajectory stacked on dim 0 at times ``"t"`` (t_max → t_start; 100
        frames for the adaptive solver unless n_steps / h / grid say otherwise): ``"xs"`` the
        scaled states W·x in the data layout, ``"tilde_xs"`` the unscaled states W·x/s + μ in
        data coordinates, ``"frames"`` the scaled states in data coordinates rescaled to end on
        the samples, W·x/s(t_end) + μ (what the training engine animates: latents ×√ξ* morphing
        into data); ``"z"`` the latents and ``"x"`` the samples. ``sampler`` as for
        :meth:`sample`."""
        solver = _pick_solver(solver, sampler)
        z = self.sample_latents(n_samples, eps, generator, device, dtype)
        if solver == "adaptive" and n_steps is None and h is None and grid is None:
            n_steps = 100
        res = self.decode(z, solver, n_steps, h, grid, rtol, atol, return_trajectory=True,
                          callback=callback, **model_kwargs)
        frames, times = res.trajectory.flatten(0, 1), res.times.repeat_interleave(n_samples)
        s = self.schedule.s(times)[:, None]
        shape = (times.numel() // n_samples, n_samples, *self.data_shape)
        return {
            "t": res.times,
            "xs": self.schedule.rotate_to_is(frames).reshape(shape),
            "tilde_xs": self.schedule.from_es(frames / s).reshape(shape),
            "frames": self.schedule.from_es(frames / self.schedule.s(res.times[-1])).reshape(
                shape),
            "z": z,
            "x": res.x,
        }

    # ---- likelihood ---------------------------------------------------------------------------
    def base_log_prob(self, z: Float[Tensor, "B D"]) -> Float[Tensor, " B"]:
        """log N(z; 0, diag s(T)²(λ + γ(T))) — the exact Gaussian the schedule implies at
        T = t_max for Gaussian data (≈ A0²·I in the kept dims of a PR-preserving flow)."""
        var = self.schedule.state_var(torch.tensor(self.t_max, dtype=z.dtype, device=z.device))
        return -0.5 * (z**2 / var + torch.log(2 * math.pi * var)).sum(1)

    @torch.no_grad()
    def log_likelihood(self, x: Float[Tensor, " B *S"], solver: Solver = "adaptive",
                       exact_divergence: bool | None = None, n_probes: int = 1,
                       probe: Literal["rademacher", "gaussian"] = "rademacher",
                       generator: torch.Generator | None = None, n_steps: int | None = None,
                       h: float | None = None, grid: Tensor | None = None,
                       rtol: float = RTOL, atol: float = ATOL,
                       **model_kwargs) -> Float[Tensor, " B"]:
        """log p(x) in nats per example by the instantaneous change of variables along the
        inflation: log p(x) = log N(x_T; 0, diag s_T²(λ + γ_T)) + ∫ ∇·f dt + D·log s(t_start).

        The last term is the Jacobian of x ↦ s·Wᵀ(x − μ). The model density is that of the
        data smoothed by C(t_start) = γ0·I (e.g. N(0, Σ + γ0·I) for Gaussian data). Divergence:
        exact (D backward passes per call; default for D ≤ 16) or Hutchinson with ``n_probes``
        fixed probes per example (default otherwise; unbiased, noisy).
        """
        self._check_data(x)
        _count(n_probes, "n_probes")
        _check_tolerances(rtol, atol)
        y = self.schedule.to_es(x)
        grid = self.time_grid(solver, n_steps, h, grid, like=y)
        if exact_divergence is None:
            exact_divergence = self.data_dim <= 16
        if exact_divergence:
            divergence = exact_trace
        else:
            probes = draw_probes(n_probes, y, probe, generator)

            def divergence(f, t, xt):
                return hutchinson_divergence(f, t, xt, probes)

        s0 = self.schedule.s(grid[0])
        atol_aug = torch.cat([atol * self.state_scale(grid), grid.new_full((1,), atol)])
        x_T, delta, nfe = integrate_with_divergence(
            lambda t, xt: self.velocity(xt, t, **model_kwargs), s0 * y, grid, divergence,
            solver, rtol, atol_aug)
        self.last_nfe = nfe
        return self.base_log_prob(x_T) + delta + self.data_dim * torch.log(s0)

    def bpd(self, x: Float[Tensor, " B *S"], bin_width: float | None = None,
            **kwargs) -> Float[Tensor, " B"]:
        """Bits per dimension −log p(x)/(D·ln 2); with ``bin_width`` Δ the discrete version
        −(log p(x) + D·log Δ)/(D·ln 2) (e.g. Δ = 2/255 for 8-bit images in [−1, 1])."""
        return self.elbo(x, bin_width=bin_width, **kwargs)[1]

    def elbo(self, x: Float[Tensor, " B *S"], bin_width: float | None = None,
             solver: Solver = "adaptive", exact_divergence: bool | None = None,
             n_probes: int = 1, probe: Literal["rademacher", "gaussian"] = "rademacher",
             generator: torch.Generator | None = None, n_steps: int | None = None,
             h: float | None = None, grid: Tensor | None = None, rtol: float = RTOL,
             atol: float = ATOL, **model_kwargs) -> tuple[Tensor, Tensor]:
        """(−log p(x) in nats, bits per dimension) per example — the exact ODE likelihood of
        :meth:`log_likelihood` (not a bound; same options), optionally discretised with
        ``bin_width``. ``model_kwargs`` (e.g. class labels) go to the network."""
        log_p = self.log_likelihood(x, solver, exact_divergence, n_probes, probe, generator,
                                    n_steps, h, grid, rtol, atol, **model_kwargs)
        if bin_width is not None:
            log_p = log_p + self.data_dim * math.log(bin_width)
        return -log_p, -log_p / (self.data_dim * math.log(2))

    # ---- helpers ------------------------------------------------------------------------------
    def _check_data(self, x: Tensor, name: str = "x") -> None:
        """x: a non-empty float batch (B, *data_shape) of finite values on the flow's device
        (``name="z"``: latents (B, D)). The value check syncs with the host and is skipped under
        torch.compile."""
        shape = (self.data_dim,) if name == "z" else self.data_shape
        dims = ", ".join(map(str, shape))
        what = "latents (scaled ES coordinates, as encode returns)" if name == "z" else "data"
        if not torch.is_tensor(x):
            raise ValueError(f"InflationaryFlow: {name} must be a torch.Tensor of shape (B, {dims})"
                             f", got {type(x).__name__}")
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"InflationaryFlow: {name} must be {what} of shape (B, {dims}), got "
                             f"{tuple(x.shape)}" + ("" if name == "z" else
                                                    "; set data_shape= to match your data"))
        if x.shape[0] == 0:
            raise ValueError(f"InflationaryFlow: {name} is an empty batch of shape "
                             f"{tuple(x.shape)}; pass at least one example")
        if not x.is_floating_point():
            raise ValueError(f"InflationaryFlow: {name} must be floating-point, got dtype "
                             f"{x.dtype}; convert it with {name}.float()")
        if x.is_meta:
            raise ValueError(f"InflationaryFlow: {name} is on the meta device and holds no values;"
                             " pass real data")
        if torch.compiler.is_compiling():
            return
        device = self._device_dtype(None, None)[0]
        if device != x.device:
            raise ValueError(f"InflationaryFlow: {name} is on {x.device} but the flow is on "
                             f"{device}; move one of them ({name}.to(device) or flow.to(device))")
        a, b = torch.stack(torch.aminmax(x.detach())).tolist()
        if not (math.isfinite(a) and math.isfinite(b)):
            kind = "NaN" if math.isnan(a) or math.isnan(b) else "infinite"
            raise ValueError(f"InflationaryFlow: {name} contains {kind} values; clean it first "
                             f"(torch.isfinite({name}).all() must hold)")

    def _device_dtype(self, device, dtype) -> tuple[torch.device, torch.dtype]:
        """The model parameters' device/dtype unless given; else the schedule's device and the
        default dtype. A given device must be the parameters' and a given dtype floating-point."""
        model = self.model
        param = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError):
                raise ValueError(f"device={device!r} is not a device; use e.g. 'cpu' or "
                                 "'cuda'") from None
            own = param.device if param is not None else self.schedule.lam.device
            if device.type != own.type or device.index not in (None, own.index):
                raise ValueError(f"device={str(device)!r} but the flow is on {own}; move it "
                                 "(flow.to(device)) or leave device= out")
        if device is None:
            device = param.device if param is not None else self.schedule.lam.device
        if dtype is None:
            dtype = param.dtype if param is not None else torch.get_default_dtype()
        return torch.device(device), dtype


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


def _pick_solver(solver: str, sampler: str | None) -> str:
    """The pfODE solver named by ``sampler`` (the argument every method's sampler takes) or,
    without it, by ``solver``."""
    if sampler is None:
        return solver
    if sampler not in ("euler", "heun", "adaptive"):
        raise ValueError(f"InflationaryFlow: unknown sampler {sampler!r}; its pfODE is solved "
                         "by 'euler', 'heun' or 'adaptive' (ancestral, ode1, ode2 and sde2 are "
                         "BSI's, BFN's and VDM's)")
    if solver not in ("adaptive", sampler):
        raise ValueError(f"InflationaryFlow: solver={solver!r} and sampler={sampler!r} "
                         "disagree; give one of them")
    return sampler


def _check_tolerances(rtol: float, atol: float) -> None:
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(value, int | float) and 0 < value < math.inf):
            raise ValueError(f"{name} must be a positive tolerance, got {value!r}")


# ---- closed-form denoisers (usable as ``model`` with preconditioning=None, space="IS") ------
class GaussianDenoiser(nn.Module):
    """Exact denoiser of Gaussian data N(μ, W·diag(λ)·Wᵀ) (spec "sanity facts"):
    D(x̃, t) = Σ(Σ + C(t))⁻¹(x̃ − μ) + μ, i.e. λ_i/(λ_i + γ_i(t)) per ES dim.
    ``eigvals`` default to the schedule's λ (the PCA that defined the flow)."""

    def __init__(self, schedule: InflationSchedule, eigvals: Tensor | None = None):
        super().__init__()
        self.schedule = schedule
        lam = schedule.lam if eigvals is None else torch.as_tensor(eigvals, dtype=torch.float64)
        self.register_buffer("lam", lam.clone())

    def forward(self, x_tilde: Float[Tensor, " B *S"], t: Float[Tensor, " B"],
                **model_kwargs) -> Float[Tensor, " B *S"]:
        y = self.schedule.to_es(x_tilde)
        lam = self.lam.to(y)
        return self.schedule.from_es(lam / (lam + self.schedule.gamma(_t_batch(t, y))) * y)


class DiscreteScoreDenoiser(nn.Module):
    """Exact denoiser of a point set smoothed by C(t) ("discrete score", authors' toy sanity
    check): the Gaussian-mixture posterior mean D(x̃, t) = Σ_j w_j x_j / Σ_j w_j with
    w_j = max(exp(−½ d_jᵀ C(t)⁻¹ d_j), floor), d_j = x̃ − x_j, in log-space (O(B·N·D) memory).
    ``floor=None`` gives the unfloored posterior mean."""

    def __init__(self, reference_points: Float[Tensor, " N *S"], schedule: InflationSchedule,
                 floor: float | None = 1e-30):
        super().__init__()
        self.schedule = schedule
        self.log_floor = None if floor is None else math.log(floor)
        self.register_buffer("points_es", schedule.to_es(reference_points.to(torch.float64)))

    def forward(self, x_tilde: Float[Tensor, " B *S"], t: Float[Tensor, " B"],
                **model_kwargs) -> Float[Tensor, " B *S"]:
        y = self.schedule.to_es(x_tilde)
        points = self.points_es.to(y)
        gamma = self.schedule.gamma(_t_batch(t, y))
        log_w = -0.5 * ((y[:, None] - points[None]) ** 2 / gamma[:, None]).sum(-1)
        if self.log_floor is not None:
            log_w = log_w.clamp_min(self.log_floor)
        return self.schedule.from_es(torch.softmax(log_w, dim=1) @ points)


def _t_batch(t: float | Tensor, like: Tensor) -> Float[Tensor, " B"]:
    """t as a (B,) tensor in the dtype/device of ``like``."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.expand(like.shape[0]) if t.ndim == 0 else t
