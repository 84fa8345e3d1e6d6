"""Callbacks of the training engine: checkpoints between steps, exact resume, graceful stops.

A checkpoint is only ever taken *between* optimizer steps — after a step's logging and
validation, before the next step draws anything — so resuming from it repeats nothing and skips
nothing: `BoundaryCheckpoint` writes the periodic ones there, `GracefulStop` turns Ctrl-C,
SIGTERM and Slurm's requeue signal into a checkpoint there, and `ExactResume` stores the random
number generators with it and restores them just before the first resumed step.
"""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, RichProgressBar


class SaveLastCheckpoint(Callback):
    """Writes ``last.ckpt`` when training ends, whatever ``max_steps`` is. Nothing is written
    when training stops on an error: an error can strike in the middle of a step, where weights,
    EMA and counters disagree; the newest checkpoint written between steps stays ``last.ckpt``
    (see `GracefulStop` for Ctrl-C and SIGTERM)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path)


class BoundaryCheckpoint(ModelCheckpoint):
    """Lightning's `ModelCheckpoint`, except that the checkpoint of step ``s`` (every
    ``every_n_train_steps``) is written when step ``s + 1`` starts — after step ``s``'s metrics
    are logged and its validation has run — or when training ends. Lightning's own writes it
    before both, so a run killed during that validation lost it on resume."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.global_step > 0:  # resumed from a checkpoint of this step: it exists
            self._last_global_step_saved = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pass  # see on_train_batch_start

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, None, batch, batch_idx)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_batch_end(trainer, pl_module, None, None, 0)
        super().on_train_end(trainer, pl_module)


def rng_state() -> dict[str, Any]:
    """Every random number generator a run draws from, as tensors and plain values (so that a
    ``weights_only`` load reads them): torch (CPU and each CUDA device), numpy, Python."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


class ExactResume(Callback):
    """Makes a checkpoint written between steps resume exactly.

    It stores the RNG states and restores them right before the first resumed step, after the
    data loader has started, so that a resumed run draws the same times, noise and label
    dropout as an uninterrupted one (the data order is the data module's ``state_dict``). And it
    records the loop counters as "step ``s`` complete": Lightning's own restart logic expects a
    checkpoint from the end of a step, before its logging and validation, and would otherwise
    shift the validation schedule by one step, skip the validation due after the first resumed
    step, and offset the logged step numbers."""

    def __init__(self):
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Every rank's generators: the checkpoint is written by rank 0 alone, and a rank that
        resumed with rank 0's state would draw rank 0's times and noise."""
        mine = rng_state()
        state: dict[str, Any] = {"rng": mine}
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            every: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(every, mine)
            state["rng_per_rank"] = every
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._pending is None:
            return
        per_rank = self._pending.get("rng_per_rank") or []
        same_world = len(per_rank) == trainer.world_size
        set_rng_state(per_rank[trainer.global_rank] if same_world else self._pending["rng"])
        if not same_world and trainer.world_size > 1:  # another world size: distinct draws
            torch.manual_seed(int(self._pending["rng"]["torch"][:8].sum()) + trainer.global_rank)
        if "batches_that_stepped" in self._pending:  # Lightning's restart may have moved it
            trainer.fit_loop.epoch_loop._batches_that_stepped = \
                self._pending["batches_that_stepped"]
        self._pending = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        epoch_loop = trainer.fit_loop.epoch_loop
        checkpoint["callbacks"][self.state_key]["batches_that_stepped"] = \
            epoch_loop._batches_that_stepped
        loops = checkpoint.get("loops", {}).get("fit_loop", {})
        saved = loops.get("epoch_loop.batch_progress")
        if saved is None:
            return
        progress = epoch_loop.batch_progress.total
        if progress.ready == progress.completed + 1 == progress.started + 1:  # between steps
            for part in ("total", "current"):  # the next batch was fetched, not started
                saved[part]["ready"] = saved[part]["started"] = saved[part]["completed"]
            saved["is_last_batch"] = False
        epochs = loops.get("epoch_progress")
        cut_short = epoch_loop.batch_progress.current.completed < trainer.num_training_batches
        if trainer.fit_loop.done and cut_short and epochs is not None:
            # training ended at max_steps in the middle of an epoch, which Lightning marks as
            # finished; resuming with a larger max_steps continues that epoch instead
            for part in ("total", "current"):
                epochs[part]["processed"] = epochs[part]["completed"] = epochs[part]["started"] - 1


class StopRequested(KeyboardInterrupt):
    """Training stopped on a signal, at a point between steps, after writing ``last.ckpt``."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class GracefulStop(Callback):
    """Ctrl-C or SIGTERM during training: the step and validation in progress finish, then
    ``last.ckpt`` is written and training stops (`StopRequested`); the same signal again stops
    at once, keeping the newest checkpoint. Slurm's requeue signal (SIGUSR1, Lightning's
    auto-requeue) is deferred to that point too, so its ``hpc_ckpt_<n>.ckpt`` is consistent.
    Under DDP the ranks agree to stop at the same step."""

    def __init__(self, last_path: str | Path, say: Callable[[str], None] = print):
        self.last_path = Path(last_path)
        self.say = say
        self.requested: int | None = None
        self.requeue: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signum
        self.say(f"received {signal.Signals(signum).name}: stopping after the current step "
                 "(send it again to stop at once)")

    def _defer(self, signum: int, frame) -> None:
        self.requeue = signum

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        usr1 = signal.getsignal(signal.SIGUSR1)
        if callable(usr1):  # Lightning's Slurm handler: save hpc_ckpt and requeue
            self._previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, self._defer)
        # a warning that came during the start (held by `hold_requeue_signal`) arrives now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.requeue is not None and signal.SIGUSR1 in self._previous:
            signum, self.requeue = self.requeue, None
            self._previous[signal.SIGUSR1](signum, None)
        stop = self.requested is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.save_checkpoint(self.last_path)
            self.stopped_at = trainer.global_step
            raise StopRequested(self.requested or signal.SIGTERM)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self._restore()


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, labelled with the optimizer step out of ``max_steps``."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        return f"step {trainer.global_step}{total} (epoch {current_epoch})"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        """Lightning sets the label once per epoch; a run shorter than its epoch would show
        ``step 0/N`` throughout, so the label follows every step."""
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id,
                                 description=self._get_train_description(trainer.current_epoch))
