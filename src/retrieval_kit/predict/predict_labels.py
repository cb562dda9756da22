"""Turn search results into one (label, confidence) per query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from retrieval_kit._checks import positive_int
from retrieval_kit.index.search_result import SearchResult

__all__ = ["predict_labels"]


def predict_labels(
    result: SearchResult,
    id_to_label: Mapping[Any, Any],
    method: str = "nn",
    k: int | None = None,
) -> tuple[list[Any], np.ndarray]:
    """Predict a label per query from its neighbours.

    Args:
        result: a ``SearchResult`` (rows best first, as search and every reranker return them).
        id_to_label: database id -> label (a dict, or any mapping).
        method: ``"nn"``: the label of the best neighbour, confidence = its score (the reproduced
            pipeline). ``"vote"``: scores summed per label over the top ``k`` neighbours; the label
            with the largest sum wins (ties: the label met first), confidence = that sum (the
            published top-3 variant). Vote is meant for similarity scores (higher = better, mostly
            positive); with negative scores a label with fewer neighbours can win.
            ``"sum"``: for each label, the sum of its own ``k`` best scores among all the
            neighbours of the row; the largest sum wins (ties: the label met first),
            confidence = that sum. This is the kNN label aggregation of Henkel & Singer
            (GLR 2020 1st place, arXiv 2010.01650: summed cosine similarities of the top
            neighbours per label). It differs from ``"vote"`` only when the row holds more
            than ``k`` neighbours: there a label's neighbours below rank ``k`` still count.
        k: neighbours used: ``"nn"`` only looks at the first; ``"vote"`` (the top ``k`` of the
            row) and ``"sum"`` (the top ``k`` of each label) default to 3.

    Returns:
        ``(labels, confidences)``: a list with one label per query (``None`` for a query with no
        neighbour at all) and a float32 array (``-inf`` for those queries, so they sort last).

    Raises:
        KeyError: a neighbour id missing from ``id_to_label`` (named with its query row).

    Example:
        >>> import numpy as np
        >>> r = SearchResult(np.array([[0.9, 0.8, 0.7]], "float32"), np.array([[1, 2, 3]]))
        >>> predict_labels(r, {1: "a", 2: "b", 3: "b"}, method="vote")
        (['b'], array([1.5], dtype=float32))
        >>> predict_labels(r, {1: "a", 2: "b", 3: "b"}, method="sum", k=1)
        (['a'], array([0.9], dtype=float32))
    """
    if method not in ("nn", "vote", "sum"):
        raise ValueError(f"method must be 'nn', 'vote' or 'sum', got {method!r}")
    positive_int(k, "k", allow_none=True)
    scores = np.asarray(result[0], dtype=np.float32)
    ids = np.asarray(result[1])
    if scores.ndim != 2 or scores.shape != ids.shape:
        raise ValueError(
            f"SearchResult scores {scores.shape} and ids {ids.shape} must be equal 2-D shapes"
        )
    per_label = 3 if k is None else int(k)
    if method == "nn":
        width = 1
    elif method == "vote":
        width = min(per_label, scores.shape[1])
    else:  # "sum": every neighbour may count towards its label's top k
        width = scores.shape[1]
    valid = np.not_equal(ids, None) if ids.dtype == object else ids != -1
    valid &= ~np.isneginf(scores)

    def label_of(row: int, col: int) -> Any:
        key = ids[row, col]
        key = key.item() if isinstance(key, np.generic) else key
        try:
            return id_to_label[key]
        except KeyError:
            raise KeyError(f"id {key!r} (query row {row}) is not in id_to_label") from None

    labels: list[Any] = []
    conf = np.full(scores.shape[0], -np.inf, dtype=np.float32)
    for row in range(scores.shape[0]):
        cols = np.flatnonzero(valid[row, :width])
        if len(cols) == 0:
            labels.append(None)
            continue
        if method == "nn":
            labels.append(label_of(row, cols[0]))
            conf[row] = scores[row, cols[0]]
            continue
        sums: dict[Any, float] = {}
        counts: dict[Any, int] = {}
        for col in cols:  # rank order: a label's first neighbours are its best; ties below
            lab = label_of(row, col)
            if method == "sum" and counts.get(lab, 0) >= per_label:
                continue
            counts[lab] = counts.get(lab, 0) + 1
            sums[lab] = sums.get(lab, 0.0) + float(scores[row, col])
        best = max(sums, key=sums.__getitem__)  # first maximum wins
        labels.append(best)
        conf[row] = sums[best]
    return labels, conf
