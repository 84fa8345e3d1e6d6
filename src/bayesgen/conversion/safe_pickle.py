"""A restricted unpickler for EDM-style ``network-snapshot-*.pkl`` files that executes nothing.

EDM (and Inflationary Flows, which builds on it) pickles its networks with
``torch_utils.persistence``: every network class is stored as a record holding the *source
code* of its module, which a normal ``pickle.load`` compiles and runs. :func:`load` instead

- resolves only the globals needed to rebuild tensors, numpy arrays and plain containers
  (:data:`SAFE_GLOBALS`; storages are read back with ``torch.load(weights_only=True)``);
- turns persistent-class records (``_reconstruct_persistent_obj``) into inert :class:`Record`
  objects holding the class name and the pickled attributes; the source text is never read;
- turns the classes of the data model (``torch.nn`` containers, ``dnnlib.EasyDict``, the
  reference's own modules) into inert :class:`Record` subclasses that only store their state;
- refuses every other global (``os.system``, ``builtins.eval``, ``subprocess.*`` …) with a
  one-line :class:`pickle.UnpicklingError` *before* anything is called.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import typing
from collections import OrderedDict, defaultdict
from typing import Any, BinaryIO

import torch

# module prefixes whose classes become inert records (their code is never imported)
DATA_MODULES = ("torch.nn.modules.", "torch_utils.", "dnnlib.", "training.")


class Record(dict):
    """An object rebuilt as data: ``class_name``, ``state`` (its pickled attributes), and dict
    items / list items if it was a mapping or sequence."""

    class_name = "?"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()
        self.state: Any = None
        self.items_list: list = []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items_list.append(item)

    def extend(self, items: Any) -> None:
        self.items_list.extend(items)

    def __repr__(self) -> str:
        return f"Record({self.class_name})"

    def __reduce__(self):  # a Record is never pickled back
        raise TypeError("Record is inert data")


def _record_class(qualname: str) -> type[Record]:
    return type("Record", (Record,), {"class_name": qualname})


def _persistent_record(meta: dict) -> Record:
    """An EDM persistent-class record as data: the class name and its attributes."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("a persistent record that is not a class record")
    rec = _record_class(str(meta.get("class_name")))()
    rec.state = meta.get("state")
    return rec


def _reconstructor(cls: type, base: type, state: Any = None) -> Record:
    if not (isinstance(cls, type) and issubclass(cls, Record)):
        raise pickle.UnpicklingError(f"refused to rebuild {cls!r}")
    return cls()


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any,
                       *args: Any) -> torch.Tensor:
    return data


def _storage_from_bytes(b: bytes):
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode``, which protocol-2 pickles use for bytes: latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refused _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def _device(*args: Any) -> str:
    return ":".join(map(str, args))


def _numpy_globals() -> dict[tuple[str, str], Any]:
    import numpy as np

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray,
                                       ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(module, "_reconstruct")] = multiarray._reconstruct
        out[(module, "scalar")] = multiarray.scalar
    return out


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict, ("collections", "defaultdict"): defaultdict,
    **{("builtins", t.__name__): t for t in (  # plain types (data, or type references in
        set, frozenset, dict, list, tuple, int, float, complex, str, bytes, bool, object)},
    ("typing", "Any"): typing.Any,             # omegaconf's metadata), and typing.Any
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch", "device"): _device, ("_codecs", "encode"): _latin1_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    **{("torch", name): getattr(torch, name) for name in (
        "float16", "float32", "float64", "bfloat16", "int64", "int32", "uint8", "bool")},
}


def _refuse_persistent_id(pid: Any) -> Any:
    raise pickle.UnpicklingError("refused a persistent id (not an EDM pickle; a torch.save "
                                 "file is read with torch.load(weights_only=True))")


class SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in SAFE_GLOBALS:
            return SAFE_GLOBALS[key]
        numpy_globals = _numpy_globals()
        if key in numpy_globals:
            return numpy_globals[key]
        if module.startswith(DATA_MODULES) and name[:1].isupper():
            return _record_class(f"{module}.{name}")
        raise pickle.UnpicklingError(
            f"refused to load {module}.{name}: this file would run code outside the tensors "
            "and plain containers a network snapshot needs")

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # an attribute, not a method, so that torch.load's zip reader can set its own
        self.persistent_load = _refuse_persistent_id


def load(f: BinaryIO) -> Any:
    """The pickle in ``f`` as inert data (see the module docstring)."""
    return SafeUnpickler(f).load()


def module_state(rec: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict()`` of a module record: its parameters, persistent buffers and those
    of its sub-modules, in their order."""
    attrs = rec.state if isinstance(rec, Record) else None
    if not isinstance(attrs, dict):
        raise pickle.UnpicklingError(f"{prefix or 'the network'} is not a module record")
    skip = attrs.get("_non_persistent_buffers_set") or set()
    out: dict[str, torch.Tensor] = {}
    for kind in ("_parameters", "_buffers"):
        for name, value in (attrs.get(kind) or {}).items():
            if value is not None and not (kind == "_buffers" and name in skip):
                out[prefix + name] = value
    for name, child in (attrs.get("_modules") or {}).items():
        if child is not None:
            out |= module_state(child, f"{prefix}{name}.")
    return out
