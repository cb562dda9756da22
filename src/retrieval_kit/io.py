"""Atomic file writes: what every module (and script) that saves something uses.

A write goes to a temporary file in the destination folder, is flushed and fsync'ed, then renamed
over the destination with ``os.replace`` (atomic on POSIX and Windows). A process killed mid-write
leaves the previous file intact and, at worst, a stray hidden ``.tmp`` file beside it.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text", "fsync_dir"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success rename it to ``path``.

    Args:
        path: the destination. Its folder is created if needed.
        mode: ``"wb"`` or ``"w"`` (text; pass ``encoding``/``newline`` through ``open_kwargs``).

    Yields:
        The open temporary file. If the body raises, the temporary file is removed and ``path`` is
        left as it was.

    Example:
        >>> with atomic_write("scores.csv", "w", encoding="utf-8") as f:  # doctest: +SKIP
        ...     f.write("id,score\\n")
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates files readable by the owner only; give the result ordinary permissions.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def fsync_dir(folder: str | os.PathLike) -> None:
    """Persist renames and new entries in ``folder`` (a no-op where impossible, on Windows).

    Example:
        >>> fsync_dir(".")
    """
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
