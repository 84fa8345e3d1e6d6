"""What training shows: the loggers (``logger=csv|tensorboard|wandb|none``, or a list), the
configuration as hyperparameters, the learning rate, the gradient norm, throughput, and a
picture of samples at each validation."""

from __future__ import annotations

import math
import secrets
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from bayesgen import viz
from bayesgen.extras import MissingDependency, require
from bayesgen.training.metrics_csv import AppendingCSVLogger

LOGGERS = ("csv", "tensorboard", "wandb")


def logger_names(value: Any) -> list[str]:
    """``logger=`` as a list of names: one name, a list, or none (``none``, null, ``[]``)."""
    if value is None:
        return []
    names = [value] if isinstance(value, str) else list(value)
    names = [str(n).strip().lower() for n in names]
    if names in (["none"], ["false"]):
        return []
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise ValueError(f"unknown logger {unknown[0]!r}; logger= takes {', '.join(LOGGERS)}, "
                         "none, or a list such as logger=[csv,tensorboard]")
    return list(dict.fromkeys(names))


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    """The loggers that ``cfg.logger`` names, writing into ``run_dir``: ``logs/metrics.csv``,
    ``tensorboard/``, ``wandb/`` (W&B's run id is kept in ``wandb_id.txt``, so that a resumed
    run continues the same W&B run)."""
    loggers: list[Logger] = []
    for name in logger_names(cfg.get("logger", ["csv", "tensorboard"])):
        if name == "csv":
            loggers.append(AppendingCSVLogger(run_dir, name="logs", version=""))
        elif name == "tensorboard":
            loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version="",
                                             default_hp_metric=False))
        else:
            loggers.append(_wandb_logger(cfg, run_dir))
    return loggers


def _wandb_logger(cfg: DictConfig, run_dir: Path) -> Logger:
    require("wandb", "wandb", "logger=wandb")
    from lightning.pytorch.loggers import WandbLogger

    opts = OmegaConf.to_container(cfg.get("wandb") or {}, resolve=True)
    id_file = run_dir / "wandb_id.txt"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
        if rank_zero_only.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
    return WandbLogger(name=opts.pop("name", None) or f"{cfg.name}/{run_dir.name}",
                       save_dir=str(run_dir), id=run_id, resume="allow",
                       project=opts.pop("project", None) or "bayesgen", **opts)


def monitor_callbacks(cfg: DictConfig, loggers: list[Logger], sharded: bool,
                      run_dir: Path | None = None) -> list[Callback]:
    """Learning rate, gradient norm, throughput, the configuration as hyperparameters and (to
    loggers that show pictures) samples at each validation; nothing without a logger. The
    quality of samples during training (`QualityDuringTraining`, printed too) with
    ``evaluate.quality`` unless ``evaluate.quality_every=0``."""
    quality = quality_callback(cfg, run_dir) if run_dir is not None and not sharded else None
    if not loggers:
        return [quality] if quality else []
    every = int(cfg.trainer.get("log_every_n_steps") or 50)
    cbs: list[Callback] = [LearningRateMonitor(logging_interval="step"),
                           Throughput(every), LogConfig(OmegaConf.to_container(cfg, resolve=True))]
    if not sharded:  # under FSDP each rank holds a shard of the gradients and weights
        cbs.append(GradNorm(every))
        n = int(cfg.get("log_samples", {}).get("n", 0) or 0)
        if n > 0 and any(_shows_pictures(lg) for lg in loggers):
            kwargs = OmegaConf.to_container(cfg.method.get("sample_kwargs") or {}, resolve=True)
            cbs.append(ValidationSamples(n, kwargs, seed=int(cfg.seed)))
    return cbs + ([quality] if quality else [])


