"""BSI against closed-form Gaussian cases, hand-computed values and the API contract."""

import math

import pytest
import torch
from torch import nn

from bayesgen import BSI, Discretization

M, S, D = 0.3, 0.7, 4


def gaussian_oracle(bsi: BSI, m: float = M, s: float = S):
    """Bayes-optimal x̂ = E[x | μ] for x ~ N(m, s²·I) and μ = a·x + λ^(−1/2)·ε, a = (λ−λ0)/λ."""

    def model(mu, t):
        lam = bsi.icdf(t).reshape(-1, *([1] * (mu.ndim - 1)))
        a = (lam - bsi.lambda_0) / lam
        return m + a * s**2 / (a**2 * s**2 + 1 / lam) * (mu - a * m)

    return model


def make_bsi(**kw) -> BSI:
    kw = {"lambda_0": 1e-2, "alpha_M": 1e4, "preconditioning": None, **kw}
    bsi = BSI(lambda mu, t: mu, data_shape=(D,), **kw)
    bsi.model = gaussian_oracle(bsi)
    return bsi


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return M + S * torch.randn(n, D, generator=g, dtype=torch.float64)


ENTROPY = 0.5 * D * math.log(2 * math.pi * math.e * S**2)


def test_infinite_elbo_equals_entropy_for_gaussian_data():
    bsi = make_bsi()
    bsi.alpha_R = bsi.lambda_M
    x = gaussian_data(4000)
    g = torch.Generator().manual_seed(1)
    elbo, bpd, l_r, l_m = bsi.elbo(x, n_recon_samples=1, n_measure_samples=20, generator=g)
    neg = -elbo
    se = neg.std() / math.sqrt(len(neg))
    assert abs(neg.mean() - ENTROPY) < 4 * se + 1e-3
    assert torch.allclose(bpd, neg / (D * math.log(2)))
    assert torch.allclose(elbo, -(l_r + l_m))


def test_finite_elbo_is_looser_and_tightens_with_k():
    bsi = make_bsi()
    bsi.alpha_R = bsi.lambda_M
    x = gaussian_data(3000)
    values = []
    for k in (2, 16, 256):
        g = torch.Generator().manual_seed(2)
        elbo, *_ = bsi.elbo(x, k=k, n_measure_samples=20, generator=g)
        values.append((-elbo).mean().item())
    assert values[0] > values[1] > values[2] > ENTROPY - 0.05
    assert values[2] - ENTROPY < 0.5


def test_sampler_recovers_mean_and_std():
    bsi = make_bsi()
    g = torch.Generator().manual_seed(3)
    x = bsi.sample(20000, k=200, generator=g, dtype=torch.float64)
    assert x.dtype == torch.float64 and x.shape == (20000, D)
    assert abs(x.mean().item() - M) < 0.02
    assert abs(x.std().item() - S) < 0.02


def test_edm_preconditioning_coefficients_by_hand():
    bsi = BSI(lambda mu, t: mu, data_shape=(1,), lambda_0=1e-2, alpha_M=1e6)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    c_skip, c_out, c_in = bsi.edm_coefficients(t)
    for i, ti in enumerate(t.tolist()):
        lam = math.exp(ti * math.log((1e-2 + 1e6) / 1e-2) + math.log(1e-2))
        alpha = lam - 1e-2
        kappa = 1 + alpha**2 / lam
        assert c_skip[i].item() == pytest.approx(alpha / kappa, rel=1e-12)
        assert c_out[i].item() == pytest.approx(kappa**-0.5, rel=1e-12)
        assert c_in[i].item() == pytest.approx((lam / kappa) ** 0.5, rel=1e-12)
    # t = 0: the belief carries no information, x̂ = F(c_in·μ) with c_skip = 0, c_out = 1.
    assert abs(c_skip[0].item()) < 1e-12 and c_out[0].item() == pytest.approx(1.0)


def test_edm_predict_formula():
    bsi = BSI(lambda mu, t: 2 * mu + 1, data_shape=(3,))
    mu = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    c_skip, c_out, c_in = (c[:, None] for c in bsi.edm_coefficients(t))
    expected = c_skip * mu + c_out * (2 * c_in * mu + 1)
    torch.testing.assert_close(bsi.predict(mu, t), expected)


