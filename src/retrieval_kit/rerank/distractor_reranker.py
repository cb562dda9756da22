"""Penalise confidence by similarity to non-landmark ("distractor") images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import faiss
import numpy as np

from retrieval_kit._arrays import (
    IdLookup,
    as_matrix,
    float32_chunk,
    normalize_ids,
    unit_rows,
)
from retrieval_kit._checks import positive_int
from retrieval_kit.index.index import Index
from retrieval_kit.index.search_result import SearchResult
from retrieval_kit.rerank.reranker import Reranker, check_result, resort, valid_mask

__all__ = ["DistractorReranker"]


class DistractorReranker(Reranker):
    """``score -= alpha * mean(top-k cosine similarities of the query to distractor images)``.

    Images that look like many non-landmarks (indoor scenes, faces, documents) get their confidence
    lowered, which is what global average precision rewards. The query's own copy among the
    distractors never counts: it is recognised by id when both ``query_ids`` and
    ``distractor_ids`` are given, otherwise by a cosine of at least ``self_match_threshold``.

    With ``neighbour_penalty=True`` every database neighbour is also penalised by its own mean
    top-k similarity to the distractors, times ``neighbour_alpha`` (the stronger published variant;
    pair it with ``predict_labels(..., method="vote", k=3)``). That needs the database vectors
    (``database_embeddings`` + ``database_ids``) or precomputed ``neighbour_penalties``.

    Rows are re-sorted after the change. Missing neighbours stay ``-inf``.

    Args:
        distractor_embeddings: ``(M, D)`` vectors of non-landmark images (normalised here).
        k: distractors averaged per query.
        alpha: weight of the query penalty.
        distractor_ids: one id per distractor, for self-match exclusion by id.
        self_match_threshold: cosine at or above which a distractor counts as the query itself
            (used when ids are not available).
        neighbour_penalty: also penalise each neighbour (see above).
        neighbour_alpha: weight of the neighbour penalty (default ``alpha``).
        database_embeddings: ``(N, D)`` database vectors (a memmap is fine; only the rows of the
            neighbours met are read).
        database_ids: ids of the database rows (default: row numbers, as in ``build_index``).
        neighbour_penalties: ``{database id: penalty}`` computed beforehand, instead of the above.

    Example:
        >>> import numpy as np, retrieval_kit as rk
        >>> distractors = np.array([[1.0, 0.0]], "float32")
        >>> r = rk.index.SearchResult(np.array([[0.9]], "float32"), np.array([[3]]))
        >>> rr = rk.rerank.DistractorReranker(distractors, k=1)
        >>> round(float(rr.rerank(np.array([[0.6, 0.8]], "float32"), r).scores[0, 0]), 2)
        0.3
    """

    def __init__(
        self,
        distractor_embeddings: Any,
        *,
        k: int = 5,
        alpha: float = 1.0,
        distractor_ids: Sequence[Any] | np.ndarray | None = None,
        self_match_threshold: float = 0.9999,
        neighbour_penalty: bool = False,
        neighbour_alpha: float | None = None,
        database_embeddings: Any = None,
        database_ids: Sequence[Any] | np.ndarray | None = None,
        neighbour_penalties: Mapping[Any, float] | None = None,
        batch_size: int = 16384,
    ) -> None:
        positive_int(k, "k")
        x = as_matrix(distractor_embeddings, "distractor_embeddings")
        if x.shape[0] == 0:
            raise ValueError("distractor_embeddings is empty (0 vectors)")
        self.k = int(k)
        self.alpha = float(alpha)
        self.self_match_threshold = float(self_match_threshold)
        self.neighbour_penalty = bool(neighbour_penalty)
        self.neighbour_alpha = self.alpha if neighbour_alpha is None else float(neighbour_alpha)
        self.batch_size = int(batch_size)
        self._has_ids = distractor_ids is not None
        flat = faiss.IndexFlatIP(x.shape[1])
        for start in range(0, x.shape[0], 65536):
            flat.add(unit_rows(float32_chunk(x, start, start + 65536, "distractor_embeddings")))
        self.distractors = Index(
            flat,
            normalize_ids(distractor_ids, x.shape[0], "distractor_ids"),
            metric="ip",
            factory="Flat",
        )
        self._db = None
        self._db_lookup: IdLookup | None = None
        self._cache: dict[Any, float] = dict(neighbour_penalties or {})
        self._precomputed = neighbour_penalties is not None
        if database_embeddings is not None:
            self._db = as_matrix(database_embeddings, "database_embeddings")
            if self._db.shape[1] != self.distractors.dim:
                raise ValueError(
                    f"database_embeddings have dimension {self._db.shape[1]} but the distractors "
                    f"have {self.distractors.dim}"
                )
            self._db_ids = normalize_ids(database_ids, self._db.shape[0], "database_ids")
            self._db_lookup = IdLookup(self._db_ids)
        if self.neighbour_penalty and self._db is None and neighbour_penalties is None:
            raise ValueError(
                "neighbour_penalty=True needs database_embeddings (and database_ids) or "
                "neighbour_penalties"
            )

    def query_penalty(self, queries: Any, query_ids: Any = None) -> np.ndarray:
        """``(Q,)`` mean of each query's top-k cosine similarities to the distractors.

        Self-matches are dropped; a query with fewer than ``k`` other distractors averages those
        there are (0 when there are none).
        """
        q = as_matrix(queries, "queries")
        if q.shape[1] != self.distractors.dim:
            raise ValueError(
                f"queries have dimension {q.shape[1]} but the distractors have "
                f"{self.distractors.dim}"
            )
        if query_ids is not None:
            query_ids = np.asarray(normalize_ids(query_ids, q.shape[0], "query_ids"))
            if self._has_ids and query_ids.dtype.kind != self.distractors.ids.dtype.kind:
                raise TypeError(
                    "query_ids and distractor_ids must both be strings or both be integers "
                    f"(got {query_ids.dtype} and {self.distractors.ids.dtype}), otherwise no "
                    "self-match could be found"
                )
        out = np.zeros(q.shape[0], np.float32)
        for start in range(0, q.shape[0], self.batch_size):
            chunk = unit_rows(float32_chunk(q, start, start + self.batch_size, "queries"))
            ids = None if query_ids is None else query_ids[start : start + len(chunk)]
            out[start : start + len(chunk)] = self._penalty(chunk, ids)
        return out

    def _penalty(self, unit_q: np.ndarray, self_ids: np.ndarray | None) -> np.ndarray:
        by_id = self_ids is not None and self._has_ids
        total = len(self.distractors)
        want = np.arange(len(unit_q))
        out = np.zeros(len(unit_q), np.float32)
        kk = min(self.k + 1, total)
        while len(want):
            sims, rows = self.distractors.search_rows(unit_q[want], kk)
            if by_id:
                drop = self.distractors.ids_of_rows(rows) == self_ids[want][:, None]
            else:
                drop = sims >= self.self_match_threshold
            keep = (rows >= 0) & ~drop
            enough = (keep.sum(axis=1) >= self.k) | (kk >= total)
            # mean of the first k kept similarities (search order = best first)
            first_k = keep & (np.cumsum(keep, axis=1) <= self.k)
            n = first_k.sum(axis=1)
            s = np.where(first_k, sims, 0.0).sum(axis=1)
            vals = np.where(n > 0, s / np.maximum(n, 1), 0.0)
            out[want[enough]] = vals[enough]
            want = want[~enough]
            kk = min(kk * 2, total)  # rare: many self-matches (duplicates); look further
        return out

    def neighbour_penalties(self, ids: Any) -> np.ndarray:
        """Penalty of each database id in ``ids`` (any shape; computed once per id, then cached)."""
        ids = np.asarray(ids)
        flat = ids.reshape(-1)
        new = [i for i in dict.fromkeys(flat.tolist()) if i not in self._cache]
        if new:
            if self._precomputed:
                raise KeyError(f"database id {new[0]!r} has no entry in neighbour_penalties")
            rows = self._db_lookup.rows(np.array(new, dtype=self._db_ids.dtype), "database_ids")
            order = np.argsort(rows)  # sorted reads from a memmap
            vecs = np.ascontiguousarray(self._db[rows[order]], dtype=np.float32)
            if not np.isfinite(vecs).all():
                bad = new[order[np.flatnonzero(~np.isfinite(vecs).all(axis=1))[0]]]
                raise ValueError(f"database_embeddings row for id {bad!r} contains NaN or inf")
            self_ids = np.array(new, dtype=self._db_ids.dtype)[order] if self._has_ids else None
            pen = self._penalty(unit_rows(vecs), self_ids)
            for j, p in zip(order, pen):
                self._cache[new[j]] = float(p)
        return np.array([self._cache[i] for i in flat.tolist()], np.float32).reshape(ids.shape)

    def rerank(self, queries: Any, result: SearchResult, *, query_ids: Any = None) -> SearchResult:
        """Lower every score of row i by ``alpha * query_penalty(queries[i])`` and re-sort.

        Example:
            >>> result = index.search(queries, k=3)  # doctest: +SKIP
            >>> result = DistractorReranker(non_landmarks).rerank(queries, result)  # doctest: +SKIP
        """
        q = as_matrix(queries, "queries")
        check_result(result, q.shape[0])
        scores = np.array(result.scores, dtype=np.float32)
        ids = np.asarray(result.ids)
        mask = valid_mask(ids)
        scores -= self.alpha * self.query_penalty(q, query_ids)[:, None]
        if self.neighbour_penalty:
            pen = np.zeros(scores.shape, np.float32)
            pen[mask] = self.neighbour_penalties(ids[mask])
            scores -= self.neighbour_alpha * pen
        scores[~mask] = -np.inf
        return resort(scores, ids)
