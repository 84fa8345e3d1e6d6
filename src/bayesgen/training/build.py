"""From a Hydra config to data, network, method, task and trainer — and back from a checkpoint."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, get_method, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from lightning.pytorch.utilities import rank_zero_warn
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from bayesgen.training.callbacks import BoundaryCheckpoint, ProgressBar
from bayesgen.training.checkpoint import (
    CheckpointError,
    SafeCheckpointIO,
    checkpoint_config,
    newest_intact_checkpoint,
    read_checkpoint,
)
from bayesgen.training.compose import (  # noqa: F401  (re-exported: build's public names)
    METHOD_EXTRA_KEYS,
    ConfigError,
    compose_config,
)
from bayesgen.training.ema import EMA, ShardedEMA
from bayesgen.training.monitor import build_loggers, monitor_callbacks
from bayesgen.training.task import GenerativeTask


def build_datamodule(cfg: DictConfig):
    return instantiate(cfg.data, _convert_="all")


def _resolve_auto(key: str, dm) -> Any:
    """Values of ``auto`` in a method config come from the data set: its bins, its number of
    classes, or (``data``) a tensor of up to 70,000 training examples, e.g. to fit a PCA."""
    from bayesgen.methods.bsi import Discretization

    info = dm.info
    bins = getattr(info, "num_bins", None)
    if key == "discretization":
        return Discretization(-1.0, 1.0, bins) if bins else None
    if key == "num_bins":
        return bins
    if key == "num_classes":
        return info.num_classes
    if key == "data":
        dm.setup("fit")
        n = min(len(dm.train), 70_000)
        return torch.stack([dm.train[i][0] for i in range(n)])
    raise ConfigError(f"method.{key}=auto is not supported; give a value")


def _net_defaults(net_cfg: DictConfig, info, num_labels: int) -> dict[str, Any]:
    """Fill shape arguments of the network from the data set when the config leaves them out
    (and the number of classes of a conditional run); also inside a wrapper's ``net``."""
    params = inspect.signature(get_class(net_cfg._target_)).parameters
    shape = tuple(info.data_shape)
    known = {"data_shape": shape, "in_channels": shape[0], "input_size": shape[-1],
             "resolution": shape[-1], "num_labels": num_labels, "num_classes": num_labels}
    out = {k: v for k, v in known.items() if k in params and (
        net_cfg.get(k, None) is None or (k in ("num_classes", "num_labels") and num_labels))}
    inner = net_cfg.get("net", None)
    if isinstance(inner, DictConfig) and "_target_" in inner:
        out["net"] = _net_defaults(inner, info, num_labels)
    return out


def build_method(cfg: DictConfig, dm) -> nn.Module:
    """The network (any ``net(x, t, ...)``) wrapped by the configured method."""
    info = dm.info
    num_labels = info.num_labels if cfg.conditional.enabled else 0
    if cfg.conditional.enabled and not info.num_labels:
        raise ConfigError(f"conditional.enabled=true but data set {info.name!r} has no labels")
    net = instantiate(cfg.net, **_net_defaults(cfg.net, info, num_labels), _convert_="all")
    if num_labels and cfg.conditional.guidance_scale:
        from bayesgen.nets import ClassifierFreeGuidance
        net = ClassifierFreeGuidance(net, cfg.conditional.guidance_scale)
    kwargs = OmegaConf.to_container(cfg.method, resolve=True)
    target = get_method(kwargs.pop("_target_"))
    for key in METHOD_EXTRA_KEYS:
        kwargs.pop(key, None)
    for key, value in kwargs.items():
        if value == "auto":
            kwargs[key] = _resolve_auto(key, dm)
        elif isinstance(value, dict) and "_target_" in value:
            kwargs[key] = instantiate(value)
    return target(model=net, data_shape=tuple(info.data_shape), **kwargs)


def build_augment(cfg: DictConfig) -> nn.Module | None:
    """The training-time augmentation pipeline of ``cfg.augment`` (None when unset); the
    network must take its labels (``augment_labels``, e.g. SongUNet's ``augment_dim``)."""
    if not cfg.get("augment"):
        return None
    forward = get_class(cfg.net._target_).forward
    if "augment_labels" not in inspect.signature(forward).parameters:
        raise ConfigError(f"augment=… needs a network that takes augment_labels; "
                          f"{cfg.net._target_} does not (use net=ddpmpp with net.augment_dim)")
    return instantiate(cfg.augment)


