"""End to end through the command line: train, resume, evaluate, sample; one-line errors."""

import json
from pathlib import Path

import pytest
import torch

from bayesgen.cli import main

TINY = ["data=digits", "net.hidden=32", "net.depth=1", "trainer.max_steps=6",
        "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
        "checkpoint.every_n_train_steps=3",
        "optim.warmup_steps=2", "ema.warmup_steps=2", "sample.n=4", "sample.frames=3",
        "method.sample_kwargs.k=4", "method.eval_kwargs.n_measure_samples=2",
        "evaluate.max_batches=1", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, f"run_dir={run}"]) == 0
    return run


def test_train_writes_all_outputs(run_dir):
    for name in ("checkpoints/last.ckpt", "ema.safetensors", "metrics.json", "config.yaml",
                 "samples.png", "sampling.gif", "samples.pt", "logs/metrics.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.*"))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["bpd"] > 0 and metrics["bpd_se"] > 0
    assert metrics["sampler"] == "ode2" and metrics["sample_kwargs"]["k"] == 4  # bsi.yaml
    assert torch.load(run_dir / "samples.pt").shape == (4, 1, 8, 8)


def test_resume_continues_from_last_checkpoint(run_dir):
    before = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert before["global_step"] == 6
    assert main(["train", f"from_ckpt={run_dir}", "trainer.max_steps=9"]) == 0
    after = torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)
    assert after["global_step"] == 9
    # the optimizer state came along: Adam's step counter continued from 6
    state = next(iter(after["optimizer_states"][0]["state"].values()))
    assert int(state["step"]) == 9
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 9


def test_evaluate_and_sample(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["evaluate", f"ckpt={run_dir}", "k=8", "samples=2", "max_batches=1",
                 f"out={out}"]) == 0
    m = json.loads(out.read_text())
    assert m["eval_kwargs"]["k"] == 8 and m["bpd"] > 0
    assert "bits/dim" in capsys.readouterr().out
    assert main(["evaluate", f"ckpt={run_dir}", "k=inf", "max_batches=1", "repeats=2",
                 f"out={out}"]) == 0
    assert json.loads(out.read_text())["repeats"] == 2
    assert main(["sample", f"ckpt={run_dir}", "n=9", "k=5", f"out={tmp_path}/s",
                 "animation=webp"]) == 0
    assert (tmp_path / "s/samples.png").is_file() and (tmp_path / "s/sampling.webp").is_file()
    assert torch.load(tmp_path / "s/samples.pt").shape == (9, 1, 8, 8)


def test_sample_with_a_fast_solver(run_dir, tmp_path, capsys):
    assert main(["sample", f"ckpt={run_dir}", "n=5", "k=6", "sampler=ode2", f"out={tmp_path}/o",
                 "animation=none", "progress=false"]) == 0
    assert "sampler=ode2" in capsys.readouterr().out
    assert torch.load(tmp_path / "o/samples.pt").shape == (5, 1, 8, 8)
    assert main(["sample", f"ckpt={run_dir}", "sampler=heun", "k=3", f"out={tmp_path}/h"]) == 2
    assert "unknown sampler 'heun'" in capsys.readouterr().err
    assert main(["sample", f"ckpt={run_dir}", "sampler=dpm"]) == 2


@pytest.mark.parametrize("args, message", [
    (["train", "foo.bar=1"], "foo"),
    (["train", "data=nope"], "nope"),
    (["train", "method.k=-3", "trainer.max_steps=1"], "k must be"),
    (["evaluate"], "ckpt"),
    (["evaluate", "ckpt=/does/not/exist"], "not found"),
    (["sample", "ckpt=x", "n=-1"], "positive"),
    (["sample", "ckpt=x", "colour=red"], "unknown option"),
])
def test_errors_are_one_line(args, message, capsys, tmp_path):
    assert main([*args, f"run_dir={tmp_path}"] if args[0] == "train" else args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bayesgen: error:") and message in err
    assert len(err.splitlines()) == 1


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_TAR = SHARED / "cifar10-jpeg" / "test.tar"


@pytest.mark.skipif(not SHARED_TAR.is_file(), reason="../shared/data/cifar10-jpeg absent")
def test_prepare_images_from_the_shared_jpeg_tar(tmp_path):
    import zipfile

    dest = tmp_path / "cifar.zip"
    assert main(["prepare", "images", f"source={SHARED_TAR}", f"dest={dest}",
                 "max_images=12"]) == 0
    with zipfile.ZipFile(dest) as zf:
        names = zf.namelist()
        labels = json.loads(zf.read("dataset.json"))["labels"]
    assert "dataset.json" in names and len([n for n in names if n.endswith(".png")]) == 12
    assert len(labels) == 12


def test_fid_generates_images_and_explains_missing_weights(run_dir, tmp_path, capsys):
    assert main(["fid", "gen", f"ckpt={run_dir}", f"dest={tmp_path}/gen", "n=5",
                 "batch_size=3", "k=3"]) == 0
    assert len(list((tmp_path / "gen").rglob("*.png"))) == 5
    assert main(["fid", "ref", f"data={tmp_path}/gen", f"dest={tmp_path}/ref.npz",
                 f"weights={tmp_path}/missing.pth"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bayesgen: error:") and "missing.pth" in err
    assert main(["fid", "nothing"]) == 2


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "bayesgen.cli", "train", *TINY, "trainer.max_steps=100000",
           "checkpoint.every_n_train_steps=1000", f"run_dir={run}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not list((run / "logs").glob("metrics.csv")) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(2)  # some training steps, no periodic checkpoint yet
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "resume with" in out
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    step = ckpt["global_step"]
    assert step > 0
    assert main(["train", f"from_ckpt={run}", f"trainer.max_steps={step + 2}"]) == 0
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == step + 2


def test_sample_inpaints_pictures_and_shows_progress(run_dir, tmp_path, capsys):
    """`bayesgen sample … inpaint=IMAGE mask=MASK`: the known pixels come back exactly, with a
    progress bar on stderr; a lone mask= and a method without conditioning are refused."""
    from PIL import Image

    grey = (torch.arange(64).reshape(8, 8) * 4).to(torch.uint8)
    Image.fromarray(grey.numpy(), mode="L").save(tmp_path / "image.png")
    white = torch.zeros(8, 8, dtype=torch.uint8)
    white[:4] = 255  # top half known
    Image.fromarray(white.numpy(), mode="L").save(tmp_path / "mask.png")
    for variant in ("tweedie", "replace"):
        out = tmp_path / variant
        assert main(["sample", f"ckpt={run_dir}", "n=3", "k=3", f"out={out}",
                     f"inpaint={tmp_path / 'image.png'}", f"mask={tmp_path / 'mask.png'}",
                     f"conditioning={variant}", "animation=none"]) == 0
        x = torch.load(out / "samples.pt")
        known = (2 * grey.float() / 255 - 1)[:4]
        assert torch.equal(x[:, 0, :4], known.expand(3, 4, 8))
        captured = capsys.readouterr()
        assert f"({variant}; 32 known values)" in captured.out and "sampling 3" in captured.err
    assert main(["sample", f"ckpt={run_dir}", f"mask={tmp_path / 'mask.png'}"]) == 2
    assert "inpaint= and mask= go together" in capsys.readouterr().err
    assert main(["sample", f"ckpt={run_dir}", "n=2", "k=2", "progress=false",
                 f"out={tmp_path / 'quiet'}", "animation=none"]) == 0
    assert "sampling" not in capsys.readouterr().err
