"""Argument checks shared by every subpackage, so one kind of bad value gets one message.

Each check returns the value (normalised where that helps, e.g. a numpy integer becomes an
``int``) and raises ``ValueError`` naming the argument and the value it got.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "ON_ERROR",
    "check_metric",
    "check_on_error",
    "non_negative_int",
    "one_of",
    "positive_int",
]

ON_ERROR = ("raise", "skip")
METRIC_NAMES = ("ip", "l2")


def positive_int(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """``value`` as an ``int`` >= 1 (``bool`` and floats refused); ``None`` if ``allow_none``.

    Example:
        >>> positive_int(np.int64(3), "k")
        3
        >>> positive_int(0, "k")
        Traceback (most recent call last):
        ...
        ValueError: k must be a positive integer, got 0
    """
    return _int_at_least(value, name, 1, "a positive integer", allow_none)


def non_negative_int(value: Any, name: str, *, allow_none: bool = False) -> Any:
    """``value`` as an ``int`` >= 0 (``bool`` and floats refused); ``None`` if ``allow_none``.

    Example:
        >>> non_negative_int(0, "seed")
        0
    """
    return _int_at_least(value, name, 0, "a non-negative integer", allow_none)


def _int_at_least(value: Any, name: str, low: int, kind: str, allow_none: bool) -> Any:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        either = " or None" if allow_none else ""
        raise ValueError(f"{name} must be {kind}{either}, got {value!r}")
    return int(value)


def one_of(value: Any, name: str, choices: Sequence[str]) -> Any:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them.

    Example:
        >>> one_of("vote", "method", ("nn", "vote"))
        'vote'
    """
    if not isinstance(value, str) or value not in choices:
        quoted = [repr(c) for c in choices]
        listed = " or ".join(quoted) if len(quoted) == 2 else ", ".join(quoted)
        raise ValueError(f"{name} must be {listed}, got {value!r}")
    return value


def check_on_error(on_error: Any) -> str:
    """``"raise"`` or ``"skip"``: what to do with an item that cannot be read."""
    return one_of(on_error, "on_error", ON_ERROR)


def check_metric(metric: Any) -> str:
    """``"ip"`` (inner product) or ``"l2"`` (squared Euclidean distance)."""
    return one_of(metric, "metric", METRIC_NAMES)
