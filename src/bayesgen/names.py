"""Names that become parts of paths: run names, experiment and preset names, report labels.

A name is one folder or file name, never a path: ASCII letters, digits, ``-``, ``_`` and ``.``,
no leading dot (so neither ``..`` nor a hidden file), at most 100 characters. It is checked
before anything is written, so ``name=../../escape`` cannot place a run outside ``runs/``.
Paths the user gives as paths (``run_dir=``, ``out=``, ``config=``) are taken as given.
"""

from __future__ import annotations

import re

NAME_RULE = "ASCII letters, digits, '-', '_' and '.', no leading dot, at most 100 characters"
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")


def name_problem(value: object, what: str) -> str | None:
    """One line saying why ``value`` (given as ``what``, e.g. ``name=``) is not a name, or
    None when it is one."""
    if isinstance(value, str) and _NAME.fullmatch(value):
        return None
    shown = ascii(value) if isinstance(value, str) else repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "…"
    return (f"{what}{shown} is not a name: a name becomes a folder or file name, so it may hold "
            f"only {NAME_RULE}")
