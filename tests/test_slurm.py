"""Slurm: the submitit launcher's sbatch script; a requeued job trains on in the same directory;
a preemption (SIGUSR1, as Slurm sends it) saves a checkpoint that the requeued job resumes."""

import os
import signal
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import JobReturn, JobStatus
from lightning.pytorch.callbacks import Callback
from submitit.core.utils import DelayedSubmission
from submitit.slurm.slurm import SlurmJob

from bayesgen.cli import main
from bayesgen.training.build import compose_config
from bayesgen.training.fit import run_training

TINY = ["data=digits", "net.hidden=32", "net.depth=1", "trainer.max_steps=6",
        "trainer.val_check_interval=1000", "checkpoint.every_n_train_steps=3",
        "optim.warmup_steps=2", "ema.warmup_steps=2", "sample.n=4", "sample.frames=2",
        "sample.animation=none", "method.sample_kwargs.k=2",
        "method.eval_kwargs.n_measure_samples=1", "evaluate.max_batches=1"]
JOB = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "bayesgen", "SLURM_NTASKS": "1",
       "SLURM_NTASKS_PER_NODE": "1", "SLURM_NODELIST": "localhost", "SLURM_PROCID": "0",
       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SUBMITIT_EXECUTOR": "slurm"}


def _fake_command(tmp_path, monkeypatch, name: str, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def sbatch(tmp_path, monkeypatch):
    """`sbatch` keeps the script it is given; submitted jobs report success at once."""
    _fake_command(tmp_path, monkeypatch, "srun", "exit 1")  # submitit checks that it exists
    _fake_command(tmp_path, monkeypatch, "sbatch",
                  f'cp "$1" {tmp_path}/job.sh; echo "Submitted batch job 4242"')
    monkeypatch.setattr(SlurmJob, "results", lambda self: [JobReturn(status=JobStatus.COMPLETED)])
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    monkeypatch.chdir(tmp_path)
    return tmp_path / "job.sh"


@pytest.fixture
def slurm_job(tmp_path, monkeypatch):
    """Inside a one-task Slurm job whose `scontrol` records its arguments."""
    for key, value in JOB.items():
        monkeypatch.setenv(key, value)
    _fake_command(tmp_path, monkeypatch, "scontrol", f'echo "$@" >> {tmp_path}/scontrol.log')
    return tmp_path / "scontrol.log"


def test_launcher_asks_for_one_task_per_gpu_and_the_requeue_signal(sbatch):
    assert main(["train", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                 "hydra.launcher.timeout_min=600", "trainer.devices=4", "trainer.num_nodes=2",
                 "hydra.sweep.dir=sweep"]) == 0
    script = sbatch.read_text()
    for flag in ("partition=gpu", "nodes=2", "ntasks-per-node=4", "gpus-per-node=4",
                 "time=600", "signal=USR1@120", "requeue"):
        assert f"#SBATCH --{flag}\n" in script, flag
    assert "submitit.core._submit" in script


def _run_job(pickle) -> None:
    """What srun runs in each task of the job (here in this process, which Hydra then leaves)."""
    try:
        DelayedSubmission.load(pickle).result()
    finally:
        GlobalHydra.instance().clear()


def test_requeued_job_trains_on_in_its_directory(sbatch, slurm_job, capsys):
    assert main(["train", "-m", "hydra/launcher=slurm", *TINY,
                 "hydra.sweep.dir=multirun/${now:%H-%M-%S-%f}"]) == 0  # a time to the µs
    (pickle,) = sbatch.parent.glob("multirun/*/.submitit/4242/*_submitted.pkl")
    job_dir = pickle.parents[2] / "0"
    _run_job(pickle)
    assert (job_dir / "checkpoints/last.ckpt").is_file() and (job_dir / "metrics.json").is_file()
    capsys.readouterr()
    _run_job(pickle)  # the same job, requeued: later, the same directory
    assert f"resuming from {job_dir.resolve() / 'checkpoints/last.ckpt'}" in capsys.readouterr().out


class Killed(Exception):
    """Slurm ends the job after its warning."""


class Preempt(Callback):
    """Slurm's warning before a preemption or the time limit: SIGUSR1 after ``step`` steps;
    the job is killed a step later."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            # Lightning: save hpc_ckpt_1.ckpt and requeue — deferred to the start of the next
            # step, where the state is consistent
            os.kill(os.getpid(), signal.SIGUSR1)
        if trainer.global_step == self.step + 1:
            raise Killed


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_end(self, *args):
        self.steps += 1


def test_preemption_saves_a_checkpoint_that_the_requeued_job_resumes(slurm_job, tmp_path):
    cfg = compose_config([*TINY, f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(Killed):  # nothing is saved on an error (SIGKILL runs no Python either)
        run_training(cfg, callbacks=[Preempt(step=4)])

    def step(path):
        return torch.load(tmp_path / "run" / path, weights_only=True)["global_step"]

    assert step("hpc_ckpt_1.ckpt") == 4 and step("checkpoints/last.ckpt") == 3
    assert slurm_job.read_text().split() == ["requeue", "4242"]

    count = CountSteps()
    run_training(cfg, callbacks=[count])  # the requeued job: same command, same directory
    assert count.steps == 2  # steps 5 and 6
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    assert int(next(iter(last["optimizer_states"][0]["state"].values()))["step"]) == 6  # Adam's