def build_task(cfg: DictConfig, dm) -> GenerativeTask:
    info = dm.info
    method = build_method(cfg, dm)
    augment = build_augment(cfg)
    if augment is not None and cfg.net.get("augment_dim", 0) != augment.label_dim:
        raise ConfigError(f"augment gives {augment.label_dim} labels but net.augment_dim is "
                          f"{cfg.net.get('augment_dim', 0)}; set net.augment_dim="
                          f"{augment.label_dim}")
    return GenerativeTask(
        method,
        **OmegaConf.to_container(cfg.optim)
        # Lightning cannot clip the gradients of a fused optimizer under mixed precision
        | {"fused": cfg.optim.get("fused", False) and "mixed" not in str(cfg.trainer.precision)},
        eval_kwargs=OmegaConf.to_container(cfg.method.get("eval_kwargs", {}) or {}),
        num_labels=info.num_labels if cfg.conditional.enabled else 0,
        label_dropout=cfg.conditional.label_dropout,
        compile=cfg.compile,
        config=OmegaConf.to_container(cfg, resolve=True),
        augment=augment,
    )


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list | None = None) -> L.Trainer:
    """Lightning's Trainer from ``cfg.trainer``: ``devices``/``num_nodes`` > 1 train with DDP
    (``strategy: auto``); ``strategy`` may also be a name (``ddp``, ``fsdp``) or a ``_target_``
    node (``trainer=ddp``, ``trainer=fsdp``, ``trainer=fsdp2``)."""
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("skip_nonfinite", None)  # the task's, not Lightning's
    if isinstance(kwargs.get("strategy"), dict):
        kwargs["strategy"] = instantiate(kwargs["strategy"])
    loggers = build_loggers(cfg, run_dir)
    cbs = [*checkpoint_callbacks(cfg, run_dir), ProgressBar(leave=True), *(callbacks or []),
           *monitor_callbacks(cfg, loggers, is_sharded(kwargs["strategy"]), run_dir)]
    strategy = kwargs["strategy"]
    if cfg.ema.enabled and is_sharded(strategy) and not isinstance(strategy, ModelParallelStrategy):
        # measured (torch 2.14, Lightning 2.6): WeightAveraging deep-copies the module, which
        # FSDP refuses ("FSDP does not support deepcopy"); FSDP1's flat parameters do not carry
        # the weights' names, which ShardedEMA's checkpoint needs
        rank_zero_warn("ema.enabled=true is ignored under FSDP (trainer=fsdp): checkpoints and "
                       "ema.safetensors hold the raw weights. Use trainer=fsdp2, which keeps the "
                       "EMA (each rank averages its shards), or set ema.enabled=false to silence "
                       "this warning.")
    elif cfg.ema.enabled:  # under DDP every rank holds the same weights, hence the same EMA;
        # under FSDP2 (ModelParallelStrategy) each rank averages its own shards
        ema = ShardedEMA if isinstance(strategy, ModelParallelStrategy) else EMA
        cbs.append(ema(cfg.ema.decay, cfg.ema.warmup_steps, cfg.ema.power,
                       cfg.ema.get("halflife_images"), cfg.ema.get("rampup_ratio")))
    return L.Trainer(**kwargs, default_root_dir=run_dir, callbacks=cbs, logger=loggers or False,
                     plugins=[SafeCheckpointIO()], enable_model_summary=False,
                     use_distributed_sampler=False)  # the data module shards, resumably


