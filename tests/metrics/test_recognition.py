"""GAP and top-1 accuracy against hand-worked values and a plain-loop reference."""

from __future__ import annotations

import random

import numpy as np
import pytest

from retrieval_kit.metrics import global_average_precision, top1_accuracy


def loop_gap(predictions, solution, ignore_non_gt=False):
    """GAP as defined on the Kaggle Google Landmark Recognition evaluation pages
    (https://www.kaggle.com/competitions/landmark-recognition-2020/overview/evaluation) and in
    DELF's ``GlobalAveragePrecision`` (tensorflow/models, research/delf/delf/python/datasets/
    google_landmarks_dataset/metrics.py), written as directly as possible: sort by
    (-score, id, label), then walk."""
    num_with_gt = sum(1 for labels in solution.values() if len(labels) > 0)
    ordered = sorted(predictions.items(), key=lambda kv: (-kv[1][1], kv[0], kv[1][0]))
    total = correct = 0
    gap = 0.0
    for qid, (label, _score) in ordered:
        if ignore_non_gt and not solution[qid]:
            continue
        total += 1
        if label in solution[qid]:
            correct += 1
            gap += correct / total
    return gap / num_with_gt


def test_hand_worked_example():
    predictions = {"a": (1, 0.9), "b": (2, 0.8), "c": (3, 0.7)}
    solution = {"a": [1], "b": [5], "c": [3], "d": []}
    # order a (right), b (wrong), c (right): (1/1 + 2/3) / 3 queries with a landmark
    assert global_average_precision(predictions, solution) == pytest.approx((1 + 2 / 3) / 3)


def test_ties_are_broken_by_query_id():
    solution = {"a": [1], "b": [2]}
    # same score: "a" (wrong) comes before "b" (right), so b is right at rank 2: (1/2) / 2
    predictions = {"b": (2, 0.5), "a": (9, 0.5)}
    assert global_average_precision(predictions, solution) == pytest.approx(0.25)
    # swap which one is right: now the right one is first: (1/1) / 2
    predictions = {"b": (9, 0.5), "a": (1, 0.5)}
    assert global_average_precision(predictions, solution) == pytest.approx(0.5)


def test_int_ids_tie_in_numeric_not_string_order():
    solution = {9: [1], 10: [1]}
    # numeric order puts 9 (right) before 10 (wrong): 1/1 / 2. String order would give 1/2 / 2.
    predictions = {10: (0, 0.5), 9: (1, 0.5)}
    assert global_average_precision(predictions, solution) == pytest.approx(0.5)
    assert global_average_precision(predictions, solution) == loop_gap(predictions, solution)


def test_queries_without_prediction_still_count_in_the_denominator():
    solution = {"a": [1], "b": [1], "c": [1], "d": [1]}
    predictions = {"a": (1, 0.9), "b": (1, 0.1)}
    assert global_average_precision(predictions, solution) == pytest.approx(2 / 4)


def test_multi_label_ground_truth():
    solution = {"a": [1, 2, 3], "b": (4, 5)}
    predictions = {"a": (3, 0.9), "b": (5, 0.2)}
    assert global_average_precision(predictions, solution) == pytest.approx(1.0)


def test_non_landmark_predictions_cost_precision_unless_ignored():
    solution = {"a": [1], "n": []}
    predictions = {"n": ("x", 0.9), "a": (1, 0.8)}
    # n (wrong) first, then a right at rank 2: (1/2) / 1 landmark query
    assert global_average_precision(predictions, solution) == pytest.approx(0.5)
    assert global_average_precision(predictions, solution, ignore_non_gt=True) == 1.0


def test_mixed_label_types_across_queries_are_fine():
    solution = {"a": [1], "b": ["x"], "c": [2.0]}
    predictions = {"a": (1, 0.3), "b": ("x", 0.3), "c": (2, 0.3)}
    assert global_average_precision(predictions, solution) == pytest.approx(1.0)