def quality_callback(cfg: DictConfig, run_dir: Path) -> QualityDuringTraining | None:
    """`QualityDuringTraining` from ``evaluate.quality``, ``quality_every`` (null: each
    validation; N: the first validation after every N steps; 0: never), ``quality_n`` and
    ``quality_fid_ref``; None when off."""
    ev = cfg.get("evaluate") or {}
    every = ev.get("quality_every")
    if not ev.get("quality") or every == 0:
        return None
    kwargs = OmegaConf.to_container(cfg.method.get("sample_kwargs") or {}, resolve=True)
    return QualityDuringTraining(int(ev.get("quality_n") or 64), kwargs,
                                 None if every is None else int(every), run_dir,
                                 seed=int(cfg.seed), fid_ref=ev.get("quality_fid_ref"))


def _shows_pictures(logger: Logger) -> bool:
    return isinstance(logger, TensorBoardLogger) or type(logger).__name__ == "WandbLogger"


def _log(trainer: L.Trainer, metrics: dict[str, float], step: int,
         csv: bool = True) -> None:
    """Straight to the loggers, at ``step`` counted as Lightning counts it for the loss (the
    index of the optimizer step, from 0); ``csv=False`` leaves out ``logs/metrics.csv``."""
    for logger in trainer.loggers:
        if csv or not isinstance(logger, CSVLogger):
            logger.log_metrics(metrics, step=step)


def flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}`` (the override syntax); lists and
    None become strings, so that every logger accepts them."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, name + ".")
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        else:
            out[name] = str(value)
    return out


class LogConfig(Callback):
    """The resolved configuration, flattened, as the run's hyperparameters (TensorBoard's
    HPARAMS tab, W&B's config, ``logs/hparams.yaml``), so that runs can be compared."""

    def __init__(self, config: dict):
        self.params = flatten({k: v for k, v in config.items() if k != "hydra"})

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            logger.log_hyperparams(self.params)
            if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
                self._tensorboard_hparams(logger)

    def _tensorboard_hparams(self, logger: TensorBoardLogger) -> None:
        """The HPARAMS tab's table with the bits/dim columns. (Lightning writes it only
        together with a metric value at step 0; this writes no value.)"""
        from torch.utils.tensorboard.summary import hparams

        writer = logger.experiment._get_file_writer()  # as SummaryWriter.add_hparams does
        for summary in hparams(self.params, {"val/bpd": 0.0, "test/bpd": 0.0}):
            writer.add_summary(summary)


class GradNorm(Callback):
    """``train/grad_norm``: the global L2 norm of the gradients before clipping, every
    ``every`` optimizer steps."""

    def __init__(self, every: int):
        self.every = max(1, every)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer) -> None:
        step = trainer.global_step  # this optimizer step's index; logged with the loss's
        if (step + 1) % self.every:
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads])
            _log(trainer, {"train/grad_norm": torch.linalg.vector_norm(norms).item()}, step)


class Throughput(Callback):
    """``throughput/steps_per_sec`` and ``throughput/examples_per_sec`` (all ranks together)
    over the last ``every`` optimizer steps, validation excluded. Not in ``logs/metrics.csv``:
    a resumed run's CSV history equals the uninterrupted run's, and wall-clock rates cannot."""

    def __init__(self, every: int):
        self.every = max(1, every)
        self._start: float | None = None
        self._steps = self._examples = 0

    def _restart(self) -> None:
        self._start, self._steps, self._examples = None, 0, 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        if self._start is None:
            self._start, self._step0 = time.perf_counter(), trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs,
                           batch, batch_idx: int) -> None:
        if self._start is None:
            return
        self._examples += len(batch[0]) * trainer.world_size
        steps = trainer.global_step - self._step0
        if steps and trainer.global_step % self.every == 0:
            seconds = max(time.perf_counter() - self._start, 1e-9)
            _log(trainer, {"throughput/steps_per_sec": steps / seconds,
                           "throughput/examples_per_sec": self._examples / seconds},
                 trainer.global_step - 1, csv=False)
            self._restart()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restart()  # the steps before validation are dropped; the clock restarts after