def test_precision_schedule_cdf_icdf():
    bsi = BSI(lambda mu, t: mu, data_shape=(1,), lambda_0=1e-2, alpha_M=1e6)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    lam = bsi.icdf(t)
    assert lam[0].item() == pytest.approx(1e-2) and lam[-1].item() == pytest.approx(1e6 + 1e-2)
    torch.testing.assert_close(bsi.cdf(lam), t)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "edm", "edm7"])
def test_schedules_are_increasing_with_fixed_ends(schedule):
    bsi = BSI(lambda mu, t: mu, data_shape=(1,))
    t = bsi.schedule_t(16, schedule=schedule)
    assert t.shape == (17,) and t[0] == 0 and t[-1] == 1
    assert bool((t[1:] > t[:-1]).all())


def test_edm_schedule_std_is_linear():
    bsi = BSI(lambda mu, t: mu, data_shape=(1,), lambda_0=1e-2, alpha_M=1e6)
    std = bsi.icdf(bsi.schedule_t(8, schedule="edm")) ** -0.5
    diffs = std[1:] - std[:-1]
    torch.testing.assert_close(diffs, diffs[0].expand_as(diffs), rtol=1e-6, atol=0)


def test_discretization_boundaries_and_buckets():
    d = Discretization.image_8bit()
    assert d.bin_width == pytest.approx(2 / 255)
    b = d.boundaries()
    assert b.shape == (257,)
    assert b[0].item() == pytest.approx(-1 - 1 / 255) and b[-1].item() == pytest.approx(1 + 1 / 255)
    centres = torch.linspace(-1, 1, 256, dtype=torch.float64)
    assert torch.equal(d.bucket(centres), torch.arange(256))
    # values on either side of an inner edge land in neighbouring bins; outliers are clamped
    edge = b[100]
    assert d.bucket(edge - 1e-9).item() == 99 and d.bucket(edge + 1e-9).item() == 100
    assert d.bucket(torch.tensor([-5.0, 5.0])).tolist() == [0, 255]


def test_discretized_log_prob_by_hand():
    d = Discretization(-1.0, 1.0, 3)  # centres -1, 0, 1; edges -1.5, -0.5, 0.5, 1.5
    mean = torch.tensor([0.2, 0.2, 0.2], dtype=torch.float64)
    x = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    std = 0.5
    phi = lambda v: 0.5 * (1 + math.erf((v - 0.2) / (std * math.sqrt(2))))
    expected = [phi(-0.5), phi(0.5) - phi(-0.5), 1 - phi(0.5)]
    torch.testing.assert_close(d.log_prob(x, mean, std).exp(), torch.tensor(expected,
                               dtype=torch.float64))
    # the probabilities of all bins sum to one
    assert sum(expected) == pytest.approx(1.0)


def test_reconstruction_loss_gaussian_without_discretization():
    bsi = BSI(lambda mu, t: torch.zeros_like(mu), data_shape=(2,), alpha_R=4.0,
              preconditioning=None)
    x = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    l_r = bsi.reconstruction_loss(x)
    expected = -2 * (0.5 * math.log(4 / (2 * math.pi)) - 0.5 * 4 * 1.0)
    assert l_r.item() == pytest.approx(expected)


def test_train_loss_by_hand_with_constant_model():
    bsi = BSI(lambda mu, t: torch.zeros_like(mu), data_shape=(2,), preconditioning=None)
    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    t = bsi.sample_t(1, 1, x, torch.Generator().manual_seed(0))[0]
    loss = bsi.train_loss(x, generator=g)
    expected = bsi.icdf(t) * bsi.L * (1.0 + 9.0) / 2
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("cap", [0.5, 40.0])
def test_train_loss_weight_cap_by_hand(cap):
    """w(λ) = λ·c/(λ + c): below the ELBO's λ, and ≈ λ where λ ≪ c, ≈ c where λ ≫ c."""
    kw = dict(data_shape=(2,), preconditioning=None, lambda_0=0.01, alpha_M=1e3)
    elbo = BSI(lambda mu, t: torch.zeros_like(mu), **kw)
    capped = BSI(lambda mu, t: torch.zeros_like(mu), weight_cap=cap, **kw)
    x = torch.tensor([[1.0, 3.0]] * 64, dtype=torch.float64)
    t = elbo.sample_t(1, 64, x, torch.Generator().manual_seed(0))[0]
    lam = elbo.icdf(t)
    a = elbo.train_loss(x, generator=torch.Generator().manual_seed(0))
    b = capped.train_loss(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b, (lam * cap / (lam + cap)) * elbo.L * (1.0 + 9.0) / 2)
    torch.testing.assert_close(b / a, cap / (lam + cap))
    assert (b < a).all() and b.max() < cap * elbo.L * 5
    with pytest.raises(ValueError, match="weight_cap"):
        BSI(lambda mu, t: mu, data_shape=(2,), weight_cap=0.0)


