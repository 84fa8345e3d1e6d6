"""A trained run as a Python object: ``bayesgen.load``, ``from_pretrained``, ``save_pretrained``.

``bayesgen.load(path)`` opens a run directory, a training checkpoint or an exported folder and
returns a :class:`Run`: the plain method object (``BSI``, ``BFN``, ``InflationaryFlow``, …)
with its EMA weights, in eval mode, plus its configuration and data info. Nothing is
unpickled — the configuration comes from YAML or JSON, the weights from safetensors (or from a
checkpoint read with ``torch.load(weights_only=True)``) — and no data module is built: the data
info comes from the configuration alone.

``save_pretrained`` writes the Hugging Face Hub layout: ``config.json`` (the resolved
configuration and the data info), ``model.safetensors`` (the method's state dict) and a
``README.md`` model card. Methods stay framework-free (torch only), so ``save_pretrained`` is a
function here and a method of :class:`Run`, not a method of ``BSI``/``BFN``/….
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import Tensor, nn

from bayesgen.data.info import DatasetInfo

CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"
FORMAT_VERSION = 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_INFO_KEYS = ("name", "data_shape", "kind", "num_classes", "num_labels", "num_bins")
# keys of a data config that are loader settings, not options of the data set
_LOADER_KEYS = ("_target_", "name", "root", "batch_size", "eval_batch_size", "num_workers")


class LoadError(ValueError):
    """A path or file that cannot be loaded as a bayesgen run; the message says why."""


class Run:
    """A trained method with its configuration: ``run.sample(16)``, ``run.elbo(x)``.

    ``method`` is the plain method object (eval mode, EMA weights), ``config`` the resolved
    training configuration, ``info`` the data set's :class:`~bayesgen.data.DatasetInfo`,
    ``metrics`` the run's ``metrics.json`` (or None), ``path`` where it was loaded from.
    """

    def __init__(self, method: nn.Module, config: DictConfig, info: DatasetInfo,
                 path: Path | None = None, metrics: dict | None = None,
                 command: str | None = None):
        self.method, self.config, self.info = method, config, info
        self.path, self.metrics, self.command = path, metrics, command

    def __repr__(self) -> str:
        return (f"Run({type(self.method).__name__}, data={self.info.name} "
                f"{tuple(self.info.data_shape)}, {self.num_parameters:,} parameters, "
                f"device={self.device}, path={str(self.path) if self.path else None!r})")

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.method.parameters())

    @property
    def num_labels(self) -> int:
        """Number of class labels of a class-conditional run, else 0."""
        return self.info.num_labels if self.config.conditional.enabled else 0

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.method.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
           ) -> Run:
        """Move the method (in place); ``dtype`` casts the weights (see :func:`cast`)."""
        cast(self.method, device, dtype)
        return self

    @property
    def sample_kwargs(self) -> dict[str, Any]:
        """The configuration's ``method.sample_kwargs`` (e.g. BSI's ``k``, BFN's ``n_steps``)."""
        return OmegaConf.to_container(self.config.method.get("sample_kwargs") or {}, resolve=True)

    @property
    def eval_kwargs(self) -> dict[str, Any]:
        """The configuration's ``method.eval_kwargs``, passed to ``elbo``."""
        return OmegaConf.to_container(self.config.method.get("eval_kwargs") or {}, resolve=True)

    def _labels(self, n: int, labels) -> dict[str, Tensor]:
        if not self.num_labels:
            if labels is not None:
                raise ValueError("labels= needs a class-conditional run "
                                 "(trained with conditional.enabled=true)")
            return {}
        if labels is None:  # one class per grid row
            labels = torch.arange(n) % self.num_labels
        labels = torch.as_tensor(labels, device=self.device).long().expand(n)
        return {"class_labels": torch.where(labels < 0, self.num_labels, labels)}

    @torch.no_grad()
    def sample(self, n: int = 16, generator: torch.Generator | None = None, labels=None,
               progress: bool = False, callback: Callable[..., None] | None = None,
               **kwargs) -> Tensor:
        """``n`` samples with the configuration's ``sample_kwargs`` (``kwargs`` override them,
        e.g. ``k=20``); ``labels`` (an int or ``n`` ints) for a class-conditional run.

        ``progress=True`` shows a rich progress bar (one tick per network call);
        ``callback(step, t, x_hat)`` is called once per step (see the method's ``sample``).
        ``observed=`` and ``mask=`` condition BSI and BFN samples on known entries (see
        :meth:`inpaint` and the method's ``sample``)."""
        kwargs = self.sample_kwargs | kwargs | self._labels(n, labels)
        self._check_conditioning(kwargs)
        with _progress(self.method, kwargs, progress, callback, f"sampling {n}") as cb:
            return self.method.sample(n, generator=generator, **kwargs, **cb)

    def _check_conditioning(self, kwargs: dict) -> None:
        if ({"observed", "mask"} & kwargs.keys()
                and "observed" not in inspect.signature(self.method.sample).parameters):
            raise ValueError(f"conditioning on observed values (inpainting, text prefixes) "
                             f"needs a BSI or BFN run; {type(self.method).__name__} samples "
                             "without it")

    @torch.no_grad()
    def sample_history(self, n: int = 16, generator: torch.Generator | None = None,
                       labels=None, progress: bool = False,
                       callback: Callable[..., None] | None = None,
                       **kwargs) -> dict[str, Tensor]:
        """Every step of sampling (see the method's ``sample_history``)."""
        kwargs = self.sample_kwargs | kwargs | self._labels(n, labels)
        self._check_conditioning(kwargs)
        with _progress(self.method, kwargs, progress, callback, f"sampling {n}") as cb:
            return self.method.sample_history(n, generator=generator, **kwargs, **cb)

    @torch.no_grad()
    def inpaint(self, image: str | Path | Tensor, mask: str | Path | Tensor, n: int = 8,
                generator: torch.Generator | None = None, labels=None, progress: bool = False,
                **kwargs) -> Tensor:
        """``n`` completions of ``image`` where ``mask`` is white (True): the known pixels come
        back exactly, the rest is drawn from the model's conditional distribution (BSI and BFN;
        ``inpaint="tweedie"`` by default, ``"replace"`` the cheap baseline).

        ``image``: a picture file of the model's size (its mode must match the channels), or a
        tensor of shape ``data_shape`` in the data's range; ``mask``: a picture file (white =
        known, black = to draw; grey levels ≥ 128 count as white), or a bool tensor
        broadcastable to ``data_shape``. See :func:`load_inpainting`."""
        observed, known = load_inpainting(image, mask, self.info)
        return self.sample(n, generator, labels, progress, observed=observed[None],
                           mask=known[None], **kwargs)

    @torch.no_grad()
    def complete_text(self, prefix: str, n: int = 4, generator: torch.Generator | None = None,
                      progress: bool = False, **kwargs) -> Tensor:
        """``n`` continuations of the text ``prefix`` by a discrete BFN text model: token
        indices (n, seq_len) whose first ``len(prefix)`` tokens are the prefix;
        ``run.info.decode(x)`` turns them into strings."""
        observed, known = text_prefix(prefix, self.info)
        return self.sample(n, generator, None, progress, observed=observed[None],
                           mask=known[None], **kwargs)

    @torch.no_grad()
    def elbo(self, x: Tensor, labels=None, **kwargs) -> tuple[Tensor, ...]:
        """The method's ``elbo`` of ``x`` (moved to the method's device) with the
        configuration's ``eval_kwargs``: a tuple whose second entry is bits/dim per example."""
        x = x.to(self.device)
        return self.method.elbo(x, **(self.eval_kwargs | kwargs | self._labels(len(x), labels)))

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` to ``folder``."""
        return save_pretrained(self.method, folder, self.config, info=self.info,
                               metrics=self.metrics, command=self.command)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None,
                    commit_message: str = "Upload bayesgen model") -> str:
        """Upload the ``save_pretrained`` folder to the Hugging Face Hub (needs
        ``huggingface_hub`` and a network); returns the commit URL."""
        hub = _huggingface_hub()
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            api = hub.HfApi(token=token)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp,
                                     commit_message=commit_message, repo_type="model")
        return str(getattr(info, "commit_url", info))


# ---- progress bars ------------------------------------------------------------------------------
@contextmanager
def progress_callback(total: int | None, description: str = "sampling",
                      disable: bool = False) -> Iterator[Callable[..., None]]:
    """A rich progress bar of ``total`` steps (None: a counter without an end) on stderr, as a
    context manager that yields a callback advancing it by one step per call. The callback
    takes the samplers' arguments ``(step, t, x_hat)`` (and shows t) or none at all::

        with progress_callback(101, "sampling") as tick:
            x = bsi.sample(16, k=100, callback=tick)
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[t]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), disable=disable) as bar:
        task = bar.add_task(description, total=total, t="")

        def tick(step: int | None = None, t: float | None = None, x_hat=None) -> None:
            bar.update(task, advance=1, t="" if t is None else f"t={float(t):.3g}")

        yield tick


def sampler_steps(method: nn.Module, **sample_kwargs) -> int | None:
    """How often ``method.sample(**sample_kwargs)`` calls its callback (once per network
    call): BSI k + 1, BFN n_steps + 1, VDM k with the ancestral sampler, k or n_steps with the
    fast solvers (``sampler=ode1|ode2|sde2``), Inflationary Flows n_steps with a fixed-step
    solver; None for the adaptive ODE solver (its number of evaluations is known only
    afterwards)."""
    from bayesgen.methods import BFN, BSI, VDM, InflationaryFlow

    kw = sample_kwargs
    extra = int(kw.get("sampler", "ancestral") == "ancestral")  # the ancestral final call
    if isinstance(method, BSI):
        grid = method.schedule_t(kw.get("k"), kw.get("t"), schedule=kw.get("schedule"))
        return grid.numel() - 1 + extra
    if isinstance(method, VDM):
        return method.schedule_t(kw.get("k"), kw.get("t")).numel() - 1
    if isinstance(method, BFN):
        default = inspect.signature(method.sample).parameters["n_steps"].default
        return int(kw.get("n_steps", default)) + extra
    if isinstance(method, InflationaryFlow):
        solver = kw.get("sampler") or kw.get("solver", "adaptive")
        if solver == "adaptive":
            return None
        return method.time_grid(solver, kw.get("n_steps"), kw.get("h"), kw.get("grid")).numel() - 1
    return None


@contextmanager
def _progress(method: nn.Module, kwargs: dict, progress: bool, callback, description: str
              ) -> Iterator[dict[str, Callable[..., None]]]:
    """``{"callback": …}`` for a sampler: the user's callback, a progress bar's, or both."""
    if not progress:
        yield {} if callback is None else {"callback": callback}
        return
    with progress_callback(sampler_steps(method, **kwargs), description) as tick:
        if callback is None:
            yield {"callback": tick}
            return

        def both(step: int, t: float, x_hat: Tensor) -> None:
            callback(step, t, x_hat)
            tick(step, t, x_hat)

        yield {"callback": both}


# ---- inputs for conditioning: images, masks, text prefixes --------------------------------------
def load_inpainting(image: str | Path | Tensor, mask: str | Path | Tensor, info: DatasetInfo
                    ) -> tuple[Tensor, Tensor]:
    """``(observed, mask)`` for ``sample(observed=observed[None], mask=mask[None])`` from an
    image and a mask, each a file or a tensor: the image in the data's range with shape
    ``info.data_shape`` ([−1, 1] for continuous data, class indices round(v·(K − 1)) for
    discrete data with K classes, v the grey level in [0, 1]), the mask bool of shape
    (1, H, W) — white (≥ 128 of 255) where the image is known — or a bool tensor."""
    if info.kind != "image" and not (torch.is_tensor(image) and torch.is_tensor(mask)):
        raise ValueError(f"inpainting from picture files needs an image model; this run's data "
                         f"({info.name}) are {info.kind} of shape {tuple(info.data_shape)}: pass "
                         "tensors observed= and mask= to sample() instead")
    observed = image if torch.is_tensor(image) else _read_image(Path(image), info)
    known = mask if torch.is_tensor(mask) else _read_mask(Path(mask), info)
    shape = tuple(info.data_shape)
    if tuple(observed.shape) != shape:
        raise ValueError(f"the image has shape {tuple(observed.shape)} but the model draws "
                         f"{shape}; pass one example of shape {shape}")
    if known.dtype != torch.bool:
        raise ValueError(f"the mask must be a bool tensor (True where the image is known), got "
                         f"dtype {known.dtype}; use mask > 0.5")
    try:
        torch.broadcast_shapes(known.shape, shape)
    except RuntimeError:
        raise ValueError(f"the mask has shape {tuple(known.shape)}, which does not broadcast "
                         f"to the image's {shape}") from None
    return observed, known


def _open_picture(path: Path, what: str, info: DatasetInfo):
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"{what} file {path} does not exist")
    try:
        picture = Image.open(path)
        picture.load()
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{what} file {path} is not a picture PIL can read ({e})") from None
    height, width = info.data_shape[-2:]
    if picture.size != (width, height):
        raise ValueError(f"{what} {path} is {picture.size[0]}×{picture.size[1]} pixels but the "
                         f"model draws {width}×{height} images; resize it first")
    return picture


def _read_image(path: Path, info: DatasetInfo) -> Tensor:
    import numpy as np

    picture = _open_picture(path, "image", info)
    channels = info.data_shape[0] if len(info.data_shape) == 3 else 1
    colour = picture.mode not in ("1", "L", "LA", "I", "I;16", "F")
    if channels == 1 and colour:
        raise ValueError(f"image {path} is a colour picture (mode {picture.mode}) but the model "
                         "draws 1-channel (grey) images; convert it to grey first")
    if channels == 3 and not colour:
        raise ValueError(f"image {path} is a grey picture (mode {picture.mode}) but the model "
                         "draws 3-channel (RGB) images; convert it to RGB first")
    if channels not in (1, 3):
        raise ValueError(f"the model draws {channels}-channel images; picture files carry 1 or "
                         "3 channels: pass a tensor instead")
    array = np.asarray(picture.convert("L" if channels == 1 else "RGB"), dtype=np.float64)
    unit = torch.from_numpy(array / 255.0).reshape(*array.shape[:2], -1).permute(2, 0, 1)
    unit = unit.reshape(info.data_shape).float()
    if info.num_classes:
        return torch.round(unit * (info.num_classes - 1)).long()
    return 2 * unit - 1


def _read_mask(path: Path, info: DatasetInfo) -> Tensor:
    import numpy as np

    picture = _open_picture(path, "mask", info)
    grey = torch.from_numpy(np.asarray(picture.convert("L")).copy())
    mask = (grey >= 128)[None]
    return mask if len(info.data_shape) == 3 else mask.reshape(info.data_shape)


def text_prefix(prefix: str, info: DatasetInfo) -> tuple[Tensor, Tensor]:
    """``(observed, mask)`` of shape ``info.data_shape`` that fix the first ``len(prefix)``
    tokens of a text sample to ``prefix`` (text8 letters: a–z, anything else a space)."""
    from bayesgen.data.text import encode_text

    if info.kind != "text":
        raise ValueError(f"a text prefix needs a text model; this run's data ({info.name}) are "
                         f"{info.kind}")
    if not isinstance(prefix, str) or not prefix:
        raise ValueError("the prefix must be a non-empty string")
    (length,) = info.data_shape
    tokens = encode_text(prefix)
    if len(tokens) > length:
        raise ValueError(f"the prefix has {len(tokens)} characters but samples have only "
                         f"{length}; shorten it")
    observed = torch.zeros(length, dtype=torch.long)
    observed[: len(tokens)] = tokens
    return observed, torch.arange(length) < len(tokens)


# ---- loading ------------------------------------------------------------------------------------
def load(path: str | Path, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None) -> Run:
    """A run from a run directory (``config.yaml`` + ``ema.safetensors``, or its
    ``checkpoints/last.ckpt`` when that is newer), a ``.ckpt`` file (read with
    ``weights_only=True``) or a ``save_pretrained`` folder (``config.json`` +
    ``model.safetensors``). ``device``/``dtype`` place and cast the weights."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return from_pretrained(path, device=device, dtype=dtype)
    if path.is_dir():
        return _load_run_dir(path, device, dtype)
    if path.is_file() and path.suffix == ".ckpt":
        return _load_checkpoint(path, device, dtype)
    if not path.exists():
        raise LoadError(f"{path} does not exist; pass a run directory, a .ckpt file or a "
                        "save_pretrained folder")
    raise LoadError(f"{path} is neither a run directory, a .ckpt file nor a save_pretrained "
                    f"folder (with {CONFIG_NAME} and {WEIGHTS_NAME})")


def _load_run_dir(run_dir: Path, device, dtype) -> Run:
    config_file, ema = run_dir / "config.yaml", run_dir / "ema.safetensors"
    last = run_dir / "checkpoints" / "last.ckpt"
    if not config_file.is_file():
        raise LoadError(f"{run_dir} has no config.yaml: not a bayesgen run directory")
    if last.is_file() and (not ema.is_file() or last.stat().st_mtime > ema.stat().st_mtime):
        return _load_checkpoint(last, device, dtype)  # training went on after ema.safetensors
    if not ema.is_file():
        raise LoadError(f"{run_dir} has neither ema.safetensors nor checkpoints/last.ckpt; "
                        "did training save anything?")
    with _reading(config_file):
        cfg = OmegaConf.load(config_file)
    if not isinstance(cfg, DictConfig):
        raise LoadError(f"{config_file} is not a bayesgen configuration (not a mapping)")
    info = data_info_from_config(cfg)
    method = build_from_config(cfg, info, _read_weights(ema), str(ema))
    return _finish(Run(method, cfg, info, run_dir, _read_metrics(run_dir),
                       read_command(run_dir)), device, dtype)


def _load_checkpoint(path: Path, device, dtype) -> Run:
    from bayesgen.training.checkpoint import checkpoint_config, read_checkpoint

    ckpt = read_checkpoint(path)  # weights_only=True; the config's _target_s checked
    cfg = checkpoint_config(ckpt, path)
    weights = ckpt.get("state_dict")
    if not isinstance(weights, dict) or not all(
            isinstance(k, str) and torch.is_tensor(v) for k, v in weights.items()):
        raise LoadError(f"{path} has no state_dict of tensors: not a bayesgen checkpoint")
    state = {k.removeprefix("method."): v for k, v in weights.items()
             if k.startswith("method.")}
    info = data_info_from_config(cfg)
    method = build_from_config(cfg, info, state, str(path))
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return _finish(Run(method, cfg, info, path, _read_metrics(run_dir),
                       read_command(run_dir)), device, dtype)


def from_pretrained(name_or_path: str | Path, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, revision: str | None = None) -> Run:
    """A run from a ``save_pretrained`` folder, or from a Hugging Face Hub id
    (``user/name``, downloaded with ``huggingface_hub``)."""
    folder = Path(name_or_path)
    if not folder.exists():
        if not _HUB_ID.match(str(name_or_path)):
            raise LoadError(f"{name_or_path} does not exist (and is no Hub id user/name)")
        hub = _huggingface_hub()
        folder = Path(hub.snapshot_download(str(name_or_path), revision=revision,
                                            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME,
                                                            CARD_NAME]))
    config_file, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for f in (config_file, weights):
        if not f.is_file():
            raise LoadError(f"{folder} has no {f.name}; save_pretrained writes {CONFIG_NAME} "
                            f"and {WEIGHTS_NAME}")
    with _reading(config_file):
        saved = json.loads(config_file.read_text())
    if (not isinstance(saved, dict) or saved.get("library") != "bayesgen"
            or not isinstance(saved.get("config"), dict)
            or not isinstance(saved.get("data_info"), dict)):
        raise LoadError(f"{config_file} was not written by bayesgen's save_pretrained")
    version = saved.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise LoadError(f"{config_file} has format {version!r}, not a format number")
    if version > FORMAT_VERSION:
        raise LoadError(f"{config_file} has format {saved['format']}; this bayesgen reads "
                        f"format {FORMAT_VERSION}: upgrade bayesgen")
    with _reading(config_file):
        cfg = OmegaConf.create(saved["config"])
        info = info_from_dict(saved["data_info"])
    method = build_from_config(cfg, info, _read_weights(weights), str(weights))
    metrics, command = saved.get("metrics"), saved.get("command")
    return _finish(Run(method, cfg, info, folder, metrics if isinstance(metrics, dict) else None,
                       command if isinstance(command, str) else None), device, dtype)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Any failure to read or parse ``path`` (unreadable, not UTF-8, not JSON/YAML, the wrong
    structure) as one `LoadError` naming it."""
    try:
        yield
    except LoadError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file may fail in any parser's way
        raise LoadError(f"{path} cannot be read: {_first_line(e)}") from None


def _read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file; a damaged one is a `LoadError` naming it."""
    from safetensors.torch import load_file

    with _reading(path):
        return load_file(str(path))


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _finish(run: Run, device, dtype) -> Run:
    run.method.eval()
    return run.to(device, dtype)


def cast(method: nn.Module, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None) -> nn.Module:
    """Move ``method`` to ``device`` and cast its floating weights to ``dtype``; float64
    buffers (e.g. Inflationary Flows' PCA basis) stay float64."""
    if device is not None:
        method.to(device=device)
    if dtype is not None:
        keep = {name: b for name, b in method.named_buffers() if b.dtype == torch.float64}
        method.to(dtype=dtype)
        for name, b in keep.items():
            owner, _, attr = name.rpartition(".")
            setattr(method.get_submodule(owner), attr, b)
    return method


# ---- building from a configuration --------------------------------------------------------------
def build_from_config(cfg: DictConfig, info: DatasetInfo, state: dict[str, Tensor],
                      source: str = "the weights") -> nn.Module:
    """The method that ``cfg`` describes, sized for ``info``, with the weights ``state``
    (statistics fitted to data, e.g. Inflationary Flows' PCA, come from ``state`` too)."""
    from bayesgen.training.build import build_method
    from bayesgen.training.checkpoint import check_targets

    for key in ("net", "method"):
        if not isinstance(cfg.get(key), DictConfig):
            raise LoadError(f"the configuration of {source} has no {key!r} section")
    check_targets({k: cfg.get(k) for k in ("net", "method", "data")}, source)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        if cfg.method.get("data") == "auto":  # fitted statistics are buffers of the state dict
            cfg.method.data = None
        cfg.setdefault("conditional", {"enabled": False, "guidance_scale": 0.0})
    try:
        method = build_method(cfg, SimpleNamespace(info=info))
    except Exception as e:  # noqa: BLE001 - a damaged configuration fails in any builder's way
        raise LoadError(f"the configuration of {source} does not build its method: "
                        f"{_first_line(e)}") from None
    missing, unexpected = _compare_keys(method.state_dict(), state)
    if missing or unexpected:
        raise LoadError(f"{source} do not fit the configured method: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    try:
        method.load_state_dict(state)
    except RuntimeError as e:  # a tensor of another shape
        raise LoadError(f"{source} do not fit the configured method: {_first_line(e)}") from None
    return method


def _compare_keys(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))


def data_info_from_config(cfg: DictConfig) -> DatasetInfo:
    """The data info of a run from its ``data`` configuration, without reading data (an image
    folder without ``data.data_shape`` reads its first image for the size)."""
    from bayesgen.data.datamodule import make_source

    try:
        data = OmegaConf.to_container(cfg.get("data"), resolve=True)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            raise ValueError("no data section with a name")
    except Exception as e:  # noqa: BLE001 - interpolations of a damaged file fail in any way
        raise LoadError(f"the configuration's data section is unusable ({_first_line(e)})"
                        ) from None
    options = {str(k): v for k, v in data.items() if k not in _LOADER_KEYS}
    try:
        return make_source(data["name"], data.get("root"), **options).info
    except Exception as e:  # noqa: BLE001 - the files may be elsewhere on this machine
        raise LoadError(f"the data info of data={data['name']} needs its files "
                        f"({_first_line(e)}); pass data_shape in the data config, or load a "
                        "save_pretrained folder") from None


def info_to_dict(info: DatasetInfo) -> dict[str, Any]:
    out = {k: v for k, v in asdict(info).items() if k in _INFO_KEYS}
    return out | {"data_shape": list(info.data_shape)}


def info_from_dict(d: dict[str, Any]) -> DatasetInfo:
    from bayesgen.data.text import decode_text

    d = {k: d[k] for k in _INFO_KEYS if k in d}
    return DatasetInfo(**d | {"data_shape": tuple(d["data_shape"])},
                       decode=decode_text if d.get("kind") == "text" else None)


def _read_metrics(run_dir: Path) -> dict | None:
    """The run's ``metrics.json``; None when it is missing or damaged (the weights still
    load: the metrics are a record, not part of the model)."""
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def read_command(run_dir: Path) -> str | None:
    """``bayesgen train …`` with the overrides Hydra recorded in ``.hydra/overrides.yaml``;
    None when that file is missing or damaged."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # noqa: BLE001 - a damaged record: no command, the run still loads
        return None
    if not isinstance(overrides, list):
        return None
    return " ".join(["bayesgen train", *map(str, overrides)])


# ---- saving -------------------------------------------------------------------------------------
def save_pretrained(method: nn.Module, folder: str | Path, config: DictConfig | dict,
                    info: DatasetInfo | None = None, metrics: dict | None = None,
                    command: str | None = None) -> Path:
    """Write ``method`` with the configuration that rebuilds it (its ``net``, ``method`` and
    ``data`` sections, as ``bayesgen train`` resolves them) to ``folder``: ``config.json``,
    ``model.safetensors`` and a ``README.md`` model card (method, data, metrics, command)."""
    from safetensors.torch import save

    from bayesgen.training.checkpoint import check_targets, write_bytes, write_text

    cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
    for key in ("net", "method", "data"):
        if key not in cfg:
            raise ValueError(f"save_pretrained needs the run's configuration with a {key!r} "
                             "section (run.config, or the config bayesgen train composed)")
    check_targets({k: cfg.get(k) for k in ("net", "method", "data")}, "save_pretrained's config")
    info = info or data_info_from_config(cfg)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in method.state_dict().items()}
    write_bytes(folder / WEIGHTS_NAME, save(state, metadata={"format": "pt"}))  # atomic, 0644
    n_params = sum(p.numel() for p in method.parameters())
    saved = {"library": "bayesgen", "format": FORMAT_VERSION,
             "bayesgen_version": _version(), "method": type(method).__name__,
             "parameters": n_params, "data_info": info_to_dict(info),
             "metrics": metrics, "command": command,
             "config": OmegaConf.to_container(cfg, resolve=True)}
    write_text(folder / CONFIG_NAME, json.dumps(saved, indent=2) + "\n")
    write_text(folder / CARD_NAME, model_card(saved))
    return folder


def model_card(saved: dict) -> str:
    """A Hugging Face model card: YAML metadata, then method, data, metrics and command."""
    cfg, info = saved["config"], saved["data_info"]
    method_name = cfg["method"].get("name", saved["method"])
    name = cfg.get("name") or f"{info['name']}-{method_name}"
    tags = ["bayesgen", str(method_name), "generative-model", info["kind"]]
    lines = ["---", "library_name: bayesgen", "tags:", *[f"- {t}" for t in tags], "---", "",
             f"# {name}", "",
             f"A {_METHOD_NAMES.get(saved['method'], saved['method'])} model trained with "
             f"bayesgen on **{info['name']}**.", "",
             "| | |", "|---|---|",
             f"| method | `{cfg['method']['_target_']}` |",
             f"| network | `{cfg['net']['_target_']}`, {saved['parameters']:,} parameters |",
             f"| data | {info['name']}: shape {tuple(info['data_shape'])}, {info['kind']}"
             + (f", {info['num_bins']} bins" if info.get("num_bins") else "")
             + (f", {info['num_classes']} classes" if info.get("num_classes") else "") + " |"]
    if cfg.get("conditional", {}).get("enabled"):
        lines.append(f"| conditional | {info['num_labels']} class labels |")
    trainer, optim = cfg.get("trainer", {}), cfg.get("optim", {})
    if trainer.get("max_steps"):
        lines.append(f"| training | {trainer['max_steps']:,} steps, batch "
                     f"{cfg['data'].get('batch_size')}, lr {optim.get('lr')} |")
    metrics = saved.get("metrics") or {}
    lines += ["", "## Metrics", ""]
    if "bpd" in metrics:
        se = metrics.get("bpd_se")
        se_txt = f" ± {se:.4f}" if isinstance(se, float) and math.isfinite(se) else ""
        lines += ["| metric | value |", "|---|---|",
                  f"| {metrics.get('split', 'test')} bits/dim | {metrics['bpd']:.4f}{se_txt} "
                  f"({metrics.get('n_examples', '?')} examples) |"]
        if "steps" in metrics:
            lines.append(f"| trained steps | {metrics['steps']:,} |")
    else:
        lines.append("No metrics were recorded (no `metrics.json` in the run directory).")
    lines += ["", "## Usage", "", "```python", "import bayesgen", "",
              'run = bayesgen.from_pretrained("<this folder or Hub id>")',
              "x = run.sample(16)          # " + f"(16, {', '.join(map(str, info['data_shape']))})",
              "bpd = run.elbo(data)[1]     # bits/dim of each example of your data",
              "```", "",
              "## Training command", ""]
    if saved.get("command"):
        lines += ["```sh", saved["command"], "```"]
    else:
        lines.append("Not recorded; the full configuration is in `config.json`.")
    return "\n".join(lines) + "\n"


_METHOD_NAMES = {"BSI": "Bayesian Sample Inference (BSI)", "BFN": "Bayesian Flow Network (BFN)",
                 "InflationaryFlow": "Inflationary Flow", "VDM": "Variational Diffusion Model"}


def _version() -> str:
    from bayesgen import __version__

    return __version__


def _huggingface_hub():
    from bayesgen.extras import require

    return require("huggingface_hub", "hub", "Hub ids and push_to_hub")