def test_no_prediction_gives_zero_and_no_landmark_is_an_error():
    assert global_average_precision({}, {"a": [1]}) == 0.0
    with pytest.raises(ValueError, match="no query with a ground-truth"):
        global_average_precision({"a": (1, 0.5)}, {"a": []})


def test_unknown_ids_are_named_or_ignored():
    solution = {"a": [1]}
    predictions = {"a": (1, 0.5), "zz": (1, 0.9)}
    with pytest.raises(ValueError, match="'zz'"):
        global_average_precision(predictions, solution)
    assert global_average_precision(predictions, solution, unknown_ids="ignore") == 1.0
    with pytest.raises(ValueError, match="unknown_ids"):
        global_average_precision(predictions, solution, unknown_ids="drop")


@pytest.mark.parametrize(
    ("predictions", "solution", "error", "match"),
    [
        ({"a": (1, float("nan"))}, {"a": [1]}, ValueError, "'a'.*NaN"),
        ({"a": (1, 0.5), "b": (1,)}, {"a": [1], "b": [1]}, ValueError, "'b'.*pair"),
        ({"a": (1, "high")}, {"a": [1]}, ValueError, "'a'.*number"),
        ({"a": (1, 0.5)}, {"a": "1"}, TypeError, r"solution\['a'\]"),
        ({"a": (1, 0.5)}, {"a": 1}, TypeError, r"solution\['a'\]"),
        ({"a": (1, 0.5), 3: (1, 0.4)}, {"a": [1], 3: [1]}, TypeError, "all str or all int"),
        ({"a": (1, 0.5)}, {"a": ["1"]}, TypeError, "never match"),
        ([("a", 1, 0.5)], {"a": [1]}, TypeError, "mapping"),
    ],
)
def test_bad_input_is_a_clear_error(predictions, solution, error, match):
    with pytest.raises(error, match=match):
        global_average_precision(predictions, solution)


def random_case(rng: random.Random, int_ids: bool):
    n = rng.randint(1, 40)
    ids = rng.sample(range(1000), n)
    ids = ids if int_ids else [f"{i:04x}" for i in ids]
    solution = {}
    for q in ids:
        kind = rng.random()
        solution[q] = [] if kind < 0.2 else rng.sample(range(6), 1 if kind < 0.7 else 2)
    if not any(solution.values()):
        solution[ids[0]] = [0]
    scores = [0.1, 0.5, 0.9] if rng.random() < 0.5 else None  # many ties half of the time
    predictions = {
        q: (rng.randrange(6), rng.choice(scores) if scores else rng.random())
        for q in ids
        if rng.random() < 0.8  # some queries get no prediction
    }
    return predictions, solution


@pytest.mark.parametrize("int_ids", [False, True])
def test_matches_plain_loop_on_random_cases(int_ids):
    rng = random.Random(int_ids)
    for _ in range(300):
        predictions, solution = random_case(rng, int_ids)
        for ignore in (False, True):
            expected = loop_gap(predictions, solution, ignore_non_gt=ignore)
            got = global_average_precision(predictions, solution, ignore_non_gt=ignore)
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_numpy_scores_and_labels_are_accepted():
    solution = {"a": [np.int64(3)], "b": [4]}
    predictions = {"a": (3, np.float32(0.7)), "b": (np.int32(4), np.float64(0.2))}
    assert global_average_precision(predictions, solution) == pytest.approx(1.0)


def test_top1_accuracy_dicts_ignore_non_landmarks_and_count_missing_as_wrong():
    solution = {"a": [1], "b": [2, 3], "c": [4], "n": []}
    predictions = {"a": (1, 0.1), "b": (3, 0.9), "n": (7, 0.9)}  # c missing
    assert top1_accuracy(predictions, solution) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no query"):
        top1_accuracy(predictions, {"n": []})


def test_top1_accuracy_arrays():
    assert top1_accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0])) == 0.5
    assert top1_accuracy(["x", "y"], ["x", "x"]) == 0.5
    with pytest.raises(ValueError, match="equal length"):
        top1_accuracy([1, 2], [1])
