"""Fault injection: hostile files, kills (``kill -9``) mid-step, mid-validation and mid-save,
SIGINT/SIGTERM, full disks, concurrent runs, non-finite numbers.

Every test here is marked ``faults``; the ones that start several training processes are also
``slow``, so ``pytest -q`` runs the fast subset and ``make test-faults`` all of them. A fault
"survives with nothing lost" when the run resumes to a ``logs/metrics.csv`` identical to the
uninterrupted run's, every checkpoint on disk loads, and no temporary file is left behind.
"""

import errno
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from bayesgen.cli import main
from bayesgen.training.build import compose_config
from bayesgen.training.checkpoint import (
    TMP_MARK,
    CheckpointError,
    NonFiniteError,
    SafeCheckpointIO,
    read_checkpoint,
)
from bayesgen.training.fit import run_training
from bayesgen.training.lock import RunDirBusyError, RunLock

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data=digits", "net.hidden=32", "net.depth=1", "trainer.max_steps=6",
        "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
        "checkpoint.every_n_train_steps=3", "optim.warmup_steps=2", "ema.warmup_steps=2",
        "sample.n=4", "sample.frames=2", "sample.animation=none", "method.sample_kwargs.k=2",
        "method.eval_kwargs.n_measure_samples=1", "evaluate.max_batches=1",
        "trainer.log_every_n_steps=1",
        "checkpoint.keep_last=null", "checkpoint.save_top_k=0"]  # every checkpoint, no best-k
# the runs that are killed: 30 steps over 3 epochs of 11 batches, validation (2 batches) every 7
# steps, checkpoints every 4 (so kills land before, after and on validations and epoch ends)
LONG = [*TINY, "trainer.max_steps=30", "trainer.val_check_interval=7",
        "trainer.limit_val_batches=2", "data.eval_batch_size=64",
        "checkpoint.every_n_train_steps=4"]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _train(run: Path, fault: str = "none", args=LONG, **env) -> subprocess.CompletedProcess:
    """``bayesgen train`` in a subprocess (a fault from tests/fault_train.py injected)."""
    cmd = [sys.executable, str(ROOT / "tests" / "fault_train.py"), fault, *args, f"run_dir={run}"]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(**env), timeout=600)


def _one_error_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.startswith("bayesgen: error:")]
    assert len(lines) == 1, text[-3000:]
    return lines[0]


def _temps(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob(f"*{TMP_MARK}*")]


def _all_checkpoints_load(run: Path) -> list[int]:
    return [int(read_checkpoint(p)["global_step"]) for p in sorted(run.rglob("*.ckpt"))
            if TMP_MARK not in p.name]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(["train", *TINY, f"run_dir={run}"]) == 0
    return run


@pytest.fixture
def copy_of(tmp_path):
    def copy(run: Path) -> Path:
        dest = tmp_path / "copy"
        shutil.copytree(run, dest)
        return dest
    return copy


