"""The base class every reranker fills in."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from retrieval_kit.index.search_result import SearchResult

__all__ = ["Reranker"]


class Reranker(abc.ABC):
    """Takes a ``SearchResult`` and returns a new one, so rerankers chain.

    Subclasses implement ``rerank``; ``reranker(queries, result)`` is the same call.

    Example:
        >>> class NoOp(Reranker):
        ...     def rerank(self, queries, result, *, query_ids=None):
        ...         return result
    """

    @abc.abstractmethod
    def rerank(self, queries: Any, result: SearchResult, *, query_ids: Any = None) -> SearchResult:
        """Return a reranked copy of ``result`` for ``queries`` (``(Q, D)``, row i = result row i).

        ``query_ids`` (one per query) lets rerankers recognise a query inside their own data.
        """

    def __call__(
        self, queries: Any, result: SearchResult, *, query_ids: Any = None
    ) -> SearchResult:
        return self.rerank(queries, result, query_ids=query_ids)


def check_result(result: SearchResult, n_queries: int | None = None) -> None:
    """Raise a clear error when ``result`` is not a (Q, k) SearchResult matching the queries."""
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"expected a SearchResult(scores, ids), got {type(result).__name__}")
    scores, ids = result
    if np.ndim(scores) != 2 or np.shape(scores) != np.shape(ids):
        raise ValueError(
            f"SearchResult scores {np.shape(scores)} and ids {np.shape(ids)} must be equal "
            "2-D shapes"
        )
    if n_queries is not None and np.shape(scores)[0] != n_queries:
        raise ValueError(f"{n_queries} queries but the SearchResult has {np.shape(scores)[0]} rows")


def resort(scores: np.ndarray, ids: np.ndarray) -> SearchResult:
    """Sort each row by score, best first; ties keep their previous order, missing stay last."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return SearchResult(
        np.take_along_axis(scores, order, axis=1).astype(np.float32, copy=False),
        np.take_along_axis(ids, order, axis=1),
    )


def valid_mask(ids: np.ndarray) -> np.ndarray:
    """Slots holding a real neighbour (id not ``None`` / ``-1``)."""
    return np.not_equal(ids, None) if ids.dtype == object else ids != -1


def expand(
    queries: np.ndarray, neighbours: np.ndarray, mask: np.ndarray, alpha: float
) -> np.ndarray:
    """alpha-weighted expansion: ``unit(q + sum_i max(cos(q, x_i), 0)^alpha * unit(x_i))``.

    Args:
        queries: ``(Q, D)`` unit vectors.
        neighbours: ``(Q, k, D)`` vectors (normalised here).
        mask: ``(Q, k)`` bool, which neighbours exist.
        alpha: weight exponent; 0 gives the plain average (average query expansion).
    """
    nb = neighbours / np.maximum(np.linalg.norm(neighbours, axis=2, keepdims=True), 1e-12)
    cos = np.einsum("qd,qkd->qk", queries, nb)
    w = np.where(mask, np.maximum(cos, 0.0) ** alpha, 0.0)
    out = queries + np.einsum("qk,qkd->qd", w, nb)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)
