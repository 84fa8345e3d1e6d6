"""Test-only pacing for the cluster tests (on PYTHONPATH only there): with
``BAYESGEN_TEST_STEP_SECONDS=S`` every training step of a job's *first* run sleeps S seconds
(a Slurm requeue sets ``SLURM_RESTART_COUNT`` and runs at full speed), so that a one-minute time
limit lands in the middle of training whatever the machine's speed."""

import importlib.abc
import importlib.util
import os
import sys
import time

SECONDS = float(os.environ.get("BAYESGEN_TEST_STEP_SECONDS") or 0)
TARGET = "bayesgen.training.task"


def _patch(module) -> None:
    step = module.GenerativeTask.training_step

    def paced(self, *args, **kwargs):
        time.sleep(SECONDS)
        return step(self, *args, **kwargs)

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


if SECONDS > 0 and os.environ.get("SLURM_RESTART_COUNT", "0") in ("", "0"):
    sys.meta_path.insert(0, _AfterImport())
