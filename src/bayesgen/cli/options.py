"""The one source of every command's options: a declarative spec from which both the
``key=value`` parser and the ``--help`` text (and the shell completion) are generated."""

from __future__ import annotations

import difflib
import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bayesgen.cli.types import (  # noqa: F401  (the value types, re-exported for the commands)
    BOOL,
    DEVICE,
    FLOAT,
    GRID_POINTS,
    INT,
    INT_OR_INF,
    PATH,
    POSITIVE,
    POSITIVE_INT,
    POSITIVE_LIST,
    Type,
    choice,
    text,
)


class UsageError(ValueError):
    """Bad command-line arguments."""


@dataclass(frozen=True)
class Option:
    """One ``name=value`` option: its type, default (None: none, or one the help describes),
    whether it is required, and a one-line help."""

    name: str
    type: Type = field(default_factory=text)
    default: Any = None
    help: str = ""
    required: bool = False
    exists: bool = False  # a path that must exist (checked before anything heavy is imported)

    def usage(self) -> str:
        return f"{self.name}={self.type.metavar}"


@dataclass
class Command:
    """A command (or a subcommand such as ``fid calc``): ``run`` takes the parsed options, or,
    for ``passthrough`` commands (Hydra overrides), the raw arguments."""

    name: str
    summary: str
    run: Callable[..., int] | None = None
    options: Sequence[Option] = ()
    description: str | Callable[[], str] = ""  # a callable: computed when help is asked
    subcommands: dict[str, Command] = field(default_factory=dict)
    passthrough: bool = False
    usage_args: str = ""  # the usage line's arguments, when not generated from the options

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)


class Options(dict):
    """Parsed options: every option of the spec (its default, or None, when not given);
    ``given`` holds the names given on the command line."""

    given: set[str]


def parse(command: Command, args: Sequence[str], prog: str) -> Options:
    """``key=value`` arguments converted by the spec; unknown keys are refused with a
    suggestion, a missing required one named."""
    spec = {o.name: o for o in command.options}
    out = Options({o.name: o.default for o in command.options})
    out.given = given = set()
    for arg in args:
        if "=" not in arg:
            raise UsageError(f"{prog}: expected key=value, got {arg!r}")
        key, value = arg.split("=", 1)
        if key not in spec:
            raise UsageError(f"{prog}: unknown option {shown(key)}={suggest(key, spec)}")
        try:
            out[key] = spec[key].type(value)
        except ValueError as e:
            raise UsageError(f"{prog}: invalid value {value!r} for {key}= ({e})") from None
        given.add(key)
    missing = [o.name for o in command.options if o.required and o.name not in given]
    if missing:
        raise UsageError(f"{prog}: missing required option {missing[0]}=... "
                         f"(see {prog} --help)")
    for key in sorted(given, key=list(spec).index):  # paths last: the spelling is checked first
        if spec[key].exists and not os.path.exists(out[key]):
            raise UsageError(f"{prog}: {key}={shown(out[key])} not found; pass "
                             f"{key}=<{spec[key].help}>")
    return out


def shown(text: str) -> str:
    """A value the user typed, as an error message shows it: escaped (one line) unless it is
    printable as it is."""
    return text if text.isprintable() else ascii(text)


def suggest(word: str, choices) -> str:
    """'; did you mean X?' (or the valid choices) for an unknown ``word``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]}=?"
    return f"; valid options: {', '.join(choices)}"


def usage_line(command: Command, prog: str) -> str:
    if command.subcommands:
        return f"usage: {prog} {'|'.join(command.subcommands)} [key=value ...]"
    if command.usage_args:
        return f"usage: {prog} {command.usage_args}"
    required = " ".join(o.usage() for o in command.options if o.required)
    return f"usage: {prog} {required + ' ' if required else ''}[key=value ...]".replace("  ", " ")


WIDTH = 92  # help text width


def help_text(command: Command, prog: str) -> str:
    """The ``--help`` text, generated from the spec."""
    about = command.description() if callable(command.description) else command.description
    lines = [usage_line(command, prog), ""]
    for para in (about or command.summary).splitlines():
        indent = " " * (len(para) - len(para.lstrip()))
        lines += textwrap.wrap(para, WIDTH, subsequent_indent=indent + "  " * bool(indent)) or [""]
    if command.subcommands:
        lines += ["", "subcommands:"]
        width = max(len(s) for s in command.subcommands)
        lines += [f"  {s:<{width}}  {c.summary}" for s, c in command.subcommands.items()]
        lines += ["", f"Run `{prog} SUBCOMMAND --help` for its options."]
    if command.options:
        lines += ["", "options:"]
        cells = [(o.usage(), _option_help(o)) for o in command.options]
        width = min(28, max(len(u) for u, _ in cells))
        for u, h in cells:
            first = f"  {u:<{width}}  " if len(u) <= width else f"  {u}\n  {'':<{width}}  "
            pad = " " * (width + 4)
            lines.append(first + "\n".join(textwrap.wrap(h, WIDTH - len(pad))).replace(
                "\n", "\n" + pad))
    return "\n".join(lines)


def _option_help(o: Option) -> str:
    tail = " (required)" if o.required else (
        f" (default {_show(o.default)})" if o.default is not None else "")
    return o.help + tail


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)
