"""Value types of command-line options: a converter (raising ValueError with the reason), the
metavar the help shows, and a sample value the tests parse."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Type:
    """How an option's text becomes a value: ``convert`` raises ValueError with the reason."""

    convert: Callable[[str], Any]
    metavar: str
    example: str

    def __call__(self, text: str) -> Any:
        return self.convert(text)


def _positive_int(text: str) -> int:
    n = int(text)
    if n <= 0:
        raise ValueError("must be a positive integer")
    return n


def _int_or_inf(text: str) -> int | None:
    if text.lower() in ("inf", "none", "null", "0"):
        return None
    n = int(text)
    if n < 0:
        raise ValueError("must be positive")
    return n


def _finite(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


def _positive(text: str) -> float:
    v = float(text)
    if not v > 0:
        raise ValueError("must be positive")
    return v


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _positive_list(text: str) -> list[float]:
    values = [_positive(v) for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError("give comma-separated positive numbers, e.g. 1,2,3")
    return values


def _grid_points(text: str) -> int:
    n = int(text)
    if n < 2:
        raise ValueError("a time grid needs at least 2 points")
    return n


def text(metavar: str = "TEXT", example: str = "x") -> Type:
    return Type(str, metavar, example)


def choice(*options: str) -> Type:
    def convert(value: str) -> str:
        if value not in options:
            raise ValueError(f"choose one of {', '.join(options)}")
        return value
    return Type(convert, "|".join(options), options[0])


INT = Type(int, "INT", "1")
POSITIVE_INT = Type(_positive_int, "N", "3")
INT_OR_INF = Type(_int_or_inf, "N|inf", "inf")
FLOAT = Type(_finite, "X", "0.5")
POSITIVE = Type(_positive, "X>0", "0.5")
BOOL = Type(_bool, "true|false", "true")
POSITIVE_LIST = Type(_positive_list, "X,Y,…", "1,2")
GRID_POINTS = Type(_grid_points, "N≥2", "5")
PATH = text("PATH", "p")
DEVICE = text("cpu|cuda", "cpu")
