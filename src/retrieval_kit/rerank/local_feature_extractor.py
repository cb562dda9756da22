"""The base class of local-feature extractors used by spatial verification."""

from __future__ import annotations

import abc
import json
from typing import Any

import numpy as np

__all__ = ["LocalFeatureExtractor", "require_cv2"]

_CV2_MISSING = (
    "spatial verification needs OpenCV, which is an optional dependency: install it with "
    "`pip install 'retrieval_kit[verify]'` (it adds opencv-python-headless)"
)


def require_cv2() -> Any:
    """Import and return ``cv2``, or raise an ``ImportError`` naming the ``[verify]`` extra."""
    try:
        import cv2
    except ImportError as e:
        raise ImportError(_CV2_MISSING) from e
    return cv2


class LocalFeatureExtractor(abc.ABC):
    """Turns an image into keypoints and descriptors; subclass it to plug in learned features.

    Fill in ``extract``. Override ``settings`` to return every parameter that changes the output
    (it is part of the on-disk cache key, so changing a setting never reuses stale features).

    Example:
        >>> class Corners(LocalFeatureExtractor):
        ...     def extract(self, image):
        ...         h, w = image.shape[:2]
        ...         xy = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], "float32")
        ...         return xy, np.eye(4, dtype="float32")
        >>> xy, desc = Corners().extract(np.zeros((10, 20, 3), "uint8"))
        >>> xy.shape, desc.shape
        ((4, 2), (4, 4))
    """

    @abc.abstractmethod
    def extract(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local features of one image.

        Args:
            image: ``(H, W, 3)`` uint8 RGB.

        Returns:
            ``(keypoints, descriptors)``: ``(N, 2)`` float32 ``(x, y)`` positions in the pixel
            coordinates of ``image`` and ``(N, D)`` float32 descriptors compared by Euclidean
            distance; ``N`` may be 0.
        """

    def settings(self) -> dict[str, Any]:
        """Parameters that change the output (JSON-serialisable); part of the cache key."""
        return {}

    def cache_key(self) -> str:
        """A string naming this extractor and its settings."""
        cls = type(self)
        return json.dumps(
            {"extractor": f"{cls.__module__}.{cls.__qualname__}", "settings": self.settings()},
            sort_keys=True,
        )
