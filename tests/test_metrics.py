"""Metrics: FID statistics and distance, image folders/ZIPs, roundtrip MSE, toy coverage,
residual cross-correlations. Closed forms and hand-computed values; a small random conv net
stands in for Inception (no weights offline)."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import chi2
from torch import nn

from bayesgen.metrics import (
    InceptionFeatures,
    autocorrelations,
    coverage_experiment,
    cross_correlations,
    expected_coverage,
    extract_outputs,
    feature_statistics,
    fid_calc,
    fid_ref,
    frechet_distance,
    inside,
    load_statistics,
    read_images,
    relative_roundtrip_error,
    roundtrip_mse,
    save_image_folder,
    save_statistics,
    to_uint8,
)
from bayesgen.metrics import fid as fid_module


class RandomConvFeatures(nn.Module):
    """Stand-in extractor: uint8 (N, 3, H, W) -> (N, 16), a fixed random conv + mean pooling."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(16, 3, 3, 3, generator=g), requires_grad=False)

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        h = torch.nn.functional.conv2d(x.float() / 127.5 - 1, self.weight)
        return torch.tanh(h).mean((2, 3))


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (40, 3, 8, 8), generator=g, dtype=torch.uint8)


# --------------------------------------------------------------------------- Fréchet distance
def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6)) @ rng.standard_normal((6, 6))
    delta = rng.standard_normal(6)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    y = x + delta  # same covariance, shifted mean
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-9)
    fd = frechet_distance(mu, sigma, y.mean(0), np.cov(y, rowvar=False))
    assert fd == pytest.approx(delta @ delta, rel=1e-8)
    # commuting (diagonal) covariances: ‖Δμ‖² + Σ (√a − √b)²
    a, b = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    expected = delta @ delta + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu, np.diag(a), mu + delta, np.diag(b)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(mu, sigma, mu[:3], sigma[:3, :3])


def test_feature_statistics_match_numpy_and_fid_of_identical_sets_is_zero(images):
    net = RandomConvFeatures()
    mu, sigma = feature_statistics(images, net, batch_size=7, progress=False)
    f = net(images).double().numpy()
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, f.mean(0), rtol=1e-10)
    np.testing.assert_allclose(sigma, np.cov(f, rowvar=False), rtol=1e-8, atol=1e-12)
    # float images in [-1, 1] give the same pixels, hence the same statistics
    x = images.double() / 127.5 - 1
    mu2, sigma2 = feature_statistics(x, net, batch_size=64, progress=False)
    np.testing.assert_allclose(mu2, mu, rtol=1e-10)
    assert frechet_distance(mu, sigma, mu2, sigma2) == pytest.approx(0, abs=1e-8)
    assert fid_calc(images, (mu, sigma), extractor=net, progress=False) == pytest.approx(
        0, abs=1e-8)
    # a random subset like EDM's --num: RandomState(seed) shuffle, first n, sorted
    index = np.arange(40)
    np.random.RandomState(3).shuffle(index)
    sub = feature_statistics(images, net, num_images=10, seed=3, progress=False)
    ref = feature_statistics(images[np.sort(index[:10])], net, progress=False)
    np.testing.assert_allclose(sub[0], ref[0])
    with pytest.raises(ValueError, match="num_images"):
        feature_statistics(images, net, num_images=41, progress=False)


def test_to_uint8_and_greyscale_repeat(images):
    p = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8)
    assert torch.equal(to_uint8(p.float() / 127.5 - 1), p)
    assert torch.equal(to_uint8(torch.tensor([-1.5, 1.5, 0.0])), torch.tensor([0, 255, 128],
                                                                            dtype=torch.uint8))
    net = RandomConvFeatures()
    grey = images[:, :1]
    a = feature_statistics(grey, net, progress=False)
    b = feature_statistics(grey.repeat(1, 3, 1, 1), net, progress=False)
    np.testing.assert_allclose(a[0], b[0])


def test_statistics_npz_round_trip_and_fid_ref(tmp_path, images):
    rng = np.random.default_rng(0)
    mu, sigma = rng.standard_normal(5), np.eye(5) * 2.0
    path = save_statistics(tmp_path / "refs" / "s.npz", mu, sigma)
    with np.load(path) as f:
        assert sorted(f.files) == ["mu", "sigma"]
    mu2, sigma2 = load_statistics(path)
    np.testing.assert_array_equal(mu2, mu)
    np.testing.assert_array_equal(sigma2, sigma)
    np.savez(tmp_path / "bad.npz", mean=mu)
    with pytest.raises(ValueError, match="mu"):
        load_statistics(tmp_path / "bad.npz")

    net = RandomConvFeatures()
    ref = fid_ref(images, tmp_path / "ref.npz", extractor=net, progress=False)
    np.testing.assert_allclose(load_statistics(tmp_path / "ref.npz")[1], ref[1])
    assert fid_calc(images, tmp_path / "ref.npz", extractor=net, progress=False) == pytest.approx(
        0, abs=1e-8)
    shifted = fid_calc(images[:20], tmp_path / "ref.npz", extractor=net, progress=False)
    assert shifted > 1e-6


