"""Database-side augmentation (alpha-DBA): each database vector averaged with its neighbours."""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval_kit.index.build import build_index
from retrieval_kit.index.index import Index
from retrieval_kit.index.search_result import SearchResult
from retrieval_kit.rerank.neighbour_averaging import NeighbourAveraging
from retrieval_kit.rerank.reranker import expand, resort, valid_mask

__all__ = ["DatabaseAugmentation"]


class DatabaseAugmentation(NeighbourAveraging):
    """Replace each database vector ``x`` by ``unit(x + sum_i max(cos(x, x_i), 0)^alpha * x_i)``.

    ``x_i`` are the ``k`` nearest *other* database vectors. Use it offline with ``augment()`` /
    ``build_index()`` (a new index over the augmented vectors), or as a reranker: ``rerank``
    re-scores the neighbours already in a result against their augmented vectors (cheap: only
    those vectors are augmented, once each) and re-sorts.

    Args:
        index: the database index.
        k: neighbours averaged into each vector.
        alpha: weight exponent (0: plain average).
        database_embeddings: the vectors in index row order (default: ``index.reconstruct``).

    Example:
        >>> dba = DatabaseAugmentation(index, k=2)  # doctest: +SKIP
        >>> new_index = dba.build_index()  # doctest: +SKIP
        >>> result = dba.rerank(queries, index.search(queries, k=100))  # doctest: +SKIP
    """

    def __init__(self, index: Index, **kwargs: Any) -> None:
        super().__init__(index, **kwargs)
        self._cache: dict[int, np.ndarray] = {}  # augmented vectors of rows already seen

    def augment_rows(self, rows: Any) -> np.ndarray:
        """Augmented unit vectors ``(n, D)`` of the database ``rows``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), self.index.dim), np.float32)
        kk = min(self.k + 1, len(self.index))
        for start in range(0, len(rows), self.batch_size):
            r = rows[start : start + self.batch_size]
            x = self._vectors(r)
            if not np.isfinite(x).all():
                bad = int(r[np.flatnonzero(~np.isfinite(x).all(axis=1))[0]])
                raise ValueError(f"database_embeddings row {bad} contains NaN or inf")
            ux = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            _, nb = self.index.search_rows(ux, kk)
            nb = np.where(nb == r[:, None], -1, nb)  # the vector itself is not a neighbour
            # keep the first k real neighbours in search order
            keep = (nb >= 0) & (np.cumsum(nb >= 0, axis=1) <= self.k)
            sel = np.argsort(~keep, axis=1, kind="stable")[:, : self.k]
            nb = np.take_along_axis(nb, sel, axis=1)
            m = np.take_along_axis(keep, sel, axis=1)
            vecs = self._vectors(np.where(m, nb, 0).reshape(-1))
            out[start : start + len(r)] = expand(ux, vecs.reshape(*m.shape, -1), m, self.alpha)
        return out

    def augment(self) -> np.ndarray:
        """All augmented database vectors ``(N, D)`` in row order (float32, in memory)."""
        return self.augment_rows(np.arange(len(self.index)))

    def build_index(self, **kwargs: Any) -> Index:
        """A new index over the augmented vectors with the same ids (``build_index`` kwargs pass on;
        factory and metric default to the original's)."""
        kwargs.setdefault("factory", self.index.factory)
        kwargs.setdefault("metric", self.index.metric)
        return build_index(self.augment(), self.index.ids, **kwargs)

    def rerank(self, queries: Any, result: SearchResult, *, query_ids: Any = None) -> SearchResult:
        """Re-score the result's neighbours with their augmented vectors and re-sort."""
        q = np.ascontiguousarray(self._checked_queries(queries, result), dtype=np.float32)
        if not np.isfinite(q).all():
            bad = int(np.flatnonzero(~np.isfinite(q).all(axis=1))[0])
            raise ValueError(f"queries row {bad} contains NaN or inf")
        ids = np.asarray(result.ids)
        mask = valid_mask(ids)
        rows = np.full(ids.shape, -1, np.int64)
        rows[mask] = self.index.rows_of(ids[mask])
        uniq = np.unique(rows[mask])
        todo = [r for r in uniq.tolist() if r not in self._cache]
        if todo:
            for r, v in zip(todo, self.augment_rows(todo)):
                self._cache[r] = v
        table = np.stack([self._cache[r] for r in uniq.tolist()]) if len(uniq) else None
        vec = np.zeros((*ids.shape, q.shape[1]), np.float32)
        if table is not None:
            vec[mask] = table[np.searchsorted(uniq, rows[mask])]
        if self.index.metric == "ip":
            scores = np.einsum("qd,qkd->qk", q, vec)
        else:
            scores = -((q[:, None, :] - vec) ** 2).sum(axis=2)
        scores = np.where(mask, scores, -np.inf).astype(np.float32)
        return resort(scores, ids)
