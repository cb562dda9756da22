"""Retrieval metrics: mAP@k (Kaggle GLDv2 retrieval) and recall@k."""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from retrieval_kit._checks import positive_int
from retrieval_kit.metrics._checks import check_collections, check_mapping
from retrieval_kit.metrics._checks import unknown_ids as find_unknown_ids

__all__ = ["mean_average_precision_at_k", "recall_at_k"]


def mean_average_precision_at_k(
    predictions: Mapping[Hashable, Sequence[Hashable]],
    solution: Mapping[Hashable, Collection[Hashable]],
    k: int = 100,
    *,
    unknown_ids: str = "raise",
) -> float:
    """Mean average precision at k of the Google Landmark Retrieval challenges.

    Per query, walk the first ``k`` entries of its ranked list. A repeated id is skipped (it is
    never relevant twice) but still occupies its position, exactly as in the GLDv2 evaluation
    code; at each relevant id add ``relevant so far / position``. Divide by
    ``min(len(relevant ids), k)`` and average over **all** queries of the solution: a query without
    a prediction scores 0.

    Args:
        predictions: ``{query_id: ranked database ids}`` (list, tuple or 1-D array).
        solution: ``{query_id: collection of relevant database ids}``; every query needs at least
            one (the GLDv2 retrieval solution has no empty rows once "Ignored" rows are removed).
            Its length is the count of relevant ids, so pass sets rather than lists with repeats.
        k: how many ranked ids count per query.
        unknown_ids: ``"raise"`` (default) or ``"ignore"`` predictions for ids not in the solution.

    Returns:
        mAP@k in [0, 1].

    Example:
        >>> mean_average_precision_at_k({"q": ["a", "x", "b"]}, {"q": {"a", "b"}}, k=100)
        0.8333333333333333
    """
    table = _RankedTable.build(predictions, solution, k, unknown_ids)
    empty = [q for q, n in zip(table.query_ids, table.num_relevant) if n == 0]
    if empty:
        raise ValueError(
            f"{len(empty)} solution queries have no relevant id (e.g. {empty[:5]!r}): "
            "AP is undefined for them; remove them from the solution"
        )
    # j-th hit of a query (1-based) at position r adds j / r.
    hits_before = np.repeat(np.cumsum(table.hit_counts) - table.hit_counts, table.hit_counts)
    nth_hit = np.arange(1, len(table.hit_rank) + 1) - hits_before
    ap_sum = np.bincount(
        table.hit_query, weights=nth_hit / table.hit_rank, minlength=len(table.query_ids)
    )
    ap = ap_sum / np.minimum(table.num_relevant, k)
    return float(ap.mean())


def recall_at_k(
    predictions: Any, solution: Any, ks: int | Sequence[int] = (1, 5, 10)
) -> dict[int, float]:
    """Recall@k as used in metric learning: the fraction of queries with a hit among the first k.

    Two input forms:

    - Arrays (training evaluation): ``recall_at_k(query_labels, neighbour_labels, ks)`` with
      ``query_labels`` of shape (Q,) and ``neighbour_labels`` of shape (Q, K), nearest first (for
      example ``id_to_label`` applied to ``SearchResult.ids``). A hit is a neighbour with the
      query's label. Pad missing neighbours with a value no query has (-1, None).
    - Dicts (ids or labels): ``predictions = {query_id: ranked ids or labels}`` and
      ``solution = {query_id: collection of relevant ids or labels}``. A hit is a relevant entry.
      Solution queries with an empty collection are not counted; a query without a prediction
      counts as a miss.

    Args:
        predictions: the ranked neighbours (see above).
        solution: the truth (see above).
        ks: one k or several.

    Returns:
        ``{k: recall}`` for each requested k.

    Example:
        >>> recall_at_k([1, 2], [[1, 3], [3, 2]], ks=(1, 2))
        {1: 0.5, 2: 1.0}
    """
    ks_list = [ks] if isinstance(ks, (int, np.integer)) else list(ks)
    if not ks_list or any(not isinstance(k, (int, np.integer)) or k < 1 for k in ks_list):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    max_k = max(ks_list)
    if isinstance(predictions, Mapping):
        table = _RankedTable.build(predictions, solution, max_k, "raise")
        first_hit = np.full(len(table.query_ids), np.inf)
        np.minimum.at(first_hit, table.hit_query, table.hit_rank)
        scored = table.num_relevant > 0
        if not scored.any():
            raise ValueError("no solution query has a relevant entry: recall is undefined")
        first_hit = first_hit[scored]
    else:
        query_labels = np.asarray(predictions)
        neighbour_labels = np.asarray(solution)
        if query_labels.ndim != 1 or neighbour_labels.ndim != 2:
            raise ValueError(
                "query_labels must be (Q,) and neighbour_labels (Q, K), got "
                f"{query_labels.shape} and {neighbour_labels.shape}"
            )
        if neighbour_labels.shape[0] != query_labels.shape[0] or query_labels.size == 0:
            raise ValueError(
                f"{query_labels.shape[0]} query labels but {neighbour_labels.shape[0]} rows of "
                "neighbour labels (need the same, at least one)"
            )
        if max_k > neighbour_labels.shape[1]:
            raise ValueError(
                f"k={max_k} but neighbour_labels has only {neighbour_labels.shape[1]} columns"
            )
        hits = neighbour_labels[:, :max_k] == query_labels[:, None]
        first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    return {int(k): float(np.mean(first_hit <= k)) for k in ks_list}


