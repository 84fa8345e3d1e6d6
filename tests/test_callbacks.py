"""``callback=`` of every sampler: called once per step with (step, t, x̂), the right number of
times, with the right times and shapes, without changing the samples; and the progress bar."""

import pytest
import torch

from bayesgen import BFN, BSI, VDM, InflationaryFlow
from bayesgen.methods.inflationary import GaussianDenoiser
from bayesgen.run import progress_callback, sampler_steps

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


class Recorder:
    def __init__(self):
        self.steps, self.ts, self.shapes, self.last = [], [], [], None

    def __call__(self, step, t, x_hat):
        assert isinstance(step, int) and isinstance(t, float) and torch.is_tensor(x_hat)
        self.steps.append(step)
        self.ts.append(t)
        self.shapes.append(tuple(x_hat.shape))
        self.last = x_hat.clone()


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def bsi():
    return BSI(lambda mu, t: 0.5 * mu, (3,), preconditioning=None, k=7)


def bfn(kind):
    if kind == "continuous":
        return BFN.continuous(lambda mu, t: 0.5 * mu, (3,), parameterization="x")
    if kind == "discretized":
        return BFN.discretized(lambda mu, t: torch.cat([mu, 0 * mu - 1], 1), (3,), num_bins=16,
                               parameterization="x")
    return BFN.discrete(lambda th, t: 2 * th.log(), (3,), num_classes=4, beta_1=3.0)


def check_unchanged(method, n, **kw):
    """Same generator, with and without a callback: identical samples."""
    plain = method.sample(n, generator=gen(), dtype=F64, **kw)
    rec = Recorder()
    with_cb = method.sample(n, generator=gen(), dtype=F64, callback=rec, **kw)
    assert torch.equal(plain, with_cb)
    assert len(rec.steps) == sampler_steps(method, **kw)
    assert rec.steps == list(range(len(rec.steps)))
    return rec, plain


def test_bsi_callback_per_network_call():
    method = bsi()
    rec, x = check_unchanged(method, 5, k=7)
    assert len(rec.steps) == 8  # k + 1 network calls
    assert rec.ts == pytest.approx(method.schedule_t(7).tolist())
    assert set(rec.shapes) == {(5, 3)}
    assert torch.equal(rec.last, x)  # the last call gets the sample at t = 1
    rec, _ = check_unchanged(method, 2, k=4, schedule="edm")
    assert rec.ts == pytest.approx(method.schedule_t(4, schedule="edm").tolist())
    # sample_history takes it too
    hist_rec = Recorder()
    h = method.sample_history(2, k=4, generator=gen(), dtype=F64, callback=hist_rec)
    assert len(hist_rec.steps) == 5 and torch.equal(hist_rec.last, h["x"])


@pytest.mark.parametrize("kind", ["continuous", "discretized", "discrete"])
def test_bfn_callback_per_network_call(kind):
    method = bfn(kind)
    rec, x = check_unchanged(method, 4, n_steps=6)
    assert rec.ts == pytest.approx([i / 6 for i in range(7)])  # t = (i − 1)/n, then 1
    want = (4, 3, 4) if kind == "discrete" else (4, 3)  # discrete: class probabilities
    assert set(rec.shapes) == {want}
    if kind == "discrete":
        assert torch.allclose(rec.last.sum(-1), torch.ones(4, 3, dtype=F64))
        assert torch.equal(rec.last.argmax(-1), x)
    elif kind == "continuous":
        assert torch.equal(rec.last, x)


def test_vdm_callback_per_network_call():
    method = VDM(lambda z, t: 0 * z, (3,), k=5)
    rec, _ = check_unchanged(method, 3, k=5)
    assert rec.ts == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])  # t from 1 down, one per call
    assert set(rec.shapes) == {(3, 3)}


@pytest.mark.parametrize("solver, n_steps, calls", [("euler", 5, 5), ("heun", 4, 4)])
def test_inflationary_callback_per_solver_step(solver, n_steps, calls):
    lam, W = torch.tensor([2.0, 1.0, 0.5], dtype=F64), torch.eye(3, dtype=F64)
    flow = InflationaryFlow(None, (3,), lam, W, preconditioning=None)
    flow.model = GaussianDenoiser(flow.schedule)
    rec, _ = check_unchanged(flow, 4, solver=solver, n_steps=n_steps)
    assert len(rec.steps) == calls
    grid = flow.time_grid(solver, n_steps).flip(0)  # t_max → t_start
    assert rec.ts == pytest.approx(grid[:-1].tolist())  # each step's start time
    assert set(rec.shapes) == {(4, 3)}


def test_inflationary_adaptive_callback_per_evaluation():
    lam, W = torch.tensor([2.0, 1.0, 0.5], dtype=F64), torch.eye(3, dtype=F64)
    flow = InflationaryFlow(None, (3,), lam, W, preconditioning=None)
    flow.model = GaussianDenoiser(flow.schedule)
    assert sampler_steps(flow) is None
    rec = Recorder()
    x = flow.sample(4, generator=gen(), dtype=F64, callback=rec)
    assert len(rec.steps) == flow.last_nfe > 10
    assert torch.equal(x, flow.sample(4, generator=gen(), dtype=F64))
    assert rec.ts[0] == pytest.approx(flow.t_max)  # evaluations start at t_max


def test_progress_callback_counts_and_passes_through(capsys):
    method = bsi()
    with progress_callback(sampler_steps(method, k=5), "sampling") as tick:
        x = method.sample(2, k=5, generator=gen(), dtype=F64, callback=tick)
        tick()  # also usable as a plain counter
    assert torch.equal(x, method.sample(2, k=5, generator=gen(), dtype=F64))
    err = capsys.readouterr().err
    assert "sampling" in err and "7/6" in err  # 6 sampler steps + one plain tick, on stderr
