"""The error raised when an image file cannot be turned into an RGB picture."""

from __future__ import annotations

import os

__all__ = ["ImageLoadError", "ImageNotFoundError"]


class ImageLoadError(OSError):
    """An image could not be loaded; ``path`` names the file and ``reason`` says why.

    Args:
        path: the offending file.
        reason: a short human-readable cause ("truncated", "not an image" ...). When it is ``None``
            ``path`` is taken as the whole message: torch's DataLoader re-raises worker errors by
            calling the exception type with a single message argument.

    Example:
        >>> err = ImageLoadError("a.jpg", "empty file (0 bytes)")
        >>> str(err)
        'cannot load image a.jpg: empty file (0 bytes)'
    """

    def __init__(self, path: str | os.PathLike, reason: str | None = None) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        message = self.path if reason is None else f"cannot load image {self.path}: {reason}"
        super().__init__(message)

    def __reduce__(self):  # keep (path, reason) across process boundaries (DataLoader workers)
        return (type(self), (self.path, self.reason))


class ImageNotFoundError(ImageLoadError, FileNotFoundError):
    """The image file does not exist; also a :class:`FileNotFoundError`.

    Example:
        >>> isinstance(ImageNotFoundError("a.jpg", "no such file"), FileNotFoundError)
        True
    """
