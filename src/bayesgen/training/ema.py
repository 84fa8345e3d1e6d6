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
import torch
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
        self._learn_images_per_step(trainer, stage)

    def _learn_images_per_step(self, trainer, stage: str) -> None:
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


def _local(t: Tensor) -> Tensor:
    """The part of ``t`` this rank holds: a DTensor's local shard (a view), else ``t``."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _shard_like(full: Tensor, like: Tensor) -> Tensor:
    """This rank's part of the full tensor ``full``, sharded as ``like`` is (no communication:
    every rank holds the full tensor)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor):
        return full
    return distribute_tensor(full.to(like.device, like.dtype), like.device_mesh, like.placements,
                             src_data_rank=None).to_local()


class ShardedEMA(EMA):
    """The same EMA (schedule, swaps, checkpoint layout) for sharded weights (FSDP2's
    ``fully_shard``, ``trainer=fsdp2``), without deep-copying the model, which FSDP refuses.

    Each rank averages its own shards of the weights: the EMA is elementwise, so the shards of
    the average are the average of the shards, and every rank keeps 1/world of the EMA. The
    checkpoint holds the gathered EMA as ``state_dict`` and the raw weights as
    ``current_model_state`` (with ``averaging_state.n_averaged``), as the unsharded EMA writes
    it, so a checkpoint resumes on any number of processes, with or without sharding, and
    evaluation and sampling read the EMA from it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._shadow: dict[str, Tensor] | None = None  # name -> this rank's shard of the EMA
        self._n_averaged = 0

    @property
    def state_key(self) -> str:
        return "EMA"  # the unsharded EMA's: a checkpoint resumes with either, both ways

    def setup(self, trainer, pl_module, stage: str) -> None:
        """No copy of the model here (it is not sharded yet): the EMA's shards are made at the
        first update (or when a checkpoint is loaded)."""
        self._learn_images_per_step(trainer, stage)
        self._fitting = stage == "fit"

    @staticmethod
    def _tensors(pl_module: L.LightningModule) -> dict[str, Tensor]:
        """The module's parameters and buffers by name, in AveragedModel's order."""
        return {**dict(pl_module.named_parameters()), **dict(pl_module.named_buffers())}

    def _ready(self, pl_module: L.LightningModule) -> dict[str, Tensor]:
        """The EMA's shards, made (as copies of the weights) once the model is sharded."""
        if self._shadow is None:
            self._shadow = {k: _local(v).detach().clone()
                            for k, v in self._tensors(pl_module).items()}
        return self._shadow

    @torch.no_grad()
    def _update(self, pl_module: L.LightningModule) -> None:
        shadow = self._ready(pl_module)
        n = torch.tensor(self._n_averaged)
        for name, t in self._tensors(pl_module).items():
            cur = _local(t).detach()
            if self._n_averaged == 0:
                shadow[name].copy_(cur)
            else:  # the unsharded EMA's arithmetic, on the local elements
                shadow[name].copy_(self.average(shadow[name], cur, n))
        self._n_averaged += 1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step_idx = trainer.global_step - 1
        if trainer.global_step > self._latest_update_step and self.should_update(step_idx):
            self._update(pl_module)
            self._latest_update_step = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass  # updates after optimizer steps only (should_update(epoch_idx=...) is False)

    @torch.no_grad()
    def _swap_models(self, pl_module: L.LightningModule) -> None:
        shadow = self._ready(pl_module)
        for name, t in self._tensors(pl_module).items():
            cur = _local(t)
            tmp = cur.detach().clone()
            cur.detach().copy_(shadow[name])
            shadow[name].copy_(tmp)
        self.swapped = not self.swapped

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if getattr(self, "_fitting", False):
            self._swap_models(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if getattr(self, "_fitting", False):
            self._swap_models(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.swapped:
            self._swap_models(pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Gather the EMA (a collective: every rank calls this) into ``state_dict``, in the
        layout of the unsharded EMA (rank 0's copy is the one written)."""
        if self._shadow is None:
            return
        from torch.distributed.tensor import DTensor

        tensors, keys = self._tensors(pl_module), pl_module.state_dict().keys()
        full = {}
        for name, t in tensors.items():
            local = self._shadow[name]
            if isinstance(t, DTensor):
                local = DTensor.from_local(local, t.device_mesh, t.placements, shape=t.shape,
                                           stride=t.stride()).full_tensor()
            if name in keys:
                full[name] = local.detach().cpu().clone()
        checkpoint["current_model_state"] = checkpoint["state_dict"]
        checkpoint["state_dict"] = full
        checkpoint["averaging_state"] = {"n_averaged": torch.tensor(self._n_averaged)}
        if self.swapped:
            checkpoint["state_dict"], checkpoint["current_model_state"] = (
                checkpoint["current_model_state"], checkpoint["state_dict"])

    @torch.no_grad()
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        """Each rank takes its shards of the EMA and of the raw weights from the full ones. The
        strategy has loaded ``state_dict`` (the EMA) into the sharded model already and taken it
        out of ``checkpoint`` (Lightning's ModelParallelStrategy pops it), so the EMA's shards
        come from the model, then the model gets the raw weights."""
        if not getattr(self, "_fitting", False):
            return
        tensors = self._tensors(pl_module)
        shadow = self._ready(pl_module)
        ema = checkpoint.get("state_dict")
        for name, t in tensors.items():  # the EMA (or, without one, the weights) first
            shadow[name].copy_(_shard_like(ema[name], t) if ema is not None and name in ema
                               else _local(t).detach())
        if "current_model_state" in checkpoint and "averaging_state" in checkpoint:
            raw = checkpoint["current_model_state"]
            for name, t in tensors.items():
                if name in raw:
                    _local(t).detach().copy_(_shard_like(raw[name], t))
            self._n_averaged = int(checkpoint["averaging_state"]["n_averaged"])
        else:  # a checkpoint without EMA: both start from its weights, the first update copies
            self._n_averaged = 0
