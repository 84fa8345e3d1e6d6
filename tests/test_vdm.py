"""VDM against closed-form Gaussian cases, hand-computed values and the API contract.

For data x ~ N(m, s²) per dimension and the exact denoiser x̂ = E[x | z_t], every term of the
ELBO has a closed form (per dimension, v_t = 1/(1/s² + SNR(t)) the posterior variance):
  E[L_∞] = ½·ln((1/s² + snr_max)/(1/s² + snr_min)),
  E[L_k] = Σ_i ½·(SNR(s_i) − SNR(t_i))·v_{t_i},
  E[prior] = ½·(σ_1² + α_1²·(m² + s²) − ln σ_1² − 1),  E[recon] = ½·ln(2π/snr_max) + ½,
and E[−ELBO_∞] = H(x) + KL(q(z_1) ‖ N(0, 1)) + ½·ln(1 + 1/(s²·snr_max)) (the chain's only
mismatches are at its two ends), so −ELBO → the differential entropy H as the ends widen.
"""

import math

import pytest
import torch
from torch import nn

from bayesgen import VDM, Discretization

M, S, D = 0.3, 0.7, 4
ENTROPY = 0.5 * math.log(2 * math.pi * math.e * S**2)  # per dimension


def posterior_mean(vdm: VDM, z, t, m: float = M, s: float = S):
    """E[x | z_t] for x ~ N(m, s²) and z_t = α_t·x + σ_t·ε."""
    a = vdm.alpha(t).reshape(-1, *([1] * (z.ndim - 1)))
    var = vdm.sigma2(t).reshape(a.shape)
    return m + a * s**2 / (a**2 * s**2 + var) * (z - a * m)


def make_vdm(parameterization: str = "eps", **kw) -> VDM:
    vdm = VDM(lambda z, t: z, data_shape=(D,), parameterization=parameterization, **kw)
    if parameterization == "x":
        vdm.model = lambda z, t: posterior_mean(vdm, z, t)
    else:  # ε̂ = (z − α·x̂)/σ: the same denoiser, predicting the noise
        def eps_oracle(z, t):
            a = vdm.alpha(t)[:, None]
            return (z - a * posterior_mean(vdm, z, t)) / vdm.sigma(t)[:, None]
        vdm.model = eps_oracle
    return vdm


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return M + S * torch.randn(n, D, generator=g, dtype=torch.float64)


def closed_form(vdm: VDM) -> dict[str, float]:
    """Expected terms per dimension for the Gaussian data and the exact denoiser."""
    lo, hi = vdm.snr_min, vdm.snr_max
    s1, a1 = 1 / (1 + lo), lo / (1 + lo)  # σ_1², α_1² from SNR(1) = snr_min
    prior = 0.5 * (s1 + a1 * (M**2 + S**2) - math.log(s1) - 1)
    recon = 0.5 * math.log(2 * math.pi / hi) + 0.5
    diff = 0.5 * math.log((1 / S**2 + hi) / (1 / S**2 + lo))
    var1, mean1 = a1 * S**2 + s1, a1**0.5 * M  # q(z_1) = N(α_1·m, α_1²s² + σ_1²)
    gap = 0.5 * (var1 + mean1**2 - 1 - math.log(var1)) + 0.5 * math.log(1 + 1 / (S**2 * hi))
    return {"prior": prior, "recon": recon, "diff": diff, "neg_elbo": prior + recon + diff,
            "gap": gap}


def finite_closed_form(vdm: VDM, k: int) -> float:
    t = torch.linspace(0, 1, k + 1, dtype=torch.float64)
    snr = vdm.snr(t)
    return (0.5 * (snr[:-1] - snr[1:]) / (1 / S**2 + snr[1:])).sum().item()


def mean_within(values: torch.Tensor, expected: float, n_se: float = 4.0, slack: float = 0.0):
    se = values.std() / math.sqrt(values.numel())
    assert abs(values.mean().item() - expected) < n_se * se + slack, (
        values.mean().item(), expected, se.item())


