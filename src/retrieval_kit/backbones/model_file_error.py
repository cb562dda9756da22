"""The error raised when a model file written by ``save_model`` cannot be read back."""

from __future__ import annotations

import os

__all__ = ["ModelFileError"]


class ModelFileError(ValueError):
    """A model file is unreadable, tampered with or not one of ours; ``path`` names the file.

    Example:
        >>> str(ModelFileError("m.safetensors", "not a safetensors file"))
        'cannot load model m.safetensors: not a safetensors file'
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load model {self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) across process boundaries
        return (type(self), (self.path, self.reason))
