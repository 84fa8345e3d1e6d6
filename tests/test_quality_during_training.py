"""Sample quality watched during training (evaluate.quality=true): scored at validations,
logged to every logger, a grid per scoring, and the training itself unchanged by it."""

import csv
import math

import numpy as np
import pytest
import torch

from bayesgen.cli import main
from bayesgen.training.monitor import QualityDuringTraining, _FidOfBatch

TINY = ["data=digits", "net.hidden=32", "net.depth=1", "trainer.max_steps=6",
        "trainer.val_check_interval=2", "trainer.limit_val_batches=1", "optim.warmup_steps=2",
        "ema.warmup_steps=2", "sample.n=4", "sample.frames=2", "sample.animation=none",
        "method.sample_kwargs.k=3", "method.eval_kwargs.n_measure_samples=2",
        "evaluate.max_batches=1", "trainer.log_every_n_steps=1", "logger=[csv,tensorboard]"]


def rows(run_dir) -> list[dict]:
    with open(run_dir / "logs" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    run = tmp_path_factory.mktemp("watched")
    assert main(["train", *TINY, "evaluate.quality=true", "evaluate.quality_n=16",
                 "evaluate.quality_every=4", f"run_dir={run}"]) == 0
    return run


def test_scores_are_logged_at_the_due_validations(watched, capsys):
    scored = {int(float(r["step"])): float(r["quality/fd"]) for r in rows(watched)
              if r.get("quality/fd")}
    # validations after steps 2, 4, 6 (logged at steps 1, 3, 5); every 4 steps: 1 and 5
    assert sorted(scored) == [1, 5], scored
    assert all(math.isfinite(v) and v >= 0 for v in scored.values())
    shares = [float(r["quality/confident_share"]) for r in rows(watched)
              if r.get("quality/confident_share")]
    assert len(shares) == 2 and all(0 <= s <= 1 for s in shares)
    assert sorted(p.name for p in (watched / "logs" / "quality").iterdir()) == [
        "step2.png", "step6.png"]


def test_scores_reach_tensorboard(watched):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((watched / "tensorboard").rglob("events.*")).parent))
    events.Reload()
    assert "quality/fd" in events.Tags()["scalars"]
    assert "quality/samples" in events.Tags()["images"]


def test_training_is_the_same_without_it(watched, tmp_path):
    plain = tmp_path / "plain"
    assert main(["train", *TINY, f"run_dir={plain}"]) == 0
    loss = [r["train/loss"] for r in rows(plain) if r.get("train/loss")]
    assert loss and loss == [r["train/loss"] for r in rows(watched) if r.get("train/loss")]
    assert not (plain / "logs" / "quality").exists()
    assert not any(r.get("quality/fd") for r in rows(plain))


def test_the_cost_is_printed(tmp_path, capsys):
    assert main(["train", *TINY, "trainer.max_steps=2", "evaluate.quality=true",
                 "evaluate.quality_n=8", f"run_dir={tmp_path / 'r'}"]) == 0
    out = capsys.readouterr().out
    assert "quality during training: 8 samples (sampler=ode2, k=3) at each validation" in out
    assert "step 2: classifier FD" in out and "(8 samples," in out


def test_due_every_n_steps():
    cb = QualityDuringTraining(4, {}, every=1000, run_dir=".")
    assert cb.due(500)
    cb.last_step = 500
    assert not cb.due(1499) and cb.due(1500)
    assert QualityDuringTraining(4, {}, every=None, run_dir=".").due(7)


def test_fid_of_a_batch_with_a_given_extractor(tmp_path):
    """FID of the batch against saved statistics, here with a stand-in feature extractor
    (the Inception weights cannot be downloaded here): identical statistics give 0."""
    from bayesgen.metrics.fid import save_statistics

    def extractor(images):  # uint8 (B, 3, H, W) -> (B, 3) channel means
        return images.float().mean((2, 3))

    x = torch.rand(32, 1, 8, 8) * 2 - 1
    f = torch.tensor(np.stack([np.asarray(extractor(((x.repeat(1, 3, 1, 1) + 1) * 127.5)
                                                    .round().clamp(0, 255).to(torch.uint8)))]))[0]
    mu, sigma = f.double().mean(0).numpy(), np.cov(f.double().numpy(), rowvar=False)
    ref = save_statistics(tmp_path / "ref.npz", mu, sigma)
    fid = _FidOfBatch(str(ref), extractor=extractor)
    assert fid(x, info=None) == pytest.approx(0, abs=1e-6)
    assert fid(x * 0.5, info=None) > 1
