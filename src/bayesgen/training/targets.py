"""The ``_target_``s a configuration may name: bayesgen's own classes and those the user
trusts. No torch at import: the command line checks its configuration before torch loads."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any


def trusted_targets() -> frozenset[str]:
    """The ``_target_`` values a configuration read from a file may use: bayesgen's methods
    (and their named constructors), networks, data module, EDM's augmentation pipeline, and the
    DDP/FSDP/FSDP2 strategies."""
    from bayesgen import methods, nets

    names = {"bayesgen.data.DataModule", "bayesgen.data.datamodule.DataModule",
             "bayesgen.training.augment.AugmentPipe",
             "lightning.pytorch.strategies.DDPStrategy",
             "lightning.pytorch.strategies.FSDPStrategy",
             "lightning.pytorch.strategies.ModelParallelStrategy",
             "torch.distributed.fsdp.wrap.size_based_auto_wrap_policy"}
    for module, prefix in ((methods, "bayesgen.methods"), (nets, "bayesgen.nets")):
        for name in module.__all__:
            obj = getattr(module, name)
            if not isinstance(obj, type):
                continue
            spellings = (f"{prefix}.{name}", f"{obj.__module__}.{obj.__qualname__}")
            names.update(spellings)
            for attr, value in vars(obj).items():
                if isinstance(value, classmethod) and not attr.startswith("_"):
                    names.update(f"{s}.{attr}" for s in spellings)
    extra = os.environ.get("BAYESGEN_TRUSTED_TARGETS", "")
    names.update(t.strip() for t in extra.split(",") if t.strip())
    return frozenset(names)


def find_targets(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every ``_target_`` in a plain nested ``node``."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            where = f"{key}.{k}" if key else str(k)
            if k == "_target_":
                yield where, v
            else:
                yield from find_targets(v, where)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from find_targets(v, f"{key}[{i}]")