def test_schedule_by_hand_at_reference_values():
    vdm = VDM(lambda z, t: z, data_shape=(1,))
    assert vdm.snr_min == pytest.approx(6.73794699909e-3, rel=1e-10)
    assert vdm.snr_max == pytest.approx(597195.613793, rel=1e-10)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    for i, ti in enumerate(t.tolist()):
        gamma = -13.3 + ti * (5.0 + 13.3)  # lerp(−ln snr_max, −ln snr_min, t)
        sig2 = 1 / (1 + math.exp(-gamma))
        assert vdm.gamma(t)[i].item() == pytest.approx(gamma, rel=1e-12, abs=1e-12)
        assert vdm.sigma2(t)[i].item() == pytest.approx(sig2, rel=1e-12)
        assert vdm.alpha(t)[i].item() == pytest.approx(math.sqrt(1 - sig2), rel=1e-12)
        assert vdm.snr(t)[i].item() == pytest.approx((1 - sig2) / sig2, rel=1e-10)
        assert vdm.snr_prime(t)[i].item() == pytest.approx(-18.3 * math.exp(-gamma), rel=1e-12)
    # α_t² + σ_t² = 1, and SNR′ is the derivative of SNR (central differences)
    torch.testing.assert_close(vdm.alpha(t) ** 2 + vdm.sigma2(t), torch.ones_like(t))
    h = 1e-6
    fd = (vdm.snr(t[1:3] + h) - vdm.snr(t[1:3] - h)) / (2 * h)
    torch.testing.assert_close(vdm.snr_prime(t[1:3]), fd, rtol=1e-6, atol=0)
    assert vdm.gamma(t).dtype == torch.float64


