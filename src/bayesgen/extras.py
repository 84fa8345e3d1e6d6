"""Optional dependencies (the extras in pyproject.toml): import one, or say which extra has it."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or raise :class:`MissingDependency`: "<purpose> needs <package>:
    pip install 'bayesgen[<extra>]'"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingDependency(f"{purpose} needs {package}: pip install 'bayesgen[{extra}]' "
                                f"(or pip install {package})") from None
