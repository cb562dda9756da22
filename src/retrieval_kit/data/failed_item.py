"""The marker a dataset returns (``on_error="skip"``) in place of an image it could not load."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["FailedItem"]


class FailedItem(NamedTuple):
    """An item that could not be loaded: its row in the dataset, its path and the reason.

    ``error`` keeps the original exception when it can travel between processes, so
    ``on_error="raise"`` downstream can re-raise exactly what the loader raised.

    Example:
        >>> FailedItem(3, "b.jpg", "empty file (0 bytes)").row
        3
    """

    row: int
    path: str
    reason: str
    error: BaseException | None = None
