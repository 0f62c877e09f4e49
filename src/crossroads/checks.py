"""Checks of the hyper-parameters users give: each raises a CrossroadsError naming the argument and the range.

Constructors of routers and learners call them, so a bad option fails when the component
is built (from a spec such as ``knn:k=0``), not in the middle of training.
"""

from __future__ import annotations

import math

from crossroads.errors import CrossroadsError


def check_fraction(value: float, name: str, low_open: bool = False, high_open: bool = False) -> None:
    """``value`` in [0, 1] (open at 0 with ``low_open``, at 1 with ``high_open``)."""
    ok = _number(value) and 0 <= value <= 1 and not (low_open and value == 0) and not (high_open and value == 1)
    if not ok:
        interval = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise CrossroadsError(f"{name} must be a number in {interval}, got {value!r}")


def check_positive(value: float, name: str, allow_zero: bool = False) -> None:
    """``value`` a finite number > 0 (>= 0 with ``allow_zero``)."""
    if not _number(value) or value < 0 or (value == 0 and not allow_zero):
        raise CrossroadsError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}")


def check_count(value: int, name: str, minimum: int = 1) -> None:
    """``value`` a whole number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CrossroadsError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def check_bool(value: object, name: str) -> None:
    if not isinstance(value, bool):
        raise CrossroadsError(f"{name} must be True or False, got {value!r}")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