def test_closed_forms_are_consistent():
    """E[prior] + E[recon] + E[L_∞] = H + the two end gaps: checks the derivation above."""
    for lo, hi in ((0.5, 50.0), (math.exp(-5), math.exp(13.3))):
        c = closed_form(VDM(lambda z, t: z, (D,), snr_min=lo, snr_max=hi))
        assert c["neg_elbo"] == pytest.approx(ENTROPY + c["gap"], rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("parameterization", ["eps", "x"])
def test_infinite_elbo_terms_match_closed_form(parameterization):
    """Ends kept close (SNR 1 … 20) so that the gaps to the entropy are large."""
    vdm = make_vdm(parameterization, snr_min=1.0, snr_max=20.0)
    c = closed_form(vdm)
    x = gaussian_data(4000)
    g = torch.Generator().manual_seed(1)
    elbo, bpd, l_p, l_r, l_d = vdm.elbo(x, n_measure_samples=8, generator=g)
    assert elbo.dtype == torch.float64 and elbo.shape == (4000,)
    mean_within(l_p / D, c["prior"])
    mean_within(l_r / D, c["recon"])
    mean_within(l_d / D, c["diff"])
    mean_within(-elbo / D, c["neg_elbo"])
    assert c["gap"] > 0.08  # far from the entropy: the test above tells the terms apart
    torch.testing.assert_close(elbo, -(l_p + l_r + l_d))
    torch.testing.assert_close(bpd, -elbo / (D * math.log(2)))


def test_infinite_elbo_approaches_entropy_at_reference_settings():
    vdm = make_vdm()
    x = gaussian_data(4000)
    elbo, *_ = vdm.elbo(x, n_measure_samples=10, generator=torch.Generator().manual_seed(2))
    assert closed_form(vdm)["gap"] < 1e-3
    mean_within(-elbo / D, ENTROPY, slack=1e-3)


def test_finite_bound_matches_closed_form_and_tightens_with_k():
    vdm = make_vdm(snr_min=1.0, snr_max=20.0)
    x = gaussian_data(3000)
    exact = [finite_closed_form(vdm, k) for k in (1, 2, 8, 64, 4096)]
    inf = closed_form(vdm)["diff"]
    assert all(a > b for a, b in zip(exact, exact[1:], strict=False)) and exact[-1] > inf
    assert exact[-1] - inf < 1e-3 and exact[0] - inf > 0.1
    for k, expected in zip((1, 2, 8), exact, strict=False):
        l_d = vdm.elbo(x, k=k, n_measure_samples=8,
                       generator=torch.Generator().manual_seed(3))[4]
        mean_within(l_d / D, expected)
    # the k-step loss with a large k and the infinite-step loss estimate the same number
    g = torch.Generator().manual_seed(4)
    big_k = vdm.elbo(x, k=4096, n_measure_samples=8, generator=g)[4] / D
    inf_mc = vdm.elbo(x, n_measure_samples=8, generator=g)[4] / D
    se = (big_k.var() / big_k.numel() + inf_mc.var() / inf_mc.numel()).sqrt()
    assert abs(big_k.mean() - inf_mc.mean()) < 4 * se


def test_finite_elbo_uses_k_and_custom_grids():
    vdm = make_vdm(k=5)
    x = gaussian_data(8)
    a = vdm.finite_elbo(x, generator=torch.Generator().manual_seed(0))
    b = vdm.elbo(x, k=5, generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(0, 1, 6, dtype=torch.float64)
    c = vdm.elbo(x, t=grid, generator=torch.Generator().manual_seed(0))
    for u, v, w in zip(a, b, c, strict=True):
        torch.testing.assert_close(u, v)
        torch.testing.assert_close(u, w)
    with pytest.raises(ValueError, match="grid from 0 to 1"):
        vdm.elbo(x, t=torch.tensor([0.0, 0.7, 0.5, 1.0]))
    with pytest.raises(ValueError, match="grid from 0 to 1"):
        vdm.elbo(x, t=torch.tensor([0.1, 1.0]))


def test_train_loss_is_the_infinite_step_loss_per_dimension():
    vdm = make_vdm()
    x = gaussian_data(16)
    loss = vdm.train_loss(x, generator=torch.Generator().manual_seed(5))
    l_d = vdm.diffusion_loss(x, 1, generator=torch.Generator().manual_seed(5))
    assert loss.shape == (16,) and loss.dtype == torch.float64
    torch.testing.assert_close(loss, l_d[0] / D)


def test_train_loss_by_hand_with_a_zero_noise_prediction():
    """ε̂ = 0: L_∞ = ½·γ′·‖ε‖², with t and ε drawn as the method draws them."""
    vdm = VDM(lambda z, t: torch.zeros_like(z), data_shape=(3,))
    x = torch.tensor([[0.5, -0.5, 0.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    vdm.sample_t(1, 1, x, g)  # the loss draws t first, then ε
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    loss = vdm.train_loss(x, generator=torch.Generator().manual_seed(0))
    expected = 0.5 * math.log(vdm.snr_max / vdm.snr_min) * eps.square().sum() / 3
    torch.testing.assert_close(loss, expected.reshape(1))


@pytest.mark.parametrize("parameterization", ["eps", "x"])
def test_sampler_recovers_mean_and_std(parameterization):
    vdm = make_vdm(parameterization)
    x = vdm.sample(20000, k=200, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert x.dtype == torch.float64 and x.shape == (20000, D)
    assert abs(x.mean().item() - M) < 0.02
    assert abs(x.std().item() - S) < 0.02


def test_one_sampler_step_is_the_vdm_posterior():
    """k = 1 from z_1 to z_0 with x̂ = x fixed: z_0 ~ q(z_0 | z_1, x) in its textbook form
    μ = α_{t|s}σ_s²/σ_t²·z_t + α_s·σ²_{t|s}/σ_t²·x, var = σ²_{t|s}·σ_s²/σ_t², then x = z_0/α_0."""
    target = torch.tensor([0.4, -0.2], dtype=torch.float64)
    vdm = VDM(lambda z, t: target.expand_as(z), data_shape=(2,), parameterization="x",
              snr_min=0.3, snr_max=30.0)
    g = torch.Generator().manual_seed(7)
    z1 = torch.randn(5, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 2, generator=g, dtype=torch.float64)
    t, s = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    a_t, a_s, v_t, v_s = vdm.alpha(t), vdm.alpha(s), vdm.sigma2(t), vdm.sigma2(s)
    a_ts = a_t / a_s
    v_ts = v_t - a_ts**2 * v_s
    mean = a_ts * v_s / v_t * z1 + a_s * v_ts / v_t * target
    z0 = mean + (v_ts * v_s / v_t).sqrt() * eps
    x = vdm.sample(5, k=1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    torch.testing.assert_close(x, z0 / a_s)


def test_eps_and_x_parameterizations_agree():
    x = gaussian_data(32)
    out = {}
    for p in ("eps", "x"):
        vdm = make_vdm(p)
        out[p] = (vdm.elbo(x, generator=torch.Generator().manual_seed(8)),
                  vdm.elbo(x, k=7, generator=torch.Generator().manual_seed(8)),
                  vdm.train_loss(x, generator=torch.Generator().manual_seed(8)),
                  vdm.sample(16, k=9, generator=torch.Generator().manual_seed(8),
                             dtype=torch.float64))
    for a, b in zip(out["eps"][0] + out["eps"][1], out["x"][0] + out["x"][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out["eps"][2], out["x"][2], rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out["eps"][3], out["x"][3], rtol=1e-8, atol=1e-8)


def test_discretized_reconstruction_by_hand():
    """P(bin j) ∝ N(c_j | z_0/α_0, σ_0²/α_0²) over the centres −1, 0, 1."""
    d = Discretization(-1.0, 1.0, 3)
    vdm = VDM(lambda z, t: z, data_shape=(3,), snr_min=0.1, snr_max=4.0, discretization=d)
    x = torch.tensor([[-1.0, 0.0, 1.0]], dtype=torch.float64)
    eps = torch.randn(1, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    l_r = vdm.reconstruction_loss(x, generator=torch.Generator().manual_seed(9))
    a0, s0 = math.sqrt(4 / 5), math.sqrt(1 / 5)  # SNR(0) = 4
    expected = 0.0
    for j in range(3):
        mean = (a0 * x[0, j].item() + s0 * eps[0, j].item()) / a0
        w = [math.exp(-0.5 * ((c - mean) / (s0 / a0)) ** 2) for c in (-1.0, 0.0, 1.0)]
        expected -= math.log(w[j] / sum(w))
    assert l_r.shape == (1, 1) and l_r.item() == pytest.approx(expected, rel=1e-12)


def test_discretized_reconstruction_normalises_over_many_bins():
    """300 bins (more than one chunk of the normaliser): the bin probabilities sum to one and
    agree with a softmax over all bins at once; at SNR(0) = e^13.3 8-bit data cost ~0 nats."""
    from bayesgen.methods.vdm import _centre_normalised_log_prob

    d = Discretization(-1.0, 1.0, 300)
    centres = torch.linspace(-1, 1, 300, dtype=torch.float64)
    mean = torch.tensor([0.123, -0.9, 0.5], dtype=torch.float64)
    log_p = torch.stack([_centre_normalised_log_prob(d, c.expand(3), mean, torch.tensor(0.05))
                         for c in centres])
    torch.testing.assert_close(log_p.exp().sum(0), torch.ones(3, dtype=torch.float64))
    direct = torch.log_softmax(-0.5 * ((centres[:, None] - mean) / 0.05) ** 2, dim=0)
    torch.testing.assert_close(log_p, direct)
    vdm = VDM(lambda z, t: z, data_shape=(3, 4, 4), discretization=Discretization.image_8bit())
    x = torch.randint(0, 256, (8, 3, 4, 4), generator=torch.Generator().manual_seed(0)) / 127.5 - 1
    l_r = vdm.reconstruction_loss(x.double(), n_samples=4, generator=torch.Generator())
    assert l_r.shape == (4, 8) and (l_r >= 0).all() and l_r.mean() / 48 < 0.01


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Conv2d(4, 3, kernel_size=3, padding=1)

    def forward(self, z, t):
        t = torch.movedim(t.expand((1, *z.shape[-2:], len(t))), -1, 0)
        return self.layer(torch.cat((z, t), dim=-3))


def test_images_end_to_end_and_float32_by_default():
    torch.manual_seed(0)
    vdm = VDM(TinyConv(), data_shape=(3, 8, 8), k=8, discretization=Discretization.image_8bit())
    x = torch.randint(0, 256, (4, 3, 8, 8)) / 127.5 - 1
    loss = vdm.train_loss(x)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    elbo, bpd, l_p, l_r, l_d = vdm.elbo(x, n_measure_samples=3)
    assert bpd.shape == (4,) and torch.isfinite(bpd).all() and bpd.dtype == torch.float32
    assert (l_p >= 0).all() and (l_r >= 0).all() and (l_d >= 0).all()
    assert vdm.sample(2).shape == (2, 3, 8, 8) and vdm.sample(2).dtype == torch.float32


def test_generators_make_runs_reproducible_and_float64_flows_through():
    vdm = VDM(TinyConv().double(), data_shape=(3, 4, 4), k=5)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    a = vdm.train_loss(x, generator=torch.Generator().manual_seed(7))
    b = vdm.train_loss(x, generator=torch.Generator().manual_seed(7))
    assert a.dtype == torch.float64 and torch.equal(a, b)
    s1 = vdm.sample(3, generator=torch.Generator().manual_seed(1))
    s2 = vdm.sample(3, generator=torch.Generator().manual_seed(1))
    assert s1.dtype == torch.float64 and torch.equal(s1, s2)
    e1 = vdm.elbo(x, k=4, generator=torch.Generator().manual_seed(3))
    e2 = vdm.elbo(x, k=4, generator=torch.Generator().manual_seed(3))
    assert all(u.dtype == torch.float64 and torch.equal(u, v) for u, v in zip(e1, e2, strict=True))


def test_sample_history_matches_sample():
    vdm = make_vdm()
    h = vdm.sample_history(5, k=7, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    s = vdm.sample(5, k=7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert h["z"].shape == (8, 5, D) and h["x_hat"].shape == (8, 5, D)
    assert h["t"].tolist() == pytest.approx([1 - i / 7 for i in range(8)])
    torch.testing.assert_close(h["x"], s)
    torch.testing.assert_close(h["x_hat"][-1], s)


def test_variance_estimate_and_model_kwargs():
    seen = []

    def model(z, t, class_labels=None):
        seen.append(class_labels.tolist())
        return torch.zeros_like(z)

    vdm = VDM(model, data_shape=(2,))
    x = torch.zeros(3, 2, dtype=torch.float64)
    out = vdm.elbo(x, n_recon_samples=2, n_measure_samples=4, return_variance=True,
                   class_labels=torch.tensor([0, 1, 2]))
    assert len(out) == 6 and out[5].shape == (3,) and (out[5] > 0).all()
    assert seen == [[0, 1, 2] * 4]
    vdm.sample(3, k=2, class_labels=torch.tensor([5, 6, 7]))
    assert seen[-1] == [5, 6, 7]


def test_bad_inputs_give_clear_errors():
    vdm = VDM(lambda z, t: z, data_shape=(3, 4, 4), discretization=Discretization.image_8bit())
    with pytest.raises(ValueError, match="shape"):
        vdm.train_loss(torch.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match="floating-point"):
        vdm.train_loss(torch.zeros(2, 3, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="rescale"):
        vdm.elbo(torch.full((2, 3, 4, 4), 200.0))
    with pytest.raises(ValueError, match="parameterization"):
        VDM(lambda z, t: z, data_shape=(1,), parameterization="v")
    with pytest.raises(ValueError, match="snr_min < snr_max"):
        VDM(lambda z, t: z, data_shape=(1,), snr_min=10.0, snr_max=1.0)
    with pytest.raises(ValueError, match="positive number of steps"):
        vdm.sample(2, k=0)
