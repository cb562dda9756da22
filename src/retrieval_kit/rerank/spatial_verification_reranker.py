"""Spatial verification: rescore the top-k neighbours by their geometrically consistent matches."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from retrieval_kit._checks import check_on_error, non_negative_int, positive_int
from retrieval_kit._progress import progress_bar
from retrieval_kit.data.image_io import load_image
from retrieval_kit.index.search_result import SearchResult
from retrieval_kit.rerank.geometric_verification import VerificationSettings, verify_pair
from retrieval_kit.rerank.local_feature_cache import LocalFeatureCache
from retrieval_kit.rerank.local_feature_extractor import LocalFeatureExtractor
from retrieval_kit.rerank.reranker import Reranker, check_result, resort, valid_mask

__all__ = ["SpatialVerificationReranker"]

logger = logging.getLogger(__name__)

Features = tuple[np.ndarray, np.ndarray]


class SpatialVerificationReranker(Reranker):
    """Match local features of each query with its top-k neighbours; inliers raise the score.

    For every query and each of its first ``k`` neighbours, local features (SIFT by default) are
    matched (mutual nearest neighbours + Lowe's ratio test) and a homography or fundamental matrix
    is fitted with RANSAC (OpenCV's MAGSAC++). The rule, then a stable re-sort of the row::

        score += weight * min(inliers, inlier_cap) / inlier_cap    if inliers >= min_inliers

    Pairs with fewer than ``min_inliers`` inliers (chance agreements of unrelated images) keep
    their score. ``rerank_with_inliers`` also returns the inlier counts, aligned with the new
    result, e.g. as a feature of :class:`retrieval_kit.predict.ConfidenceModel`.

    Needs OpenCV: ``pip install 'retrieval_kit[verify]'``.

    Args:
        images: ``{id: image path}`` for the database ids (and the query ids, when queries are
            passed by id), or a function ``id -> path``.
        extractor: a :class:`LocalFeatureExtractor` (default ``SIFTExtractor()``: 1000 RootSIFT
            keypoints on images shrunk to a long side of 512 px).
        k: neighbours verified per query (the rest keep their score).
        verification: matching and RANSAC options (:class:`VerificationSettings`).
        weight: the score added for ``inlier_cap`` or more inliers.
        inlier_cap: inliers at which the bonus saturates.
        min_inliers: fewer inliers than this count as none.
        cache_dir: folder for per-image feature files (``None``: no disk cache).
        num_workers: threads extracting features and verifying pairs (OpenCV and BLAS release
            the GIL).
        on_error: ``"raise"``: an unreadable image raises its ``ImageLoadError``; ``"skip"``: it
            is logged and gets no features (0 inliers).
        progress: show tqdm bars.

    Example:
        >>> sv = SpatialVerificationReranker(db_paths, cache_dir="cache")  # doctest: +SKIP
        >>> result, inliers = sv.rerank_with_inliers(query_paths, result)  # doctest: +SKIP
    """

    def __init__(
        self,
        images: Mapping[Any, str | os.PathLike] | Callable[[Any], str | os.PathLike],
        *,
        extractor: LocalFeatureExtractor | None = None,
        k: int = 10,
        verification: VerificationSettings | None = None,
        weight: float = 1.0,
        inlier_cap: int = 50,
        min_inliers: int = 12,
        cache_dir: str | os.PathLike | None = None,
        num_workers: int = 4,
        on_error: str = "raise",
        progress: bool = False,
    ) -> None:
        positive_int(k, "k")
        positive_int(inlier_cap, "inlier_cap")
        non_negative_int(min_inliers, "min_inliers")
        positive_int(num_workers, "num_workers")
        check_on_error(on_error)
        if extractor is None:
            from retrieval_kit.rerank.sift_extractor import SIFTExtractor

            extractor = SIFTExtractor()
        if not isinstance(extractor, LocalFeatureExtractor):
            raise TypeError(
                f"extractor must be a LocalFeatureExtractor, got {type(extractor).__name__}"
            )
        self.images = images
        self.extractor = extractor
        self.k = int(k)
        self.verification = verification or VerificationSettings()
        self.weight = float(weight)
        self.inlier_cap = int(inlier_cap)
        self.min_inliers = int(min_inliers)
        self.num_workers = int(num_workers)
        self.on_error = on_error
        self.progress = bool(progress)
        self.cache = (
            None if cache_dir is None else LocalFeatureCache(cache_dir, extractor.cache_key())
        )

    def _path(self, image_id: Any) -> str:
        key = image_id.item() if isinstance(image_id, np.generic) else image_id
        if callable(self.images):
            return os.fspath(self.images(key))
        try:
            return os.fspath(self.images[key])
        except KeyError:
            raise KeyError(f"id {key!r} has no image path in `images`") from None

    def features(self, path: str | os.PathLike) -> Features:
        """Local features of one image file (from the disk cache when present)."""
        if self.cache is not None:
            hit = self.cache.get(path)
            if hit is not None:
                return hit
        try:
            image = np.asarray(load_image(path))
        except OSError:
            if self.on_error == "raise":
                raise
            logger.warning("spatial verification skips unreadable image %s", path, exc_info=True)
            return np.zeros((0, 2), np.float32), np.zeros((0, 1), np.float32)
        xy, desc = self.extractor.extract(image)
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        desc = np.asarray(desc, np.float32)
        if desc.ndim != 2 or len(desc) != len(xy):
            raise ValueError(
                f"{type(self.extractor).__name__}.extract returned {len(xy)} keypoints and "
                f"descriptors of shape {desc.shape} for {path}"
            )
        if self.cache is not None:
            self.cache.put(path, xy, desc)
        return xy, desc

    def _query_paths(self, queries: Any, n_q: int, query_ids: Any) -> list[str]:
        if (
            isinstance(queries, Sequence)
            and not isinstance(queries, (str, bytes))
            and len(queries) == n_q
            and all(isinstance(q, (str, os.PathLike)) for q in queries)
        ):
            return [os.fspath(q) for q in queries]
        if query_ids is None:
            raise TypeError(
                "SpatialVerificationReranker needs the query images: pass `queries` as a list of "
                "image paths (one per result row), or `query_ids` that `images` maps to paths"
            )
        query_ids = list(query_ids)
        if len(query_ids) != n_q:
            raise ValueError(f"{len(query_ids)} query_ids for {n_q} result rows")
        return [self._path(i) for i in query_ids]

    def inliers(self, queries: Any, result: SearchResult, *, query_ids: Any = None) -> np.ndarray:
        """``(Q, width)`` int32 inlier counts in the result's column order.

        Columns past ``k`` and missing neighbours hold -1 (not verified).

        Args:
            queries: the query image paths (one per result row); or anything (e.g. the query
                embeddings of a reranker chain) together with ``query_ids`` found in ``images``.
            result: the ``SearchResult`` to verify.
            query_ids: query ids, looked up in ``images`` when ``queries`` are not paths.
        """
        check_result(result)
        ids = np.asarray(result.ids)
        n_q, width = ids.shape
        q_paths = self._query_paths(queries, n_q, query_ids)
        kk = min(self.k, width)
        mask = valid_mask(ids)[:, :kk]
        pairs = [(r, c) for r in range(n_q) for c in range(kk) if mask[r, c]]
        db_paths = {(r, c): self._path(ids[r, c]) for r, c in pairs}
        rows = sorted({r for r, _ in pairs})
        unique = list(dict.fromkeys([*(q_paths[r] for r in rows), *db_paths.values()]))
        out = np.full((n_q, width), -1, np.int32)
        if not pairs:
            return out
        with ThreadPoolExecutor(self.num_workers) as pool:
            feats = dict(
                zip(
                    unique,
                    progress_bar(
                        pool.map(self.features, unique),
                        enabled=self.progress,
                        total=len(unique),
                        desc="local features",
                    ),
                )
            )

            def one(pair: tuple[int, int]) -> int:
                a, b = feats[q_paths[pair[0]]], feats[db_paths[pair]]
                if a[1].shape[1] != b[1].shape[1]:
                    return 0  # an image skipped on error has no descriptors
                return verify_pair(a[0], a[1], b[0], b[1], self.verification).inliers

            counts = list(
                progress_bar(
                    pool.map(one, pairs),
                    enabled=self.progress,
                    total=len(pairs),
                    desc="verification",
                )
            )
        for (r, c), n in zip(pairs, counts):
            out[r, c] = n
        return out

    def rescore(self, result: SearchResult, inliers: np.ndarray) -> tuple[SearchResult, np.ndarray]:
        """Apply the rule to ``result`` and re-sort; returns the inliers re-sorted as well."""
        check_result(result)
        inl = np.asarray(inliers)
        scores = np.array(result.scores, dtype=np.float32)
        if inl.shape != scores.shape:
            raise ValueError(f"inliers have shape {inl.shape}, the result {scores.shape}")
        counted = np.where(inl >= max(self.min_inliers, 1), inl, 0)
        bonus = self.weight * np.minimum(counted, self.inlier_cap) / self.inlier_cap
        scores = (scores + bonus).astype(np.float32)
        ids = np.asarray(result.ids)
        scores[~valid_mask(ids)] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        return resort(scores, ids), np.take_along_axis(inl, order, axis=1)

    def rerank_with_inliers(
        self, queries: Any, result: SearchResult, *, query_ids: Any = None
    ) -> tuple[SearchResult, np.ndarray]:
        """``rerank`` plus the ``(Q, width)`` inlier counts aligned with the returned result."""
        return self.rescore(result, self.inliers(queries, result, query_ids=query_ids))

    def rerank(self, queries: Any, result: SearchResult, *, query_ids: Any = None) -> SearchResult:
        """Verify the top ``k`` of each row and rescore (see the class docstring)."""
        return self.rerank_with_inliers(queries, result, query_ids=query_ids)[0]
