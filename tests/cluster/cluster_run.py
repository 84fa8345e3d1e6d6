"""What the cluster tests share: the tiny run, the commands, their environment."""

import os
import sys
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
