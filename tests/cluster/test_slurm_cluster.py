"""Preemption on a real Slurm cluster: `bayesgen train -m hydra/launcher=slurm` submits through
submitit; Slurm's time-limit warning (``--signal``), an ``scontrol requeue`` and an ``scancel``
followed by the same command again each end in the uninterrupted run's exact curve."""

import signal
import subprocess
import time
from pathlib import Path

import pytest
from cluster_run import BAYESGEN, TINY, finish, job_env, job_id, job_log, submit

pytestmark = pytest.mark.cluster
PACE = 2.0  # seconds per step in a job's first run: 20 steps outlast the signal below


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's logs/metrics.csv (here, no Slurm)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    subprocess.run([BAYESGEN, "train", *TINY, f"run_dir={run}"], env=job_env(), check=True,
                   capture_output=True, timeout=300)
    return (run / "logs/metrics.csv").read_text()


def _squeue(job: str) -> tuple[str, str]:
    """(state, reason) of a job, ('', '') once it left the queue."""
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True,
                         text=True).stdout.strip()
    return tuple(out.split("|", 1)) if "|" in out else ("", "")


def _steps_logged(run: Path) -> int:
    csv = run / "logs/metrics.csv"
    return max(0, len(csv.read_text().splitlines()) - 1) if csv.is_file() else 0


def _wait(what: str, ok, deadline: float, every: float = 0.5):
    while time.monotonic() < deadline:
        if (value := ok()):
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _submit(sweep: Path, *extra: str, pace: float = PACE) -> subprocess.Popen:
    return submit(sweep, *extra, pace=pace)


def _release_requeued(job: str, sweep: Path, deadline: float) -> None:
    """Wait until the job ran and was requeued, then start it now: Slurm holds a requeued batch
    job back (BeginTime, about two minutes)."""
    ran = False
    while time.monotonic() < deadline:
        state = _squeue(job)[0]
        ran = ran or state in ("RUNNING", "COMPLETING")
        if ran and state == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            return
        if state == "":
            raise AssertionError(f"job {job} ended without a requeue:\n"
                                 + job_log(sweep, job)[-2000:])
        time.sleep(0.5)
    raise AssertionError(f"job {job} was not requeued in time")


def test_time_limit_signal_checkpoints_requeues_and_resumes_to_the_same_curve(
        slurm, reference, tmp_path):
    sweep = tmp_path / "sweep"
    deadline = time.monotonic() + 420
    # a one-minute limit, USR1 5 s before it: slurmctld checks every 30 s and warns up to 30 s
    # early, so the signal comes 25-55 s in, in the middle of the paced run (80 s of steps)
    submit = _submit(sweep, "hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=5",
                     pace=4.0)
    job = job_id(sweep, deadline)
    _release_requeued(job, sweep, deadline)
    finish(submit, deadline)
    run, log = sweep / "0", job_log(sweep, job)
    assert (run / "hpc_ckpt_1.ckpt").is_file(), log[-2000:]  # Lightning's, at the signal
    assert "Requeued SLURM job" in log and "resuming from" in log, log[-2000:]
    assert "in use by another bayesgen run" not in log  # the lock let the requeued job in
    assert (run / "logs/metrics.csv").read_text() == reference
    assert (run / "metrics.json").is_file() and (run / "ema.safetensors").is_file()


def test_scontrol_requeue_resumes_to_the_same_curve(slurm, reference, tmp_path):
    sweep = tmp_path / "sweep"
    deadline = time.monotonic() + 420
    submit = _submit(sweep)
    job = job_id(sweep, deadline)
    _wait("3 logged steps", lambda: _steps_logged(sweep / "0") >= 3, deadline)
    subprocess.run(["scontrol", "requeue", job], check=True)  # SIGTERM now, then the queue
    _release_requeued(job, sweep, deadline)
    finish(submit, deadline)
    log = job_log(sweep, job)
    assert "received SIGTERM: stopping after the current step" in log, log[-2000:]
    assert "resuming from" in log and (sweep / "0/logs/metrics.csv").read_text() == reference


def test_scancel_then_the_same_command_again_resumes_and_says_so(slurm, reference, tmp_path):
    sweep = tmp_path / "sweep"
    deadline = time.monotonic() + 420
    submit = _submit(sweep)
    job = job_id(sweep, deadline)
    _wait("3 logged steps", lambda: _steps_logged(sweep / "0") >= 3, deadline)
    subprocess.run(["scancel", job], check=True)
    _wait("the job to end", lambda: _squeue(job) == ("", ""), deadline)
    # without Slurm accounting (sacct) submitit cannot tell a cancelled job from a running
    # one and waits for its result: stop it as a user would (Ctrl-C)
    submit.send_signal(signal.SIGINT)
    try:
        submit.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        submit.kill()
        submit.communicate()
    stopped_at = _steps_logged(sweep / "0")
    again = _submit(sweep, pace=0)
    finish(again, deadline)
    second = job_id(sweep, deadline)
    assert second != job
    log = job_log(sweep, second)
    assert "resuming from" in log and f"{sweep / '0'}" in log, log[-2000:]
    assert 0 < stopped_at < 20 + 5
    assert (sweep / "0/logs/metrics.csv").read_text() == reference
