"""Former home of :mod:`retrieval_kit.io`, kept so older imports keep working."""

from retrieval_kit.io import atomic_write, atomic_write_json, atomic_write_text, fsync_dir

_fsync_dir = fsync_dir

__all__ = ["atomic_write", "atomic_write_json", "atomic_write_text", "fsync_dir"]