class _RankedTable(NamedTuple):
    """Where the relevant entries sit among the first k of every ranked list."""

    query_ids: list  # solution order
    num_relevant: np.ndarray  # (Q,) len of each solution collection
    hit_query: np.ndarray  # (H,) solution row of each hit
    hit_rank: np.ndarray  # (H,) 1-based position of each hit in its list, ascending per query
    hit_counts: np.ndarray  # (P,) hits per predicted query, in the order of hit_query

    @classmethod
    def build(cls, predictions: Any, solution: Any, k: int, unknown: str) -> _RankedTable:
        check_mapping(predictions, "predictions")
        check_mapping(solution, "solution")
        check_collections(solution)
        k = positive_int(k, "k")
        if unknown not in ("raise", "ignore"):
            raise ValueError(f"unknown_ids must be 'raise' or 'ignore', got {unknown!r}")
        drop = find_unknown_ids(predictions, solution, unknown, "prediction")
        query_ids = list(solution)
        row_of = {q: i for i, q in enumerate(query_ids)}
        num_relevant = np.fromiter(map(len, solution.values()), dtype=np.int64, count=len(row_of))

        rows: list[int] = []
        counts: list[int] = []
        ranks: list[int] = []
        for q, ranked in predictions.items():
            if q in drop:
                continue
            if isinstance(ranked, (str, bytes)) or not isinstance(ranked, (Sequence, np.ndarray)):
                raise TypeError(
                    f"predictions[{q!r}] must be a ranked sequence of ids, got "
                    f"{type(ranked).__name__}"
                )
            top = ranked[:k]
            if isinstance(top, np.ndarray):
                top = top.tolist()
            relevant = solution[q]
            if not isinstance(relevant, (set, frozenset, dict)):
                relevant = set(relevant)
            # One set lookup per id, then only the few hits are looked at again. (Measured: this
            # beats numpy, which must first hash every string id into an integer code, and
            # map(set.__contains__), which is slower than the specialised `in` of CPython 3.11.)
            pos = [i for i, x in enumerate(top, 1) if x in relevant]
            if len(pos) > 1:
                items = [top[p - 1] for p in pos]
                if len(set(items)) < len(items):  # a repeated relevant id counts once, first
                    seen: set = set()
                    pos = [p for p, x in zip(pos, items) if not (x in seen or seen.add(x))]
            rows.append(row_of[q])
            counts.append(len(pos))
            ranks.extend(pos)
        hit_counts = np.asarray(counts, dtype=np.int64)
        hit_query = np.repeat(np.asarray(rows, dtype=np.int64), hit_counts)
        hit_rank = np.asarray(ranks, dtype=np.float64)
        return cls(query_ids, num_relevant, hit_query, hit_rank, hit_counts)
