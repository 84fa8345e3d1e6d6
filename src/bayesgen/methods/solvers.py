"""Fast samplers for Gaussian belief processes: probability-flow ODE and SDE solvers in
data-prediction form (DPM-Solver++, and the BFN-Solvers of Xue et al.).

Lu, Zhou, Bao, Chen, Li, Zhu, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models", arXiv 2211.01095 (Eq. 9–10, Alg. 1–2, and the SDE variant of its
App. B); Xue, Zhou, Zhang, Li, Li, Zhu, "Unifying Bayesian Flow Networks and Diffusion Models
through Stochastic Differential Equations", ICML 2024, arXiv 2404.15766 (BFN-Solver++1/++2,
Alg. 1–2; SDE-BFN-Solver++2, Alg. 3; SDE-BFN-Solver2 and BFN-Solver1/2 on discrete logits,
Alg. 5–7).

**The process.** Every method that uses this module has a state z whose law given the data is
Gaussian with a scale a_t and a standard deviation s_t:

    z_t | x ~ N(a_t·x, s_t²·I)      BSI   μ:  a = (λ − λ0)/λ,  s = λ^(−1/2)
                                     BFN   μ:  a = γ(t),         s = √(γ(1 − γ))  (§4–5)
                                     BFN   y:  a = K·β(t),       s = √(K·β(t)) on x = e_x − 1/K
                                     VDM   z:  a = α_t,          s = σ_t

(for discrete BFN the state is the logits y of θ = softmax(y), §6: y ~ N(β(K·e_x − 1), βK·I)).
Write u_t = a_t/s_t = e^ℓ (ℓ the half log-SNR) and x̂(z, t) = E[x | z_t = z] for the
network's data prediction. Any such family of marginals is that of the linear SDE
dz = (ȧ/a)·z dt + g dW with g² = −2s²·dℓ/dt, whose probability-flow ODE written in ℓ is
(DPM-Solver++ Eq. 9)

    dz/dℓ = z·(d ln s/dℓ) + s·e^ℓ·x̂      ⇒   z_t = (s_t/s_r)·z_r + s_t·∫_{ℓ_r}^{ℓ_t} e^ℓ·x̂ dℓ,

and whose reverse-time SDE has the exact solution (DPM-Solver++ App. B)

    z_t = (s_t/s_r)·e^(−h)·z_r + 2·a_t·∫_{ℓ_r}^{ℓ_t} e^(−2(ℓ_t − ℓ)) x̂ dℓ + s_t·√(1 − e^(−2h))·ε,

h = ℓ_t − ℓ_r. The solvers freeze or linearly extrapolate x̂ in these integrals:

- ``"ode1"`` (DPM-Solver++(1) = DDIM = BFN-Solver++1): x̂ constant,
  z_t = (s_t/s_r)·z_r + a_t·(1 − e^(−h))·x̂_r.
- ``"ode2"`` (DPM-Solver++(2M) = BFN-Solver++2): x̂ linear in ℓ, its slope from the previous
  prediction, r = h_prev/h, D = x̂_r + (x̂_r − x̂_prev)/(2r) in place of x̂_r.
- ``"sde2"`` (SDE-DPM-Solver++(2M) = SDE-BFN-Solver++2): the SDE solution with the same D,
  z_t = (s_t/s_r)·e^(−h)·z_r + a_t·(1 − e^(−2h))·D + s_t·√(1 − e^(−2h))·ε. Its first-order
  step is the ancestral sampler of BSI and of discrete BFN (with the expected one-hot).
- ``expansion="u"`` (discrete BFN, whose u = √(Kβ1)·t is linear in time): x̂ linear in u
  instead, integrated exactly — BFN-Solver2 (Alg. 7),
  z_t = (s_t/s_r)·z_r + s_t·[(u_t − u_r)·x̂_r + ½(u_t − u_r)²·Δ], Δ = (x̂_r − x̂_prev)/(u_r − u_prev),
  and SDE-BFN-Solver2 (Alg. 5), z_t = (s_t/s_r)·e^(−h)·z_r + a_t(1 − e^(−2h))·x̂_r
  + (2a_t/u_t²)·[(u_t³ − u_r³)/3 − u_r(u_t² − u_r²)/2]·Δ + s_t·√(1 − e^(−2h))·ε.

The first step of a multistep solver is first order. The grid runs from the noisiest point
(index 0) to the cleanest (index k); the network is called at points 0 … k − 1, once each, and
the last step returns the last prediction x̂_{k−1} instead of a state at point k (Xue et al.'s
"last drop": the step to the clean end, s = 0, of the first-order solver), so k steps cost k
network calls. ``limit_start`` treats the start as the ℓ → −∞ limit of the process (the first
step is z_1 = s_1·z_0/s_0 + a_1·x̂_0), which BSI's exact prior (a_0 = 0) satisfies anyway and
which for BFN replaces the zero-mean start of the reference's "zero_mean_and_std" by one whose
mean is the network's own a_1·x̂_0.

Depends on torch only. The per-step coefficients are Python floats computed in float64, so
the loop never synchronises with the device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from torch import Tensor

Sampler = Literal["ancestral", "ode1", "ode2", "sde2"]
SAMPLERS: tuple[str, ...] = ("ancestral", "ode1", "ode2", "sde2")
Expansion = Literal["log_snr", "u"]


def check_sampler(sampler: str, name: str) -> str:
    """``sampler`` if it is one of :data:`SAMPLERS`, else a ValueError naming the choices."""
    if sampler not in SAMPLERS:
        raise ValueError(f"{name}: unknown sampler {sampler!r}; use one of "
                         f"{', '.join(SAMPLERS)} (ancestral is the paper's own)")
    return sampler


def solve(z: Tensor, a: Sequence[float], s: Sequence[float],
          predict: Callable[[Tensor, int], Tensor], sampler: str,
          randn: Callable[[], Tensor] | None = None, expansion: Expansion = "log_snr",
          limit_start: bool = False,
          after_step: Callable[[Tensor, int], Tensor] | None = None,
          record: Callable[[Tensor, Tensor], None] | None = None) -> Tensor:
    """Integrate from ``z`` at grid point 0 and return the last prediction x̂_{k−1}.

    ``a``, ``s``: the process's scale and std at the k + 1 grid points (noisy → clean; a may be
    0 at point 0, s must be positive at points 0 … k − 1). ``predict(z, i)`` is the data
    prediction at point i (clipped and conditioned by the caller); ``randn()`` draws the SDE's
    noise (``sde2`` only); ``after_step(z, i)`` may change the state after it reaches point i
    (inpainting by replacement); ``record(z, x_hat)`` sees every state and its prediction.
    """
    if sampler not in ("ode1", "ode2", "sde2"):
        raise ValueError(f"solve: sampler must be ode1, ode2 or sde2, got {sampler!r}")
    if sampler == "sde2" and randn is None:
        raise ValueError("solve: sampler='sde2' needs randn")
    k = len(a) - 1
    if k < 1 or len(s) != k + 1:
        raise ValueError("solve: a and s need the same length of at least 2 grid points")
    u = [ai / si if si > 0 else math.inf for ai, si in zip(a, s, strict=True)]
    x_prev: Tensor | None = None
    for i in range(k):
        x_hat = predict(z, i)
        if record is not None:
            record(z, x_hat)
        if i == k - 1:
            return x_hat
        ratio = s[i + 1] / s[i]  # s_t/s_r
        e = 0.0 if (limit_start and i == 0) else u[i] / u[i + 1]  # e^(−h)
        first = x_prev is None or u[i - 1] == 0.0  # no usable slope: first order
        if sampler == "sde2":
            z = _sde_step(z, x_hat, x_prev, a, s, u, i, ratio, e, first, expansion, randn)
        else:
            z = _ode_step(z, x_hat, x_prev, a, s, u, i, ratio, e,
                          first or sampler == "ode1", expansion)
        if after_step is not None:
            z = after_step(z, i + 1)
        x_prev = x_hat
    raise AssertionError("unreachable")


def _ode_step(z: Tensor, x_hat: Tensor, x_prev: Tensor | None, a, s, u, i: int, ratio: float,
              e: float, first: bool, expansion: Expansion) -> Tensor:
    """One step of the probability-flow ODE from point i to i + 1."""
    lead = a[i + 1] * (1 - e)  # a_t·(1 − e^(−h)) = s_t·(u_t − u_r)
    if first:
        return ratio * z + lead * x_hat
    if expansion == "u":  # x̂ linear in u, integrated exactly (BFN-Solver2, Alg. 7)
        du = u[i + 1] - u[i]
        slope = (x_hat - x_prev) / (u[i] - u[i - 1])
        return ratio * z + lead * x_hat + (s[i + 1] * du * du / 2) * slope
    r = math.log(u[i] / u[i - 1]) / math.log(u[i + 1] / u[i])  # h_prev/h
    d = x_hat + (x_hat - x_prev) / (2 * r)
    return ratio * z + lead * d


def _sde_step(z: Tensor, x_hat: Tensor, x_prev: Tensor | None, a, s, u, i: int, ratio: float,
              e: float, first: bool, expansion: Expansion, randn) -> Tensor:
    """One step of the reverse-time SDE from point i to i + 1 (second order after the first)."""
    keep = 1 - e * e  # 1 − e^(−2h)
    noise_std = s[i + 1] * math.sqrt(keep)  # s_t·√(1 − e^(−2h))
    out = (ratio * e) * z + noise_std * randn()
    if first:
        return out + (a[i + 1] * keep) * x_hat
    if expansion == "u":  # SDE-BFN-Solver2 (Alg. 5)
        ut, ur = u[i + 1], u[i]
        w = 2 * a[i + 1] / ut**2 * ((ut**3 - ur**3) / 3 - ur * (ut**2 - ur**2) / 2)
        return out + (a[i + 1] * keep) * x_hat + (w / (u[i] - u[i - 1])) * (x_hat - x_prev)
    r = math.log(u[i] / u[i - 1]) / math.log(u[i + 1] / u[i])
    return out + (a[i + 1] * keep) * (x_hat + (x_hat - x_prev) / (2 * r))
