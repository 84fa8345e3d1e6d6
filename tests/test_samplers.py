"""The fast samplers (``sampler="ode1" | "ode2" | "sde2"``): closed forms, convergence orders,
hand-computed steps of Xue et al.'s BFN-Solvers, network-call counts, conditioning.

Gaussian data N(0.1, 0.3²) per coordinate with each method's exact denoiser, float64: the
solvers' samples must have the data's mean and std at 5, 10 and 20 network calls (to the
accuracy measured for this grid, looser at 5 calls) and beat the ancestral sampler at the same
number of calls — except discretized BFN, whose ancestral sampler draws from the whole output
distribution and so is exact at any step count when that distribution is. I.i.d. categorical
data with the exact posterior for discrete BFN.
"""

import math

import pytest
import torch
from torch import nn

from bayesgen import BFN, BSI, InflationaryFlow
from bayesgen.methods import VDM
from bayesgen.methods.solvers import solve

F64 = torch.float64
M, S = 0.1, 0.3
N = 20000
SOLVERS = ("ode1", "ode2", "sde2")
# |std/S − 1| allowed at 5, 10, 20 network calls (measured worst case: 0.22, 0.047, 0.026)
STD_TOL = {5: 0.25, 10: 0.06, 20: 0.035}
pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def posterior_mean(z: torch.Tensor, a, s) -> torch.Tensor:
    """E[x | z] for x ~ N(M, S²) and z = a·x + s·ε."""
    return M + a * S**2 / (a * a * S**2 + s * s) * (z - a * M)


class Counted(nn.Module):
    """Counts the calls of ``fn(inp, t)``; one float64 parameter sets the samplers' dtype."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.calls = fn, 0
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, inp, t, **kwargs):
        self.calls += 1
        return self.fn(inp, t, **kwargs)


def make_bsi() -> BSI:
    bsi = BSI(None, (2,), preconditioning=None)

    def fn(mu, t):
        lam = bsi.icdf(t)[:, None]
        return posterior_mean(mu, (lam - bsi.lambda_0) / lam, lam.rsqrt())

    bsi.model = Counted(fn)
    return bsi


def bfn_scale(t, sigma_1=1e-3):
    g = (1 - sigma_1 ** (2 * t))[:, None]
    return g, (g * (1 - g)).clamp_min(1e-300).sqrt()


def make_bfn(kind: str) -> BFN:
    if kind == "continuous":
        return BFN.continuous(Counted(lambda mu, t: posterior_mean(mu, *bfn_scale(t))), (2,),
                              parameterization="x")

    def fn(mu, t):  # the exact Gaussian posterior as the output's (mean, log-std)
        g, s = bfn_scale(t)
        mean = posterior_mean(mu, g, s)
        log_std = 0.5 * torch.log(S**2 * s * s / (g * g * S**2 + s * s))
        return torch.cat([mean, log_std.expand_as(mean)], 1)

    return BFN.discretized(Counted(fn), (2,), num_bins=256, parameterization="x")


def make_vdm() -> VDM:
    vdm = VDM(None, (2,), parameterization="x")
    vdm.model = Counted(lambda z, t: posterior_mean(z, vdm.alpha(t)[:, None],
                                                    vdm.sigma(t)[:, None]))
    return vdm


MAKERS = {"bsi": make_bsi, "bfn_continuous": lambda: make_bfn("continuous"),
          "bfn_discretized": lambda: make_bfn("discretized"), "vdm": make_vdm}


def steps_kw(name: str, calls: int, sampler: str) -> dict:
    """The step count giving ``calls`` network calls: the ancestral BSI and BFN samplers call
    the network once more than they step."""
    extra = int(sampler == "ancestral" and name != "vdm")
    return {"n_steps": calls - extra} if name.startswith("bfn") else {"k": calls - extra}


@pytest.mark.parametrize("name", list(MAKERS))
def test_gaussian_moments_at_5_10_20_calls_beat_ancestral(name):
    method = MAKERS[name]()
    errors = {}
    for sampler in ("ancestral", "ode2", "sde2"):
        for calls in (5, 10, 20):
            method.model.calls = 0
            x = method.sample(N, generator=gen(), sampler=sampler,
                              **steps_kw(name, calls, sampler))
            assert method.model.calls == calls
            errors[sampler, calls] = abs(x.std().item() / S - 1)
            if sampler != "ancestral":
                assert abs(x.mean().item() - M) < 0.012, (sampler, calls, x.mean().item())
                assert errors[sampler, calls] < STD_TOL[calls], (sampler, calls, x.std().item())
    if name == "bfn_discretized":  # its ancestral sampler draws from the whole output
        return  # distribution, exact here at any step count; the solvers use only its mean
    for calls in (5, 10, 20):  # the ancestral samplers are 20–46% too narrow at these counts
        for sampler in ("ode2", "sde2"):
            assert errors[sampler, calls] < errors["ancestral", calls] / 2, (sampler, errors)


def discrete_bfn() -> tuple[BFN, torch.Tensor]:
    """I.i.d. categorical data p over K = 4 classes; the exact posterior p̂ ∝ p ⊙ θ."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=F64)
    model = Counted(lambda theta, t: torch.log(p) + torch.log(theta))
    return BFN.discrete(model, (3,), num_classes=4, beta_1=3.0), p


