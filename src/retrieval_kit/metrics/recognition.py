"""Recognition metrics: Global Average Precision (Kaggle GLDv2) and top-1 accuracy."""

from __future__ import annotations

import logging
import operator
from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from retrieval_kit.metrics._checks import (
    check_collections,
    check_id_types,
    check_mapping,
    label_kind,
)
from retrieval_kit.metrics._checks import unknown_ids as find_unknown_ids

__all__ = ["global_average_precision", "top1_accuracy"]

logger = logging.getLogger(__name__)

_first = operator.itemgetter(0)
_second = operator.itemgetter(1)


def global_average_precision(
    predictions: Mapping[Hashable, tuple[Hashable, float]],
    solution: Mapping[Hashable, Collection[Hashable]],
    *,
    ignore_non_gt: bool = False,
    unknown_ids: str = "raise",
) -> float:
    """Global Average Precision (micro-AP) of the Google Landmark Recognition challenges.

    Predictions are sorted by score (descending), then query id (ascending); query ids are unique,
    so the challenge's third key (label ascending) never decides. Walking that list, every
    prediction counts in the running total and each correct one adds ``correct so far / predictions
    so far``; the sum is divided by the number of solution queries with any ground-truth landmark.
    Queries without a prediction are simply absent from the list; a prediction for a non-landmark
    query (empty ground truth) counts against precision unless ``ignore_non_gt=True``.

    Args:
        predictions: ``{query_id: (label, score)}``, one prediction per query. Query ids are all str
            or all int; labels are any hashable (compared with ``==``, so ``5 != "5"``).
        solution: ``{query_id: collection of labels}``; an empty collection marks a non-landmark
            query. Rows the challenge ignores ("Ignored" usage) must be left out by the caller.
        ignore_non_gt: skip predictions for queries whose ground truth is empty.
        unknown_ids: ``"raise"`` (default): a prediction whose id is not in the solution is an
            error naming it; ``"ignore"``: such predictions are not scored (as on Kaggle, where only
            the solution's ids count).

    Returns:
        GAP in [0, 1].

    Raises:
        ValueError: no solution query has a landmark (GAP undefined), a score is NaN or not a
            number, a prediction is not a ``(label, score)`` pair, or an unknown id (see above).
        TypeError: bad container types, mixed id types, or label types that can never match the
            solution's (e.g. int predictions against str ground truth).

    Example:
        >>> gap = global_average_precision({"a": (1, 0.9), "b": (2, 0.8), "c": (3, 0.7)},
        ...                                {"a": [1], "b": [5], "c": [3], "d": []})
        >>> round(gap, 4)  # (1/1 + 2/3) / 3 queries with a landmark
        0.5556
    """
    if unknown_ids not in ("raise", "ignore"):
        raise ValueError(f"unknown_ids must be 'raise' or 'ignore', got {unknown_ids!r}")
    check_mapping(predictions, "predictions")
    check_mapping(solution, "solution")
    check_collections(solution)
    num_with_gt = sum(map(bool, map(len, solution.values())))
    if num_with_gt == 0:
        raise ValueError("solution has no query with a ground-truth landmark: GAP is undefined")

    qids = list(predictions)
    if not qids:
        return 0.0
    check_id_types(qids, "predictions")
    labels, scores = _split_pairs(predictions, qids)

    gts = list(map(solution.get, qids))
    if None in gts:  # solution values are collections, so None means "id not in the solution"
        drop = find_unknown_ids(qids, solution, unknown_ids, "prediction")
        keep = [i for i, q in enumerate(qids) if q not in drop]
        qids = [qids[i] for i in keep]
        labels = [labels[i] for i in keep]
        gts = [gts[i] for i in keep]
        scores = scores[keep]

    correct = np.fromiter(map(operator.contains, gts, labels), dtype=bool, count=len(gts))
    if ignore_non_gt:
        has_gt = np.fromiter(map(len, gts), dtype=np.int64, count=len(gts)) > 0
        idx = np.flatnonzero(has_gt)
        qids = [qids[i] for i in idx]
        scores, correct = scores[idx], correct[idx]
    if not correct.any():
        _check_label_kinds(labels, solution)
        return 0.0

    order = _order_by_score_then_id(scores, qids)
    hits = correct[order]
    positions = np.flatnonzero(hits) + 1  # 1-based rank of each correct prediction
    precision_at_hits = np.arange(1, len(positions) + 1) / positions
    return float(precision_at_hits.sum() / num_with_gt)


