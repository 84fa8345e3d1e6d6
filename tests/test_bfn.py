"""Bayesian Flow Networks: closed-form sanity facts and hand-computed values, in float64 on CPU.

Bayes-optimal predictors make the BFN losses exact information quantities: for Gaussian data
N(m, s²) the x-predictor E[x | μ] gives E[L∞ + L_recon] = differential entropy (I-MMSE), and for
i.i.d. categorical data p̂ ∝ p ⊙ θ gives E[L^n + L_recon] = Shannon entropy for every n.
"""

import math

import pytest
import torch
from torch import nn

from bayesgen.methods.bfn import (
    BFN,
    bayesian_update_continuous,
    bayesian_update_discrete,
    beta_1_from_max_sqrt_beta,
    bin_centres,
    bin_index,
    discrete_log_receiver,
    discretized_log_receiver,
    discretized_normal_log_prob,
    discretized_normal_probs,
    quantize,
)

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_mc_close(samples: torch.Tensor, expected: float, n_se: float = 4.0, slack=0.0):
    """|mean − expected| ≤ n_se standard errors (+ slack)."""
    mean = samples.mean().item()
    se = samples.std().item() / math.sqrt(samples.numel())
    assert abs(mean - expected) <= n_se * se + slack, (mean, expected, se)


def normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


# ---- oracles ------------------------------------------------------------------------------------
M, S = 0.1, 0.12  # Gaussian data N(M, S²), well inside [−1, 1]


class GaussianPosteriorMean(nn.Module):
    """Bayes-optimal x̂(μ, t) = E[x | μ] for x ~ N(M, S²), μ ~ N(γx, γ(1−γ)):
    μ/γ ~ N(x, 1/β) with β = γ/(1−γ), so x̂ = (M/S² + μ/(1−γ)) / (1/S² + γ/(1−γ))."""

    def __init__(self, sigma_1: float, predict_eps: bool = False):
        super().__init__()
        self.sigma_1, self.predict_eps = sigma_1, predict_eps
        self.dtype_anchor = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, mu, t):
        gamma = (1 - self.sigma_1 ** (2 * t)).reshape(-1, *[1] * (mu.ndim - 1))
        x_hat = (M / S**2 + mu / (1 - gamma)) / (1 / S**2 + gamma / (1 - gamma))
        if self.predict_eps:  # μ = γ x + √(γ(1−γ)) ε
            return (mu - gamma * x_hat) / (gamma * (1 - gamma)).sqrt()
        return x_hat


class CategoricalPosterior(nn.Module):
    """Bayes-optimal logits ln p + ln θ for i.i.d. categorical data with class probabilities p."""

    def __init__(self, p: torch.Tensor):
        super().__init__()
        self.register_buffer("log_p", p.log())
        self.dtype_anchor = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, theta, t):
        return self.log_p + theta.log()


