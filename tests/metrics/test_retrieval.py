"""mAP@k and recall@k against hand-worked values and plain-loop references."""

from __future__ import annotations

import random

import numpy as np
import pytest

from retrieval_kit.metrics import mean_average_precision_at_k, recall_at_k


def loop_map_at_k(predictions, solution, k=100):
    """The GLDv2 retrieval metric as a loop: a repeated id is skipped but keeps its position."""
    total = 0.0
    for qid, relevant in solution.items():
        ranked = list(predictions.get(qid, []))[:k]
        seen, hits, ap = set(), 0, 0.0
        for position, item in enumerate(ranked, start=1):
            if item not in seen and item in relevant:
                hits += 1
                ap += hits / position
            seen.add(item)
        total += ap / min(len(relevant), k)
    return total / len(solution)


def loop_recall(predictions, solution, k):
    scored = [q for q, rel in solution.items() if len(rel)]
    hits = sum(any(x in solution[q] for x in list(predictions.get(q, []))[:k]) for q in scored)
    return hits / len(scored)


def test_hand_worked_example():
    # relevant at positions 1 and 3: (1/1 + 2/3) / 2
    assert mean_average_precision_at_k({"q": ["a", "x", "b"]}, {"q": {"a", "b"}}) == pytest.approx(
        (1 + 2 / 3) / 2
    )


def test_duplicates_are_skipped_but_keep_their_position():
    # a, a, b: the second a is skipped; b is the 2nd hit at position 3: (1/1 + 2/3) / 2
    got = mean_average_precision_at_k({"q": ["a", "a", "b"]}, {"q": {"a", "b"}})
    assert got == pytest.approx((1 + 2 / 3) / 2)


def test_fewer_than_k_predictions_divide_by_number_relevant():
    # 3 relevant, only "a" at position 1 retrieved: 1 / 3
    got = mean_average_precision_at_k({"q": ["a", "z"]}, {"q": {"a", "b", "c"}}, k=100)
    assert got == pytest.approx(1 / 3)


def test_more_relevant_than_k_divides_by_k():
    solution = {"q": set("abcde")}
    # first 2 both relevant, k=2: (1/1 + 2/2) / min(5, 2) = 1; "c" at position 3 is beyond k
    assert mean_average_precision_at_k({"q": ["a", "b", "c"]}, solution, k=2) == 1.0
    # relevant only at position 3, beyond k=2: 0
    assert mean_average_precision_at_k({"q": ["x", "y", "a"]}, solution, k=2) == 0.0


def test_queries_without_prediction_score_zero():
    solution = {"q1": {"a"}, "q2": {"b"}}
    assert mean_average_precision_at_k({"q1": ["a"]}, solution) == pytest.approx(0.5)


def test_int_ids_and_numpy_rankings():
    predictions = {1: np.array([5, 7, 5, 9]), 2: [3]}
    solution = {1: [9, 5], 2: {4}}
    expected = loop_map_at_k({1: [5, 7, 5, 9], 2: [3]}, solution)
    assert mean_average_precision_at_k(predictions, solution) == pytest.approx(expected)
    assert expected == pytest.approx((1 + 2 / 4) / 2 / 2)  # q1: hits at 1 and 4; q2: 0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="'zz'"):
        mean_average_precision_at_k({"zz": ["a"]}, {"q": {"a"}})
    assert mean_average_precision_at_k({"zz": ["a"]}, {"q": {"a"}}, unknown_ids="ignore") == 0.0
    with pytest.raises(ValueError, match="no relevant id.*'q'"):
        mean_average_precision_at_k({"q": ["a"]}, {"q": set()})
    with pytest.raises(TypeError, match=r"predictions\['q'\]"):
        mean_average_precision_at_k({"q": "abc"}, {"q": {"a"}})
    with pytest.raises(ValueError, match="k must be"):
        mean_average_precision_at_k({"q": ["a"]}, {"q": {"a"}}, k=0)


def random_retrieval_case(rng: random.Random, int_ids: bool):
    db = list(range(30)) if int_ids else [f"d{i:02d}" for i in range(30)]
    solution, predictions = {}, {}
    for q in range(rng.randint(1, 20)):
        qid = q if int_ids else f"q{q}"
        solution[qid] = set(rng.sample(db, rng.randint(1, 12)))
        if rng.random() < 0.85:
            # choices() repeats ids, as a sloppy submission would
            predictions[qid] = rng.choices(db, k=rng.randint(0, 25))
    return predictions, solution


@pytest.mark.parametrize("int_ids", [False, True])
def test_map_matches_plain_loop_on_random_cases(int_ids):
    rng = random.Random(10 + int_ids)
    for _ in range(300):
        predictions, solution = random_retrieval_case(rng, int_ids)
        k = rng.choice([1, 3, 10, 100])
        got = mean_average_precision_at_k(predictions, solution, k=k)
        assert got == pytest.approx(loop_map_at_k(predictions, solution, k), rel=1e-12)


def test_recall_dict_form_matches_loop():
    rng = random.Random(3)
    for _ in range(200):
        predictions, solution = random_retrieval_case(rng, int_ids=False)
        got = recall_at_k(predictions, solution, ks=(1, 5, 10))
        assert got == {k: pytest.approx(loop_recall(predictions, solution, k)) for k in (1, 5, 10)}


def test_recall_arrays_hand_worked():
    query_labels = np.array([1, 2, 3])
    neighbour_labels = np.array([[1, 9, 9], [9, 2, 2], [9, 9, 9]])
    # q0 hit at 1, q1 first hit at 2, q2 never
    assert recall_at_k(query_labels, neighbour_labels, ks=(1, 2, 3)) == {
        1: pytest.approx(1 / 3),
        2: pytest.approx(2 / 3),
        3: pytest.approx(2 / 3),
    }
    assert recall_at_k(query_labels, neighbour_labels, ks=1) == {1: pytest.approx(1 / 3)}


def test_recall_arrays_match_loop_and_string_labels():
    rng = np.random.default_rng(0)
    q = rng.integers(0, 5, size=200)
    nb = rng.integers(0, 5, size=(200, 10))
    for k in (1, 4, 10):
        expected = np.mean([q[i] in nb[i, :k] for i in range(200)])
        assert recall_at_k(q, nb, ks=[k])[k] == pytest.approx(expected)
    assert recall_at_k(["a", "b"], [["b", "a"], ["b", None]], ks=(1,)) == {1: 0.5}


def test_recall_errors():
    with pytest.raises(ValueError, match="only 2 columns"):
        recall_at_k([1], [[1, 2]], ks=(5,))
    with pytest.raises(ValueError, match="rows"):
        recall_at_k([1, 2], [[1, 2]], ks=(1,))
    with pytest.raises(ValueError, match="positive"):
        recall_at_k([1], [[1]], ks=(0,))