class ValidationSamples(Callback):
    """At the end of each validation (EMA weights in place), ``n`` samples drawn with a fixed
    seed: an image grid, a scatter plot for 2-D/3-D data, or text, logged as ``val/samples``
    to TensorBoard and W&B."""

    def __init__(self, n: int, sample_kwargs: dict | None = None, seed: int = 0):
        self.n, self.sample_kwargs, self.seed = n, dict(sample_kwargs or {}), seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        method = pl_module.method
        info = getattr(trainer.datamodule, "info", None)
        if trainer.sanity_checking or not trainer.is_global_zero or info is None or not callable(
                getattr(method, "sample", None)):  # the task needs train_loss and elbo only
            return
        from bayesgen.training.outputs import sample_labels

        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        with torch.no_grad(), torch.autocast(pl_module.device.type, enabled=False):
            x = method.sample(self.n, generator=gen, **self.sample_kwargs,
                              **sample_labels(pl_module, self.n))
        if info.kind == "text" and info.decode is not None:
            text = "\n\n".join(info.decode(row) for row in x.cpu())
            self._log_text(trainer, text)
            return
        picture = sample_picture(x, info)
        if picture is not None:
            self._log_picture(trainer, picture)

    @staticmethod
    def _log_picture(trainer: L.Trainer, picture: np.ndarray) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/samples", picture, trainer.global_step,
                                            dataformats="HWC")
            elif type(logger).__name__ == "WandbLogger":
                logger.log_image("val/samples", [picture], step=trainer.global_step)

    @staticmethod
    def _log_text(trainer: L.Trainer, text: str) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("val/samples", f"```\n{text}\n```",
                                           trainer.global_step)
            elif type(logger).__name__ == "WandbLogger":
                logger.log_text("val/samples", columns=["sample"],
                                data=[[t] for t in text.split("\n\n")], step=trainer.global_step)


def sample_picture(x: torch.Tensor, info) -> np.ndarray | None:
    """An (H, W, 3) uint8 picture of samples: an image grid, or a scatter plot of 2-D/3-D
    data (None for other flat data)."""
    if info.kind == "image":
        return viz.image_grid(viz.to_unit_images(x, getattr(info, "num_classes", None)))
    if x.ndim == 2 and x.shape[1] in (2, 3) and math.prod(x.shape) > 0:
        try:
            return viz.scatter(x, title="samples", lims=(-3.5, 3.5))
        except MissingDependency:  # matplotlib is optional (bayesgen[plots])
            return None
    return None