def test_low_discrepancy_t_is_stratified():
    bsi = BSI(lambda mu, t: mu, data_shape=(1,))
    x = torch.zeros(64, 1)
    t = bsi.sample_t(2, 64, x, torch.Generator().manual_seed(0))
    assert t.shape == (2, 64)
    hist = torch.histc(t.flatten(), bins=8, min=0, max=1)
    assert hist.min() >= 15 and hist.max() <= 17  # 128 points, one in each of 128 strata


class TinyConv(nn.Module):
    """The seed README's example model: one conv over (μ, t) channels."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Conv2d(4, 3, kernel_size=3, padding=1)

    def forward(self, mu, t):
        t = torch.movedim(t.expand((1, *mu.shape[-2:], len(t))), -1, 0)
        return self.layer(torch.cat((mu, t), dim=-3))


def test_seed_readme_snippet_runs():
    torch.manual_seed(0)
    bsi = BSI(TinyConv(), data_shape=(3, 8, 8), lambda_0=1e-2, alpha_M=1e6, alpha_R=2e6, k=16,
              preconditioning="edm", discretization=Discretization.image_8bit())
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    loss = bsi.train_loss(x)
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    elbo, bpd, l_recon, l_measure = bsi.elbo(x, n_recon_samples=1, n_measure_samples=10)
    assert bpd.shape == (4,) and torch.isfinite(bpd).all()
    samples = bsi.sample(n_samples=4)
    assert samples.shape == (4, 3, 8, 8) and samples.dtype == torch.float32


def test_generators_make_runs_reproducible_and_float64_flows_through():
    bsi = BSI(TinyConv().double(), data_shape=(3, 4, 4), k=5)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2 - 1
    a = bsi.train_loss(x, generator=torch.Generator().manual_seed(7))
    b = bsi.train_loss(x, generator=torch.Generator().manual_seed(7))
    assert a.dtype == torch.float64 and torch.equal(a, b)
    s1 = bsi.sample(3, generator=torch.Generator().manual_seed(1))
    s2 = bsi.sample(3, generator=torch.Generator().manual_seed(1))
    assert s1.dtype == torch.float64 and torch.equal(s1, s2)
    e1 = bsi.elbo(x, generator=torch.Generator().manual_seed(3))[1]
    e2 = bsi.elbo(x, generator=torch.Generator().manual_seed(3))[1]
    assert torch.equal(e1, e2)


def test_sample_history_matches_sample():
    bsi = make_bsi()
    h = bsi.sample_history(5, k=7, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    s = bsi.sample(5, k=7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert h["mu"].shape == (8, 5, D) and h["x_hat"].shape == (8, 5, D)
    assert h["y"].shape == (7, 5, D)
    torch.testing.assert_close(h["x"], s)


def test_variance_estimate_and_model_kwargs():
    seen = {}

    def model(mu, t, class_labels=None):
        seen["labels"] = class_labels
        return torch.zeros_like(mu)

    bsi = BSI(model, data_shape=(2,), preconditioning=None)
    x = torch.zeros(3, 2, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    out = bsi.elbo(x, n_measure_samples=4, return_variance=True, class_labels=labels)
    assert len(out) == 5 and out[4].shape == (3,) and (out[4] >= 0).all()
    assert seen["labels"].tolist() == [0, 1, 2] * 4 or seen["labels"].tolist() == [0, 1, 2]


def test_bad_inputs_give_clear_errors():
    bsi = BSI(lambda mu, t: mu, data_shape=(3, 4, 4), discretization=Discretization.image_8bit())
    with pytest.raises(ValueError, match="shape"):
        bsi.train_loss(torch.zeros(2, 3, 5, 5))
    with pytest.raises(ValueError, match="rescale"):
        bsi.elbo(torch.full((2, 3, 4, 4), 200.0))
    with pytest.raises(ValueError, match="schedule"):
        bsi.sample(2, schedule="quadratic")
    with pytest.raises(ValueError, match="preconditioning"):
        BSI(lambda mu, t: mu, data_shape=(1,), preconditioning="vp")