# --------------------------------------------------------------------------- image folders / ZIPs
def test_save_image_folder_and_read_folder_and_zip(tmp_path, images):
    paths = save_image_folder(images[:10], tmp_path / "gen", start_index=995)
    names = [p.relative_to(tmp_path / "gen").as_posix() for p in paths]
    assert names[0] == "000000/000995.png" and names[-1] == "001000/001004.png"
    folder = read_images(tmp_path / "gen")
    assert len(folder) == 10
    assert torch.equal(torch.stack([folder[i] for i in range(10)]), images[:10])
    # float images are written as EDM writes PNGs
    save_image_folder(images[:3].float() / 127.5 - 1, tmp_path / "flat", subdirs=False)
    assert torch.equal(read_images(tmp_path / "flat")[2], images[2])

    # a StyleGAN/EDM ZIP: uncompressed PNGs + dataset.json, here greyscale
    grey = images[:6, 0]
    with zipfile.ZipFile(tmp_path / "data.zip", "w", compression=zipfile.ZIP_STORED) as z:
        labels = []
        for i, a in enumerate(grey.numpy()):
            buffer = io.BytesIO()
            Image.fromarray(a, "L").save(buffer, format="png")
            name = f"00000/img{i:08d}.png"
            z.writestr(name, buffer.getvalue())
            labels.append([name, i % 2])
        z.writestr("dataset.json", json.dumps({"labels": labels}))
    data = read_images(tmp_path / "data.zip")
    assert torch.equal(data[4], grey[4].expand(3, -1, -1))

    net = RandomConvFeatures()
    from_zip = feature_statistics(tmp_path / "data.zip", net, batch_size=4, progress=False)
    from_tensor = feature_statistics(grey[:, None], net, progress=False)
    np.testing.assert_allclose(from_zip[0], from_tensor[0], rtol=1e-10)
    from_folder = feature_statistics(tmp_path / "gen", net, progress=False)
    np.testing.assert_allclose(from_folder[1], feature_statistics(images[:10], net,
                                                                  progress=False)[1], rtol=1e-8)


