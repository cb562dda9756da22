"""Per class, the pool images nearest to its centre (hard non-landmarks for its batches)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import faiss
import numpy as np
import torch

logger = logging.getLogger(__name__)


def _as_matrix(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        row = int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])
        raise ValueError(f"{name} row {row} is not finite")
    return x


def nearest_pool_rows(
    embeddings: np.ndarray | torch.Tensor,
    labels: Sequence | np.ndarray | torch.Tensor,
    pool_embeddings: np.ndarray | torch.Tensor,
    k: int,
) -> np.ndarray:
    """(num_classes, k) positions in the pool of the k images nearest (cosine) to each class.

    A class's centre is the mean of its rows' L2-normalised embeddings, normalised again (as in
    ``cluster_classes``); the pool is searched exactly with faiss. Rows follow the sorted
    unique labels, the order of a sampler's ``classes``, so the table is the ``candidates`` of
    ``NonLandmarkBatchSampler``. Embeddings from a frozen model computed once (e.g. the model
    that clusters the classes) make the choice once per run; recompute to follow training.

    Args:
        embeddings: (N, D) embeddings of the labelled (landmark) rows.
        labels: their N labels.
        pool_embeddings: (M, D) embeddings of the non-landmark pool.
        k: neighbours per class (at most M; fewer pool images give all of them).

    Returns:
        int64 (num_classes, min(k, M)) table, nearest first.

    Example:
        >>> emb = np.array([[1, 0], [0, 1]], dtype="float32")
        >>> pool = np.array([[0, 1], [1, 0.1], [1, 1]], dtype="float32")
        >>> nearest_pool_rows(emb, [7, 3], pool, k=2).tolist()  # class 3 first: [0, 1]
        [[0, 2], [1, 2]]
    """
    x = _as_matrix(embeddings, "embeddings")
    pool = _as_matrix(pool_embeddings, "pool_embeddings")
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(
            f"labels must have shape ({len(x)},) to match embeddings, got {labels.shape}"
        )
    if pool.shape[1] != x.shape[1]:
        raise ValueError(
            f"pool_embeddings have {pool.shape[1]} dimensions, embeddings {x.shape[1]}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    x = np.ascontiguousarray(x)
    faiss.normalize_L2(x)
    classes, class_of = np.unique(labels, return_inverse=True)
    class_of = class_of.ravel()
    centres = np.zeros((len(classes), x.shape[1]), dtype=np.float64)
    np.add.at(centres, class_of, x)
    centres = np.ascontiguousarray(centres, dtype=np.float32)
    faiss.normalize_L2(centres)
    pool = np.ascontiguousarray(pool)
    faiss.normalize_L2(pool)
    index = faiss.IndexFlatIP(pool.shape[1])
    index.add(pool)
    sims, table = index.search(centres, min(int(k), len(pool)))
    logger.info(
        "hard non-landmarks: mean cosine of a class's nearest %.3f, of its %d-th %.3f",
        float(sims[:, 0].mean()),
        table.shape[1],
        float(sims[:, -1].mean()),
    )
    return table.astype(np.int64)
