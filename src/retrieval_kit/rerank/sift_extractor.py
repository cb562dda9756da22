"""SIFT local features (OpenCV), the default extractor of spatial verification."""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval_kit.rerank.local_feature_extractor import LocalFeatureExtractor, require_cv2

__all__ = ["SIFTExtractor"]


class SIFTExtractor(LocalFeatureExtractor):
    """OpenCV SIFT keypoints and descriptors (RootSIFT by default), on a downsized grey image.

    Keypoints are returned in the coordinates of the image given (not of the downsized copy), so
    geometry estimated from them applies to the original pixels.

    Args:
        num_features: keypoints kept (the strongest; 0 keeps all).
        max_side: the image is shrunk so its long side is at most this (never enlarged).
        root_sift: L1-normalise then square-root the descriptors (RootSIFT, Arandjelovic &
            Zisserman 2012): Euclidean distance then compares like the Hellinger kernel, which
            matches better than raw SIFT.
        contrast_threshold: OpenCV's ``contrastThreshold`` (lower: more keypoints in flat areas).

    Example:
        >>> import numpy as np
        >>> image = (np.random.default_rng(0).random((128, 128, 3)) * 255).astype("uint8")
        >>> xy, desc = SIFTExtractor(num_features=50).extract(image)  # doctest: +SKIP
        >>> desc.shape[1]  # doctest: +SKIP
        128
    """

    def __init__(
        self,
        num_features: int = 1000,
        *,
        max_side: int = 512,
        root_sift: bool = True,
        contrast_threshold: float = 0.04,
    ) -> None:
        if num_features < 0:
            raise ValueError(f"num_features must be >= 0, got {num_features!r}")
        if max_side < 16:
            raise ValueError(f"max_side must be at least 16 pixels, got {max_side!r}")
        require_cv2()
        self.num_features = int(num_features)
        self.max_side = int(max_side)
        self.root_sift = bool(root_sift)
        self.contrast_threshold = float(contrast_threshold)

    def settings(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "max_side": self.max_side,
            "root_sift": self.root_sift,
            "contrast_threshold": self.contrast_threshold,
        }

    def extract(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cv2 = require_cv2()
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(
                f"expected an (H, W, 3) or (H, W) uint8 image, got {image.shape} {image.dtype}"
            )
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        sift = cv2.SIFT_create(
            nfeatures=self.num_features, contrastThreshold=self.contrast_threshold
        )  # one detector per call: thread-safe under a thread pool
        keypoints, desc = sift.detectAndCompute(np.ascontiguousarray(gray), None)
        if desc is None or len(keypoints) == 0:
            return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
        sx, sy = w / gray.shape[1], h / gray.shape[0]
        xy = np.array([kp.pt for kp in keypoints], np.float32)
        # pixel centres: x_original + 0.5 = (x_small + 0.5) * sx
        xy = ((xy + 0.5) * np.array([sx, sy], np.float32) - 0.5).astype(np.float32)
        desc = desc.astype(np.float32)
        if self.root_sift:
            desc /= np.maximum(desc.sum(axis=1, keepdims=True), 1e-12)
            desc = np.sqrt(desc)
        return xy, desc
