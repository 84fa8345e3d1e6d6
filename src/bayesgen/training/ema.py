"""Exponential moving average of the weights, on Lightning's WeightAveraging callback.

Lightning swaps the averaged weights in for validation and saves them as the checkpoint's
``state_dict`` (the raw weights under ``current_model_state``), so evaluation and sampling from
any checkpoint use the EMA weights. This subclass remembers whether the two are swapped, so a
checkpoint written while they are (during validation, or after training, when the model holds
the EMA) still has the EMA in ``state_dict`` and the raw weights in ``current_model_state``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor


class EMA(WeightAveraging):
    """EMA with one of two warm-ups.

    BSI's (default): the first ``warmup_steps`` updates copy the weights, then
    decay = min(max_decay, 1 − (step − warmup_steps)^(−power)).

    EDM's (``halflife_images`` set; EDM's and Inflationary Flows' training loops): the k-th
    update (k = 1, 2, …) uses decay 0.5^(B / h) with B the images per optimizer step (batch
    size × processes × accumulated batches) and half-life h = min(halflife_images,
    rampup_ratio·(k − 1)·B) images, so the first update copies and the half-life grows with
    the images seen until it reaches ``halflife_images`` (no ramp-up with ``rampup_ratio`` None).
    """

    def __init__(self, decay: float = 0.9999, warmup_steps: int = 1000, power: float = 2 / 3,
                 halflife_images: float | None = None, rampup_ratio: float | None = None):
        if not 0 <= decay < 1:
            raise ValueError(f"ema.decay must lie in [0, 1), got {decay}")
        if halflife_images is not None and halflife_images <= 0:
            raise ValueError(f"ema.halflife_images must be positive, got {halflife_images}")
        if rampup_ratio is not None and rampup_ratio <= 0:
            raise ValueError(f"ema.rampup_ratio must be positive or null, got {rampup_ratio}")
        self.max_decay, self.warmup_steps, self.power = decay, warmup_steps, power
        self.halflife_images, self.rampup_ratio = halflife_images, rampup_ratio
        self.images_per_step: int | None = None
        super().__init__(use_buffers=True, avg_fn=self.average)
        self.swapped = False  # True while the model holds the EMA and the average the raw weights

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.halflife_images is not None and stage == "fit":
            dm = trainer.datamodule
            if dm is None or not hasattr(dm, "batch_size"):
                raise ValueError("ema.halflife_images needs the images per step: train with a "
                                 "bayesgen DataModule")
            self.images_per_step = (dm.batch_size * trainer.world_size
                                    * trainer.accumulate_grad_batches)

    def decay_at(self, step: Tensor) -> Tensor:
        """The decay for the ``step``-th update (1-based)."""
        if self.halflife_images is not None:
            if self.images_per_step is None:
                raise RuntimeError("EMA.decay_at before setup: images per step unknown")
            b = float(self.images_per_step)
            seen = (step - 1).clamp_min(0).double() * b
            half = seen.new_full((), float(self.halflife_images))
            if self.rampup_ratio is not None:
                half = half.minimum(self.rampup_ratio * seen)
            return 0.5 ** (b / half.clamp_min(1e-8))
        after = (step - self.warmup_steps).clamp_min(1).double()
        decay = (1 - after ** (-self.power)).clamp(max=self.max_decay)
        return decay.where(step > self.warmup_steps, decay.new_zeros(()))

    def average(self, averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        decay = self.decay_at(num_averaged + 1).to(averaged.dtype)
        return decay * averaged + (1 - decay) * current

    def _swap_models(self, pl_module: L.LightningModule) -> None:
        super()._swap_models(pl_module)
        self.swapped = not self.swapped

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The model takes the EMA weights (for the outputs written after training); the raw
        ones stay in the average's place, so a checkpoint written now still holds both."""
        if self._average_model is not None and not self.swapped:
            self._swap_models(pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        if self.swapped and "current_model_state" in checkpoint:
            checkpoint["state_dict"], checkpoint["current_model_state"] = (
                checkpoint["current_model_state"], checkpoint["state_dict"])