class QualityDuringTraining(Callback):
    """Sample quality watched during training (``evaluate.quality=true``): at the end of a
    validation (EMA weights in place) — each one, or the first after every
    ``evaluate.quality_every`` steps — ``n`` samples drawn with a fixed seed and the run's
    sampler are scored by the data set's offline classifier (classifier FD, confident share;
    ``bayesgen.metrics.quality``) and, when ``evaluate.quality_fid_ref`` names FID reference
    statistics and the Inception weights are found, by FID of those ``n`` samples. The scores go
    to every logger as ``quality/fd``, ``quality/confident_share`` (``quality/fid``), the grid
    to TensorBoard and W&B as ``quality/samples`` and to ``<run>/logs/quality/step<N>.png``.

    The samples use their own generator and the classifier is trained (once per machine) under
    a forked RNG, so a run's training is the same with and without this callback."""

    def __init__(self, n: int, sample_kwargs: dict, every: int | None, run_dir: Path,
                 seed: int = 0, fid_ref: str | None = None, say=print):
        self.n, self.sample_kwargs, self.every, self.seed = n, dict(sample_kwargs), every, seed
        self.run_dir, self.fid_ref, self.say = Path(run_dir), fid_ref, say
        self.scorer: Any = None
        self.fid: Any = None
        self.last_step: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.datamodule is None:
            return
        from bayesgen.metrics.summary import quality_scorer, sampler_of

        with torch.random.fork_rng(devices=[]):
            self.scorer = quality_scorer(trainer.datamodule, say=self.say)
        if self.fid_ref:
            self.fid = _FidOfBatch(self.fid_ref)
        if self.scorer is None and self.fid is None:
            self.say(f"quality during training: no classifier for data set "
                     f"{trainer.datamodule.info.name!r} and no evaluate.quality_fid_ref; off")
            return
        steps = ", ".join(f"{k}={v}" for k, v in self.sample_kwargs.items() if k in (
            "k", "n_steps"))
        when = "each validation" if not self.every else f"every {self.every} steps"
        scores = " and ".join(s for s, on in (("the classifier", self.scorer), (
            f"FID against {self.fid_ref}", self.fid)) if on)
        sampler = sampler_of(pl_module.method, self.sample_kwargs)
        self.say(f"quality during training: {self.n} samples (sampler={sampler}"
                 f"{', ' + steps if steps else ''}) at {when}, scored by {scores}")

    def due(self, step: int) -> bool:
        """Whether the validation at ``step`` scores samples."""
        if not self.every:
            return True
        return self.last_step is None or step - self.last_step >= self.every

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.sanity_checking or not trainer.is_global_zero
                or (self.scorer is None and self.fid is None)
                or not self.due(trainer.global_step)):
            return
        from bayesgen.training.outputs import sample_labels

        self.last_step = step = trainer.global_step
        info = trainer.datamodule.info
        start = time.perf_counter()
        gen = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        with torch.no_grad(), torch.autocast(pl_module.device.type, enabled=False):
            x = pl_module.method.sample(self.n, generator=gen, **self.sample_kwargs,
                                        **sample_labels(pl_module, self.n))
        metrics: dict[str, float] = {}
        if self.scorer is not None:
            score = self.scorer.score(x, info)
            metrics |= {"quality/fd": float(score["fd"]),
                        "quality/confident_share": float(score["confident_share"])}
        if self.fid is not None:
            metrics["quality/fid"] = self.fid(x, info)
        seconds = time.perf_counter() - start
        metrics["quality/seconds"] = seconds
        _log(trainer, metrics, step - 1)  # the row of the validation's val/bpd
        picture = sample_picture(x, info)
        if picture is not None:
            from PIL import Image

            folder = self.run_dir / "logs" / "quality"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(folder / f"step{step}.png")
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image("quality/samples", picture, step,
                                                dataformats="HWC")
                elif type(logger).__name__ == "WandbLogger":
                    logger.log_image("quality/samples", [picture], step=step)
        shown = []
        if "quality/fd" in metrics:
            shown.append(f"classifier FD {metrics['quality/fd']:.2f}, "
                         f"{100 * metrics['quality/confident_share']:.0f}% confident")
        if "quality/fid" in metrics:
            shown.append(f"FID-{self.n} {metrics['quality/fid']:.2f}")
        trainer.print(f"step {step}: {'; '.join(shown)} ({self.n} samples, {seconds:.1f} s)")


class _FidOfBatch:
    """FID of a batch of samples against saved reference statistics (``bayesgen fid ref``),
    with the Inception-v3 network from its configured weights (``bayesgen.metrics.fid``)."""

    def __init__(self, ref: str, extractor=None):
        from bayesgen.metrics.fid import InceptionFeatures, load_statistics

        self.mu, self.sigma = load_statistics(ref)
        self.extractor = extractor if extractor is not None else InceptionFeatures()

    def __call__(self, x: torch.Tensor, info) -> float:
        from bayesgen.metrics.fid import feature_statistics, frechet_distance

        images = viz.to_unit_images(x, getattr(info, "num_classes", None)) * 2 - 1  # [-1, 1]
        mu, sigma = feature_statistics(images, self.extractor, progress=False)
        return float(frechet_distance(mu, sigma, self.mu, self.sigma))