def resolve_device(name: str | None = None) -> torch.device:
    """The device named by ``device=`` (checked to exist here), else cuda when there is one."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name} is not a device; use device=cpu or device=cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but this machine has no CUDA GPU "
                          "(torch.cuda.is_available() is False); use device=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device={name} but this machine has {torch.cuda.device_count()} CUDA "
                          "GPU(s); use device=cuda:0")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device={name} is not supported here; use device=cpu or device=cuda")
    return device


def checkpoint_callbacks(cfg: DictConfig, run_dir: Path) -> list[ModelCheckpoint]:
    """Periodic checkpoints (``step<N>.ckpt`` every ``checkpoint.every_n_train_steps``, the
    newest ``checkpoint.keep_last`` kept, null: all) with ``last.ckpt``, and the
    ``checkpoint.save_top_k`` best by validation bits/dim (``best-step<N>-bpd<v>.ckpt``).
    A ``last.ckpt`` that another writer (the end of training, a signal) left is replaced, not
    kept beside a ``last-v1.ckpt`` (Lightning's version counter, off here)."""
    ck = cfg.checkpoint
    keep_last, top_k = ck.get("keep_last", None), ck.get("save_top_k", 0) or 0
    for key, value in (("keep_last", keep_last), ("save_top_k", top_k)):
        if value is not None and (not isinstance(value, int) or value < 0):
            raise ConfigError(f"checkpoint.{key} must be a whole number >= 0 (or null for "
                              f"keep_last: keep all), got {value!r}")
    dirpath = run_dir / "checkpoints"
    out = [BoundaryCheckpoint(dirpath=dirpath, save_last=True, monitor="step", mode="max",
                              save_top_k=-1 if keep_last is None else keep_last,
                              every_n_train_steps=ck.every_n_train_steps,
                              filename="step{step:07d}", auto_insert_metric_name=False,
                              enable_version_counter=False)]  # no last-v1.ckpt: see below
    if top_k:
        out.append(ModelCheckpoint(dirpath=dirpath, monitor="val/bpd", mode="min",
                                   save_top_k=top_k, save_on_train_epoch_end=False,
                                   filename="best-step{step:07d}-bpd{val/bpd:.4f}",
                                   auto_insert_metric_name=False))
    return out


def is_sharded(strategy) -> bool:
    """Whether a strategy (name or object) shards the weights across ranks (FSDP)."""
    if isinstance(strategy, str):
        return strategy in FSDPStrategy.get_registered_strategies()
    return isinstance(strategy, (FSDPStrategy, ModelParallelStrategy))


def find_checkpoint(path: str | Path, option: str = "ckpt") -> Path:
    """A ``.ckpt`` file, or a run directory (→ its ``checkpoints/last.ckpt``, or the newest
    checkpoint that loads when there is none); ``option`` is the name the user gave it by, for
    the error message."""
    path = Path(path)
    if path.is_dir():
        last = path / "checkpoints" / "last.ckpt"
        if not last.is_file() and (found := newest_intact_checkpoint(path, say=lambda m: None)):
            return found[0]
        path = last
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} not found; pass {option}=<run dir or .ckpt file>")
    return path


def latest_checkpoint(run_dir: str | Path, say=print) -> Path | None:
    """The newest checkpoint of a run directory that loads, or None: ``checkpoints/last.ckpt``,
    an ``hpc_ckpt_<n>.ckpt`` that Lightning saves when Slurm announces a preemption (SIGUSR1), or
    a periodic ``checkpoints/step<n>.ckpt``; each one that does not load is reported via ``say``."""
    found = newest_intact_checkpoint(run_dir, say=say)
    return None if found is None else found[0]


def load_pretrained_task(folder: Path):
    """(config, task, folder) of a ``save_pretrained`` folder: the task is built from the
    configuration it saved and carries its weights."""
    from bayesgen.run import from_pretrained

    run = from_pretrained(folder)
    cfg = run.config
    with open_dict(cfg):
        cfg.data.num_workers = 0
    task = build_task(cfg, build_datamodule(cfg))
    task.method.load_state_dict(run.method.state_dict())
    task.eval()
    return cfg, task, folder


def load_weights(task: GenerativeTask, source: str | Path) -> None:
    """Start ``task`` from the weights of a run, checkpoint or ``save_pretrained`` folder
    (``init_from=``: fine-tuning; the optimizer and step start afresh)."""
    from bayesgen.run import load

    state = load(source).method.state_dict()
    try:
        task.method.load_state_dict(state)
    except RuntimeError as e:
        raise ConfigError(f"init_from={source} does not fit this run's network "
                          f"({str(e).splitlines()[0]}); use its experiment") from None


def load_checkpoint(path: str | Path, map_location: str = "cpu"):
    """(config, task with the EMA weights, checkpoint path) of a training checkpoint, loaded
    safely (`read_checkpoint`: tensors and plain values only; `_target_`s checked). A
    ``save_pretrained`` folder (``config.json``, e.g. from ``bayesgen convert``) works too."""
    if Path(path).is_dir() and (Path(path) / "config.json").is_file():
        return load_pretrained_task(Path(path))
    path = find_checkpoint(path)
    ckpt = read_checkpoint(path, map_location=map_location)
    cfg = checkpoint_config(ckpt, path)
    with open_dict(cfg):
        cfg.data.num_workers = 0
        if cfg.method.get("data") == "auto":  # fitted statistics come from the state dict
            cfg.method.data = None
    task = build_task(cfg, build_datamodule(cfg))
    try:
        task.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"the weights in {path} do not fit its configuration "
                              f"({str(e).splitlines()[0]})") from None
    task.eval()
    return cfg, task, path