@pytest.mark.parametrize("sampler", SOLVERS)
def test_discrete_frequencies_match_the_categorical(sampler):
    bfn, p = discrete_bfn()
    tol = {5: 0.03, 10: 0.015, 20: 0.01}  # measured worst case 0.025, 0.011, 0.006
    for n in (5, 10, 20):
        bfn.model.calls = 0
        x = bfn.sample(N, n_steps=n, generator=gen(), sampler=sampler)
        assert bfn.model.calls == n
        freq = torch.bincount(x.flatten(), minlength=4).double() / x.numel()
        assert (freq - p).abs().max() < tol[n], (n, freq)


# ---- convergence orders ------------------------------------------------------------------
def bsi_grid(k: int):
    lam0, lam_m = 1e-2, 1e-2 + 1e6
    lam = [lam0 * (lam_m / lam0) ** (i / k) for i in range(k + 1)]
    return [(v - lam0) / v for v in lam], [v**-0.5 for v in lam]


def bfn_grid(k: int, t0: float = 1e-2, sigma_1: float = 1e-3):
    g = [1 - sigma_1 ** (2 * (t0 + (1 - t0) * i / k)) for i in range(k + 1)]
    return g, [math.sqrt(v * (1 - v)) for v in g]


def vdm_grid(k: int):
    vdm = VDM(None, (1,))
    ts = torch.linspace(1, 0, k + 1, dtype=F64)
    return vdm.alpha(ts).tolist(), vdm.sigma(ts).tolist()


def ode_error(grid, k: int, sampler: str) -> float:
    """Largest error of the returned x̂_{k−1} against the exact probability-flow solution from
    the same start, along which ξ = (z − a·M)/√(a²S² + s²) is constant (Gaussian data)."""
    a, s = grid(k)
    z0 = s[0] * torch.randn(500, 1, generator=gen(), dtype=F64) + a[0] * M
    x = solve(z0, a, s, lambda z, i: posterior_mean(z, a[i], s[i]), sampler)
    xi = (z0 - a[0] * M) / math.sqrt(a[0] ** 2 * S**2 + s[0] ** 2)
    j = k - 1
    exact = posterior_mean(a[j] * M + math.sqrt(a[j] ** 2 * S**2 + s[j] ** 2) * xi, a[j], s[j])
    return (x - exact).abs().max().item()


@pytest.mark.parametrize("grid,ks", [(bsi_grid, (32, 64, 128)), (vdm_grid, (32, 64, 128)),
                                     (bfn_grid, (128, 256, 512))])
