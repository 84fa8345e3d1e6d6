"""What the cluster tests share: the tiny run, the commands, their environment."""

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
PYTHON = sys.executable
BAYESGEN = str(Path(PYTHON).with_name("bayesgen"))

# a tiny digits run: 20 optimizer steps, a validation every 5, a checkpoint every 10
TINY = ["trainer.accelerator=cpu", "data=digits", "net.hidden=32", "net.depth=1",
        "trainer.max_steps=20", "trainer.val_check_interval=5",
        "checkpoint.every_n_train_steps=10", "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=1", "optim.warmup_steps=2", "ema.warmup_steps=2",
        "sample.n=4", "sample.frames=2", "sample.animation=none", "method.sample_kwargs.k=2",
        "method.eval_kwargs.n_measure_samples=1", "evaluate.max_batches=1", "logger=csv"]
# through Slurm (Hydra's submitit launcher), one CPU per task
LAUNCH = ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1"]


def job_env(pace: float = 0.0, batches=None) -> dict[str, str]:
    """The environment of a command (and of the Slurm jobs it submits: sbatch exports it):
    this checkout's sources first, one thread; ``pace`` seconds of sleep per training step in a
    job's first run, ``batches``: a folder where each rank records its examples
    (tests/cluster/hooks/sitecustomize.py)."""
    src = str(ROOT / "src")
    path = [str(HERE / "hooks"), src] if pace or batches else [src]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]).rstrip(":"),
               BAYESGEN_TEST_STEP_SECONDS=str(pace), BAYESGEN_TEST_BATCHES=str(batches or ""))
    env.pop("BAYESGEN_RUN_DIR", None)
    return env


def submit(sweep: Path, *extra: str, pace: float = 0.0, batches=None,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    """``bayesgen train -m hydra/launcher=slurm`` of the tiny run into ``sweep`` (job 0 trains in
    ``sweep/0``), not waited for; ``env``: more variables for the command and its jobs."""
    return subprocess.Popen([BAYESGEN, "train", *LAUNCH, *TINY, f"hydra.sweep.dir={sweep}",
                             *extra], env={**job_env(pace, batches), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def job_id(sweep: Path, deadline: float) -> str:
    """The newest Slurm job that submitit submitted for ``sweep``."""
    while time.monotonic() < deadline:
        jobs = sorted((sweep / ".submitit").glob("[0-9]*"), key=lambda p: int(p.name))
        if jobs:
            return jobs[-1].name
        time.sleep(0.5)
    raise AssertionError("no job was submitted")


def finish(command: subprocess.Popen, deadline: float) -> str:
    """The output of a submitting command that returned 0 before ``deadline``."""
    try:
        out, _ = command.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        command.kill()
        raise AssertionError("the submitting command did not return") from None
    assert command.returncode == 0, out[-3000:]
    return out


def job_log(sweep: Path, job: str, task: str = "*") -> str:
    """A job's submitit logs (stdout and stderr) of every task, or of task ``task``."""
    return "".join(p.read_text() for p in
                   sorted((sweep / ".submitit" / job).glob(f"*_{task}_log.*")))


def batch_rows(path: Path) -> dict[int, list[str]]:
    """step -> hashes of the examples one rank trained on (hooks/sitecustomize.py's records)."""
    steps = {}
    for line in path.read_text().splitlines():
        step, *rows = line.split(",")
        steps[int(step)] = rows
    return steps
