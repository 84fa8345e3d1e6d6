"""The one Lightning task that trains, validates and tests every method.

A method is any module with ``train_loss(x, **model_kwargs) -> (B,)`` and
``elbo(x, **eval_kwargs, **model_kwargs) -> tuple`` whose second entry is bits per dimension.

Non-finite guard: a NaN or infinite training loss or gradient norm stops training with a
`NonFiniteError` naming the step and the quantity, before the optimizer step, so the weights
stay finite; ``skip_nonfinite=N`` skips up to N such batches instead (each one reported).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from bayesgen.training.checkpoint import NonFiniteError, config_to_text

DECAYED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def weight_decay_groups(module: nn.Module, only_layer_weights: bool) -> tuple[list, list]:
    """(decayed, not decayed) trainable parameters. With ``only_layer_weights`` only the
    weights of linear and convolution layers decay — biases, norms, embeddings and free
    parameters do not (nanoGPT's groups, which BFN's official text8 run uses); else all decay."""
    decay, no_decay, seen = [], [], set()
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            layer_weight = name == "weight" and isinstance(m, DECAYED_LAYERS)
            (decay if layer_weight or not only_layer_weights else no_decay).append(p)
    return decay, no_decay


def shard_blocks(net: nn.Module, shard, **kwargs) -> None:
    """``shard`` (FSDP2's ``fully_shard``) each child of ``net`` that holds weights — each
    element of a ``ModuleList``/``ModuleDict`` (a transformer's blocks), which is never called
    itself — then ``net`` for the rest."""
    for child in net.children():
        parts = child.values() if isinstance(child, nn.ModuleDict) else (
            child if isinstance(child, nn.ModuleList) else [child])
        for part in parts:
            if any(True for _ in part.parameters()):
                shard(part, **kwargs)
    shard(net, **kwargs)


class GenerativeTask(L.LightningModule):
    """Trains ``method.train_loss``; validates and tests with ``method.elbo`` (bits/dim)."""

    def __init__(
        self,
        method: nn.Module,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 1e-4,
        no_decay_on_norms_and_biases: bool = False,
        fused: bool = True,
        warmup_steps: int = 1000,
        lr_schedule: str = "constant",
        min_lr: float = 0.0,
        eval_kwargs: dict | None = None,
        num_labels: int = 0,
        label_dropout: float = 0.0,
        compile: bool = False,
        config: dict | None = None,
        skip_nonfinite: int = 0,
        augment: nn.Module | None = None,
    ):
        super().__init__()
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.lr_schedule must be constant or cosine, not {lr_schedule!r}")
        self.method = method
        self.lr, self.betas, self.weight_decay = lr, tuple(betas), weight_decay
        self.no_decay_on_norms_and_biases = no_decay_on_norms_and_biases
        self.fused = fused
        self.warmup_steps, self.lr_schedule, self.min_lr = warmup_steps, lr_schedule, min_lr
        self.eval_kwargs = dict(eval_kwargs or {})
        self.num_labels, self.label_dropout = num_labels, label_dropout
        self.compile = compile
        self.config = config or {}
        self.skip_nonfinite, self.skipped_nonfinite = skip_nonfinite, 0
        self.augment = augment  # images -> (images, augment_labels) for the net, in training
        self._compiled_loss = None
        # means over every evaluated example, summed across ranks (Lightning's sync_dist of a
        # batch-size-weighted mean truncates the summed example counts to integers)
        self.means = nn.ModuleDict({f"{split}_{key}": MeanMetric(nan_strategy="disable")
                                    for split in ("val", "test") for key in ("bpd", "loss")})

    # ---- conditioning -------------------------------------------------------------------
    def model_kwargs(self, y: Tensor, train: bool) -> dict[str, Any]:
        """Class labels for a conditional model; label −1 and dropped labels → the null label."""
        if not self.num_labels:
            return {}
        labels = torch.where(y < 0, torch.full_like(y, self.num_labels), y)
        if train and self.label_dropout > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
            labels = torch.where(drop, torch.full_like(labels, self.num_labels), labels)
        return {"class_labels": labels}

    # ---- steps ----------------------------------------------------------------------------
    def on_train_start(self) -> None:
        # all ranks were seeded alike (and DDP gave them rank 0's weights): a seed per rank makes
        # the times and noise that methods draw differ between the ranks' examples
        if self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def train_loss(self, x: Tensor, **kwargs) -> Tensor:
        if self.compile and self._compiled_loss is None:
            self._compiled_loss = torch.compile(self.method.train_loss)
        fn = self._compiled_loss or self.method.train_loss
        return fn(x, **kwargs)

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        x, y = batch  # the loss is averaged in float32, also under bf16-mixed autocast
        kwargs = self.model_kwargs(y, train=True)
        if self.augment is not None:
            x, kwargs["augment_labels"] = self.augment(x)
        try:
            loss = self.train_loss(x, **kwargs).float().mean()
        except ValueError as e:  # NaN data refused, or torch.distributions refusing NaN
            bad_data = x.is_floating_point() and not bool(torch.isfinite(x).all())
            if not bad_data and "invalid values" not in str(e):
                raise
            what = ("training data" if bad_data else
                    f"values inside {type(self.method).__name__}.train_loss")
            where = f"non-finite {what} at step {self.global_step} ({str(e).splitlines()[0]})"
            if self.trainer.world_size > 1:  # the other ranks cannot be told to skip
                raise NonFiniteError(where) from None
            self._skip_or_raise(where)
            return None
        if self._nonfinite(loss, "training loss"):
            return None  # Lightning skips backward and the optimizer step
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_before_optimizer_step(self, optimizer) -> None:
        """The guard on the gradient norm (before clipping); under fp16 mixed precision the
        gradient scaler handles infinite gradients itself."""
        if self._trainer is not None and "16-mixed" == str(self.trainer.precision):
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
        if self._nonfinite(norm, "gradient norm"):
            optimizer.zero_grad(set_to_none=True)  # the optimizer step updates nothing

    def _nonfinite(self, value: Tensor, quantity: str) -> bool:
        """Whether ``value`` is NaN/inf on any rank: raises unless a skip is left."""
        bad = not bool(torch.isfinite(value.detach()).all())
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return False
        self._skip_or_raise(f"non-finite {quantity} ({value.detach().float().cpu().item():g}) "
                            f"at step {self.global_step}")
        return True

    def _skip_or_raise(self, where: str) -> None:
        """Count a skipped batch (reported on one line), or raise when none is left."""
        if self.skipped_nonfinite >= self.skip_nonfinite:
            raise NonFiniteError(where)
        self.skipped_nonfinite += 1
        if self.global_rank == 0:
            print(f"{where}: batch skipped ({self.skipped_nonfinite} of "
                  f"trainer.skip_nonfinite={self.skip_nonfinite})", flush=True)

    def _evaluate(self, batch, split: str) -> None:
        x, y = batch
        kwargs = self.model_kwargs(y, train=False)
        with torch.autocast(self.device.type, enabled=False):  # evaluation runs in float32
            x = x.float() if x.is_floating_point() and x.dtype != torch.float64 else x
            bpd = self.method.elbo(x, **self.eval_kwargs, **kwargs)[1]
            loss = self.method.train_loss(x, **kwargs)
        for key, value in (("bpd", bpd), ("loss", loss)):
            mean = self.means[f"{split}_{key}"]
            mean.update(value.detach())
            self.log(f"{split}/{key}", mean, prog_bar=key == "bpd")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ---- optimisation -----------------------------------------------------------------
    def configure_model(self) -> None:
        """Under Lightning's ``ModelParallelStrategy`` (``trainer=fsdp2``): shard the network
        with FSDP2's ``fully_shard`` over the data-parallel mesh — each child block on its own,
        then the rest — so that every rank keeps 1/world of the weights and of Adam's state."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if self._trainer is None or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        from torch.distributed.fsdp import fully_shard

        net = self.method.model
        if not getattr(net, "_bayesgen_sharded", False):
            shard_blocks(net, fully_shard, mesh=self.device_mesh["data_parallel"])
            net._bayesgen_sharded = True

    def configure_optimizers(self):
        decay, no_decay = weight_decay_groups(self.method, self.no_decay_on_norms_and_biases)
        groups = [{"params": decay, "weight_decay": self.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=self.lr, betas=self.betas, fused=self.fused)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """Linear warm-up from 1e-8 over ``warmup_steps``, then constant or cosine to min_lr."""
        start = 1e-8 / self.lr
        if step < self.warmup_steps:
            return start + (1 - start) * step / self.warmup_steps
        if self.lr_schedule == "constant":
            return 1.0
        total = self.trainer.max_steps if self._trainer is not None else -1
        if total is None or total <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (total - self.warmup_steps))
        floor = self.min_lr / self.lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["bayesgen_config"] = config_to_text(self.config)  # YAML: plain text
        checkpoint["bayesgen_skipped_nonfinite"] = self.skipped_nonfinite

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skipped_nonfinite = int(checkpoint.get("bayesgen_skipped_nonfinite", 0))
