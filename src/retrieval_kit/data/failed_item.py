"""The marker a dataset returns (``on_error="skip"``) in place of an image it could not load."""

from __future__ import annotations

import pickle
from typing import NamedTuple

import torch.utils.data

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

    @classmethod
    def from_exception(cls, row: int, path: str, exc: BaseException) -> FailedItem:
        """The marker for ``exc`` raised while loading ``path``.

        ``reason`` is the exception's own ``reason`` (an :class:`ImageLoadError`) or its type and
        message; the exception itself is kept only when it can travel from a DataLoader worker
        to the main process.

        Example:
            >>> FailedItem.from_exception(0, "a.jpg", OSError("unreadable")).reason
            'OSError: unreadable'
        """
        return cls(row, path, _reason(exc), _portable(exc))


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason
    return f"{type(exc).__name__}: {exc}"


def _portable(exc: BaseException) -> BaseException | None:
    if torch.utils.data.get_worker_info() is None:
        return exc
    try:
        pickle.dumps(exc)
    except Exception:
        return None
    return exc