@pytest.mark.parametrize("sampler,order", [("ode1", 1), ("ode2", 2)])
def test_convergence_order_as_steps_double(grid, ks, sampler, order):
    errors = [ode_error(grid, k, sampler) for k in ks]
    observed = [math.log2(errors[i] / errors[i + 1]) for i in range(len(ks) - 1)]
    assert all(abs(o - order) < 0.3 for o in observed), (errors, observed)


# ---- hand-computed steps: Xue et al.'s formulas in their own notation ----------------------
def test_continuous_steps_equal_bfn_solver_formulas():
    """BFN-Solver++1/++2 and SDE-BFN-Solver++2 as ML-GSAI/BFN-Solver writes them (reversed
    time r = 1 − t, α = γ, σ = √(γ(1 − γ)), λ = ln α − ln σ), two steps from a fixed state with
    a fixed non-trivial prediction, against ``solve`` without the limit start."""
    n, eta, s1 = 4, 1e-2, 1e-3
    r = [(n - i) / n * (1 - eta) for i in range(n + 1)]
    al = [1 - s1 ** (2 * (1 - v)) for v in r]
    sg = [math.sqrt(v * (1 - v)) for v in al]
    lam = [math.log(x) - math.log(y) for x, y in zip(al, sg, strict=True)]
    z0 = torch.linspace(-0.3, 0.4, 6, dtype=F64)[:, None]
    noise = [torch.full_like(z0, 0.7), torch.full_like(z0, -1.1), torch.full_like(z0, 0.2)]

    def pred(z, i):
        return torch.tanh(2 * z) * 0.5 + 0.1 * i

    for sampler in SOLVERS:
        z, prev, draws = z0.clone(), None, iter(noise)
        for i in range(2):
            x0 = pred(z, i)
            h = lam[i + 1] - lam[i]
            if sampler == "ode1" or prev is None:
                if sampler == "sde2":
                    z = (sg[i + 1] / sg[i] * math.exp(-h)) * z + al[i + 1] * (
                        1 - math.exp(-2 * h)) * x0 + sg[i + 1] * math.sqrt(
                        1 - math.exp(-2 * h)) * next(draws)
                else:
                    z = (sg[i + 1] / sg[i]) * z - al[i + 1] * (math.exp(-h) - 1) * x0
            else:
                rr = (lam[i] - lam[i - 1]) / h
                if sampler == "ode2":
                    d = (1 + 1 / (2 * rr)) * x0 - 1 / (2 * rr) * prev
                    z = sg[i + 1] / sg[i] * z - al[i + 1] * (math.exp(-h) - 1) * d
                else:
                    d1 = (x0 - prev) / rr
                    z = (sg[i + 1] / sg[i] * math.exp(-h)) * z + al[i + 1] * (
                        1 - math.exp(-2 * h)) * x0 + 0.5 * al[i + 1] * (
                        1 - math.exp(-2 * h)) * d1 + sg[i + 1] * math.sqrt(
                        1 - math.exp(-2 * h)) * next(draws)
            prev = x0
        states = []
        draws2 = iter(noise)
        solve(z0.clone(), al[:4], sg[:4], pred, sampler, draws2.__next__,
              record=lambda zz, xh, out=states: out.append(zz))
        torch.testing.assert_close(states[2], z, rtol=1e-12, atol=1e-12)


