"""Match local features of two images and count the matches one geometric model explains."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from retrieval_kit.rerank.local_feature_extractor import require_cv2

__all__ = ["PairVerification", "VerificationSettings", "match_descriptors", "verify_pair"]

_MIN_MATCHES = {"homography": 4, "fundamental": 8}


@dataclasses.dataclass(frozen=True)
class VerificationSettings:
    """How two images are matched and checked.

    Args:
        geometry: ``"homography"`` (a plane, or a camera that only rotates; the usual choice for
            landmark facades) or ``"fundamental"`` (any rigid 3-D scene seen from two cameras;
            looser, so unrelated pairs also find more inliers).
        ratio: Lowe's ratio test: keep a match when its distance is below ``ratio`` times the
            second-nearest one (1.0 disables it).
        mutual: keep only mutual nearest neighbours.
        ransac_threshold: MAGSAC++'s maximum residual in pixels (of the images given).
        confidence: RANSAC confidence.
        max_iters: RANSAC iterations at most.
    """

    geometry: str = "homography"
    ratio: float = 0.8
    mutual: bool = True
    ransac_threshold: float = 4.0
    confidence: float = 0.999
    max_iters: int = 2000

    def __post_init__(self) -> None:
        if self.geometry not in _MIN_MATCHES:
            raise ValueError(
                f"geometry must be 'homography' or 'fundamental', got {self.geometry!r}"
            )
        if not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {self.ratio!r}")
        if self.ransac_threshold <= 0 or not 0 < self.confidence < 1 or self.max_iters < 1:
            raise ValueError(
                "ransac_threshold must be > 0, confidence in (0, 1) and max_iters >= 1; got "
                f"{self.ransac_threshold!r}, {self.confidence!r}, {self.max_iters!r}"
            )


class PairVerification(NamedTuple):
    """The outcome of :func:`verify_pair`.

    Attributes:
        inliers: matches consistent with the estimated model (0 when none was found).
        matches: tentative matches after the ratio / mutual tests.
        model: the 3x3 homography (maps image 1 to image 2) or fundamental matrix; ``None``
            when there were too few matches or RANSAC failed.
    """

    inliers: int
    matches: int
    model: np.ndarray | None


def match_descriptors(
    desc1: np.ndarray, desc2: np.ndarray, *, ratio: float = 0.8, mutual: bool = True
) -> np.ndarray:
    """Nearest-neighbour matches by Euclidean distance, filtered by Lowe's ratio and mutuality.

    Args:
        desc1: ``(N1, D)`` descriptors of image 1.
        desc2: ``(N2, D)`` descriptors of image 2.
        ratio: keep ``i -> j`` when ``d(i, j) < ratio * d(i, second nearest)`` (1.0: no test).
        mutual: also require ``i`` to be the nearest neighbour of ``j``.

    Returns:
        ``(M, 2)`` int64 pairs ``(i, j)``, sorted by ``i``.

    Example:
        >>> a = np.array([[0.0, 0.0], [5.0, 5.0]], "float32")
        >>> match_descriptors(a, a[::-1] + 0.1).tolist()
        [[0, 1], [1, 0]]
    """
    d1 = np.asarray(desc1, np.float32)
    d2 = np.asarray(desc2, np.float32)
    if d1.ndim != 2 or d2.ndim != 2 or d1.shape[1] != d2.shape[1]:
        raise ValueError(f"descriptors must be (N, D) with the same D, got {d1.shape}, {d2.shape}")
    if len(d1) == 0 or len(d2) == 0:
        return np.zeros((0, 2), np.int64)
    # squared distances by one matrix product (BLAS releases the GIL: pairs run in parallel)
    sq = (d1 * d1).sum(1)[:, None] + (d2 * d2).sum(1)[None, :] - 2.0 * (d1 @ d2.T)
    np.maximum(sq, 0.0, out=sq)
    nn12 = sq.argmin(axis=1)
    rows = np.arange(len(d1))
    keep = np.ones(len(d1), bool)
    if ratio < 1.0:
        if len(d2) < 2:
            keep[:] = False
        else:
            two = np.partition(sq, 1, axis=1)[:, :2]
            keep &= two[:, 0] < (ratio * ratio) * two[:, 1]
    if mutual:
        keep &= sq.argmin(axis=0)[nn12] == rows
    return np.stack([rows[keep], nn12[keep]], axis=1).astype(np.int64)


def verify_pair(
    keypoints1: np.ndarray,
    desc1: np.ndarray,
    keypoints2: np.ndarray,
    desc2: np.ndarray,
    settings: VerificationSettings | None = None,
) -> PairVerification:
    """Match two images' local features and fit a model with RANSAC (OpenCV's USAC MAGSAC++).

    Args:
        keypoints1: ``(N1, 2)`` ``(x, y)`` of image 1; ``desc1`` its ``(N1, D)`` descriptors.
        keypoints2: ``(N2, 2)`` of image 2; ``desc2`` its ``(N2, D)`` descriptors.
        settings: matching and RANSAC options (defaults: homography, ratio 0.8, mutual).

    Returns:
        A :class:`PairVerification`: inlier count, match count, model.

    Example:
        >>> r = verify_pair(xy1, d1, xy2, d2)  # doctest: +SKIP
        >>> r.inliers, r.model  # doctest: +SKIP
    """
    s = settings or VerificationSettings()
    pairs = match_descriptors(desc1, desc2, ratio=s.ratio, mutual=s.mutual)
    n = len(pairs)
    if n < _MIN_MATCHES[s.geometry]:
        return PairVerification(0, n, None)
    cv2 = require_cv2()
    src = np.ascontiguousarray(np.asarray(keypoints1, np.float32)[pairs[:, 0]])
    dst = np.ascontiguousarray(np.asarray(keypoints2, np.float32)[pairs[:, 1]])
    try:
        if s.geometry == "homography":
            model, mask = cv2.findHomography(
                src,
                dst,
                cv2.USAC_MAGSAC,
                s.ransac_threshold,
                maxIters=s.max_iters,
                confidence=s.confidence,
            )
        else:
            model, mask = cv2.findFundamentalMat(
                src, dst, cv2.USAC_MAGSAC, s.ransac_threshold, s.confidence, s.max_iters
            )
    except cv2.error:  # degenerate point sets (all collinear, duplicates) make USAC throw
        return PairVerification(0, n, None)
    if model is None or mask is None or model.shape != (3, 3):
        return PairVerification(0, n, None)
    return PairVerification(int(np.count_nonzero(mask)), n, np.asarray(model, np.float64))