# --------------------------------------------------------------------------- Inception
def test_inception_weights_missing_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(fid_module.WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as err:
        InceptionFeatures(download=False)
    message = str(err.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message
    assert "feature_extractor_weights_path" in message and str(tmp_path / "hub") in message
    with pytest.raises(FileNotFoundError, match="do not exist"):
        InceptionFeatures(tmp_path / "nope.pth")
    cached = tmp_path / "hub" / "checkpoints" / "pt_inception-2015-12-05-6726825d.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    assert fid_module.find_inception_weights(download=False) == cached
    monkeypatch.setenv(fid_module.WEIGHTS_ENV_VAR, str(tmp_path / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        fid_module.find_inception_weights(download=False)


def test_inception_features_wiring_with_random_weights(tmp_path, monkeypatch):
    """The wrapper around torch-fidelity's Inception (random weights: the real file is not here):
    float/greyscale input, 2048 features."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    torch.save({}, tmp_path / "w.pth")
    net = InceptionFeatures(tmp_path / "w.pth")
    net.train()
    assert not net.training
    f = net(torch.rand(2, 1, 16, 16) * 2 - 1)
    assert f.shape == (2, 2048) and f.dtype == torch.float32 and torch.isfinite(f).all()


# --------------------------------------------------------------------------- roundtrip
def test_roundtrip_mse_by_hand_without_wraparound():
    p = torch.tensor([[0.0, 255.0, 10.0, 128.0, 50.0, 50.0]])
    x = p / 127.5 - 1
    # reconstructions on the pixel scale: 1 (not 0 - 1 = 255 mod 256), clipped 255, 12.4 -> 12,
    # 128.6 -> 129, clipped 0, 49.5 -> 50 (half rounds up)
    back = torch.tensor([[1.0, 300.0, 12.4, 128.6, -20.0, 49.5]]) / 127.5 - 1
    expected = (1 + 0 + 4 + 1 + 2500 + 0) / 6
    assert roundtrip_mse(x, back).item() == pytest.approx(expected)
    assert roundtrip_mse(x, back).dtype == torch.float64
    # uint8 inputs are pixels already; no modular arithmetic
    assert roundtrip_mse(torch.tensor([[0, 255]], dtype=torch.uint8),
                         torch.tensor([[255, 0]], dtype=torch.uint8)).item() == 255.0**2
    unquantized = ((torch.tensor([1.0, 45.0, 2.4, 0.6, -70.0, -0.5]) ** 2).mean()).item()
    assert roundtrip_mse(x, back, quantize=False).item() == pytest.approx(unquantized)
    two = torch.cat([x, x]), torch.cat([back, x])
    per = roundtrip_mse(*two, reduction="none")
    assert per.shape == (2,) and per[1] == 0 and per[0] == pytest.approx(expected)
    assert roundtrip_mse(*two).item() == pytest.approx(expected / 2)


def test_reference_uint8_squares_only_under_report():
    """The reference squares uint8 differences: d² mod 256, exact below 16, never above d²."""
    import numpy as np

    from bayesgen.metrics.roundtrip import reference_uint8_squared_error

    a = torch.arange(256).repeat_interleave(256).to(torch.uint8)
    b = torch.arange(256).repeat(256).to(torch.uint8)
    ref = reference_uint8_squared_error(a, b)
    d2 = (a.long() - b.long()) ** 2
    assert torch.equal(ref, d2 % 256) and (ref <= d2).all()
    small = (a.long() - b.long()).abs() < 16
    assert torch.equal(ref[small], d2[small]) and (ref[~small] < d2[~small]).float().mean() > 0.9
    # numpy's uint8 arithmetic (calc_roundtrip_mse.py) gives the same numbers
    an, bn = a.numpy(), b.numpy()
    assert np.array_equal(((an - bn) ** 2).astype(np.int64), ref.numpy())


def test_relative_roundtrip_error():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    back = torch.tensor([[3.0, 4.5], [0.0, 0.0]])
    assert torch.allclose(relative_roundtrip_error(x, back), torch.tensor([0.1, 1.0]).double())
    with pytest.raises(ValueError, match="shape"):
        relative_roundtrip_error(x, back[:1])


# --------------------------------------------------------------------------- coverage
def test_coverage_identity_2d_matches_chi_square():
    g = torch.Generator().manual_seed(0)
    identity = lambda v: v
    cov = coverage_experiment(identity, identity, dim=2, n_test=4000, generator=g)
    expected = chi2.cdf(np.linspace(0.5, 3.5, 7) ** 2, 2)
    np.testing.assert_allclose(cov.expected, expected)
    np.testing.assert_allclose(cov.fraction("latent"), expected, atol=0.03)
    for space in ("data", "roundtrip"):
        np.testing.assert_array_equal(cov.total_in[space], cov.total_in["latent"])
    record = cov.to_reference()
    assert set(record) == {"init_ls", "ds", "ls_end_rdtrp"}
    entry = record["init_ls"][0.5]
    assert set(entry) == {"total_in", "total_out", "percent_in", "percent_out"}
    assert entry["total_in"] + entry["total_out"] == 4000
    assert entry["percent_in"] == pytest.approx(100 * cov.fraction("latent")[0])


def test_coverage_affine_map_and_anisotropic_latent_2d(tmp_path):
    """An invertible affine map keeps the hull containment; Mahalanobis shells keep χ²."""
    g = torch.Generator().manual_seed(1)
    a = torch.tensor([[1.5, 0.3], [-0.2, 0.8]])
    b = torch.tensor([0.4, -1.0])
    decode = lambda z: z @ a + b
    encode = lambda x: (x - b) @ torch.linalg.inv(a)
    cov = coverage_experiment(encode, decode, dim=2, n_test=3000, radii=[1.0, 2.0],
                              latent_std=torch.tensor([1.0, 0.1]), generator=g)
    np.testing.assert_allclose(cov.fraction("latent"), expected_coverage([1.0, 2.0], 2),
                               atol=0.03)
    np.testing.assert_allclose(cov.fraction("data"), cov.fraction("latent"), atol=2e-3)
    np.testing.assert_allclose(cov.fraction("roundtrip"), cov.fraction("latent"), atol=2e-3)
    saved = json.loads(cov.save(tmp_path / "cov.json").read_text())
    assert set(saved) == {"init_ls", "ds", "ls_end_rdtrp", "expected"}
    assert saved["expected"]["2.0"] == pytest.approx(chi2.cdf(4.0, 2))


def test_coverage_identity_3d_matches_chi_square():
    g = torch.Generator().manual_seed(2)
    identity = lambda v: v
    cov = coverage_experiment(identity, identity, dim=3, n_test=4000, n_boundary=1000,
                              alpha=0, generator=g)
    np.testing.assert_allclose(cov.fraction("latent"), chi2.cdf(cov.radii**2, 3), atol=0.03)
    np.testing.assert_array_equal(cov.total_in["roundtrip"], cov.total_in["latent"])


def test_inside_alpha_mesh_3d_and_hull():
    rng = np.random.default_rng(0)
    shell = rng.standard_normal((200, 3))
    shell *= 2 / np.linalg.norm(shell, axis=1, keepdims=True)
    points = np.array([[0, 0, 0], [0.5, -0.5, 0.3], [2.5, 0, 0], [0, 0, -3]])
    np.testing.assert_array_equal(inside(shell, points), [True, True, False, False])
    np.testing.assert_array_equal(inside(shell, points, alpha=0), [True, True, False, False])
    square = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1], [0, 1], [1, 0]])
    np.testing.assert_array_equal(inside(square, np.array([[0, 0], [0.9, -0.9], [1.1, 0]])),
                                  [True, True, False])
    with pytest.raises(ValueError, match="2-D or 3-D"):
        inside(rng.standard_normal((10, 4)), rng.standard_normal((3, 4)))


# --------------------------------------------------------------------------- cross-correlations
def test_cross_correlations_white_noise_is_identity():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(5000, 4, 2, generator=g, dtype=torch.float64)
    c = cross_correlations(v, reference=None)
    assert c.shape == (4, 4, 2, 2)
    eye = torch.eye(4, dtype=torch.float64)
    for i in range(2):
        assert torch.allclose(c[:, :, i, i], eye, atol=0.05)
        assert torch.allclose(c[:, :, i, i].diagonal(), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(cross_correlations(v), c[0])
    # each entry is a Pearson correlation (numpy's corrcoef), including i != j across times
    r = np.corrcoef(v[:, 0, 0].numpy(), v[:, 2, 1].numpy())[0, 1]
    assert c[0, 2, 0, 1].item() == pytest.approx(r)


def test_cross_correlations_of_a_shared_component():
    """v[n, t] = a·u[n] + b·e[n, t]: corr over different times = a²/(a² + b²)."""
    g = torch.Generator().manual_seed(1)
    u = torch.randn(20000, 1, 1, generator=g, dtype=torch.float64)
    e = torch.randn(20000, 3, 1, generator=g, dtype=torch.float64)
    c = cross_correlations(2 * u + e, reference=None)[..., 0, 0]
    expected = torch.full((3, 3), 4 / 5, dtype=torch.float64).fill_diagonal_(1)
    assert torch.allclose(c, expected, atol=0.02)


def test_extract_outputs_residuals_and_basis():
    g = torch.Generator().manual_seed(0)
    n, lam = 20000, torch.tensor([2.0, 0.5], dtype=torch.float64)
    data = lam.sqrt() * torch.randn(n, 2, generator=g, dtype=torch.float64)
    times = [0.5, 1.0]
    noise_std = lambda t: t[:, None] * torch.tensor([1.0, 0.3], dtype=t.dtype)
    theta = torch.tensor(0.6, dtype=torch.float64)
    basis = torch.stack([torch.stack([theta.cos(), -theta.sin()]),
                         torch.stack([theta.sin(), theta.cos()])])
    # identity "denoiser": residual = the noise B·(σ ⊙ ε), covariance B diag(σ²) Bᵀ
    out = extract_outputs(lambda x, t: x, data, times, noise_std, basis=basis, batch_size=3000,
                          generator=g, progress=False)
    assert out["net_outputs"].shape == out["net_residuals"].shape == (n, 2, 2)
    assert torch.allclose(out["net_residuals"], out["net_outputs"] - data[:, None])
    for k, t in enumerate(times):
        sigma = t * torch.tensor([1.0, 0.3], dtype=torch.float64)
        expected = basis @ torch.diag(sigma**2) @ basis.T
        assert torch.allclose(torch.cov(out["net_residuals"][:, k].T), expected, atol=0.03 * t**2)
    # fresh noise at every time: residuals uncorrelated across times
    acs = autocorrelations(out)
    assert set(acs) == {"net_output_acs", "net_residual_acs"}
    assert acs["net_residual_acs"].shape == (2, 2, 2)
    assert acs["net_residual_acs"][1].abs().max() < 0.05

    # optimal (Gaussian) denoiser in data coordinates: residual variance λσ²/(λ + σ²)
    def oracle(x, t):
        s2 = noise_std(t) ** 2
        return lam / (lam + s2) * x

    out = extract_outputs(oracle, data, times, noise_std, generator=g, progress=False)
    for k, t in enumerate(times):
        s2 = (t * torch.tensor([1.0, 0.3], dtype=torch.float64)) ** 2
        var = out["net_residuals"][:, k].var(0)
        assert torch.allclose(var, lam * s2 / (lam + s2), rtol=0.05)