def test_discrete_steps_equal_bfn_solver_formulas():
    """BFN-Solver1/2 and SDE-BFN-Solver2 on the logits as the reference writes them
    (c_t = K·β(1)·(1 − r_t), β = β(1)(1 − r)²), against ``solve(expansion="u")``."""
    K, b1, n, eta = 5, 0.5625, 4, 1e-3
    r = [(n - i) / n * (1 - eta) for i in range(n + 1)]
    a = [K * b1 * (1 - v) ** 2 for v in r]
    s = [math.sqrt(v) for v in a]
    y0 = torch.linspace(-0.2, 0.3, 2 * K, dtype=F64).reshape(2, K)
    noise = [torch.full_like(y0, 0.4), torch.full_like(y0, -0.9), torch.full_like(y0, 1.3)]

    def probs(y, i):
        return torch.softmax(1.5 * y + 0.2 * i, -1)

    for sampler in SOLVERS:
        y, prev, draws = y0.clone(), None, iter(noise)
        for i in range(2):
            p = probs(y, i)
            tt, ts = r[i + 1], r[i]
            c_t = K * b1 * (1 - tt)
            beta_s, beta_t = b1 * (1 - ts) ** 2, b1 * (1 - tt) ** 2
            if sampler == "sde2":
                y = y + (beta_t - beta_s) * (K * p - 1) + math.sqrt(K * (beta_t - beta_s)) * next(
                    draws)
                if prev is not None:
                    d1 = (prev - p) / (r[i - 1] - ts)
                    y = y + 1 / 3 * K * b1 * (tt - ts) ** 2 * (ts + 2 * tt - 3) * d1
            else:
                y = (1 - tt) / (1 - ts) * y + c_t * (tt - ts) * (1 / K - p)
                if sampler == "ode2" and prev is not None:
                    d1 = (p - prev) / (ts - r[i - 1])
                    y = y - c_t * (tt - ts) ** 2 / 2 * d1
            prev = p
        states, draws2 = [], iter(noise)
        solve(y0.clone(), a[:4], s[:4], lambda yy, i: probs(yy, i) - 1 / K, sampler,
              draws2.__next__, expansion="u",
              record=lambda yy, xh, out=states: out.append(yy))
        torch.testing.assert_close(states[2], y, rtol=1e-12, atol=1e-12)


# ---- every method: calls, callbacks, histories, conditioning, labels ------------------------
@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("sampler", SOLVERS)
def test_one_call_per_step_callback_and_history(name, sampler):
    method = MAKERS[name]()
    kw = {"n_steps": 7} if name.startswith("bfn") else {"k": 7}
    seen = []
    hist = method.sample_history(16, generator=gen(3), sampler=sampler,
                                 callback=lambda i, t, x: seen.append((i, t)), **kw)
    assert method.model.calls == 7 and [i for i, _ in seen] == list(range(7))
    times = [t for _, t in seen]
    assert times == sorted(times, reverse=name == "vdm") and len(set(times)) == 7
    assert hist["x_hat"].shape == (7, 16, 2) and hist["t"].shape == (7,)
    torch.testing.assert_close(hist["x_hat"][-1], hist["x"]) if name != "bfn_discretized" else None
    again = method.sample(16, generator=gen(3), sampler=sampler, **kw)
    torch.testing.assert_close(again, hist["x"])


def test_discrete_history_and_probs():
    bfn, _ = discrete_bfn()
    hist = bfn.sample_history(8, n_steps=6, sampler="ode2", generator=gen())
    assert hist["theta"].shape == (6, 8, 3, 4) and hist["probs"].shape == (6, 8, 3, 4)
    probs = bfn.sample(8, n_steps=6, sampler="ode2", generator=gen(), return_probs=True)
    torch.testing.assert_close(probs, hist["probs"][-1])
    assert torch.equal(probs.argmax(-1), hist["x"])


SIGMA = torch.tensor([[0.25, 0.2], [0.2, 0.25]], dtype=F64)  # as tests/test_inpaint.py
OBSERVED, MASK = torch.tensor([0.5, 0.0], dtype=F64), torch.tensor([True, False])


def correlated_bsi() -> BSI:
    bsi = BSI(None, (2,), preconditioning=None)

    def fn(mu, t):
        lam = bsi.icdf(t)[:, None, None]
        a = (lam - bsi.lambda_0) / lam
        cov = a**2 * SIGMA + torch.eye(2, dtype=F64) / lam
        return (a * SIGMA @ torch.linalg.inv(cov) @ mu[..., None])[..., 0]

    bsi.model = Counted(fn)
    return bsi


