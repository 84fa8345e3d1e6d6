"""Inflationary Flows and the ODE helpers: closed-form Gaussian facts, hand-computed schedule
values, solver orders and likelihoods, in float64 on CPU."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

from bayesgen.methods.inflationary import (
    DiscreteScoreDenoiser,
    GaussianDenoiser,
    InflationaryFlow,
    inflation_rates,
    reference_grid,
)
from bayesgen.methods.ode import (
    adaptive,
    draw_probes,
    euler,
    exact_divergence,
    heun,
    hutchinson_divergence,
    integrate_with_divergence,
)

F64 = torch.float64
GAMMA0 = 5e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def gaussian():
    """N(0, Σ) in D = 3 with eigenvalues (2, 1, 0.5) along a random rotation."""
    g = _gen(0)
    W, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=F64))
    lam = torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    sigma = W @ torch.diag(lam) @ W.T
    x = torch.randn(2000, 3, generator=g, dtype=F64) @ (W * lam.sqrt()).T
    return lam, W, sigma, x


def gaussian_flow(gaussian, **kwargs) -> InflationaryFlow:
    lam, W, _, _ = gaussian
    flow = InflationaryFlow(None, (3,), lam, W, preconditioning=None, **kwargs)
    flow.model = GaussianDenoiser(flow.schedule)
    return flow


def closed_form_latents(flow: InflationaryFlow, x: torch.Tensor) -> torch.Tensor:
    """Exact pfODE solution for Gaussian data: z = s_T·√((λ + γ_T)/(λ + γ_0))·Wᵀx."""
    sched = flow.schedule
    t0, t1 = torch.tensor(flow.t_start, dtype=F64), torch.tensor(flow.t_max, dtype=F64)
    gain = sched.s(t1) * ((sched.lam + sched.gamma(t1)) / (sched.lam + sched.gamma(t0))).sqrt()
    return gain * sched.to_es(x)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def slope(hs, errs) -> float:
    return float(np.polyfit(np.log(hs), np.log(errs), 1)[0])


# ---- schedule and preconditioning -------------------------------------------------------------
def test_inflation_rates():
    assert torch.equal(inflation_rates(4), torch.zeros(4, dtype=F64))
    assert inflation_rates(4, 1).tolist() == pytest.approx([1, -1 / 3, -1 / 3, -1 / 3])
    # spec: compressed dims get g_i = −inflation_gap, then g ← g·g_rescaling
    g = inflation_rates(4, 2, "constant_inflation_gap", inflation_gap=1.02, g_rescaling=2.0)
    assert g.tolist() == pytest.approx([2, 2, -2.04, -2.04])
    assert float(g.max() - g.min()) == pytest.approx(2 * (1 + 1.02))  # IG = g* − g_i, rescaled
    g = inflation_rates(4, 2, "constant_inflation_gap", inflation_gap=0.02)  # paper's IG = 1.02
    assert float(g.max() - g.min()) == pytest.approx(1.02)
    with pytest.raises(ValueError, match="dims_to_keep"):
        inflation_rates(4, 5)
    with pytest.raises(ValueError, match="inflation_gap"):
        inflation_rates(4, 2, "constant_inflation_gap")


def test_schedule_and_preconditioning_hand_values():
    lam = torch.tensor([2.0, 0.5], dtype=F64)
    flow = InflationaryFlow(None, (2,), lam, torch.eye(2, dtype=F64), dims_to_keep=1, rho=1.5,
                            end_vars=2.0)
    sched, t = flow.schedule, torch.tensor([3.0], dtype=F64)
    # g = (1, −1): γ_1 = γ0·e^{1.5·2·3}, γ_2 = γ0; s = A0/√(ξ* + γ0·e^{9})
    g1 = GAMMA0 * math.exp(9.0)
    assert sched.gamma(t)[0].tolist() == pytest.approx([g1, GAMMA0], rel=1e-12)
    assert sched.gamma_dot(t)[0].tolist() == pytest.approx([3.0 * g1, 0.0], rel=1e-12)
    assert float(sched.s(t)) == pytest.approx(2.0 / math.sqrt(2.0 + g1), rel=1e-12)
    s_dot = -0.5 * 2.0 * 1.5 * 2 * g1 * (2.0 + g1) ** -1.5
    assert float(sched.s_dot(t)) == pytest.approx(s_dot, rel=1e-12)
    dt = 1e-6
    fd = (sched.s(t + dt) - sched.s(t - dt)) / (2 * dt)
    assert float(fd) == pytest.approx(s_dot, rel=1e-7)
    c_in, c_skip, c_out, c_noise = flow.preconditioning_coefficients(t)
    sd, sn = np.array([2.0, 0.5]), np.array([g1, GAMMA0])
    np.testing.assert_allclose(c_in[0], 1 / np.sqrt(sd + sn), rtol=1e-12)
    np.testing.assert_allclose(c_skip[0], sd / (sd + sn), rtol=1e-12)
    np.testing.assert_allclose(c_out[0], np.sqrt(sd * sn / (sd + sn)), rtol=1e-12)
    assert float(c_noise) == pytest.approx(2997.0)


def test_reference_grids():
    toy = reference_grid("toy", 701, h=1e-2)
    assert toy.numel() == 701 and float(toy[0]) == 0 and float(toy[-1]) == pytest.approx(7.01)
    img = reference_grid("image", 256)
    assert img.numel() == 256 and float(img[0]) == pytest.approx(15.01)
    assert float(img[-1]) == pytest.approx(1e-2)
    res = heun(lambda t, x: -x, torch.ones(1, dtype=F64), img)
    assert res.nfe == 510


# ---- ODE helpers ------------------------------------------------------------------------------
def test_fixed_step_orders_and_nfe():
    """dx/dt = −t·x, x(t) = exp(−t²/2): Euler is first, Heun second order."""
    def f(t, x):
        return -t * x

    x0 = torch.ones(1, dtype=F64)
    exact = math.exp(-0.5 * 2.0**2)
    hs, errs = {}, {}
    for name, solver in (("euler", euler), ("heun", heun)):
        hs[name], errs[name] = [], []
        for n in (20, 40, 80):
            res = solver(f, x0, torch.linspace(0, 2, n + 1, dtype=F64))
            assert res.nfe == (n if name == "euler" else 2 * n)
            hs[name].append(2 / n)
            errs[name].append(abs(float(res.x) - exact))
    assert slope(hs["euler"], errs["euler"]) == pytest.approx(1.0, abs=0.15)
    assert slope(hs["heun"], errs["heun"]) == pytest.approx(2.0, abs=0.15)
    res = adaptive(f, x0, torch.tensor([2.0, 0.0], dtype=F64), return_trajectory=True)
    assert res.nfe > 0 and res.trajectory.shape == (2, 1)
    assert float(res.x) == pytest.approx(1 / exact, rel=1e-4)      # backward in time


def test_divergence_estimators():
    g = _gen(1)
    A = torch.randn(4, 4, generator=g, dtype=F64)
    x = torch.randn(5, 4, generator=g, dtype=F64)

    def f(t, x):
        return x @ A.T + torch.sin(x)     # ∇·f = tr A + Σ cos x

    true = torch.trace(A) + torch.cos(x).sum(1)
    fx, div = exact_divergence(f, torch.tensor(0.0), x)
    torch.testing.assert_close(div, true)
    torch.testing.assert_close(fx, f(0, x))
    # averaging over all 2⁴ sign vectors makes the Hutchinson estimate exact
    signs = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=4)), dtype=F64)
    _, est = hutchinson_divergence(f, torch.tensor(0.0), x, signs[:, None].expand(16, 5, 4))
    torch.testing.assert_close(est, true)
    for kind in ("rademacher", "gaussian"):
        probes = draw_probes(4000, x, kind, generator=g)
        assert probes.shape == (4000, 5, 4) and probes.dtype == F64
        second_moment = torch.einsum("kbi,kbj->ij", probes, probes) / (4000 * 5)
        torch.testing.assert_close(second_moment, torch.eye(4, dtype=F64), atol=0.05, rtol=0)
    assert set(draw_probes(8, x, generator=g).unique().tolist()) == {-1.0, 1.0}
    # change of variables on dx/dt = a·x: ∫∇·f dt = a·D·T
    _, delta, nfe = integrate_with_divergence(lambda t, x: 0.3 * x, x,
                                              torch.tensor([0.0, 2.0], dtype=F64))
    torch.testing.assert_close(delta, torch.full((5,), 0.3 * 4 * 2.0, dtype=F64))
    assert nfe > 0


# ---- Gaussian facts ---------------------------------------------------------------------------
def test_prp_inflation_maps_gaussian_to_standard_normal(gaussian):
    flow = gaussian_flow(gaussian)
    x = gaussian[3]
    z = flow.encode(x)
    torch.testing.assert_close(z, closed_form_latents(flow, x), rtol=1e-3, atol=1e-5)
    T = torch.tensor(flow.t_max, dtype=F64)
    torch.testing.assert_close(flow.schedule.state_var(T), torch.ones(3, dtype=F64),
                               atol=1e-3, rtol=0)                     # A0² = 1 per ES dim
    torch.testing.assert_close(torch.cov(z.T), torch.eye(3, dtype=F64), atol=0.1, rtol=0)


def test_generation_from_standard_normal_recovers_covariance(gaussian):
    flow = gaussian_flow(gaussian)
    sigma = gaussian[2]
    x = flow.sample(4000, generator=_gen(2), dtype=F64)
    assert x.shape == (4000, 3) and x.dtype == F64
    torch.testing.assert_close(torch.cov(x.T), sigma, atol=0.12, rtol=0)
    # exactly: decode is linear with covariance ≈ Σ + γ0·I
    z = torch.eye(3, dtype=F64)
    cols = flow.decode(z)
    lam = gaussian[0]
    T = torch.tensor(flow.t_max, dtype=F64)
    implied = (lam + GAMMA0) / flow.schedule.state_var(T)
    torch.testing.assert_close(cols.T @ cols, gaussian[1] @ torch.diag(implied) @ gaussian[1].T,
                               rtol=1e-4, atol=1e-5)


def test_prr_shrinks_compressed_dims(gaussian):
    flow = gaussian_flow(gaussian, dims_to_keep=1)
    z = flow.encode(gaussian[3][:500])
    var = z.var(0)
    assert float(var[0]) == pytest.approx(1.0, abs=0.15)
    assert float(var[1:].max()) < 1e-6 * float(var[0])
    # the compressed share of the variance falls monotonically along the inflation
    ts = torch.linspace(0, flow.t_max, 20, dtype=F64)
    sv = flow.schedule.state_var(ts)
    share = sv[:, 1:].sum(1) / sv.sum(1)
    assert torch.all(share[1:] < share[:-1]) and float(share[-1]) < 1e-9
    # latents for sampling: compressed dims from eps or, by default, the schedule's variance
    assert flow.latent_std(eps=1e-4, like=z)[1:].tolist() == pytest.approx([1e-2, 1e-2])
    std = flow.latent_std(like=z)
    torch.testing.assert_close(std[1:] ** 2, flow.schedule.state_var(
        torch.tensor(flow.t_max, dtype=F64))[1:])


def test_step_size_orders_euler_heun(gaussian):
    """Encode error vs the exact latents shrinks at order 1 (Euler) / 2 (Heun); the roundtrip
    error at least as fast (Heun's roundtrip is even O(h³) on this linear field)."""
    flow = gaussian_flow(gaussian)
    x = gaussian[3][:64]
    exact = closed_form_latents(flow, x)
    for solver, steps, order in (("euler", (100, 200, 400), 1.0), ("heun", (40, 80, 160), 2.0)):
        hs = [flow.t_max / n for n in steps]
        enc = [rel_err(flow.encode(x, solver=solver, n_steps=n), exact) for n in steps]
        rt = [rel_err(flow.roundtrip(x, solver=solver, n_steps=n), x) for n in steps]
        assert flow.last_nfe == 2 * steps[-1] * (1 if solver == "euler" else 2)
        assert slope(hs, enc) == pytest.approx(order, abs=0.2)
        assert slope(hs, rt) > order - 0.2
        assert rt[-1] < rt[0]


@pytest.mark.parametrize("dims_to_keep", [3, 1])
def test_adaptive_roundtrip_default(gaussian, dims_to_keep):
    flow = gaussian_flow(gaussian, dims_to_keep=dims_to_keep)
    x = gaussian[3][:200]
    z = flow.encode(x)
    nfe_enc = flow.last_nfe
    x_back = flow.decode(z)
    assert 0 < nfe_enc < 400 and flow.last_nfe > 0
    assert rel_err(x_back, x) < 1e-3
    flow.roundtrip(x)
    assert flow.last_nfe > nfe_enc


def test_discrete_score_roundtrip_moons():
    data, _ = make_moons(200, noise=0.08, random_state=0)
    data = torch.tensor(data, dtype=F64)
    data = (data - data.mean(0)) / data.std(0)
    for k in (1, 2):
        flow = InflationaryFlow.from_data(None, data, dims_to_keep=k, preconditioning=None,
                                          t_max=7.01)
        flow.model = DiscreteScoreDenoiser(data, flow.schedule)
        x = data[:64]
        assert rel_err(flow.roundtrip(x), x) < 1e-3
    # (below: the PR-preserving flow, whose noise grows in every direction)
    # the mixture posterior mean, by hand: softmax_j(−½ Σ_i (x̃ − x_j)_i²/γ_i) · x_j in ES
    den, sched = flow.model, flow.schedule
    x_tilde = data[:5] + 0.05
    for t in (0.0, 0.5, 3.0):
        y, pts = sched.to_es(x_tilde).numpy(), sched.to_es(data).numpy()
        gamma = sched.gamma(torch.tensor(t, dtype=F64)).numpy()
        log_w = -0.5 * (((y[:, None] - pts[None]) ** 2) / gamma).sum(-1)
        w = np.exp(log_w - log_w.max(1, keepdims=True))
        expected = sched.from_es(torch.tensor(w @ pts / w.sum(1, keepdims=True)))
        torch.testing.assert_close(den(x_tilde, torch.full((5,), t, dtype=F64)), expected)
    far = den(data[:5], torch.full((5,), 40.0, dtype=F64))
    torch.testing.assert_close(far, data.mean(0).expand(5, 2), atol=1e-6, rtol=0)
    # the 1e-30 floor: a point far from all references gets uniform weights
    lost = den(torch.full((1, 2), 50.0, dtype=F64), torch.zeros(1, dtype=F64))
    torch.testing.assert_close(lost[0], data.mean(0))


@pytest.mark.parametrize("dims_to_keep", [3, 1])
def test_log_likelihood_of_gaussian_data(gaussian, dims_to_keep):
    """With the exact denoiser the model density is N(0, Σ + C(0)) = N(0, Σ + γ0·I)."""
    lam, W, sigma, x = gaussian
    x = x[:100]
    flow = gaussian_flow(gaussian, dims_to_keep=dims_to_keep)
    true = torch.distributions.MultivariateNormal(
        torch.zeros(3, dtype=F64), sigma + GAMMA0 * torch.eye(3, dtype=F64)).log_prob(x)
    ll = flow.log_likelihood(x, exact_divergence=True)
    assert ll.shape == (100,) and ll.dtype == F64 and flow.last_nfe > 0
    torch.testing.assert_close(ll, true, atol=2e-3, rtol=0)
    # Hutchinson with Rademacher probes is exact for the diagonal (ES) Jacobian
    ll_h = flow.log_likelihood(x, exact_divergence=False, n_probes=1, generator=_gen(3))
    torch.testing.assert_close(ll_h, true, atol=2e-3, rtol=0)
    # Gaussian probes: unbiased, noisy
    err = flow.log_likelihood(x, exact_divergence=False, probe="gaussian", n_probes=4,
                              generator=_gen(4)) - true
    assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(err.numel())
    nll, bpd = flow.elbo(x[:4])
    torch.testing.assert_close(bpd, -true[:4] / (3 * math.log(2)), atol=1e-3, rtol=0)
    torch.testing.assert_close(nll, -true[:4], atol=2e-3, rtol=0)
    torch.testing.assert_close(flow.bpd(x[:4], bin_width=0.5),
                               bpd - math.log2(0.5), atol=1e-8, rtol=0)


def test_score_is_gaussian_score(gaussian):
    lam, W, sigma, x = gaussian
    mean = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    flow = InflationaryFlow(None, (3,), lam, W, preconditioning=None, mean=mean)
    flow.model = GaussianDenoiser(flow.schedule)
    t = torch.linspace(0.1, 5.0, 8, dtype=F64)
    x_tilde = x[:8] + mean
    score = flow.score(x_tilde, t)
    for i in range(8):
        C = W @ torch.diag(flow.schedule.gamma(t[i])) @ W.T
        expected = -torch.linalg.solve(sigma + C, x_tilde[i] - mean)
        torch.testing.assert_close(score[i], expected)


# ---- network plumbing -------------------------------------------------------------------------
class LinearF(torch.nn.Module):
    """F(u, c_noise) = M·u + (c_noise/1000)·b, recording what it sees."""

    def __init__(self, M: torch.Tensor, b: torch.Tensor):
        super().__init__()
        self.M, self.b, self.seen = M, b, []

    def forward(self, u, c_noise, **kwargs):
        self.seen.append((u, c_noise, kwargs))
        return (u.flatten(1) @ self.M.T + c_noise[:, None] / 1000 * self.b).reshape(u.shape)


def test_ifs_preconditioning(gaussian):
    lam, W, _, x = gaussian
    x = x[:6]
    t = torch.linspace(0.5, 10.0, 6, dtype=F64)
    exact = gaussian_flow(gaussian)
    # F = 0 makes the IF preconditioning the exact Gaussian denoiser (c_skip = λ/(λ + γ))
    zero = InflationaryFlow(lambda u, c, **kw: torch.zeros_like(u), (3,), lam, W)
    torch.testing.assert_close(zero.denoise(x, t), exact.denoise(x, t))
    y = exact.schedule.to_es(x)
    torch.testing.assert_close(zero.velocity(y, 2.0), exact.velocity(y, 2.0))
    # space="IS": F sees W·(c_in ⊙ x̃) and its output is rotated back, so F_IS = W·F_ES·Wᵀ
    # gives the same denoiser as F_ES in space="ES"
    g = _gen(5)
    M, b = torch.randn(3, 3, generator=g, dtype=F64), torch.randn(3, generator=g, dtype=F64)
    f_es, f_is = LinearF(M, b), LinearF(W @ M @ W.T, W @ b)
    labels = torch.arange(6)
    d_es = InflationaryFlow(f_es, (3,), lam, W, space="ES").denoise(x, t, class_labels=labels)
    d_is = InflationaryFlow(f_is, (3,), lam, W, space="IS").denoise(x, t, class_labels=labels)
    torch.testing.assert_close(d_es, d_is)
    u, c_noise, kwargs = f_is.seen[0]
    assert kwargs["class_labels"] is labels
    torch.testing.assert_close(c_noise, 999 * t)
    c_in = zero.preconditioning_coefficients(t)[0]
    torch.testing.assert_close(u, (c_in * y) @ W.T)


def test_train_loss(gaussian):
    lam, W, _, x = gaussian
    exact = gaussian_flow(gaussian)
    loss = exact.train_loss(x, generator=_gen(6))
    assert loss.shape == (2000,) and loss.dtype == F64 and torch.all(torch.isfinite(loss))
    # the optimal denoiser's error has variance c_out² per dim, so E[loss] = D
    assert float(loss.mean()) == pytest.approx(3.0, rel=0.1)
    torch.testing.assert_close(loss, exact.train_loss(x, generator=_gen(6)))
    zero = InflationaryFlow(lambda u, c, **kw: torch.zeros_like(u), (3,), lam, W,
                            t_sampling="normal")
    t = zero.sample_t(4000, x, _gen(7))
    assert float(t.mean()) == pytest.approx(12.0, abs=0.1)
    assert float(t.std()) == pytest.approx(1.2, abs=0.1)
    loss_ifs = zero.train_loss(x[:8], t=t[:8], generator=_gen(8))
    loss_none = exact.train_loss(x[:8], t=t[:8], generator=_gen(8))
    torch.testing.assert_close(loss_ifs, loss_none)
    u = exact.sample_t(1000, x, _gen(9))
    assert float(u.min()) >= 1e-7 and float(u.max()) <= 15.01


def test_image_shaped_data_and_dtypes():
    g = _gen(10)
    data = torch.randn(64, 1, 2, 2, generator=g, dtype=F64) * torch.tensor(
        [1.0, 0.7, 0.5, 0.3], dtype=F64).reshape(1, 1, 2, 2) + 0.2
    flow = InflationaryFlow.from_data(None, data, centre=False, preconditioning=None)
    flow.model = GaussianDenoiser(flow.schedule)
    assert flow.schedule.mean is None
    for dtype in (torch.float32, F64):
        x = data[:5].to(dtype)
        z = flow.encode(x)
        assert z.shape == (5, 4) and z.dtype == dtype
        out = [flow.decode(z), flow.denoise(x, 1.0), flow.score(x, 1.0),
               flow.sample(3, dtype=dtype, generator=_gen(11))]
        assert all(o.shape[1:] == (1, 2, 2) and o.dtype == dtype for o in out)
        assert flow.train_loss(x, generator=_gen(12)).dtype == dtype
        assert flow.log_likelihood(x).dtype == dtype
    tol = 1e-3
    assert rel_err(flow.roundtrip(data[:5]), data[:5]) < tol


def test_from_data_pca():
    g = _gen(13)
    data = torch.randn(500, 3, generator=g, dtype=F64) * torch.tensor([0.5, 2.0, 1.0]) + 3.0
    flow = InflationaryFlow.from_data(None, data, dims_to_keep=2)
    lam, W = flow.schedule.lam, flow.schedule.W
    ref = np.sort(np.linalg.eigvalsh(np.cov(data.numpy().T)))[::-1]
    np.testing.assert_allclose(lam.numpy(), ref, rtol=1e-10)
    torch.testing.assert_close(W.T @ W, torch.eye(3, dtype=F64))
    torch.testing.assert_close(flow.schedule.mean, data.mean(0))
    assert flow.schedule.g.tolist() == [1.0, 1.0, -2.0]
    y = flow.schedule.to_es(data)
    torch.testing.assert_close(flow.schedule.from_es(y), data)
    torch.testing.assert_close(torch.cov(y.T), torch.diag(lam), atol=1e-10, rtol=0)


def test_sample_history(gaussian):
    flow = gaussian_flow(gaussian)
    hist = flow.sample_history(7, generator=_gen(14), dtype=F64)
    assert hist["t"].shape == (101,) and float(hist["t"][0]) == pytest.approx(flow.t_max)
    assert hist["xs"].shape == hist["tilde_xs"].shape == (101, 7, 3)
    torch.testing.assert_close(hist["tilde_xs"][-1], hist["x"])
    torch.testing.assert_close(hist["x"], flow.sample(7, generator=_gen(14), dtype=F64))
    hist = flow.sample_history(2, solver="euler", n_steps=10, generator=_gen(14), dtype=F64)
    assert hist["xs"].shape == (11, 2, 3) and flow.last_nfe == 10


def test_bad_input_raises(gaussian):
    flow = gaussian_flow(gaussian)
    with pytest.raises(ValueError, match="shape"):
        flow.encode(torch.zeros(4, 2, dtype=F64))
    with pytest.raises(ValueError, match="latents"):
        flow.decode(torch.zeros(4, 2, dtype=F64))
    with pytest.raises(ValueError, match="eigvecs"):
        InflationaryFlow(None, (2,), gaussian[0], gaussian[1])
    with pytest.raises(ValueError, match="preconditioning"):
        InflationaryFlow(None, (3,), gaussian[0], gaussian[1], preconditioning="edm")
    with pytest.raises(ValueError, match="no model"):
        InflationaryFlow(None, (3,), gaussian[0], gaussian[1]).denoise(gaussian[3][:2], 1.0)
    with pytest.raises(ValueError, match="solver"):
        flow.encode(gaussian[3][:2], solver="rk4")


class TinyMLP(torch.nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, 16), torch.nn.SiLU(),
                                       torch.nn.Linear(16, dim))

    def forward(self, x, c_noise, **kwargs):
        return self.net(torch.cat([x, c_noise[:, None] / 1000], dim=1))


def test_network_training_step_and_sampling_dtype(gaussian):
    lam, W, _, x = gaussian
    torch.manual_seed(0)
    flow = InflationaryFlow(TinyMLP(3), (3,), lam, W, t_max=7.01)
    x32 = x[:32].float()
    loss = flow.train_loss(x32, generator=_gen(15))
    assert loss.shape == (32,) and loss.dtype == torch.float32
    loss.mean().backward()
    grads = [p.grad for p in flow.model.parameters()]
    assert all(g is not None and torch.all(torch.isfinite(g)) for g in grads)
    samples = flow.sample(4, generator=_gen(16))                  # the parameters' dtype
    assert samples.shape == (4, 3) and samples.dtype == torch.float32
    assert flow.log_likelihood(x32[:2], exact_divergence=False).shape == (2,)
