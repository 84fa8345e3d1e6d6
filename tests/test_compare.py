"""The offline quality score, the trivial baselines, `bayesgen compare` and the training
summary: closed forms for the baselines, the real digits classifier for the score (it must tell
real digits from noise), and the tiny preset end to end."""

import json
import math

import pytest
import torch

from bayesgen.cli import main
from bayesgen.compare import StepTimer, budget_overrides, load_preset
from bayesgen.data import build_datasets
from bayesgen.metrics.baselines import GaussianBaseline, HistogramBaseline, baseline_rows, to_levels
from bayesgen.metrics.quality import QualityScorer, dataset_checksum, to_unit


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One classifier cache for the module, also for the commands (BAYESGEN_CACHE_DIR)."""
    path = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("BAYESGEN_CACHE_DIR", str(path))
    yield path
    mp.undo()


@pytest.fixture(scope="module")
def digits():
    return build_datasets("digits")


@pytest.fixture(scope="module")
def scorer(digits, cache, one_thread):
    train, _, test, info = digits
    return QualityScorer.for_data(train, test, info, say=lambda m: None)


def _stack(ds):
    return torch.stack([ds[i][0] for i in range(len(ds))])


# --------------------------------------------------------------------------- baselines
def test_histogram_baseline_hand_computed():
    train = torch.tensor([[0], [0], [0], [1]])
    model = HistogramBaseline(train, levels=2)  # add-one: p(0) = 4/6, p(1) = 2/6
    bpd = model.bpd(torch.tensor([[0], [1]]))
    assert torch.allclose(bpd, torch.tensor([-math.log2(4 / 6), -math.log2(2 / 6)],
                                            dtype=torch.float64))
    assert model.sample(5, torch.Generator().manual_seed(0)).shape == (5, 1)


def test_gaussian_baseline_of_one_level_is_the_uniforms_gaussian_bound():
    # v = 0 everywhere: u ~ U[0, 1) is fitted by N(1/2, 1/12), whose cross-entropy with the
    # uniform is ½·log2(2πe/12) bits per dimension
    gen = torch.Generator().manual_seed(0)
    model = GaussianBaseline(torch.zeros(20000, 2, dtype=torch.long), levels=3, generator=gen)
    bpd = model.bpd(torch.zeros(2000, 2, dtype=torch.long), draws=5, generator=gen)
    assert bpd.mean().item() == pytest.approx(0.5 * math.log2(2 * math.pi * math.e / 12),
                                              abs=5e-3)
    assert set(model.sample(100, gen).unique().tolist()) <= {0, 1, 2}


def test_digits_baselines(digits):
    train, _, test, _ = digits
    assert to_levels(_stack(test), 17).unique().tolist() == list(range(17))
    rows = baseline_rows(_stack(train), _stack(test), 17)
    hist, gauss = rows["per-pixel histogram"], rows["Gaussian, full covariance, dequantized"]
    assert 2.3 < hist["bpd"] < 2.5 and 2.8 < gauss["bpd"] < 3.1  # the 2.43 and ≈2.98
    assert hist["n_examples"] == len(test) and hist["bpd_se"] > 0


# --------------------------------------------------------------------------- quality
def test_quality_tells_real_digits_from_noise_and_blobs(scorer, digits):
    train, _, test, _ = digits
    assert scorer.meta["test_accuracy"] > 0.95
    real = scorer.real_baseline()
    assert real["n"] == len(test) and real["confident_share"] > 0.85
    noise = scorer.score(torch.rand(180, 1, 8, 8, generator=torch.Generator().manual_seed(0))
                         * 2 - 1)
    assert noise["confident_share"] < 0.3 and noise["fd"] > 3 * real["fd"]
    blobs = GaussianBaseline(to_levels(_stack(train), 17), 17).sample(180) / 16 * 2 - 1
    assert scorer.score(blobs)["confident_share"] < 0.5


def test_quality_is_cached_and_keyed_by_the_data(scorer, digits, cache):
    train, _, test, info = digits
    again = QualityScorer.for_data(train, test, info, say=lambda m: pytest.fail(m))
    assert again.meta["cached"].startswith(str(cache))
    x = _stack(test)[:50]
    assert again.score(x) == pytest.approx(scorer.score(x))
    other = build_datasets("digits", split_seed=1)[0]
    assert dataset_checksum(other) != dataset_checksum(train)


def test_quality_rejects_data_without_a_classifier(cache):
    train, _, test, info = build_datasets("moons", n_train=10, n_val=2, n_test=2)
    with pytest.raises(ValueError, match="digits"):
        QualityScorer.for_data(train, test, info)


def test_to_unit_rounds_to_the_data_levels(digits):
    info = digits[3]
    u = to_unit(torch.tensor([[-1.0, -0.93, 0.0, 1.2]]).reshape(1, 1, 1, 4), info)
    assert u.flatten().tolist() == [0.0, 1 / 16, 0.5, 1.0]
    binary = type(info)("binarized_mnist", (1, 1, 2), "image", num_classes=2)
    assert to_unit(torch.tensor([[[[0, 1]]]]), binary).flatten().tolist() == [0.0, 1.0]


# --------------------------------------------------------------------------- compare
def test_presets_load_and_budgets():
    for name in ("tiny", "digits", "mnist"):
        spec = load_preset(name)
        assert spec["methods"] and spec["budget"]
    assert set(load_preset("digits")["methods"]) == {"bsi", "bfn", "vdm", "if"}
    assert set(load_preset("mnist")["methods"]) == {"bfn", "bsi", "vdm"}
    assert budget_overrides({"steps": 7}) == ["trainer.max_steps=7"]
    assert budget_overrides({"seconds": 3725})[1] == "+trainer.max_time=00:01:02:05"
    with pytest.raises(ValueError, match="preset"):
        load_preset("nope")


def test_step_timer_state_round_trips():
    timer = StepTimer()
    timer.on_train_batch_start(None, None, None, 0)
    timer.on_train_batch_end(None, None, None, None, 0)
    restored = StepTimer()
    restored.load_state_dict(timer.state_dict())
    assert restored.steps == 1 and restored.seconds == timer.seconds > 0


def test_compare_tiny_preset_end_to_end(tmp_path, scorer, capsys):
    args = ["compare", "preset=tiny", f"out={tmp_path}", "steps=6", "samples=8",
            "trainer.val_check_interval=3"]
    assert main(args) == 0
    root = tmp_path / "tiny"
    results = json.loads((root / "results.json").read_text())
    assert set(results["runs"]) == {"bsi", "bfn", "vdm"}
    default_sampler = {"bsi": "ode2", "bfn": "ancestral", "vdm": "ode2"}  # methods' defaults
    for name, run in results["runs"].items():
        assert run["steps"] == 6 and run["test"]["bpd"] > 0 and run["step_seconds"] > 0
        assert run["quality"]["n"] == 8 and 0 <= run["quality"]["confident_share"] <= 1
        assert run["samples_per_second"] > 0 and run["sampler"] == default_sampler[name]
    assert results["real_test"]["n"] == 8
    assert set(results["baselines"]) == {"per-pixel histogram",
                                         "Gaussian, full covariance, dequantized"}
    report = (root / "report.md").read_text()
    assert "| bsi | bsi |" in report and "per-pixel histogram" in report
    assert "(ode2, k=10)" in report and "(ancestral, n_steps=10)" in report
    assert "bayesgen compare preset=tiny samples=8 trainer.val_check_interval=3" in report
    assert (root / "val_bpd.png").is_file()
    from bayesgen.compare import read_curve

    for label in results["runs"]:  # the FD watched during training, at every validation
        curve = read_curve(root / "runs" / label)
        assert [r["step"] for r in curve] == [2, 5] and all(r["fd"] > 0 for r in curve), curve
    html = (root / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "src=\"runs/" not in html
    curve = (root / "runs" / "bsi" / "logs" / "metrics.csv").read_text()
    assert "time/train_seconds" in curve.splitlines()[0]

    ckpt = root / "runs" / "bsi" / "checkpoints" / "last.ckpt"
    before = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0  # resumable: finished runs are skipped
    assert "finished earlier" in capsys.readouterr().out
    assert ckpt.stat().st_mtime_ns == before
    assert main([*args, "optim.lr=1e-4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "other overrides" in err and len(err.splitlines()) == 1


def test_compare_wall_clock_budget(tmp_path, scorer):
    assert main(["compare", "preset=tiny", "methods=bsi", "seconds=2", f"out={tmp_path}",
                 "samples=4", "trainer.val_check_interval=3"]) == 0
    run = json.loads((tmp_path / "tiny" / "results.json").read_text())["runs"]["bsi"]
    assert run["steps"] > 0 and "+trainer.max_time=00:00:00:02" in run["overrides"]


@pytest.mark.parametrize("args, message", [
    (["compare"], "preset"),
    (["compare", "preset=tiny", "methods=if"], "not in the preset"),
    (["compare", "preset=tiny", "steps=3", "seconds=3"], "not both"),
    (["compare", "preset=tiny", "colour=red"], "unknown option"),
])
def test_compare_errors_are_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bayesgen: error:") and message in err and len(err.splitlines()) == 1


# --------------------------------------------------------------------------- train / evaluate
def test_train_summary_and_evaluate_quality(tmp_path, scorer, capsys):
    run = tmp_path / "run"
    assert main(["train", "data=digits", "net.hidden=32", "net.depth=1", "trainer.max_steps=4",
                 "trainer.val_check_interval=2", "optim.warmup_steps=1", "ema.warmup_steps=1",
                 "sample.n=8", "sample.frames=2", "method.sample_kwargs.k=3",
                 "method.eval_kwargs.n_measure_samples=1", "evaluate.quality=true",
                 "evaluate.baselines=true", f"run_dir={run}"]) == 0
    out = capsys.readouterr().out
    assert "per-pixel histogram" in out and "real test images (8)" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["quality"]["n"] == 8 and metrics["quality_real_test"]["n"] == 8
    assert metrics["baselines"]["per-pixel histogram"]["bpd"] == pytest.approx(2.413, abs=0.01)

    assert main(["evaluate", f"ckpt={run}", "quality=true", "quality_n=6", "max_batches=1",
                 "samples=1"]) == 0
    out = capsys.readouterr().out
    assert "classifier FD" in out and "confident" in out
    saved = json.loads((run / "evaluate_test.json").read_text())["quality"]
    assert saved["quality"]["n"] == 6 and saved["real_test"]["n"] == 6


def test_plot_keeps_every_method_in_view():
    """The mnist preset's BSI and VDM (1.6 and 2.1 bits/dim) once lay above the plotted range,
    which was cut at 3x the best method (BFN, 0.28)."""
    from bayesgen.compare import plot_top

    top = plot_top([0.28, 1.59, 2.08], [0.38, 0.53])
    assert top > 2.08 and top == pytest.approx(1.3 * 2.08)
    assert plot_top([1.5], []) == pytest.approx(1.95)