# ---- hostile files ------------------------------------------------------------------------
class RunsCode:
    """Unpickling this runs a shell command (here: creates the marker file)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("command", ["sample", "evaluate", "train"])
def test_a_checkpoint_that_would_run_code_runs_nothing(command, tmp_path, capsys):
    marker, ckpt = tmp_path / "pwned", tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "bayesgen_config": RunsCode(marker)}, ckpt)
    key = "from_ckpt" if command == "train" else "ckpt"
    code = main([command, f"{key}={ckpt}"])
    assert not marker.exists()
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(ckpt) in line and "posix.system" in line


@pytest.mark.parametrize("node, target", [("method", "logging.basicConfig"),
                                          ("data", "logging.basicConfig"), ("net", "os.system")])
@pytest.mark.parametrize("command", ["sample", "evaluate", "train"])
def test_a_config_naming_other_code_is_refused(command, node, target, tiny_run, tmp_path,
                                               capsys):
    """Hydra would call any importable function named in ``_target_`` (the issue saw
    ``logging.basicConfig(filename=…)`` write a file)."""
    marker, ckpt = tmp_path / "pwned", tmp_path / "evil.ckpt"
    content = torch.load(tiny_run / "checkpoints/last.ckpt", weights_only=False)
    config = OmegaConf.create(content["bayesgen_config"])  # YAML text (or an older dict)
    config[node] = {"_target_": target, "filename": str(marker), "force": True,
                    "command": f"touch {marker}"}
    saved = content["bayesgen_config"]
    content["bayesgen_config"] = OmegaConf.to_yaml(config) if isinstance(saved, str) else \
        OmegaConf.to_container(config)
    torch.save(content, ckpt)
    key = "from_ckpt" if command == "train" else "ckpt"
    code = main([command, f"{key}={ckpt}"])
    assert not marker.exists()
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(ckpt) in line and target in line


def test_a_cifar_archive_is_checked_before_it_is_unpickled(tmp_path, capsys):
    marker, tgz = tmp_path / "pwned", tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            payload = pickle.dumps(RunsCode(marker))
            member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
    code = main(["prepare", "images", f"source={tgz}", f"dest={tmp_path / 'out.zip'}"])
    assert not marker.exists() and not (tmp_path / "out.zip").exists()
    assert code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert str(tgz) in line and "md5" in line


def _broken(kind: str, run: Path, tmp_path: Path) -> Path:
    good = (run / "checkpoints/last.ckpt").read_bytes()
    path = tmp_path / f"{kind}.ckpt"
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "garbage":
        path.write_bytes(os.urandom(5000))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "config.yaml":
        path = run / "config.yaml"
    return path


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "tensor", "config.yaml"])
@pytest.mark.parametrize("command", ["sample", "evaluate"])
def test_a_broken_checkpoint_is_one_line(command, kind, tiny_run, tmp_path, capsys):
    path = _broken(kind, tiny_run, tmp_path)
    assert main([command, f"ckpt={path}"]) == 2
    assert str(path) in _one_error_line(capsys.readouterr().err)


# ---- atomic checkpoints, full disks -------------------------------------------------------
def test_resume_skips_a_broken_last_checkpoint(tiny_run, copy_of, capsys):
    run = copy_of(tiny_run)
    last = run / "checkpoints/last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # what a non-atomic write left when killed
    (run / "hpc_ckpt_1.ckpt").write_bytes(b"")  # and a full disk
    assert main(["train", *TINY, f"run_dir={run}", "trainer.max_steps=9"]) == 0
    out = capsys.readouterr().out
    assert "skipping checkpoint" in out and "truncated or corrupt" in out and "empty" in out
    assert f"resuming from {run / 'checkpoints/step0000006.ckpt'} (step 6)" in out
    assert read_checkpoint(last)["global_step"] == 9


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    """ENOSPC in the middle of a checkpoint write: one line, the previous checkpoint intact, no
    partial files anywhere (the system temporary directory included); the run then resumes
    from the newest whole checkpoint once there is room."""
    run, systmp = tmp_path / "run", tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(systmp))
    monkeypatch.setattr("tempfile.tempdir", str(systmp))
    real_save, calls = torch.save, []

    def disk_fills(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "state_dict" in obj:  # a training checkpoint
            calls.append(1)
            if len(calls) == 4:  # step 6: step0000006.ckpt is written, last.ckpt is not
                f.write(b"\0" * 4096)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills)
    args = [*TINY, "trainer.max_steps=12", f"run_dir={run}"]
    assert main(["train", *args]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "No space left on device" in line and "last.ckpt" in line and "intact" in line
    assert _all_checkpoints_load(run) == [3, 3, 6]  # last.ckpt, step 3, step 6
    assert not _temps(run) and not list(systmp.iterdir())
    monkeypatch.setattr(torch, "save", real_save)  # space again
    capsys.readouterr()
    assert main(["train", *args]) == 0
    assert "(step 6)" in capsys.readouterr().out
    assert read_checkpoint(run / "checkpoints/last.ckpt")["global_step"] == 12
    assert not _temps(run) and not list(systmp.iterdir())


def test_outputs_are_readable_by_others(tiny_run):
    for name in ("checkpoints/last.ckpt", "ema.safetensors", "metrics.json", "samples.pt",
                 "config.yaml", "logs/metrics.csv"):
        assert (tiny_run / name).stat().st_mode & 0o044 == 0o044, name


# ---- lossless resume ----------------------------------------------------------------------
def test_resume_appends_to_the_metrics_history(tiny_run, copy_of, tmp_path):
    """Training a finished 6-step run on to 9 steps keeps its history and ends with the same
    metrics.csv as a 9-step run."""
    run = copy_of(tiny_run)
    before = (run / "logs/metrics.csv").read_text().splitlines()
    assert main(["train", *TINY, f"run_dir={run}", "trainer.max_steps=9"]) == 0
    after = (run / "logs/metrics.csv").read_text().splitlines()
    assert after[: len(before)] == before
    assert main(["train", *TINY, f"run_dir={tmp_path / 'nine'}", "trainer.max_steps=9"]) == 0
    assert (tmp_path / "nine/logs/metrics.csv").read_text().splitlines() == after


def test_a_finished_run_is_not_rewritten(tiny_run, copy_of, capsys):
    run = copy_of(tiny_run)
    names = ("ema.safetensors", "metrics.json", "samples.pt", "samples.png", "config.yaml",
             "logs/metrics.csv", "checkpoints/last.ckpt")
    before = {n: ((run / n).read_bytes(), (run / n).stat().st_mtime_ns) for n in names}
    assert main(["train", *TINY, f"run_dir={run}"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert before == {n: ((run / n).read_bytes(), (run / n).stat().st_mtime_ns) for n in names}
    # killed while writing its outputs: the re-run writes them from the EMA weights, the same
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").unlink()
    assert main(["train", *TINY, f"run_dir={run}"]) == 0
    again = json.loads((run / "metrics.json").read_text())
    assert {k: v for k, v in again.items() if k != "train_seconds"} == \
        {k: v for k, v in metrics.items() if k != "train_seconds"}
    assert (run / "ema.safetensors").read_bytes() == before["ema.safetensors"][0]
    assert (run / "samples.pt").read_bytes() == before["samples.pt"][0]


def test_from_ckpt_of_a_moved_run_writes_where_the_checkpoint_is(tiny_run, copy_of):
    run = copy_of(tiny_run)
    original = (tiny_run / "checkpoints/last.ckpt").stat().st_mtime_ns
    assert main(["train", f"from_ckpt={run}", "trainer.max_steps=9"]) == 0
    assert read_checkpoint(run / "checkpoints/last.ckpt")["global_step"] == 9
    assert (tiny_run / "checkpoints/last.ckpt").stat().st_mtime_ns == original
    assert read_checkpoint(tiny_run / "checkpoints/last.ckpt")["global_step"] == 6


class SaveDuringValidation(Callback):
    """Writes a checkpoint in the middle of validation, when Lightning's weight averaging has
    swapped the EMA weights into the model, and records both sets of weights."""

    def __init__(self, path: Path):
        self.path, self.ema, self.raw = path, None, None

    def on_validation_batch_start(self, trainer, pl_module, *args, **kwargs):
        if self.ema is None and trainer.global_step == 6:
            ema_cb = next(c for c in trainer.callbacks if type(c).__name__ == "EMA")
            self.ema = {k: v.clone() for k, v in pl_module.state_dict().items()}
            self.raw = {k: v.clone() for k, v in ema_cb._average_model.module.state_dict().items()}
            trainer.save_checkpoint(self.path)


def test_a_checkpoint_written_during_validation_keeps_ema_and_raw_apart(tmp_path):
    spy = SaveDuringValidation(tmp_path / "mid-val.ckpt")
    run_training(compose_config([*TINY, f"run_dir={tmp_path / 'run'}"]), callbacks=[spy])
    ckpt = read_checkpoint(spy.path)
    assert any(not torch.equal(spy.ema[k], spy.raw[k]) for k in spy.ema)
    for k in spy.ema:
        assert torch.equal(ckpt["state_dict"][k], spy.ema[k]), k
        assert torch.equal(ckpt["current_model_state"][k], spy.raw[k]), k


# ---- non-finite numbers -------------------------------------------------------------------
DIVERGES = ["data=digits", "net=mlp", "net.hidden=32", "net.depth=1", "optim.lr=1e6",
            "optim.warmup_steps=1", "trainer.max_steps=40", "checkpoint.every_n_train_steps=2",
            "trainer.val_check_interval=1000", "sample.n=4", "sample.animation=none",
            "evaluate.max_batches=1", "trainer.log_every_n_steps=1"]


@pytest.mark.parametrize("method", ["bfn_continuous", "bsi"])
def test_a_diverging_run_stops_at_the_first_non_finite_value(method, tmp_path, capsys):
    """``optim.lr=1e6``: BFN's loss becomes NaN after some steps, BSI's gradient infinite."""
    run = tmp_path / "run"
    assert main(["train", *DIVERGES, f"method={method}", f"run_dir={run}"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "non-finite" in line and " at step " in line and "skip_nonfinite" in line
    assert not (run / "metrics.json").exists() and not (run / "ema.safetensors").exists()
    for path in run.rglob("*.ckpt"):
        ckpt = read_checkpoint(path)
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()
                   if v.is_floating_point())
    rows = (run / "logs/metrics.csv").read_text().lower() if (run / "logs").exists() else ""
    assert "nan" not in rows and "inf" not in rows


class NaNLoss(Callback):
    """Makes the training loss NaN at the given steps (as a diverging model would)."""

    def __init__(self, steps):
        self.steps = set(steps)

    def on_fit_start(self, trainer, pl_module):
        method, train_loss = pl_module.method, pl_module.method.train_loss

        def poisoned(x, **kwargs):
            loss = train_loss(x, **kwargs)
            return loss * float("nan") if trainer.global_step in self.steps else loss

        method.train_loss = poisoned


class NaNData(Callback):
    """Puts a NaN into the training batches of the given steps."""

    def __init__(self, steps):
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step in self.steps:
            batch[0][0] = float("nan")


@pytest.mark.parametrize("poison", [NaNLoss, NaNData])
@pytest.mark.parametrize("allowed, ok", [(2, True), (1, False)])
def test_skip_nonfinite_skips_up_to_n_batches(allowed, ok, poison, tmp_path, capsys):
    cfg = compose_config([*TINY, f"trainer.skip_nonfinite={allowed}", f"run_dir={tmp_path}"])
    quantity = "training loss" if poison is NaNLoss else "training data"
    if ok:
        run_training(cfg, callbacks=[poison([2, 4])])
        out = capsys.readouterr().out
        assert out.count("batch skipped") == 2
        assert f"non-finite {quantity}" in out and "at step 4" in out and "(2 of" in out
        assert json.loads((tmp_path / "metrics.json").read_text())["steps"] == 6
    else:
        with pytest.raises(NonFiniteError, match=f"non-finite {quantity} .*at step 4"):
            run_training(cfg, callbacks=[poison([2, 4])])


def test_nothing_non_finite_is_written(tmp_path):
    from bayesgen.training.outputs import write_json, write_samples

    with pytest.raises(NonFiniteError, match="bpd"):
        write_json({"bpd": float("nan")}, tmp_path / "m.json")
    write_json({"bpd": 1.0, "bpd_se": float("nan")}, tmp_path / "m.json")  # one example: null
    assert json.loads((tmp_path / "m.json").read_text())["bpd_se"] is None

    class NaNSampler(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def sample_history(self, n, **kwargs):
            return {"x": torch.full((n, 2), float("nan"))}

    with pytest.raises(NonFiniteError, match="sampling"):
        write_samples(NaNSampler(), None, tmp_path / "s", n=3)
    assert not (tmp_path / "s" / "samples.pt").exists()
    with pytest.raises(NonFiniteError, match="state_dict"):
        SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.tensor([float("inf")])}},
                                           tmp_path / "x.ckpt")
    assert not list(tmp_path.glob("*.ckpt")) and not _temps(tmp_path)


# ---- the run-directory lock ---------------------------------------------------------------
def test_a_busy_run_directory_is_refused_and_a_stale_lock_taken_over(tmp_path, monkeypatch):
    said = []
    with RunLock(tmp_path, say=said.append):
        with pytest.raises(RunDirBusyError, match=f"PID {os.getpid()} on "):
            RunLock(tmp_path).acquire()
        monkeypatch.setenv("LOCAL_RANK", "1")  # a DDP child of this run: not refused
        RunLock(tmp_path).acquire().release()
        monkeypatch.delenv("LOCAL_RANK")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".bayesgen.lock").write_text(json.dumps(
        {"pid": dead.pid, "host": os.uname().nodename, "started": "earlier"}))
    with RunLock(tmp_path, say=said.append):
        pass
    assert said and f"stale lock of {tmp_path} (PID {dead.pid}" in said[0]


def test_without_flock_a_requeued_slurm_job_takes_over(tmp_path, monkeypatch):
    import fcntl

    def no_flock(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = tmp_path / ".bayesgen.lock"
    other = {"pid": 1, "host": "node-a-that-is-not-this-one", "started": "x", "slurm_job": "77"}
    lock.write_text(json.dumps(other))
    with pytest.raises(RunDirBusyError, match="node-a-that-is-not-this-one"):
        RunLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # the same job, requeued on another node
    said = []
    RunLock(tmp_path, say=said.append).acquire().release()
    assert "earlier run of this Slurm job" in said[0]


@pytest.mark.slow
def test_a_second_run_into_a_busy_directory_stops_at_once(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/fault_train.py"), "none", *LONG,
         "trainer.max_steps=100000", f"run_dir={run}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.time() + 300
        while not (run / "logs/metrics.csv").is_file() and time.time() < deadline:
            time.sleep(0.5)
        second = _train(run, args=LONG)
        assert second.returncode == 2
        line = _one_error_line(second.stderr)
        assert f"PID {first.pid} on {os.uname().nodename}" in line
    finally:
        first.kill()
        first.wait()
    third = _train(run, args=[*LONG, "trainer.max_steps=8"])  # the stale lock of a kill -9
    assert third.returncode == 0, third.stderr[-2000:]
    assert f"stale lock of {run} (PID {first.pid}" in third.stdout


# ---- kill -9, signals: resumed runs equal uninterrupted ones ---------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp("reference") / "run"
    result = _train(run)
    assert result.returncode == 0, result.stderr[-3000:]
    return (run / "logs/metrics.csv").read_text()


def _survives(run: Path, reference: str, faulted: subprocess.CompletedProcess,
              code: int) -> None:
    """The faulted process ended with ``code``; every checkpoint it left loads; resuming (the
    same command) ends with the uninterrupted run's metrics.csv and no temporary files."""
    saved = _all_checkpoints_load(run)
    resumed = _train(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "logs/metrics.csv").read_text() == reference
    assert (run / "metrics.json").is_file() and not _temps(run)
    assert ("resuming from" in resumed.stdout) == bool(saved)
    assert faulted.returncode == code, faulted.stdout[-2000:] + faulted.stderr[-2000:]


