"""Test-only hooks of the cluster tests (on PYTHONPATH only there), around each training step:

- ``BAYESGEN_TEST_STEP_SECONDS=S``: every step of a job's *first* run sleeps S seconds (a Slurm
  requeue sets ``SLURM_RESTART_COUNT`` and runs at full speed), so that a one-minute time limit
  lands in the middle of training whatever the machine's speed;
- ``BAYESGEN_TEST_BATCHES=DIR``: each rank appends ``step,hash-of-each-example`` lines to
  ``DIR/rank<R>.txt``, to check that the ranks see distinct shards of each batch.
"""

import importlib.abc
import importlib.util
import os
import sys
import time

SECONDS = float(os.environ.get("BAYESGEN_TEST_STEP_SECONDS") or 0)
if os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0"):
    SECONDS = 0.0
BATCHES = os.environ.get("BAYESGEN_TEST_BATCHES")
TARGET = "bayesgen.training.task"


def _patch(module) -> None:
    step = module.GenerativeTask.training_step

    def paced(self, batch, *args, **kwargs):
        time.sleep(SECONDS)
        if BATCHES:
            import hashlib

            rows = [hashlib.sha1(x.numpy().tobytes()).hexdigest()[:12] for x in batch[0].cpu()]
            with open(os.path.join(BATCHES, f"rank{self.global_rank}.txt"), "a") as f:
                f.write(f"{self.global_step}," + ",".join(rows) + "\n")
        return step(self, batch, *args, **kwargs)

    module.GenerativeTask.training_step = paced


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if SECONDS > 0 or BATCHES:
    sys.meta_path.insert(0, _AfterImport())
