"""Pick which predictions to show: most/least confident correct, most confident wrong, random."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

__all__ = ["SELECTION_KINDS", "is_correct", "select_predictions"]

SELECTION_KINDS = (
    "most_confident_correct",
    "least_confident_correct",
    "most_confident_incorrect",
    "least_confident_incorrect",
    "random",
)


def is_correct(labels_pred: Sequence[Any], labels_true: Sequence[Any]) -> np.ndarray:
    """Per query, whether the predicted label is (one of) the true label(s).

    ``labels_true[i]`` is a label, a collection of labels (multi-label), or None / an empty
    collection for a query without a landmark (every prediction for it is wrong).

    Example:
        >>> is_correct([1, 2, 3], [1, [5, 2], None]).tolist()
        [True, True, False]
    """
    if len(labels_pred) != len(labels_true):
        raise ValueError(f"{len(labels_pred)} predicted labels but {len(labels_true)} true labels")
    out = np.zeros(len(labels_pred), dtype=bool)
    for i, (pred, true) in enumerate(zip(labels_pred, labels_true)):
        if true is None:
            continue
        if isinstance(true, np.ndarray):
            true = true.ravel().tolist()
        if isinstance(true, (str, bytes)) or not isinstance(true, Collection):
            out[i] = bool(pred == true)
        else:
            out[i] = pred in true
    return out


def select_predictions(
    labels_pred: Sequence[Any],
    confidences: Sequence[float] | np.ndarray,
    labels_true: Sequence[Any],
    kind: str = "most_confident_correct",
    n: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """Indices of up to ``n`` queries to show in a prediction grid.

    Args:
        labels_pred: predicted label per query.
        confidences: confidence per query (higher = surer); no NaN.
        labels_true: true label(s) per query, as in :func:`is_correct`.
        kind: one of ``SELECTION_KINDS``. The confident kinds sort by confidence (ties keep
            query order); ``"random"`` samples without replacement with ``seed``.
        n: how many; fewer come back when fewer qualify.
        seed: seed of ``"random"``.

    Returns:
        int64 array of query indices, in display order.

    Example:
        >>> select_predictions([1, 2, 3], [0.2, 0.9, 0.5], [1, 0, 3], "most_confident_correct", n=5)
        array([2, 0])
    """
    if kind not in SELECTION_KINDS:
        raise ValueError(f"kind must be one of {SELECTION_KINDS}, got {kind!r}")
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    conf = np.asarray(confidences, dtype=np.float64)
    if conf.ndim != 1 or len(conf) != len(labels_pred):
        raise ValueError(
            f"confidences must be 1-D with one value per prediction ({len(labels_pred)}), got "
            f"shape {conf.shape}"
        )
    nan = np.flatnonzero(np.isnan(conf))
    if nan.size:
        raise ValueError(f"confidences[{nan[0]}] is NaN ({nan.size} NaN in all)")
    if kind == "random":
        rng = np.random.default_rng(seed)
        return rng.choice(len(conf), size=min(n, len(conf)), replace=False).astype(np.int64)
    correct = is_correct(labels_pred, labels_true)
    want_correct = kind.endswith("_correct")
    candidates = np.flatnonzero(correct == want_correct)
    key = -conf[candidates] if kind.startswith("most") else conf[candidates]
    return candidates[np.argsort(key, kind="stable")][:n].astype(np.int64)
