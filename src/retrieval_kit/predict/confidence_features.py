"""Per-query features that say how much a predicted label can be trusted."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from retrieval_kit._checks import positive_int
from retrieval_kit.index.search_result import SearchResult
from retrieval_kit.predict.predict_labels import predict_labels

__all__ = ["ConfidenceFeatures", "confidence_features"]

BASE_FEATURES = ("top1_score", "margin", "vote_share", "label_score_sum")


class ConfidenceFeatures(NamedTuple):
    """Features of one batch of predictions (see :func:`confidence_features`).

    Attributes:
        labels: the predicted label per query (``None``: no neighbour, no prediction).
        values: ``(Q, F)`` float64, one column per name (rows without a prediction are 0).
        names: the feature names, in column order.
    """

    labels: list[Any]
    values: np.ndarray
    names: tuple[str, ...]


def confidence_features(
    result: SearchResult,
    id_to_label: Mapping[Any, Any],
    *,
    k: int = 10,
    method: str = "nn",
    distractor_penalty: Any = None,
    inliers: Any = None,
) -> ConfidenceFeatures:
    """The predicted label of each query and the features of that prediction.

    Over the first ``k`` valid neighbours of each row (``y`` = the predicted label):

    - ``top1_score``: the best neighbour's score.
    - ``margin``: best score of a ``y`` neighbour minus the best score of a neighbour with
      another label (with no other label among the ``k``, minus the lowest of the ``k`` scores).
    - ``vote_share``: the fraction of the ``k`` neighbours labelled ``y``.
    - ``label_score_sum``: the summed score of the ``y`` neighbours.
    - ``distractor_penalty`` (when given, ``(Q,)``): e.g. ``DistractorReranker.query_penalty``.
    - ``log_inliers`` (when given): ``log(1 + max inliers of a y neighbour)``; ``inliers`` is
      ``(Q,)``, or ``(Q, width)`` aligned with ``result`` (as
      ``SpatialVerificationReranker.rerank_with_inliers`` returns it; -1 = not verified).

    Args:
        result: the search result the prediction is made from (rows best first).
        id_to_label: database id -> label.
        k: neighbours looked at.
        method: how ``y`` is chosen: ``"nn"`` (the best neighbour's label) or ``"vote"`` (the
            largest summed score over the ``k`` neighbours), as in ``predict_labels``.
        distractor_penalty: optional ``(Q,)`` penalties.
        inliers: optional inlier counts (see above).

    Example:
        >>> import numpy as np
        >>> r = SearchResult(np.array([[0.9, 0.7, 0.5]], "float32"), np.array([[1, 2, 3]]))
        >>> f = confidence_features(r, {1: "a", 2: "b", 3: "a"}, k=3)
        >>> f.labels, dict(zip(f.names, f.values[0].round(3)))  # doctest: +NORMALIZE_WHITESPACE
        (['a'], {'top1_score': np.float64(0.9), 'margin': np.float64(0.2),
                 'vote_share': np.float64(0.667), 'label_score_sum': np.float64(1.4)})
    """
    k = positive_int(k, "k")
    scores = np.asarray(result[0], dtype=np.float64)
    ids = np.asarray(result[1])
    if scores.ndim != 2 or scores.shape != ids.shape:
        raise ValueError(
            f"SearchResult scores {scores.shape} and ids {ids.shape} must be equal 2-D shapes"
        )
    n_q = scores.shape[0]
    labels, _ = predict_labels(result, id_to_label, method=method, k=k)
    valid = np.not_equal(ids, None) if ids.dtype == object else ids != -1
    valid &= np.isfinite(scores)
    names = list(BASE_FEATURES)
    cols: list[np.ndarray] = [np.zeros(n_q) for _ in BASE_FEATURES]
    inl = None
    if inliers is not None:
        inl = np.asarray(inliers, dtype=np.float64)
        if inl.shape not in ((n_q,), scores.shape):
            raise ValueError(
                f"inliers must have shape ({n_q},) or {scores.shape} (aligned with the result), "
                f"got {inl.shape}"
            )
        names.append("log_inliers")
        cols.append(np.zeros(n_q))
    for row in range(n_q):
        if labels[row] is None:
            continue
        c = np.flatnonzero(valid[row])[:k]
        s = scores[row, c]
        same = np.array(
            [id_to_label[i.item() if isinstance(i, np.generic) else i] == labels[row]
             for i in ids[row, c]]
        )  # fmt: skip
        other = s[~same].max() if (~same).any() else s.min()
        cols[0][row] = s[0]
        cols[1][row] = s[same].max() - other
        cols[2][row] = same.mean()
        cols[3][row] = s[same].sum()
        if inl is not None:
            n = inl[row] if inl.ndim == 1 else max(inl[row, c][same].max(), 0.0)
            cols[-1][row] = np.log1p(max(n, 0.0))
    if distractor_penalty is not None:
        pen = np.asarray(distractor_penalty, dtype=np.float64).reshape(-1)
        if pen.shape != (n_q,):
            raise ValueError(f"distractor_penalty must have shape ({n_q},), got {pen.shape}")
        names.insert(len(BASE_FEATURES), "distractor_penalty")
        cols.insert(len(BASE_FEATURES), np.where([lab is not None for lab in labels], pen, 0.0))
    values = np.stack(cols, axis=1) if n_q else np.zeros((0, len(names)))
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise ValueError(f"confidence features of query row {row} are not finite: {values[row]}")
    return ConfidenceFeatures(labels, values, tuple(names))
