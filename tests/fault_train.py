"""`bayesgen train` with a fault injected at an exact point, for tests/test_faults.py.

    python tests/fault_train.py FAULT [overrides ...]

FAULT is ``none`` or ``SIGNAL@WHERE:STEP[xN]``: SIGNAL is ``kill`` (SIGKILL), ``term`` or
``int``; WHERE is ``step`` (after the backward pass of the step that follows global step STEP,
before its optimizer step) or ``val`` (at the second validation batch after global step STEP);
``xN`` sends the signal N times. Exits like ``bayesgen train``.
"""

import os
import signal
import sys

from lightning.pytorch.callbacks import Callback

SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}


class Fault(Callback):
    def __init__(self, spec: str):
        name, rest = spec.split("@")
        self.where, step = rest.split(":")
        self.times = 1
        if "x" in step:
            step, times = step.split("x")
            self.times = int(times)
        self.signal, self.step, self.fired = SIGNALS[name], int(step), False

    def _fire(self) -> None:
        if not self.fired:
            self.fired = True
            for _ in range(self.times):
                os.kill(os.getpid(), self.signal)

    def on_after_backward(self, trainer, pl_module):
        if self.where == "step" and trainer.global_step == self.step:
            self._fire()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.where == "val" and trainer.global_step == self.step and batch_idx == 1:
            self._fire()


def main() -> int:
    from bayesgen.cli import main as cli_main
    from bayesgen.training.build import compose_config
    from bayesgen.training.fit import run_training

    fault, overrides = sys.argv[1], sys.argv[2:]
    if fault == "none":
        return cli_main(["train", *overrides])
    run_training(compose_config(overrides), callbacks=[Fault(fault)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