def top1_accuracy(predictions: Any, solution: Any) -> float:
    """Top-1 accuracy, from the Kaggle dicts or from two label arrays.

    Dict form (as in the GLDv2 evaluation code): ``predictions = {query_id: (label, score)}``,
    ``solution = {query_id: collection of labels}``; the fraction of solution queries with a
    landmark whose predicted label is one of their labels. Queries without ground truth are ignored,
    a missing prediction counts as wrong. Array form: ``top1_accuracy(labels_pred, labels_true)``
    with two equally long 1-D sequences, the fraction of equal entries.

    Example:
        >>> top1_accuracy({"a": (1, 0.9), "b": (2, 0.1)}, {"a": [1], "b": [3], "c": []})
        0.5
        >>> top1_accuracy([1, 2, 3, 4], [1, 2, 0, 0])
        0.5
    """
    if isinstance(predictions, Mapping):
        check_mapping(solution, "solution")
        check_collections(solution)
        num_with_gt = correct = 0
        for qid, gt in solution.items():
            if len(gt):
                num_with_gt += 1
                pred = predictions.get(qid)
                if pred is not None:
                    label = _split_one(qid, pred)[0]
                    correct += label in gt
        if num_with_gt == 0:
            raise ValueError("solution has no query with a ground-truth landmark")
        return correct / num_with_gt
    pred = np.asarray(predictions)
    true = np.asarray(solution)
    if pred.ndim != 1 or pred.shape != true.shape:
        raise ValueError(
            f"labels_pred and labels_true must be 1-D of equal length, got {pred.shape} and "
            f"{true.shape}"
        )
    if pred.size == 0:
        raise ValueError("top1_accuracy of zero queries is undefined")
    return float(np.mean(pred == true))


def _split_one(qid: Hashable, value: Any) -> tuple[Hashable, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"predictions[{qid!r}] must be a (label, score) pair, got {value!r:.60}")
    return value[0], value[1]


def _split_pairs(predictions: Mapping, qids: list) -> tuple[list, np.ndarray]:
    """Labels as a list and scores as float64, with an error naming the first bad entry."""
    values = list(predictions.values())
    scores = None
    try:
        pair_types = set(map(type, values))
        if set(map(len, values)) == {2} and not any(
            issubclass(t, (str, bytes)) for t in pair_types
        ):
            scores = np.fromiter(map(_second, values), dtype=np.float64, count=len(values))
    except (TypeError, ValueError):
        scores = None
    if scores is None:
        for q in qids:  # slow path: find the offender for the message
            _, score = _split_one(q, predictions[q])
            try:
                float(score)
            except (TypeError, ValueError):
                raise ValueError(
                    f"predictions[{q!r}] score must be a number, got {score!r:.60}"
                ) from None
        raise ValueError("predictions must map each query id to a (label, score) pair")
    bad = np.flatnonzero(np.isnan(scores))
    if bad.size:
        raise ValueError(f"predictions[{qids[bad[0]]!r}] has a NaN score ({bad.size} NaN in all)")
    return list(map(_first, values)), scores


def _order_by_score_then_id(scores: np.ndarray, qids: list) -> np.ndarray:
    """Indices sorting by score descending, then query id ascending.

    A full lexsort would sort a million string ids; instead sort the floats once and break ties by
    id only inside runs of equal scores (rare with real-valued confidences), which gives the same
    order.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    tie_with_next = sorted_scores[1:] == sorted_scores[:-1]
    if not tie_with_next.any():
        return order
    in_tie = np.zeros(len(order), dtype=bool)
    in_tie[1:] |= tie_with_next
    in_tie[:-1] |= tie_with_next
    run = np.cumsum(np.concatenate(([True], ~tie_with_next)))  # run id per sorted position
    pos = np.flatnonzero(in_tie)
    members = order[pos]
    # str ids -> a unicode array, int ids -> an int array (check_id_types ruled out a mix)
    if len(members) > len(qids) // 4:
        ids = np.array(qids)[members]
    else:
        ids = np.array([qids[i] for i in members.tolist()])
    order[pos] = members[np.lexsort((ids, run[pos]))]
    return order


def _check_label_kinds(labels: list, solution: Mapping) -> None:
    """Zero correct predictions: make sure it is not because 5 was compared with '5'."""
    pred_kinds = set(map(label_kind, labels))
    gt_kinds = {label_kind(x) for gt in solution.values() for x in gt}
    if pred_kinds and gt_kinds and not pred_kinds & gt_kinds:
        raise TypeError(
            f"predicted labels are of type {sorted(pred_kinds)} but solution labels are of type "
            f"{sorted(gt_kinds)}: they can never match (e.g. 5 != '5'); convert one side"
        )
    logger.debug("no correct prediction among %d", len(labels))
