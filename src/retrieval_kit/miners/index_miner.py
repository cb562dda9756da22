"""Offline, dataset-wide hard-negative mining with faiss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import faiss
import numpy as np

from retrieval_kit._checks import check_metric, positive_int
from retrieval_kit._progress import progress_bar


class HardNegatives(NamedTuple):
    """Result of ``IndexMiner.mine``.

    Attributes:
        indices: (N, k) int64 row numbers of each sample's hardest negatives, hardest first;
            -1 where the dataset has fewer than k samples of other labels.
        scores: (N, k) float32 inner products (metric "ip", descending; -inf where missing) or
            squared L2 distances (metric "l2", ascending; +inf where missing).
    """

    indices: np.ndarray
    scores: np.ndarray


class IndexMiner:
    """For every sample of a dataset, its k nearest samples with another label (faiss search).

    Offline companion of the in-batch miners: embed the training set with the current model,
    mine each image's hardest negatives over the whole set, and build batches or a
    hard-negative pool from them (e.g. put an anchor's class next to the classes of its hard
    negatives). The search is exact (``IndexFlatIP`` / ``IndexFlatL2``) unless ``index`` is
    given; queries run in batches, ordered by class size so that a batch needs to look at most
    ``k + largest class in the batch`` neighbours, which guarantees the exact k nearest
    negatives.

    Args:
        k: negatives per sample.
        metric: "ip" (inner product; cosine on L2-normalised embeddings) or "l2".
        batch_size: queries per faiss search call.
        normalize: L2-normalise the embeddings first (cosine similarity with "ip").
        progress: show a tqdm bar over query batches.

    Example:
        >>> import numpy as np
        >>> emb = np.array([[0.0], [0.1], [1.0], [5.0]], dtype="float32")
        >>> IndexMiner(k=1, metric="l2").mine(emb, [0, 0, 1, 1]).indices.ravel().tolist()
        [2, 2, 1, 1]
    """

    def __init__(
        self,
        k: int = 10,
        metric: str = "ip",
        batch_size: int = 1024,
        normalize: bool = False,
        progress: bool = False,
    ) -> None:
        positive_int(k, "k")
        check_metric(metric)
        positive_int(batch_size, "batch_size")
        self.k = k
        self.metric = metric
        self.batch_size = batch_size
        self.normalize = normalize
        self.progress = progress

    def mine(
        self,
        embeddings: np.ndarray,
        labels: Sequence | np.ndarray,
        index: faiss.Index | None = None,
    ) -> HardNegatives:
        """Hardest negatives of every row of ``embeddings``.

        Args:
            embeddings: (N, D) array (any float dtype; searched as float32).
            labels: N labels (ints or strings).
            index: optional faiss index already holding exactly these embeddings in row order
                (e.g. an IVF index for millions of rows; results are then approximate).

        Returns:
            ``HardNegatives(indices, scores)``, both (N, k).
        """
        x = np.ascontiguousarray(np.asarray(embeddings), dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
        labels = np.asarray(labels)
        if labels.shape != (len(x),):
            raise ValueError(
                f"labels must have shape ({len(x)},) to match embeddings, got {labels.shape}"
            )
        if not np.isfinite(x).all():
            row = int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])
            raise ValueError(f"embeddings row {row} is not finite")
        if self.normalize:
            x = x.copy()
            faiss.normalize_L2(x)
        n, k = len(x), self.k
        if index is None:
            index = (faiss.IndexFlatIP if self.metric == "ip" else faiss.IndexFlatL2)(x.shape[1])
            index.add(x)
        elif index.ntotal != n:
            raise ValueError(f"index holds {index.ntotal} vectors, embeddings have {n} rows")
        _, class_of, class_size = np.unique(labels, return_inverse=True, return_counts=True)
        class_of = class_of.ravel()
        own_size = class_size[class_of]
        missing_score = -np.inf if self.metric == "ip" else np.inf
        out_idx = np.full((n, k), -1, dtype=np.int64)
        out_scores = np.full((n, k), missing_score, dtype=np.float32)
        # Queries of similar class size share a batch: the k nearest negatives lie within the
        # k + class-size nearest neighbours (only same-class rows, self included, can be closer).
        order = np.argsort(own_size, kind="stable")
        starts = range(0, n, self.batch_size)
        for start in progress_bar(starts, enabled=self.progress, desc="hard negatives"):
            q = order[start : start + self.batch_size]
            depth = int(min(n, k + own_size[q].max()))
            scores, nbrs = index.search(x[q], depth)
            valid = nbrs >= 0
            is_neg = valid & (class_of[np.where(valid, nbrs, 0)] != class_of[q][:, None])
            # Stable sort on "not a negative" keeps the first k negatives in search order.
            pick = np.argsort(~is_neg, axis=1, kind="stable")[:, :k]
            found = np.take_along_axis(is_neg, pick, axis=1)
            width = pick.shape[1]
            out_idx[q, :width] = np.where(found, np.take_along_axis(nbrs, pick, axis=1), -1)
            out_scores[q, :width] = np.where(
                found, np.take_along_axis(scores, pick, axis=1), missing_score
            )
        return HardNegatives(out_idx, out_scores)
