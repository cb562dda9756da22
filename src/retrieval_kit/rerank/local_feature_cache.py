"""On-disk cache of local features: one ``.npz`` per (image file, extractor settings)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from retrieval_kit.io import atomic_write

__all__ = ["LocalFeatureCache"]

logger = logging.getLogger(__name__)


class LocalFeatureCache:
    """Stores ``(keypoints, descriptors)`` per image under ``folder``.

    The key is the image's absolute path, modification time (ns) and size, plus the extractor's
    ``cache_key()``: editing or replacing the image, or changing a setting, misses the cache.
    Files are written atomically; a file that cannot be read back (truncated, foreign, another key)
    is logged and treated as a miss, so it is recomputed and overwritten. Loading never unpickles.

    Args:
        folder: the cache folder (created on first write).
        extractor_key: the extractor's ``cache_key()``.

    Example:
        >>> cache = LocalFeatureCache("cache", SIFTExtractor().cache_key())  # doctest: +SKIP
        >>> cache.get("a.jpg") is None  # doctest: +SKIP
        True
    """

    def __init__(self, folder: str | os.PathLike, extractor_key: str) -> None:
        self.folder = Path(folder)
        self.extractor_key = str(extractor_key)

    def key(self, image_path: str | os.PathLike) -> str:
        """The JSON key of ``image_path`` (stat'ed now)."""
        p = Path(image_path).resolve()
        st = p.stat()
        return json.dumps(
            [str(p), st.st_mtime_ns, st.st_size, self.extractor_key], separators=(",", ":")
        )

    def file_of(self, key: str) -> Path:
        h = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self.folder / h[:2] / f"{h}.npz"

    def get(self, image_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
        """Cached ``(keypoints, descriptors)`` of ``image_path``, or ``None``."""
        key = self.key(image_path)
        f = self.file_of(key)
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                stored = str(z["key"])
                xy = np.asarray(z["keypoints"], np.float32)
                desc = np.asarray(z["descriptors"], np.float32)
        except Exception as e:  # any unreadable file is only a miss
            logger.warning("ignoring unreadable local-feature cache file %s (%s)", f, e)
            return None
        if stored != key or xy.ndim != 2 or xy.shape[1:] != (2,) or desc.ndim != 2:
            logger.warning("ignoring local-feature cache file %s: it holds another entry", f)
            return None
        if len(xy) != len(desc):
            logger.warning("ignoring local-feature cache file %s: inconsistent shapes", f)
            return None
        return xy, desc

    def put(self, image_path: str | os.PathLike, keypoints: np.ndarray, desc: np.ndarray) -> None:
        """Store the features of ``image_path`` (atomic write)."""
        key = self.key(image_path)
        with atomic_write(self.file_of(key), "wb") as f:
            np.savez(
                f,
                key=np.array(key),
                keypoints=np.asarray(keypoints, np.float32),
                descriptors=np.asarray(desc, np.float32),
            )