def correlated_bfn() -> BFN:
    def fn(mu, t):
        g = (1 - 1e-3 ** (2 * t))[:, None, None]
        inv = torch.linalg.inv(g * SIGMA + (1 - g) * torch.eye(2, dtype=F64))
        return (SIGMA @ inv @ mu[..., None])[..., 0]

    return BFN.continuous(Counted(fn), (2,), parameterization="x")


@pytest.mark.parametrize("make,kw", [(correlated_bsi, {"k": 20}), (correlated_bfn,
                                                                   {"n_steps": 20})])
@pytest.mark.parametrize("sampler", ("ode2", "sde2"))
def test_inpainting_reaches_the_gaussian_conditional(make, kw, sampler):
    """x₂ | x₁ = 0.5 is N(0.4, 0.3²) (the inpainting tests' setting), at 20 steps."""
    method = make()
    x = method.sample(4000, generator=gen(), sampler=sampler, observed=OBSERVED, mask=MASK,
                      **kw)
    assert torch.all(x[:, 0] == 0.5)
    assert abs(x[:, 1].mean().item() - 0.4) < 0.03 and abs(x[:, 1].std().item() / 0.3 - 1) < 0.1
    x = method.sample(500, generator=gen(), sampler=sampler, observed=OBSERVED, mask=MASK,
                      inpaint="replace", **kw)
    assert torch.all(x[:, 0] == 0.5) and torch.isfinite(x).all()


def test_discrete_inpainting_keeps_known_tokens():
    bfn, _ = discrete_bfn()
    observed = torch.tensor([2, 0, 0])
    mask = torch.tensor([True, False, False])
    for inpaint in ("tweedie", "replace"):
        x = bfn.sample(200, n_steps=8, sampler="ode2", generator=gen(), observed=observed,
                       mask=mask, inpaint=inpaint)
        assert torch.all(x[:, 0] == 2)


@pytest.mark.parametrize("name", list(MAKERS))
def test_model_kwargs_such_as_class_labels_reach_the_network(name):
    method = MAKERS[name]()
    inner = method.model.fn
    got = []

    def fn(inp, t, class_labels=None):
        got.append(class_labels)
        return inner(inp, t)

    method.model.fn = fn
    labels = torch.arange(4) % 2
    kw = {"n_steps": 3} if name.startswith("bfn") else {"k": 3}
    method.sample(4, generator=gen(), sampler="ode2", class_labels=labels, **kw)
    assert len(got) == 3 and all(g is labels for g in got)


def test_unknown_samplers_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown sampler 'dpm'.*ancestral, ode1, ode2, sde2"):
        make_bsi().sample(2, sampler="dpm")
    with pytest.raises(ValueError, match="unknown sampler"):
        discrete_bfn()[0].sample(2, sampler="heun")
    with pytest.raises(ValueError, match="unknown sampler"):
        make_vdm().sample(2, sampler="euler")


def test_ancestral_stays_the_default_and_unchanged():
    for name, make in MAKERS.items():
        method = make()
        kw = {"n_steps": 6} if name.startswith("bfn") else {"k": 6}
        torch.testing.assert_close(method.sample(32, generator=gen(), **kw),
                                   method.sample(32, generator=gen(), sampler="ancestral", **kw))


def test_inflationary_flows_name_their_solvers_through_sampler():
    from bayesgen.methods.inflationary import GaussianDenoiser

    data = torch.randn(500, 2, generator=gen(), dtype=F64) * torch.tensor([1.0, 0.3], dtype=F64)
    flow = InflationaryFlow.from_data(None, data, dims_to_keep=2)
    flow.model = GaussianDenoiser(flow.schedule)
    x1 = flow.sample(8, generator=gen(1), sampler="heun", n_steps=5, dtype=F64)
    x2 = flow.sample(8, generator=gen(1), solver="heun", n_steps=5, dtype=F64)
    torch.testing.assert_close(x1, x2)
    with pytest.raises(ValueError, match="euler', 'heun' or 'adaptive'"):
        flow.sample(8, sampler="ode2")
    with pytest.raises(ValueError, match="disagree"):
        flow.sample(8, solver="euler", sampler="heun")
