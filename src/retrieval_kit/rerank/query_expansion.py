"""alpha query expansion (alpha-QE, Radenovic et al. 2018)."""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval_kit._arrays import float32_chunk, unit_rows
from retrieval_kit.index.search_result import SearchResult
from retrieval_kit.rerank.neighbour_averaging import NeighbourAveraging
from retrieval_kit.rerank.reranker import expand, valid_mask

__all__ = ["QueryExpansion"]


class QueryExpansion(NeighbourAveraging):
    """Search again with each query averaged with its top-k neighbours.

    The new query is ``unit(q + sum_i max(cos(q, x_i), 0)^alpha * x_i)`` over the first ``k``
    neighbours ``x_i`` of ``result`` (unit vectors), and the returned result is a fresh search of
    ``index`` with it, as wide as ``result``. Put it before a ``DistractorReranker`` in a chain: it
    recomputes the scores.

    Args:
        index: the database index the result came from.
        k: neighbours averaged in (those missing are skipped).
        alpha: weight exponent; 0 is plain average query expansion.
        database_embeddings: the database vectors in index row order; by default the index gives
            them back (``Index.reconstruct``; approximate for compressed indexes).

    Example:
        >>> qe = QueryExpansion(index, k=2, alpha=3.0)  # doctest: +SKIP
        >>> result = qe.rerank(queries, index.search(queries, k=100))  # doctest: +SKIP
    """

    def expanded_queries(self, queries: Any, result: SearchResult) -> np.ndarray:
        """The expanded, unit-length ``(Q, D)`` queries."""
        q = self._checked_queries(queries, result)
        ids = np.asarray(result.ids)[:, : self.k]
        mask = valid_mask(ids)
        out = np.empty(q.shape, np.float32)
        for start in range(0, q.shape[0], self.batch_size):
            stop = min(start + self.batch_size, q.shape[0])
            uq = unit_rows(float32_chunk(q, start, stop, "queries"))
            m = mask[start:stop]
            rows = np.zeros(m.shape, np.int64)
            rows[m] = self.index.rows_of(ids[start:stop][m])
            nb = self._vectors(rows.reshape(-1)).reshape(*m.shape, -1)
            out[start:stop] = expand(uq, nb, m, self.alpha)
        return out

    def rerank(self, queries: Any, result: SearchResult, *, query_ids: Any = None) -> SearchResult:
        """Search ``index`` again with the expanded queries; same width as ``result``."""
        return self.index.search(self.expanded_queries(queries, result), result.scores.shape[1])
