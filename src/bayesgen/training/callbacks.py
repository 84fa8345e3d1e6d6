"""Callbacks of the training engine."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, RichProgressBar


class SaveLastCheckpoint(Callback):
    """Writes ``last.ckpt`` when training ends — whatever ``max_steps`` is — and when it stops on
    an exception (Ctrl-C included), so that ``bayesgen train from_ckpt=RUN`` resumes from the
    step reached. Lightning writes checkpoints atomically (a temporary file, then a rename), so
    a kill mid-write leaves the previous ``last.ckpt`` intact. Must run before the EMA callback's
    ``on_train_end`` (which copies the averaged weights into the model)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        if trainer.global_step > 0:
            trainer.save_checkpoint(self.path)


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, labelled with the optimizer step out of ``max_steps``."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        return f"step {trainer.global_step}{total} (epoch {current_epoch})"
