"""What alpha-QE and alpha-DBA share: an index, k neighbours averaged with weights sim^alpha."""

from __future__ import annotations

from typing import Any

import numpy as np

from retrieval_kit._arrays import as_matrix
from retrieval_kit._checks import positive_int
from retrieval_kit.index.index import Index
from retrieval_kit.index.search_result import SearchResult
from retrieval_kit.rerank.reranker import Reranker, check_result

__all__ = ["NeighbourAveraging"]


class NeighbourAveraging(Reranker):
    """Base of :class:`QueryExpansion` and :class:`DatabaseAugmentation`; fill in ``rerank``.

    Args:
        index: the database index.
        k: neighbours averaged into each vector.
        alpha: weight exponent (0: plain average).
        database_embeddings: the database vectors in index row order; by default the index gives
            them back (``Index.reconstruct``; approximate for compressed indexes).
        batch_size: vectors processed at once.
    """

    def __init__(
        self,
        index: Index,
        *,
        k: int = 2,
        alpha: float = 3.0,
        database_embeddings: Any = None,
        batch_size: int = 4096,
    ) -> None:
        positive_int(k, "k")
        self.index = index
        self.k = int(k)
        self.alpha = float(alpha)
        self.batch_size = int(batch_size)
        self._db = None
        if database_embeddings is not None:
            self._db = as_matrix(database_embeddings, "database_embeddings")
            if self._db.shape != (len(index), index.dim):
                raise ValueError(
                    f"database_embeddings has shape {self._db.shape} but the index holds "
                    f"{len(index)} x {index.dim}"
                )

    def _checked_queries(self, queries: Any, result: SearchResult) -> np.ndarray:
        """``queries`` as a matrix, checked against ``result`` and the index dimension."""
        q = as_matrix(queries, "queries")
        check_result(result, q.shape[0])
        if q.shape[1] != self.index.dim:
            raise ValueError(
                f"queries have dimension {q.shape[1]} but the index holds dimension "
                f"{self.index.dim} vectors"
            )
        return q

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        """Database vectors of ``rows`` (float32), from ``database_embeddings`` or the index."""
        if self._db is None:
            return self.index.reconstruct_rows(rows)
        order = np.argsort(rows, kind="stable")  # sorted reads from a memmap
        out = np.empty((len(rows), self._db.shape[1]), np.float32)
        out[order] = self._db[rows[order]]
        return out
