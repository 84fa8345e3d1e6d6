"""A real one-machine Slurm cluster (tests/cluster/start_slurm.sh) for the tests marked
``cluster``; they skip, with the script's reason, where it cannot start (no root, no apt)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def job_env(pace: float = 0.0) -> dict[str, str]:
    """The environment of a command (and of the Slurm jobs it submits: sbatch exports it):
    this checkout's sources first, one thread; ``pace`` seconds of sleep per training step in a
    job's first run (tests/cluster/pace/sitecustomize.py)."""
    src = str(ROOT / "src")
    path = [str(HERE / "pace"), src] if pace else [src]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([*path, os.environ.get("PYTHONPATH", "")]).rstrip(":"),
               BAYESGEN_TEST_STEP_SECONDS=str(pace))
    env.pop("BAYESGEN_RUN_DIR", None)
    return env


@pytest.fixture(scope="session")
def slurm():
    """Start the cluster (unless it already runs), yield its environment, stop what was started."""
    home = os.environ.get("SLURM_HOME", "/tmp/bayesgen-slurm")
    conf = Path(home) / "slurm.conf"
    running = conf.is_file() and subprocess.run(
        ["scontrol", "ping"], env=dict(os.environ, SLURM_CONF=str(conf)), capture_output=True,
        text=True).stdout.count("UP") > 0 if _which("scontrol") else False
    start = subprocess.run(["bash", str(HERE / "start_slurm.sh")], capture_output=True, text=True,
                           env=dict(os.environ, SLURM_HOME=home))
    if start.returncode != 0:
        pytest.skip((start.stderr.strip().splitlines() or ["start_slurm.sh failed"])[-1])
    os.environ["SLURM_CONF"] = str(conf)
    yield {"SLURM_CONF": str(conf), "SLURM_HOME": home}
    if not running:
        subprocess.run(["bash", str(HERE / "stop_slurm.sh")], capture_output=True,
                       env=dict(os.environ, SLURM_HOME=home))


def _which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None
