"""Conditioning by inference (``observed=``, ``mask=``) with exact denoisers, in float64.

2-D Gaussian data, mean 0, std 0.5 per coordinate, correlation 0.8; the first coordinate observed
at 0.5, so the second is N(0.8·0.5, 0.5²·(1 − 0.8²)) = N(0.4, 0.3²). The denoisers are the
Gaussian posterior means in each method's belief parameterization. ``inpaint="tweedie"`` must
reach the conditional (mean within 0.05, std within 20%); the cheap ``"replace"`` is biased
towards the unconditional N(0, 0.5²) (the issue measured mean 0.25, std 0.34 for BSI).
benchmarks/bench_inpaint.py measures the same with 20 000 samples.
"""

import pytest
import torch
from torch import nn

from bayesgen import BFN, BSI

F64 = torch.float64
SIGMA = torch.tensor([[0.25, 0.2], [0.2, 0.25]], dtype=F64)
OBSERVED, MASK = torch.tensor([0.5, 0.0], dtype=F64), torch.tensor([True, False])
COND_MEAN, COND_STD = 0.4, 0.3
pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def bsi_oracle(bsi: BSI):
    """E[x | μ] = a·Σ(a²Σ + I/λ)⁻¹μ for μ = a·x + λ^(−1/2)·ε, a = (λ − λ0)/λ."""

    def model(mu, t):
        lam = bsi.icdf(t)[:, None, None]
        a = (lam - bsi.lambda_0) / lam
        A = a**2 * SIGMA + torch.eye(2, dtype=F64) / lam
        return (a * SIGMA @ torch.linalg.inv(A) @ mu[..., None])[..., 0]

    return model


class BFNOracle(nn.Module):
    """E[x | μ] = Σ(γΣ + (1 − γ)I)⁻¹μ for μ = γ·x + √(γ(1−γ))·ε (= Σ(Σ + I/β)⁻¹·μ/γ); with
    ``std`` also the posterior std, as the discretized BFN's (mean, log-std) output."""

    def __init__(self, sigma_1: float, std: bool = False):
        super().__init__()
        self.sigma_1, self.std = sigma_1, std
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, mu, t):
        g = (1 - self.sigma_1 ** (2 * t))[:, None, None]
        A = torch.linalg.inv(g * SIGMA + (1 - g) * torch.eye(2, dtype=F64))
        x_hat = (SIGMA @ A @ mu[..., None])[..., 0]
        if not self.std:
            return x_hat
        cov = SIGMA - g * SIGMA @ A @ SIGMA
        return torch.cat([x_hat, torch.diagonal(cov, dim1=-2, dim2=-1).sqrt().log()], 1)


def make_bsi():
    bsi = BSI(lambda mu, t: mu, (2,), preconditioning=None, k=200)
    bsi.model = bsi_oracle(bsi)
    return bsi


def conditional(method, n, inpaint, **kw):
    x = method.sample(n, generator=gen(), dtype=F64, observed=OBSERVED, mask=MASK,
                      inpaint=inpaint, **kw)
    return x, x[:, 1].mean().item(), x[:, 1].std().item()


@pytest.mark.parametrize("name", ["bsi", "bfn_continuous"])
def test_gaussian_conditional_tweedie_exact_replace_biased(name):
    method = make_bsi() if name == "bsi" else BFN.continuous(BFNOracle(1e-3), (2,),
                                                             parameterization="x")
    kw = {"k": 200} if name == "bsi" else {"n_steps": 200}
    x, mean, std = conditional(method, 2000, "tweedie", **kw)
    assert torch.all(x[:, 0] == 0.5)  # observed entries come back exactly
    assert abs(mean - COND_MEAN) < 0.05 and abs(std / COND_STD - 1) < 0.2, (mean, std)
    x, mean, std = conditional(method, 2000, "replace", **kw)
    assert torch.all(x[:, 0] == 0.5)
    assert mean < COND_MEAN - 0.1 and std > COND_STD * 1.1, (mean, std)  # the known bias


def test_discretized_gaussian_conditional():
    bfn = BFN.discretized(BFNOracle(1e-3, std=True), (2,), num_bins=64, parameterization="x")
    x, mean, std = conditional(bfn, 1000, "tweedie", n_steps=200)
    assert torch.all(x[:, 0] == 2 * (48 + 0.5) / 64 - 1)  # 0.5 lies in bin 48 of 64
    assert abs(mean - COND_MEAN) < 0.05 and abs(std / COND_STD - 1) < 0.2, (mean, std)


