"""An item that could not be loaded: the one way the library reports a skipped image."""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

import torch.utils.data

__all__ = ["FailedItem"]


class _Fields(NamedTuple):
    row: int
    path: str
    reason: str


class FailedItem(_Fields):
    """``(row, path, reason)``: an item that could not be loaded, its row, its path and why.

    A dataset returns one (``on_error="skip"``) in place of an image, ``collate_images`` lists
    them in ``ImageBatch.failures`` and ``extract_embeddings`` returns them as ``failed``. It is a
    3-tuple, so ``for row, path, reason in failed`` works. ``error`` (not part of the tuple) keeps
    the original exception while it can travel between processes, so ``on_error="raise"``
    downstream can re-raise exactly what the loader raised.

    Example:
        >>> item = FailedItem(3, "b.jpg", "empty file (0 bytes)")
        >>> item.row, item == (3, "b.jpg", "empty file (0 bytes)"), item.error
        (3, True, None)
    """

    error: BaseException | None

    def __new__(
        cls, row: int, path: str, reason: str, error: BaseException | None = None
    ) -> FailedItem:
        item = super().__new__(cls, row, path, reason)
        item.error = error
        return item

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

    def _replace(self, **changes: Any) -> FailedItem:
        # namedtuple's _replace builds through tuple.__new__, which would drop ``error``.
        error = changes.pop("error", self.error)
        return FailedItem(*_Fields(*self)._replace(**changes), error=error)

    def without_error(self) -> FailedItem:
        """The same item without the exception (nothing kept alive by its traceback)."""
        return FailedItem(*self)


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
