"""Files a run writes and reads, made safe: atomic writes, safe loading, trusted targets.

- **Atomic writes** (`atomic_write`, `atomic_path`): a temporary file in the target's own
  directory, flushed and fsynced, then ``os.replace``d over the target and the directory
  fsynced, so a reader sees the old file or the new one, never a part, on any filesystem. A
  failed write (a full disk) removes its temporary file and raises `OutputWriteError`; the
  previous file is untouched. `SafeCheckpointIO` is Lightning's checkpoint plugin built on it.
- **Safe loading** (`read_checkpoint`): ``torch.load(weights_only=True)`` only, so a file can
  hold tensors and plain values but never make Python call anything; a file that does not load
  gives a `CheckpointError` that names it in one line.
- **Trusted targets** (`check_targets`): a configuration read from a file may name in
  ``_target_`` only bayesgen's own methods, networks and data module (plus the Lightning
  strategies the shipped configs use) — Hydra would otherwise call any importable function.
- **Finite values** (`check_finite`): nothing with NaN or infinity is written as a checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import shutil
import signal
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, ListConfig, OmegaConf

from bayesgen.training.targets import find_targets, trusted_targets  # noqa: F401  (re-exported)

TMP_MARK = ".bayesgen-tmp-"
_write_counts: dict[str, int] = {}


class CheckpointError(ValueError):
    """A checkpoint or saved configuration that cannot be used; the message names the file."""


class OutputWriteError(ValueError):
    """A file could not be written (e.g. a full disk); the previous version is intact."""


class NonFiniteError(ValueError):
    """NaN or infinity where a finite value is required; the message names where."""


# ---- atomic writes ------------------------------------------------------------------------
def _temp_path(path: Path) -> Path:
    n = _write_counts.get("_all", 0)
    _write_counts["_all"] = n + 1
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{n}{path.suffix}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # not every filesystem syncs directories
        pass
    finally:
        os.close(fd)


def _reason(e: BaseException, directory: Path) -> str:
    text = (e.strerror if isinstance(e, OSError) and e.strerror else str(e)).strip()
    text = text.splitlines()[0] if text else type(e).__name__
    try:
        free = shutil.disk_usage(directory).free
        return f"{text} ({free:,} bytes free on its device)"
    except OSError:
        return text


def _fault_hook(path: Path, fd: int) -> None:
    """Test hook: ``BAYESGEN_FAULT_KILL_IN_WRITE=NAME:N`` SIGKILLs this process in the middle of
    its N-th write of a file called NAME (the temporary file cut to half its length)."""
    spec = os.environ.get("BAYESGEN_FAULT_KILL_IN_WRITE")
    if not spec or ":" not in spec:
        return
    name, n = spec.rsplit(":", 1)
    if name != path.name:
        return
    _write_counts[name] = count = _write_counts.get(name, 0) + 1
    if count == int(n):
        os.ftruncate(fd, os.fstat(fd).st_size // 2)
        os.kill(os.getpid(), signal.SIGKILL)


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fail(tmp: Path, path: Path, e: BaseException) -> OutputWriteError:
    with contextlib.suppress(OSError):
        tmp.unlink()
    state = "the previous file is intact" if path.exists() else "nothing was written"
    return OutputWriteError(f"could not write {path}: {_reason(e, path.parent)}; {state}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Write ``path`` through ``write(file)`` atomically (see the module docstring)."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies: 0644
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            _fault_hook(path, f.fileno())
            os.fsync(f.fileno())
        _commit(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        raise _fail(tmp, path, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path (same directory and suffix) for writers that take a file name; when
    the block ends without error it is fsynced and renamed to ``path``."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            _fault_hook(path, fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(tmp, path)
    except (OSError, RuntimeError) as e:
        raise _fail(tmp, path, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(*directories: Path) -> list[Path]:
    """Delete temporary files that a killed writer left in ``directories`` (not recursive);
    files of a process that still runs on this host are kept."""
    removed = []
    for d in directories:
        for p in Path(d).glob(f".*{TMP_MARK}*"):
            m = re.search(re.escape(TMP_MARK) + r"(\d+)-", p.name)
            if m and int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1))):
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


# ---- finite values and loadable types ----------------------------------------------------
def _tensors(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def nonfinite_keys(obj: Any, limit: int = 3) -> list[str]:
    """Names of (up to ``limit``) floating-point tensors in ``obj`` with NaN or infinity."""
    bad = []
    for name, t in _tensors(obj):
        if (t.is_floating_point() or t.is_complex()) and t.device.type != "meta" and \
                not bool(torch.isfinite(t).all()):
            bad.append(name)
            if len(bad) == limit:
                break
    return bad


def check_finite(obj: Any, what: str) -> None:
    bad = nonfinite_keys(obj)
    if bad:
        raise NonFiniteError(f"refusing to write {what}: non-finite values in {', '.join(bad)}")


_PLAIN = (torch.Tensor, int, float, bool, str, bytes, type(None), torch.dtype, torch.device,
          torch.Size)


def _plain(obj: Any, where: str, path: Path) -> Any:
    """``obj`` with paths turned into strings; anything ``weights_only`` cannot read is an
    error, so that every checkpoint bayesgen writes also loads safely."""
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {k: _plain(v, f"{where}.{k}", path) for k, v in obj.items()}
        return OrderedDict(out) if isinstance(obj, OrderedDict) else out
    if isinstance(obj, (list, tuple, set)):
        items = [_plain(v, f"{where}[{i}]", path) for i, v in enumerate(obj)]
        return tuple(items) if isinstance(obj, tuple) else set(items) if isinstance(obj, set) \
            else items
    raise CheckpointError(f"refusing to write {path}: {where} holds a {type(obj).__name__}, "
                          "which a safe (weights_only) load could not read")


# ---- safe loading -------------------------------------------------------------------------
_BOILERPLATE = ("Weights only load failed", "Check the documentation", "Please file an issue",
                "In PyTorch", "Re-running")


def _first_line(e: BaseException) -> str:
    """The informative line of an error (torch's weights_only errors start with advice)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(_BOILERPLATE)]
    text = (useful or lines or [type(e).__name__])[0]
    text = text.removeprefix("WeightsUnpickler error:").strip() or type(e).__name__
    return text.split(". ")[0].rstrip(".")  # torch appends paragraphs of advice


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """A training checkpoint loaded with ``weights_only=True``; `CheckpointError` otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {_reason(e, path.parent)}") \
            from None
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a write that was cut off")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise CheckpointError(
                f"refusing to load {path}: it asks Python to call {found.group(1)}; bayesgen "
                "checkpoints hold only tensors and plain values") from None
        with open(path, "rb") as f:
            archive = f.read(2) == b"PK"
        if archive:
            raise CheckpointError(f"checkpoint {path} is corrupt ({_first_line(e)})") from None
        raise CheckpointError(f"{path} is not a checkpoint file (not a PyTorch archive); pass a "
                              ".ckpt file or a run directory") from None
    except Exception as e:  # noqa: BLE001 - damaged bytes fail in any of the unpickler's ways
        # (struct.error for b"j1", EOFError, zipfile.BadZipFile, KeyError, MemoryError, …)
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt "
                              f"({_first_line(e)})") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        kind = type(ckpt).__name__
        raise CheckpointError(f"{path} is not a bayesgen training checkpoint (it holds a {kind} "
                              "without a state_dict)")
    return ckpt


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic, finite, safely loadable files: every
    ``trainer.save_checkpoint`` (periodic, ``last.ckpt``, Slurm's ``hpc_ckpt``) goes here."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        for key in ("state_dict", "current_model_state", "optimizer_states"):
            if key in checkpoint:
                check_finite(checkpoint[key], f"{path} ({key})")
        checkpoint = _plain(checkpoint, "checkpoint", path)
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None):
        return read_checkpoint(path, map_location if map_location is not None else "cpu")


# ---- configuration saved in a checkpoint ----------------------------------------------------
def check_targets(cfg: Any, source: str | os.PathLike, extra: Iterable[str] = ()) -> None:
    """Refuse a configuration from ``source`` (a file) that names a ``_target_`` outside
    `trusted_targets` (plus ``extra``, the command line's ``allow_targets=``) — before anything
    is imported or called. A file's own ``allow_targets`` trusts nothing."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    trusted = trusted_targets() | set(extra)
    for where, target in find_targets(cfg):
        if not isinstance(target, str) or target not in trusted:
            raise CheckpointError(
                f"refusing the configuration in {source}: {where}={target!r} is not one of "
                "bayesgen's methods, networks or data modules (if you trust this file, add it "
                "to BAYESGEN_TRUSTED_TARGETS or, for bayesgen train, allow_targets=[…])")


def config_to_text(config: Mapping | DictConfig) -> str:
    """The YAML text stored as ``checkpoint["bayesgen_config"]``."""
    return OmegaConf.to_yaml(OmegaConf.create(config) if isinstance(config, Mapping) else config)


def checkpoint_config(ckpt: Mapping, path: str | os.PathLike,
                      allow_targets: Iterable[str] = ()) -> DictConfig:
    """The configuration a checkpoint was trained with (YAML text, or the dict older versions
    stored), its ``_target_``s checked (``allow_targets``: trusted besides bayesgen's)."""
    raw = ckpt.get("bayesgen_config")
    if raw is None:
        raise CheckpointError(f"{path} was not written by bayesgen train (no config inside)")
    try:
        cfg = OmegaConf.create(raw if isinstance(raw, (str, Mapping)) else None)
    except Exception as e:  # noqa: BLE001 - any parse error becomes one line naming the file
        raise CheckpointError(f"the configuration in {path} does not parse "
                              f"({_first_line(e)})") from None
    if not isinstance(cfg, DictConfig) or "method" not in cfg or "data" not in cfg:
        raise CheckpointError(f"the configuration in {path} is not a bayesgen configuration")
    check_targets(cfg, path, allow_targets)
    return cfg


# ---- which checkpoint to resume from ------------------------------------------------------
def _step_in_name(path: Path) -> int:
    m = re.search(r"step(\d+)", path.name)
    return int(m.group(1)) if m else -1


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """The run directory a checkpoint belongs to: ``RUN/checkpoints/x.ckpt`` or
    ``RUN/hpc_ckpt_<n>.ckpt``; a directory (a ``save_pretrained`` folder) is its own."""
    path = Path(checkpoint)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def newest_intact_checkpoint(run_dir: str | os.PathLike,
                             say: Callable[[str], None] = print) -> tuple[Path, dict] | None:
    """The checkpoint of ``run_dir`` with the highest step that loads (``last.ckpt``,
    ``hpc_ckpt_<n>.ckpt``, ``step<n>.ckpt``) and its content; each one that does not load is
    reported through ``say`` in one line and skipped."""
    run_dir = Path(run_dir)
    live = [p for p in (*sorted(run_dir.glob("hpc_ckpt_*.ckpt")),
                        run_dir / "checkpoints" / "last.ckpt") if p.is_file()]
    best: tuple[int, Path, dict] | None = None
    for p in live:
        try:
            ckpt = read_checkpoint(p)
        except CheckpointError as e:
            say(f"skipping {e}")
            continue
        step = int(ckpt.get("global_step", 0))
        if best is None or step > best[0]:
            best = (step, p, ckpt)
        del ckpt
    for p in sorted(run_dir.glob("checkpoints/step*.ckpt"), key=_step_in_name, reverse=True):
        if best is not None and _step_in_name(p) <= best[0]:
            break
        try:
            ckpt = read_checkpoint(p)
        except CheckpointError as e:
            say(f"skipping {e}")
            continue
        best = (int(ckpt.get("global_step", _step_in_name(p))), p, ckpt)
        break
    return None if best is None else (best[1], best[2])