class F64Net(nn.Module):
    """Wraps a function; its float64 parameter makes integer (class) data use float64."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.dtype_anchor = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, theta, t):
        return self.fn(theta, t)


def gaussian_expectations(sigma_1: float, n: int | None):
    """Per dimension: E L^n (or E L∞ for n=None) and E L_recon, from mmse(t) = 1/(1/S² + β(t))."""
    beta = lambda t: sigma_1 ** (-2 * t) - 1
    mmse = lambda t: 1 / (1 / S**2 + beta(t))
    if n is None:
        transmit = 0.5 * math.log(1 + S**2 * beta(1.0))  # ∫ ½ mmse dβ
    else:
        transmit = sum(0.5 * (beta(i / n) - beta((i - 1) / n)) * mmse((i - 1) / n)
                       for i in range(1, n + 1))
    recon = 0.5 * math.log(2 * math.pi * sigma_1**2) + mmse(1.0) / (2 * sigma_1**2)
    return transmit, recon


# ---- schedules, updates, bins -----------------------------------------------------------------
def test_schedules_match_hand_values():
    bfn = BFN.continuous(lambda mu, t: mu, (1,), sigma_1=0.1)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    torch.testing.assert_close(bfn.gamma(t), torch.tensor([0.0, 0.9, 0.99], dtype=F64))
    torch.testing.assert_close(bfn.beta(t), torch.tensor([0.0, 9.0, 99.0], dtype=F64))
    assert bfn.alpha(1, 2) == pytest.approx(0.1 ** -1 * (1 - 0.1))  # σ1^(−2i/n)(1 − σ1^(2/n))
    assert sum(bfn.alpha(i, 7) for i in range(1, 8)) == pytest.approx(99.0)  # Σ α_i = β(1)

    disc = BFN.discrete(lambda th, t: th, (1,), num_classes=3, beta_1=4.0)
    torch.testing.assert_close(disc.beta(t), torch.tensor([0.0, 1.0, 4.0], dtype=F64))
    assert disc.alpha(2, 4) == pytest.approx(4.0 * 3 / 16)
    assert sum(disc.alpha(i, 5) for i in range(1, 6)) == pytest.approx(4.0)
    assert beta_1_from_max_sqrt_beta(3) == 9.0 and beta_1_from_max_sqrt_beta(0.75) == 0.5625


def test_bayesian_updates_match_hand_values():
    mu, rho = bayesian_update_continuous(torch.tensor(0.2, dtype=F64), 2.0,
                                         torch.tensor(1.0, dtype=F64), 3.0)
    assert rho == 5.0 and mu.item() == pytest.approx((2 * 0.2 + 3 * 1.0) / 5)

    theta = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    y = torch.tensor([1.0, 0.0, -1.0], dtype=F64)
    want = torch.tensor([0.5 * math.e, 0.3, 0.2 / math.e], dtype=F64)
    torch.testing.assert_close(bayesian_update_discrete(theta, y), want / want.sum())


def test_quantize_round_trips_and_official_formula():
    K = 16
    centres = bin_centres(K, F64)
    torch.testing.assert_close(centres, (2 * torch.arange(1, K + 1, dtype=F64) - 1) / K - 1)
    torch.testing.assert_close(quantize(centres, K), centres)
    assert torch.equal(bin_index(centres, K), torch.arange(K))
    x = torch.rand(1000, generator=gen(), dtype=F64) * 2 - 1
    torch.testing.assert_close(quantize(quantize(x, K), K), quantize(x, K))
    assert (quantize(x, K) - x).abs().max() <= 1 / K + 1e-12
    edges = torch.tensor([-1.0, 1.0, -1.5, 1.5], dtype=F64)
    assert bin_index(edges, K).tolist() == [0, K - 1, 0, K - 1]


def test_discretized_normal_probs_sum_to_one_and_match_hand_values():
    mean, std = torch.tensor(0.1, dtype=F64), torch.tensor(0.5, dtype=F64)
    cdf = [normal_cdf((b - 0.1) / 0.5) for b in (-0.5, 0.0, 0.5)]
    want = [cdf[0], cdf[1] - cdf[0], cdf[2] - cdf[1], 1 - cdf[2]]
    probs = discretized_normal_probs(mean, std, 4)
    torch.testing.assert_close(probs, torch.tensor(want, dtype=F64))
    x = torch.tensor([-0.75, -0.25, 0.25, 0.75], dtype=F64)
    torch.testing.assert_close(discretized_normal_log_prob(x, mean.expand(4), std.expand(4), 4),
                               torch.tensor(want, dtype=F64).log())

    g = gen(1)
    means = torch.randn(200, generator=g, dtype=F64) * 2
    stds = torch.rand(200, generator=g, dtype=F64) * 3 + 1e-3
    torch.testing.assert_close(discretized_normal_probs(means, stds, 256).sum(-1),
                               torch.ones(200, dtype=F64))
    # a bin of probability < 1e-5 falls back to density × bin width
    far = discretized_normal_log_prob(torch.tensor(0.9, dtype=F64), torch.tensor(0.0, dtype=F64),
                                      torch.tensor(0.1, dtype=F64), 256)
    want = -0.5 * math.log(2 * math.pi * 0.01) - quantize(torch.tensor(0.9), 256).item() ** 2 / (
        2 * 0.01) + math.log(2 / 256)
    assert far.item() == pytest.approx(want, rel=1e-5)


def test_output_conversions_from_eps_match_hand_values():
    sigma_1, t = 0.01, torch.tensor([0.0, 0.5], dtype=F64)
    mu = torch.tensor([[0.3], [0.4]], dtype=F64)
    eps = torch.tensor([[0.7], [-0.2]], dtype=F64)
    gamma = 1 - sigma_1 ** (2 * 0.5)
    scale = math.sqrt((1 - gamma) / gamma)

    cont = BFN.continuous(lambda m, tt: eps, (1,), sigma_1=sigma_1)
    x_hat = cont.x_hat(mu, t)
    assert x_hat[0].item() == 0.0  # t < 1e-6
    assert x_hat[1].item() == pytest.approx(0.4 / gamma + scale * 0.2)
    big = BFN.continuous(lambda m, tt: -100 * torch.ones_like(m), (1,), sigma_1=sigma_1)
    assert big.x_hat(mu, t)[1].item() == 1.0  # clipped to [−1, 1]

    log_std = torch.tensor([[0.3], [-0.5]], dtype=F64)
    disc = BFN.discretized(lambda m, tt: torch.cat([eps, log_std], 1), (1,), num_bins=16,
                           sigma_1=sigma_1)
    mean, std = disc.output_normal(mu, t)
    assert (mean[0].item(), std[0].item()) == (0.0, 1.0)
    assert mean[1].item() == pytest.approx(0.4 / gamma + scale * 0.2)
    assert std[1].item() == pytest.approx(scale * math.exp(-0.5))
    tiny = BFN.discretized(lambda m, tt: torch.cat([eps, -50 + 0 * eps], 1), (1,), num_bins=16,
                           parameterization="x", min_std=1e-3)
    assert tiny.output_normal(mu, t)[1].min().item() == pytest.approx(1e-3)


# ---- the sanity facts: entropies with Bayes-optimal predictors -------------------------------
@pytest.mark.parametrize("sigma_1", [1e-3, 1e-2])
def test_gaussian_data_losses_equal_differential_entropy(sigma_1):
    D, N = 4, 20000
    bfn = BFN.continuous(GaussianPosteriorMean(sigma_1), (D,), sigma_1=sigma_1,
                         parameterization="x")
    g = gen(2)
    x = (M + S * torch.randn(N, D, generator=g, dtype=F64)).clamp(-1, 1)
    entropy = 0.5 * math.log(2 * math.pi * math.e * S**2)  # per dimension

    l_recon = bfn.recon_loss(x, generator=g)
    l_inf = bfn.continuous_loss(x, generator=g)
    transmit, recon = gaussian_expectations(sigma_1, None)
    assert transmit + recon == pytest.approx(entropy, abs=1e-4)  # the gap is O(σ1²/S²)
    assert_mc_close(l_recon, D * recon)
    assert_mc_close(l_inf + l_recon, D * entropy, slack=1e-3)

    previous = math.inf
    for n in (1, 10, 100, 1000):
        expected, _ = gaussian_expectations(sigma_1, n)
        assert expected < previous  # n-step losses decrease towards L∞
        previous = expected
        assert_mc_close(bfn.n_step_loss(x, n, generator=g), D * expected)
    assert previous == pytest.approx(transmit, rel=0.05)
    nll, bpd, rec, tr = bfn.elbo(x[:4000], n_steps=None, generator=g)
    torch.testing.assert_close(nll, rec + tr)
    torch.testing.assert_close(bpd, nll / (D * math.log(2)))
    assert_mc_close(nll, D * entropy, slack=1e-3)


def test_eps_and_x_parameterizations_agree():
    D, sigma_1 = 3, 1e-3
    x = (M + S * torch.randn(64, D, generator=gen(3), dtype=F64)).clamp(-1, 1)
    t = torch.linspace(0.01, 1.0, 64, dtype=F64)
    by_x = BFN.continuous(GaussianPosteriorMean(sigma_1), (D,), sigma_1=sigma_1,
                          parameterization="x")
    by_eps = BFN.continuous(GaussianPosteriorMean(sigma_1, predict_eps=True), (D,),
                            sigma_1=sigma_1)
    torch.testing.assert_close(by_eps.continuous_loss(x, t=t, generator=gen(4)),
                               by_x.continuous_loss(x, t=t, generator=gen(4)))


def test_categorical_data_losses_equal_shannon_entropy():
    p = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    D, N = 2, 10000
    bfn = BFN.discrete(CategoricalPosterior(p), (D,), num_classes=3, beta_1=3.0)
    g = gen(5)
    x = torch.multinomial(p, N * D, replacement=True, generator=g).reshape(N, D)
    entropy = -(p * p.log()).sum().item()

    l_recon = bfn.recon_loss(x, generator=g)
    assert_mc_close(bfn.continuous_loss(x, generator=g) + l_recon, D * entropy)
    for n in (1, 4, 32):  # exact receivers: E[L^n + L_recon] = H for every n
        assert_mc_close(bfn.n_step_loss(x, n, generator=g) + l_recon, D * entropy)
    per_coord = BFN.discrete(CategoricalPosterior(p), (D,), num_classes=3, beta_1=3.0,
                             per_coordinate_receiver=True)
    # the official per-coordinate mixture is not the exact receiver: here it costs ≈ 0.13 nats/dim
    assert (per_coord.n_step_loss(x, 4, generator=g) + l_recon).mean() > D * entropy + 0.1


def test_discrete_receivers_match_brute_force():
    g = gen(6)
    K, alpha = 4, 0.7
    y = torch.randn(5, K, generator=g, dtype=F64) * 2
    log_p = torch.log_softmax(torch.randn(5, K, generator=g, dtype=F64), -1)
    means = alpha * (K * torch.eye(K, dtype=F64) - 1)  # row k: α(K e_k − 1)
    comp = torch.distributions.Normal(means, math.sqrt(alpha * K))
    joint = torch.logsumexp(log_p + comp.log_prob(y[:, None, :]).sum(-1), -1)
    torch.testing.assert_close(discrete_log_receiver(y, log_p, alpha), joint)
    per_coord = torch.logsumexp(log_p[:, :, None] + comp.log_prob(y[:, None, :]), 1).sum(-1)
    torch.testing.assert_close(discrete_log_receiver(y, log_p, alpha, per_coordinate=True),
                               per_coord)

    probs = torch.softmax(torch.randn(5, 8, generator=g, dtype=F64), -1)
    yc = torch.randn(5, generator=g, dtype=F64)
    comps = torch.distributions.Normal(bin_centres(8, F64), alpha**-0.5)
    want = torch.log((probs * comps.log_prob(yc[:, None]).exp()).sum(-1))
    torch.testing.assert_close(discretized_log_receiver(yc, probs, alpha), want)


def test_data_identity_outputs_transmit_nothing():
    """When the output distribution is a point mass on x, sender = receiver: L∞ = L^n = 0."""
    K = 16
    x0 = quantize(torch.tensor([[-0.9, 0.3, 0.97]], dtype=F64), K)

    def point_mass(mu, t):
        return torch.cat([x0.expand(mu.shape[0], -1), torch.full_like(mu, -10.0)], 1)

    disc = BFN.discretized(point_mass, (3,), num_bins=K, parameterization="x")
    xs = x0.expand(50, -1)
    for loss in (disc.continuous_loss(xs), disc.n_step_loss(xs, 10), disc.recon_loss(xs)):
        assert loss.abs().max().item() < 1e-9

    c = torch.tensor([[2, 0, 1]])
    one_hot_logits = F64Net(lambda th, t: 1e3 * (nn.functional.one_hot(c, 3).to(th) - 1)
                            .expand_as(th))
    for per_coordinate in (False, True):
        cat = BFN.discrete(one_hot_logits, (3,), num_classes=3, beta_1=2.0,
                           per_coordinate_receiver=per_coordinate)
        cs = c.expand(50, -1)
        for loss in (cat.continuous_loss(cs), cat.n_step_loss(cs, 10), cat.recon_loss(cs)):
            assert loss.abs().max().item() < 1e-9


# ---- flow distribution and sampler consistency --------------------------------------------------
def test_flow_distribution_moments():
    g = gen(7)
    bfn = BFN.continuous(lambda mu, t: mu, (2,), sigma_1=1e-2)
    x = torch.tensor([[0.5, -0.8]], dtype=F64).expand(20000, -1)
    t = torch.full((20000,), 0.3, dtype=F64)
    mu = bfn.flow(x, t, generator=g)
    gamma = 1 - 1e-2 ** 0.6
    for d in range(2):
        assert_mc_close(mu[:, d], gamma * x[0, d].item())
    torch.testing.assert_close(mu.var(0), torch.full((2,), gamma * (1 - gamma), dtype=F64),
                               rtol=0.05, atol=0)

    K, beta_1 = 3, 3.0
    disc = BFN.discrete(lambda th, tt: th, (1,), num_classes=K, beta_1=beta_1)
    xc = torch.ones(20000, 1, dtype=torch.long)
    theta = disc.flow(xc, torch.full((20000,), 0.5, dtype=F64), generator=g)
    diff = (theta[..., 1].log() - theta[..., 0].log()).flatten()  # y_x − y_j ~ N(βK, 2βK)
    beta = beta_1 * 0.25
    assert_mc_close(diff, beta * K)
    assert diff.var().item() == pytest.approx(2 * beta * K, rel=0.05)
    uniform = disc.flow(xc[:3], torch.zeros(3, dtype=F64), generator=g)
    torch.testing.assert_close(uniform, torch.full((3, 1, K), 1 / K, dtype=F64))


def test_sampler_marginals_match_flow_with_point_mass_outputs():
    """With the data as output, μ after i of n sampler steps ~ p_F(μ | x; i/n)."""
    n, N, sigma_1 = 8, 20000, 1e-2
    x0 = torch.tensor([0.4, -0.9], dtype=F64)
    cont = BFN.continuous(lambda mu, t: x0.expand_as(mu), (2,), sigma_1=sigma_1,
                          parameterization="x")
    x1 = quantize(x0, 16)
    disc = BFN.discretized(lambda mu, t: torch.cat([x1.expand_as(mu), -10 + 0 * mu], 1), (2,),
                           num_bins=16, sigma_1=sigma_1, parameterization="x")
    for bfn, x in ((cont, x0), (disc, x1)):
        hist = bfn.sample_history(N, n, generator=gen(8), dtype=F64)
        assert hist["mu"].shape == (n + 1, N, 2) and hist["y"].shape == (n, N, 2)
        torch.testing.assert_close(hist["x"], x.expand(N, -1))
        for i in (2, 5, 8):
            gamma = 1 - sigma_1 ** (2 * i / n)
            for d in range(2):
                assert_mc_close(hist["mu"][i, :, d], gamma * x[d].item())
                assert hist["mu"][i, :, d].var().item() == pytest.approx(
                    gamma * (1 - gamma), rel=0.06)


def test_discrete_sampler_marginals_match_flow_with_bayes_optimal_output():
    """With p̂ ∝ p ⊙ θ, θ after i of n sampler steps ~ E_{x~p} p_F(θ | x; i/n)."""
    p = torch.tensor([0.6, 0.3, 0.1], dtype=F64)
    n, N = 6, 20000
    bfn = BFN.discrete(CategoricalPosterior(p), (1,), num_classes=3, beta_1=2.0)
    hist = bfn.sample_history(N, n, generator=gen(9))
    assert hist["theta"].shape == (n + 1, N, 1, 3) and hist["probs"].shape == (n + 1, N, 1, 3)
    assert hist["k"].shape == (n, N, 1) and hist["x"].shape == (N, 1)
    g = gen(10)
    x = torch.multinomial(p, N, replacement=True, generator=g).reshape(N, 1)
    for i in (1, 3, 6):
        flow = bfn.flow(x, torch.full((N,), i / n, dtype=F64), generator=g)
        for moment in (1, 2):
            a, b = hist["theta"][i] ** moment, flow**moment
            se = ((a.var(0) + b.var(0)) / N).sqrt()
            assert ((a.mean(0) - b.mean(0)).abs() <= 4 * se).all(), (i, moment)


# ---- API: shapes, dtypes, reproducibility, conditioning, errors -------------------------------
def eps_net(mu, t):
    return 0.1 * mu + t.reshape(-1, *[1] * (mu.ndim - 1))


def image_net(mu, t):
    return torch.cat([eps_net(mu, t), 0 * mu - 1], 1)


def logits_net(theta, t):
    return 2 * theta + t.reshape(-1, *[1] * (theta.ndim - 1))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_shapes_dtypes_and_generator_reproducibility(dtype):
    g = gen(11)
    cases = [
        (BFN.continuous(eps_net, (2, 3)), torch.rand(4, 2, 3, generator=g, dtype=dtype) * 2 - 1),
        (BFN.discretized(image_net, (3, 4, 4), num_bins=16),
         torch.rand(4, 3, 4, 4, generator=g, dtype=dtype) * 2 - 1),
        (BFN.discrete(logits_net, (5,), num_classes=4, beta_1=2.0),
         torch.randint(0, 4, (4, 5), generator=g)),
    ]
    for bfn, x in cases:
        out_dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        loss = bfn.train_loss(x, generator=gen(1))
        assert loss.shape == (4,) and loss.dtype == out_dtype
        torch.testing.assert_close(loss, bfn.train_loss(x, generator=gen(1)))
        assert not torch.equal(loss, bfn.train_loss(x, generator=gen(2)))
        for n_steps in (None, 3):
            out = bfn.elbo(x, n_steps=n_steps, n_samples=2, generator=g)
            assert all(v.shape == (4,) and v.dtype == out_dtype for v in out)
        s = bfn.sample(3, 4, generator=gen(1), dtype=dtype)
        assert s.shape == (3, *bfn.data_shape)
        assert torch.equal(s, bfn.sample(3, 4, generator=gen(1), dtype=dtype))
        hist = bfn.sample_history(3, 4, generator=gen(1), dtype=dtype)
        assert torch.equal(hist["x"], s) and hist["t"].shape == (5,)
    probs = cases[2][0].sample(3, 4, generator=gen(1), dtype=dtype, return_probs=True)
    assert probs.shape == (3, 5, 4) and probs.dtype == dtype
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 5, dtype=dtype))
    assert cases[1][0].sample(2, 3, dtype=dtype).unique().numel() <= 16


def test_model_kwargs_are_forwarded_and_repeated():
    seen = []

    def net(mu, t, class_labels):
        assert class_labels.shape == (mu.shape[0],)
        seen.append(class_labels)
        return mu

    bfn = BFN.continuous(net, (2,))
    x = torch.zeros(3, 2, dtype=F64)
    labels = torch.tensor([0, 1, 2])
    bfn.elbo(x, n_samples=2, class_labels=labels)
    assert torch.equal(seen[0], labels.repeat(2))
    bfn.sample(3, 2, class_labels=labels)
    assert torch.equal(seen[-1], labels)


def test_soft_targets_match_hard_targets():
    bfn = BFN.discrete(logits_net, (6,), num_classes=2, beta_1=3.0)
    x = torch.randint(0, 2, (5, 6), generator=gen(12))
    dtype = torch.get_default_dtype()  # int data takes the model's (here the default) dtype
    for xs in (x.to(dtype), nn.functional.one_hot(x, 2).to(dtype)):
        for loss in ("continuous_loss", "recon_loss"):
            torch.testing.assert_close(getattr(bfn, loss)(xs, generator=gen(0)),
                                       getattr(bfn, loss)(x, generator=gen(0)))
        torch.testing.assert_close(bfn.n_step_loss(xs, 5, generator=gen(0)),
                                   bfn.n_step_loss(x, 5, generator=gen(0)))
    grey = torch.rand(5, 6, generator=gen(13), dtype=F64)
    assert bfn.train_loss(grey).shape == (5,)


def test_continuous_recon_with_official_discretized_evaluation():
    sigma_1 = math.sqrt(1e-3)
    bfn = BFN.continuous(lambda mu, t: torch.zeros_like(mu), (1,), sigma_1=sigma_1,
                         parameterization="x", recon_num_bins=16, recon_std=0.7 * sigma_1)
    x = torch.tensor([[1 / 16], [0.9]], dtype=F64)  # centre of bin 8; far in the tail
    half = 1 / 16
    want0 = -math.log(normal_cdf(2 * half / (0.7 * sigma_1)) - normal_cdf(0.0))
    assert bfn.recon_loss(x)[0].item() == pytest.approx(want0)
    assert bfn.recon_loss(x)[1].item() > 100


def test_train_loss_without_ln_sigma_is_bsi_baselines_scale():
    """BSI's BFN baseline trains on σ1^(−2t)·MSE: L∞/D divided by −ln σ1."""
    x = torch.rand(6, 3, 4, 4, dtype=F64) * 2 - 1
    kept = BFN.continuous(eps_net, (3, 4, 4), sigma_1=1e-3)
    dropped = BFN.continuous(eps_net, (3, 4, 4), sigma_1=1e-3, train_loss_ln_sigma=False)
    ratio = kept.train_loss(x, generator=gen(1)) / dropped.train_loss(x, generator=gen(1))
    torch.testing.assert_close(ratio, torch.full((6,), -math.log(1e-3), dtype=F64))
    # the ELBO is the same either way
    torch.testing.assert_close(kept.elbo(x, generator=gen(2))[0],
                               dropped.elbo(x, generator=gen(2))[0])


