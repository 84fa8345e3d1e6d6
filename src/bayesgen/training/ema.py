"""Exponential moving average of the weights, on Lightning's WeightAveraging callback.

Lightning swaps the averaged weights in for validation, saves them as the checkpoint's
``state_dict`` (the raw weights under ``current_model_state``) and copies them into the model
when training ends, so evaluation and sampling from any checkpoint use the EMA weights.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor


class EMA(WeightAveraging):
    """EMA whose decay warms up as in the BSI reference: the first ``warmup_steps`` updates copy
    the weights, then decay = min(max_decay, 1 − (step − warmup_steps)^(−power))."""

    def __init__(self, decay: float = 0.9999, warmup_steps: int = 1000, power: float = 2 / 3):
        if not 0 <= decay < 1:
            raise ValueError(f"ema.decay must lie in [0, 1), got {decay}")
        self.max_decay, self.warmup_steps, self.power = decay, warmup_steps, power
        super().__init__(use_buffers=True, avg_fn=self.average)

    def decay_at(self, step: Tensor) -> Tensor:
        """The decay for the ``step``-th update (1-based)."""
        after = (step - self.warmup_steps).clamp_min(1).double()
        decay = (1 - after ** (-self.power)).clamp(max=self.max_decay)
        return decay.where(step > self.warmup_steps, decay.new_zeros(()))

    def average(self, averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        decay = self.decay_at(num_averaged + 1).to(averaged.dtype)
        return decay * averaged + (1 - decay) * current
