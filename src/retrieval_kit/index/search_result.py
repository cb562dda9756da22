"""The value every search and every reranker returns."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["SearchResult"]


class SearchResult(NamedTuple):
    """Top-k neighbours of a batch of queries, best first in each row.

    Attributes:
        scores: ``(Q, k)`` float32; higher is better. Inner product for ``metric="ip"``, the
            negated squared Euclidean distance for ``metric="l2"``. Missing neighbours (``k``
            larger than the database, or an approximate index that found fewer) score ``-inf``.
        ids: ``(Q, k)`` ids of the neighbours: int64 with ``-1`` for missing ones when the index
            holds integer ids, object (``str``) with ``None`` for missing ones for string ids.

    Example:
        >>> import numpy as np
        >>> r = SearchResult(np.array([[0.9, -np.inf]], "float32"), np.array([[7, -1]]))
        >>> r.ids[0, 0], len(r)
        (np.int64(7), 2)
    """

    scores: np.ndarray
    ids: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """``(Q, k)`` bool mask of the slots that hold a real neighbour."""
        if self.ids.dtype == object:
            return np.not_equal(self.ids, None)
        return self.ids != -1