def test_bad_inputs_raise_value_errors():
    cont = BFN.continuous(eps_net, (2,))
    disc = BFN.discretized(image_net, (2,), num_bins=16)
    cat = BFN.discrete(logits_net, (2,), num_classes=3, beta_1=1.0)
    bad = [
        (cont.train_loss, torch.zeros(4, 3)),  # wrong shape
        (cont.train_loss, torch.zeros(4, 2, dtype=torch.long)),  # integers
        (disc.train_loss, torch.full((4, 2), 1.5)),  # outside [−1, 1]
        (cat.train_loss, torch.full((4, 2), 3)),  # class index ≥ K
        (cat.train_loss, torch.full((4, 2), -1)),
        (cat.train_loss, torch.rand(4, 2)),  # float of data_shape with K > 2
        (cat.train_loss, torch.full((4, 2, 3), 0.5)),  # probabilities not summing to 1
        (BFN.continuous(lambda mu, t: mu[:, :1], (2,)).train_loss, torch.zeros(4, 2)),
    ]
    for fn, x in bad:
        with pytest.raises(ValueError):
            fn(x)
    with pytest.raises(ValueError):
        cont.n_step_loss(torch.zeros(4, 2), 0)
    with pytest.raises(ValueError):
        cont.sample(2, 3, return_probs=True)
    for kwargs in ({"sigma_1": 1.5}, {"parameterization": "v"}):
        with pytest.raises(ValueError):
            BFN.continuous(eps_net, (2,), **kwargs)
    with pytest.raises(ValueError):
        BFN.discrete(logits_net, (2,), num_classes=1, beta_1=1.0)


def test_losses_have_finite_gradients():
    torch.manual_seed(0)
    lin = nn.Linear(4, 4).double()
    flat = lambda v, t: lin(v.flatten(1)).reshape(v.shape)
    x = torch.rand(8, 2, 2, generator=gen(14), dtype=F64) * 2 - 1
    cases = [
        (BFN.continuous(F64Net(flat), (4,)), x.flatten(1)),
        (BFN.discretized(F64Net(lambda v, t: lin(torch.cat([v, v], 1))), (2,), num_bins=16),
         x[:, :, 0]),
        (BFN.discrete(F64Net(flat), (2,), num_classes=2, beta_1=3.0,
                      per_coordinate_receiver=True), torch.randint(0, 2, (8, 2), generator=gen())),
    ]
    for bfn, data in cases:
        lin.zero_grad()
        loss = bfn.train_loss(data) + bfn.n_step_loss(data, 5) + bfn.recon_loss(data)
        loss.mean().backward()
        assert all(torch.isfinite(p.grad).all() for p in lin.parameters())