# ---- discrete data: two tokens with a known joint table ----------------------------------------
JOINT = torch.tensor([[0.30, 0.05, 0.05], [0.05, 0.20, 0.05], [0.02, 0.08, 0.20]], dtype=F64)


class JointPosterior(nn.Module):
    """Exact output p̂(x_d | θ) for two tokens with joint P: p(x | θ) ∝ P(x₁, x₂)·θ₁(x₁)·θ₂(x₂)."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), dtype=F64))

    def forward(self, theta, t):
        joint = JOINT * theta[:, 0, :, None] * theta[:, 1, None, :]
        joint = joint / joint.sum((1, 2), keepdim=True)
        return torch.stack([joint.sum(2), joint.sum(1)], 1).clamp_min(1e-300).log()


@pytest.mark.parametrize("first", [0, 2])
def test_discrete_conditional_on_the_first_token(first):
    bfn = BFN.discrete(JointPosterior(), (2,), num_classes=3, beta_1=20.0)
    exact = JOINT[first] / JOINT[first].sum()
    freq = {}
    for inpaint in ("tweedie", "replace"):
        x = bfn.sample(2000, n_steps=100, generator=gen(), observed=torch.tensor([first, 0]),
                       mask=MASK, inpaint=inpaint)
        assert torch.all(x[:, 0] == first)
        freq[inpaint] = torch.bincount(x[:, 1], minlength=3).double() / len(x)
    assert (freq["tweedie"] - exact).abs().max() < 0.03, (freq, exact)
    assert (freq["replace"] - exact).abs().max() > 0.06, (freq, exact)  # biased baseline
    probs = bfn.sample(3, n_steps=10, generator=gen(), observed=torch.tensor([first, 0]),
                       mask=MASK, return_probs=True)
    assert torch.equal(probs[:, 0], torch.nn.functional.one_hot(torch.tensor([first] * 3), 3)
                       .to(F64))


def test_text_prefix_and_image_shapes_broadcast():
    """A prefix mask over a sequence, a (H, W) mask broadcast over channels and examples."""
    bfn = BFN.discrete(lambda th, t: 0 * th, (6,), num_classes=5, beta_1=3.0)
    prefix = torch.tensor([4, 1, 3, 0, 0, 0])
    x = bfn.sample(8, n_steps=5, generator=gen(), observed=prefix,
                   mask=torch.arange(6) < 3)
    assert torch.equal(x[:, :3], prefix[:3].expand(8, 3))
    bsi = BSI(lambda mu, t: 0.9 * mu, (3, 4, 4), preconditioning=None, k=4)
    image = torch.rand(3, 4, 4) * 2 - 1
    mask = torch.rand(4, 4) < 0.5
    for inpaint in ("tweedie", "replace"):
        y = bsi.sample(2, generator=gen(), observed=image, mask=mask, inpaint=inpaint)
        assert torch.equal(y[:, :, mask], image[:, mask].expand(2, 3, -1))
        assert not torch.equal(y[:, :, ~mask], image[:, ~mask].expand(2, 3, -1))


def test_bad_observed_and_mask_give_clear_errors():
    bsi = BSI(lambda mu, t: mu, (2, 3), preconditioning=None, k=2)
    obs, mask = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="go together"):
        bsi.sample(2, observed=obs)
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        bsi.sample(2, observed=obs, mask=mask.float())
    with pytest.raises(ValueError, match=r"observed of shape \(3, 2\) does not broadcast"):
        bsi.sample(2, observed=torch.zeros(3, 2), mask=mask)
    with pytest.raises(ValueError, match=r"mask of shape \(4, 2, 3\) does not broadcast"):
        bsi.sample(2, observed=obs, mask=torch.ones(4, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="NaN or infinite"):
        bsi.sample(2, observed=torch.full((2, 3), float("nan")), mask=mask)
    # NaN where the mask is False is fine: those entries are not known
    bsi.sample(2, observed=torch.where(mask, obs, float("nan")), mask=mask & (obs == 0))
    with pytest.raises(ValueError, match="inpaint must be 'tweedie' or 'replace'"):
        bsi.sample(2, observed=obs, mask=mask, inpaint="repaint")
    with pytest.raises(ValueError, match="inpaint_iters must be a positive integer"):
        bsi.sample(2, observed=obs, mask=mask, inpaint_iters=0)

    cont = BFN.continuous(lambda mu, t: mu, (2,), parameterization="x")
    with pytest.raises(ValueError, match=r"values in \[1.5, 1.5\] where mask is True; rescale"):
        cont.sample(2, n_steps=2, observed=torch.tensor([1.5, 9.0]), mask=MASK)
    cont.sample(2, n_steps=2, observed=torch.tensor([0.5, 9.0]), mask=MASK)  # 9 is unknown
    with pytest.raises(ValueError, match="must be floating-point"):
        cont.sample(2, n_steps=2, observed=torch.tensor([1, 0]), mask=MASK)
    disc = BFN.discrete(lambda th, t: th.log(), (2,), num_classes=3, beta_1=1.0)
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 2\]"):
        disc.sample(2, n_steps=2, observed=torch.tensor([3, 0]), mask=MASK)
    with pytest.raises(ValueError, match="int64 class indices"):
        disc.sample(2, n_steps=2, observed=torch.tensor([1.0, 0.0]), mask=MASK)


# ---- the run API: Run.sample(progress=), Run.inpaint from picture files, text prefixes --------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """An untrained BSI run on digits (1 × 8 × 8, data in [−1, 1]), saved and loaded."""
    import bayesgen
    from bayesgen.training.build import build_datamodule, build_method, compose_config

    cfg = compose_config(["data=digits", "net.hidden=16", "net.depth=1", "method.k=3"])
    method = build_method(cfg, build_datamodule(cfg)).eval()
    folder = tmp_path_factory.mktemp("run")
    return bayesgen.from_pretrained(bayesgen.save_pretrained(method, folder, config=cfg))


def test_run_sample_progress_and_callback(digits_run, capsys):
    steps = []
    x = digits_run.sample(2, k=3, sampler="ancestral", generator=gen(), progress=True,
                          callback=lambda i, t, x_hat: steps.append(i))
    assert steps == [0, 1, 2, 3] and "sampling 2" in capsys.readouterr().err  # k + 1 calls
    assert torch.equal(x, digits_run.sample(2, k=3, sampler="ancestral", generator=gen()))
    steps.clear()
    digits_run.sample(2, k=3, sampler="ode2", callback=lambda i, t, x_hat: steps.append(i))
    assert steps == [0, 1, 2]  # the solvers: k calls


def test_run_inpaint_from_picture_files(digits_run, tmp_path):
    from PIL import Image

    grey = (torch.arange(64).reshape(8, 8) * 4).to(torch.uint8)
    Image.fromarray(grey.numpy(), mode="L").save(tmp_path / "image.png")
    white = torch.zeros(8, 8, dtype=torch.uint8)
    white[:, :4] = 255  # left half known
    Image.fromarray(white.numpy(), mode="L").save(tmp_path / "mask.png")
    x = digits_run.inpaint(tmp_path / "image.png", tmp_path / "mask.png", n=3, k=3,
                           generator=gen())
    assert x.shape == (3, 1, 8, 8)
    want = 2 * grey.float() / 255 - 1
    assert torch.equal(x[:, 0, :, :4], want[:, :4].expand(3, 8, 4))
    again = digits_run.inpaint(tmp_path / "image.png", tmp_path / "mask.png", n=3, k=3,
                               generator=gen(), inpaint="replace")
    assert torch.equal(again[:, 0, :, :4], x[:, 0, :, :4])

    Image.new("L", (10, 8)).save(tmp_path / "wide.png")
    with pytest.raises(ValueError, match="is 10×8 pixels but the model draws 8×8 images"):
        digits_run.inpaint(tmp_path / "wide.png", tmp_path / "mask.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="colour picture .* 1-channel"):
        digits_run.inpaint(tmp_path / "colour.png", tmp_path / "mask.png")
    with pytest.raises(ValueError, match="does not exist"):
        digits_run.inpaint(tmp_path / "missing.png", tmp_path / "mask.png")
    (tmp_path / "junk.png").write_text("not a picture")
    with pytest.raises(ValueError, match="not a picture PIL can read"):
        digits_run.inpaint(tmp_path / "image.png", tmp_path / "junk.png")
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        digits_run.inpaint(want[None], torch.ones(8, 8))


def test_text_prefix_inputs():
    from bayesgen.data.info import DatasetInfo
    from bayesgen.run import load_inpainting, text_prefix

    info = DatasetInfo("text8", (10,), "text", num_classes=27)
    observed, mask = text_prefix("the cat", info)
    assert observed[:7].tolist() == [20, 8, 5, 0, 3, 1, 20] and mask.sum() == 7
    with pytest.raises(ValueError, match="the prefix has 12 characters but samples have only 10"):
        text_prefix("the cat sat.", info)
    with pytest.raises(ValueError, match="needs an image model"):
        load_inpainting("image.png", "mask.png", info)
    with pytest.raises(ValueError, match="a text prefix needs a text model"):
        text_prefix("a", DatasetInfo("digits", (1, 8, 8), "image"))