def test_kill_9_mid_step_then_resume_equals_the_uninterrupted_run(reference, tmp_path):
    run = tmp_path / "run"
    _survives(run, reference, _train(run, "kill@step:13"), -signal.SIGKILL)


FAULTS = [
    "kill@step:2",  # before the first checkpoint: resumes from scratch
    "kill@step:22",  # the first step of the third epoch
    "kill@step:29",  # right after a checkpoint that coincides with a validation (28)
    "kill@val:14",  # in the middle of a validation
    "kill@val:28",  # in the validation at the checkpoint step
]


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_kill_9_anywhere_then_resume_equals_the_uninterrupted_run(fault, reference, tmp_path):
    run = tmp_path / "run"
    _survives(run, reference, _train(run, fault), -signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("every", [1, 4])
def test_kill_9_in_the_middle_of_a_checkpoint_write(every, reference, tmp_path):
    """SIGKILL while the third last.ckpt is written (half of it on disk): the previous
    last.ckpt stays whole, the partial file is removed on resume, nothing is lost."""
    run = tmp_path / "run"
    args = [a for a in LONG if not a.startswith("checkpoint.every")]
    args.append(f"checkpoint.every_n_train_steps={every}")
    killed = _train(run, args=args, BAYESGEN_FAULT_KILL_IN_WRITE="last.ckpt:3")
    assert killed.returncode == -signal.SIGKILL
    assert _temps(run)  # the half-written file
    assert read_checkpoint(run / "checkpoints/last.ckpt")["global_step"] == 2 * every
    resumed = _train(run, args=args)
    assert resumed.returncode == 0 and "removed 1 partial file" in resumed.stdout
    assert (run / "logs/metrics.csv").read_text() == reference and not _temps(run)


@pytest.mark.slow
@pytest.mark.parametrize("attempt", range(3))
def test_kill_9_at_a_random_moment(attempt, reference, tmp_path):
    """A real ``kill -9`` from outside after a random number of logged rows, while a checkpoint
    is written every step (so it often lands in a write)."""
    import random

    run = tmp_path / "run"
    args = [*[a for a in LONG if not a.startswith("checkpoint.every")],
            "checkpoint.every_n_train_steps=1"]
    rows = random.Random(attempt).randint(3, 30)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests/fault_train.py"), "none", *args, f"run_dir={run}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    csv = run / "logs/metrics.csv"
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        if csv.is_file() and len(csv.read_text().splitlines()) > rows:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    _all_checkpoints_load(run)
    resumed = _train(run, args=args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert csv.read_text() == reference and not _temps(run)


@pytest.mark.slow
@pytest.mark.parametrize("fault, code", [("term@val:14", 143), ("int@val:14", 130),
                                         ("int@step:17x2", 130), ("term@step:9", 143)])
def test_signals_stop_between_steps_and_lose_nothing(fault, code, reference, tmp_path):
    """SIGTERM/SIGINT: the step and validation in progress finish, last.ckpt is written between
    steps (EMA and raw weights in their places), the exit status is 128 + the signal; a second
    SIGINT stops at once and the newest checkpoint is kept. The resumed run equals the
    uninterrupted one either way."""
    run = tmp_path / "run"
    faulted = _train(run, fault)
    _survives(run, reference, faulted, code)
    at = int(fault.split(":")[1].split("x")[0])
    if "x2" not in fault:
        assert f"stopped after step {at + (fault.split('@')[1][:4] == 'step')}" in faulted.stdout
    else:
        assert "stopped at once" in faulted.stdout


@pytest.mark.slow
def test_resume_is_exact_with_worker_processes(tmp_path):
    args = [*LONG, "data.num_workers=2"]
    ref = tmp_path / "ref"
    assert _train(ref, args=args).returncode == 0
    run = tmp_path / "run"
    assert _train(run, "kill@step:13", args=args).returncode == -signal.SIGKILL
    assert _train(run, args=args).returncode == 0
    assert (run / "logs/metrics.csv").read_text() == (ref / "logs/metrics.csv").read_text()


@pytest.mark.slow
def test_a_full_tmpfs_run_directory(tmp_path):
    """A real full disk: the run directory on a 1 MB tmpfs (needs permission to mount)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip() or made.returncode}")
    try:
        run = mount / "run"
        full = _train(run, args=[*LONG, "checkpoint.every_n_train_steps=1"])
        assert full.returncode == 2, full.stdout[-2000:] + full.stderr[-2000:]
        line = _one_error_line(full.stderr)
        assert "No space left on device" in line or "could not" in line, line
        steps = _all_checkpoints_load(run)  # whatever is there is whole
        assert steps and not _temps(run)
        shutil.copytree(run, tmp_path / "moved")  # room again: continue elsewhere
    finally:
        subprocess.run(["umount", str(mount)], check=False)
    moved = tmp_path / "moved"
    resumed = subprocess.run(
        [sys.executable, "-m", "bayesgen.cli", "train", f"from_ckpt={moved}"],
        capture_output=True, text=True, env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_checkpoint(moved / "checkpoints/last.ckpt")["global_step"] == 30


def test_every_shipped_target_is_trusted():
    import re

    from bayesgen.training.checkpoint import trusted_targets

    shipped = {m.group(1) for p in (ROOT / "src/bayesgen/conf").rglob("*.yaml")
               for m in re.finditer(r"_target_:\s*([\w.]+)", p.read_text())}
    assert len(shipped) > 15 and shipped <= trusted_targets()
    assert not {"os.system", "logging.basicConfig", "builtins.exec"} & trusted_targets()


def test_the_training_order_resumes_mid_epoch():
    from bayesgen.data.sampler import ResumableRandomSampler

    a = ResumableRandomSampler(10, seed=3)
    first, second = list(a), list(a)  # two passes: two orders (no set_epoch needed)
    assert sorted(first) == list(range(10)) and first != second
    b = ResumableRandomSampler(10, seed=3)
    b.resume(epoch=1, skip=4)
    assert list(b) == second[4:] and list(b) != second


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found|cannot be read"):
        read_checkpoint(tmp_path / "missing.ckpt")
