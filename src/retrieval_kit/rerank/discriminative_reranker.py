"""Discriminative reranking (Yokoo et al. 2019): the query's predicted label first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from retrieval_kit._arrays import IdLookup, as_matrix, normalize_ids, unit_rows
from retrieval_kit._checks import positive_int
from retrieval_kit.index.search_result import SearchResult
from retrieval_kit.predict.predict_labels import predict_labels
from retrieval_kit.rerank.reranker import Reranker, check_result, valid_mask

__all__ = ["DiscriminativeReranker"]


class DiscriminativeReranker(Reranker):
    """Move database images of the query's predicted label to the front, then insert more of them.

    For each query with predicted label ``y`` the new row is, up to the result's width:

    1. the neighbours in ``result`` whose database label is ``y``, in their original order;
    2. the other database images of label ``y`` (from ``database_labels``), best first by cosine
       similarity to the query when ``database_embeddings`` are given, else in the order they
       appear in ``database_labels``; at most ``max_inserted`` of them;
    3. the remaining neighbours of ``result``, in their original order.

    A query without a predicted label (``None``) keeps its row. Returned scores keep the
    similarities inside each of the three groups and add a per-row offset to groups 1 and 2
    (``2 * span`` and ``span``, ``span = 1 + max - min`` of the row's finite similarities), so rows
    stay sorted best first and a later ``resort`` keeps the order. Inserted images without
    embeddings score the row's lowest similarity. Compare ids, not score values, across rows.

    This is the retrieval step of the first-place Google Landmark Retrieval 2019 solution
    (Yokoo et al., "Two-stage Discriminative Re-ranking for Large-scale Landmark Retrieval",
    arXiv:1906.11874; lyakaap/Landmark2019-1st-and-3rd-Place-Solution), where the labels of both
    the query and the database images come from kNN votes against the labelled training set.

    Args:
        database_labels: ``{database id: label}``; ``None`` (e.g. a non-landmark) never matches.
        database_embeddings: ``(N, D)`` database vectors, to rank the inserted images by cosine
            similarity to the query (a memmap is fine; only rows of predicted labels are read).
        database_ids: ids of the ``database_embeddings`` rows (default: row numbers).
        max_inserted: most images inserted per query (default: as many as fit).
        vote_k: when ``rerank`` gets no ``query_labels``, the label is predicted from the result
            itself by summing scores per database label over its first ``vote_k`` neighbours.

    Example:
        >>> import numpy as np, retrieval_kit as rk
        >>> r = rk.index.SearchResult(np.array([[0.9, 0.8, 0.7]], "float32"), np.array([[1, 2, 3]]))
        >>> dr = rk.rerank.DiscriminativeReranker({1: "a", 2: "b", 3: "b", 4: "b"})
        >>> dr.rerank(None, r, query_labels=["b"]).ids.tolist()
        [[2, 3, 4]]
    """

    def __init__(
        self,
        database_labels: Mapping[Any, Any],
        *,
        database_embeddings: Any = None,
        database_ids: Sequence[Any] | np.ndarray | None = None,
        max_inserted: int | None = None,
        vote_k: int = 3,
    ) -> None:
        if not isinstance(database_labels, Mapping):
            raise TypeError(
                f"database_labels must be a mapping {{id: label}}, got {type(database_labels)}"
            )
        if max_inserted is not None and max_inserted < 0:
            raise ValueError(f"max_inserted must be >= 0 or None, got {max_inserted!r}")
        positive_int(vote_k, "vote_k")
        self.database_labels = database_labels
        self.max_inserted = max_inserted
        self.vote_k = int(vote_k)
        self.label_to_ids: dict[Any, list[Any]] = {}
        for i, lab in database_labels.items():
            if lab is not None:
                self.label_to_ids.setdefault(lab, []).append(i)
        self._db = None
        if database_embeddings is not None:
            self._db = as_matrix(database_embeddings, "database_embeddings")
            self._db_ids = normalize_ids(database_ids, self._db.shape[0], "database_ids")
            self._lookup = IdLookup(self._db_ids)
        self._unit_cache: dict[Any, np.ndarray] = {}  # label -> (n, D) unit vectors

    def _label_vectors(self, label: Any) -> np.ndarray:
        vecs = self._unit_cache.get(label)
        if vecs is None:
            ids = self.label_to_ids[label]
            rows = self._lookup.rows(np.asarray(ids), "database_ids")
            order = np.argsort(rows, kind="stable")  # sorted reads from a memmap
            vecs = np.empty((len(rows), self._db.shape[1]), np.float32)
            vecs[order] = self._db[rows[order]]
            if not np.isfinite(vecs).all():
                bad = ids[int(np.flatnonzero(~np.isfinite(vecs).all(axis=1))[0])]
                raise ValueError(f"database_embeddings row of id {bad!r} contains NaN or inf")
            vecs = unit_rows(vecs)
            self._unit_cache[label] = vecs
        return vecs

    def rerank(
        self,
        queries: Any,
        result: SearchResult,
        *,
        query_ids: Any = None,
        query_labels: Sequence[Any] | None = None,
    ) -> SearchResult:
        """Re-sort and insert as described in the class docstring.

        Args:
            queries: ``(Q, D)`` query embeddings (needed only with ``database_embeddings``;
                otherwise may be ``None``).
            result: the retrieval ``SearchResult``; the output has the same width.
            query_ids: unused (the ``Reranker`` signature).
            query_labels: one predicted label per query (``None``: leave the row as it is);
                by default a score vote over the result's first ``vote_k`` neighbours.
        """
        check_result(result)
        scores = np.asarray(result.scores, dtype=np.float32)
        ids = np.asarray(result.ids)
        n_q, width = scores.shape
        if query_labels is None:
            query_labels, _ = predict_labels(
                result, self.database_labels, method="vote", k=self.vote_k
            )
        query_labels = list(query_labels)
        if len(query_labels) != n_q:
            raise ValueError(f"{len(query_labels)} query_labels for {n_q} result rows")
        q = None
        if self._db is not None:
            q = as_matrix(queries, "queries")
            if q.shape != (n_q, self._db.shape[1]):
                raise ValueError(
                    f"queries have shape {q.shape}; expected ({n_q}, {self._db.shape[1]}) to "
                    "match the result and database_embeddings"
                )
        mask = valid_mask(ids)
        out_scores = scores.copy()
        out_ids = ids.copy()
        for row in range(n_q):
            label = query_labels[row]
            if label is None:
                continue
            cols = np.flatnonzero(mask[row])
            row_ids = [ids[row, c].item() if isinstance(ids[row, c], np.generic) else ids[row, c]
                       for c in cols]  # fmt: skip
            same = [self.database_labels.get(i) == label for i in row_ids]
            present = set(row_ids)
            candidates = [i for i in self.label_to_ids.get(label, ()) if i not in present]
            sims = None
            if candidates and q is not None:
                vecs = self._label_vectors(label)
                all_sims = vecs @ unit_rows(np.asarray(q[row : row + 1], np.float32))[0]
                by_id = dict(zip(self.label_to_ids[label], all_sims.tolist()))
                sims = np.array([by_id[i] for i in candidates], np.float32)
                order = np.argsort(-sims, kind="stable")
                candidates = [candidates[j] for j in order]
                sims = sims[order]
            limit = len(candidates) if self.max_inserted is None else self.max_inserted
            candidates = candidates[:limit]
            finite = scores[row, cols]
            if sims is not None:
                sims = sims[: len(candidates)]
                finite = np.concatenate([finite, sims])
            finite = finite[np.isfinite(finite)]
            low = float(finite.min()) if len(finite) else 0.0
            span = 1.0 + (float(finite.max()) - low if len(finite) else 0.0)
            if sims is None:
                sims = np.full(len(candidates), low, np.float32)
            new_ids = [i for i, s in zip(row_ids, same) if s] + candidates
            new_scores = [float(scores[row, c]) + 2 * span for c, s in zip(cols, same) if s]
            new_scores += (sims.astype(np.float64) + span).tolist()
            new_ids += [i for i, s in zip(row_ids, same) if not s]
            new_scores += [float(scores[row, c]) for c, s in zip(cols, same) if not s]
            n = min(width, len(new_ids))
            out_ids[row, :n] = new_ids[:n]
            out_scores[row, :n] = new_scores[:n]
            out_ids[row, n:] = None if ids.dtype == object else -1
            out_scores[row, n:] = -np.inf
        return SearchResult(out_scores, out_ids)
