from __future__ import annotations

import numpy as np
import pytest

from retrieval_kit.index import SearchResult
from retrieval_kit.predict import predict_labels


def vote_by_hand(scores, ids, id_to_label, k):
    labels, conf = [], []
    for s_row, i_row in zip(scores, ids):
        sums, order = {}, []
        for s, i in list(zip(s_row, i_row))[:k]:
            if i is None or i == -1 or s == -np.inf:
                continue
            lab = id_to_label[i]
            if lab not in sums:
                order.append(lab)
                sums[lab] = 0.0
            sums[lab] += float(s)
        if not sums:
            labels.append(None)
            conf.append(-np.inf)
            continue
        best = order[0]
        for lab in order:
            if sums[lab] > sums[best]:
                best = lab
        labels.append(best)
        conf.append(sums[best])
    return labels, np.array(conf, np.float32)


def test_nearest_neighbour():
    r = SearchResult(
        np.array([[0.9, 0.8], [0.7, 0.1], [-np.inf, -np.inf]], np.float32),
        np.array([["x", "y"], ["y", "x"], [None, None]], dtype=object),
    )
    labels, conf = predict_labels(r, {"x": 3, "y": 4})
    assert labels == [3, 4, None]
    np.testing.assert_array_equal(conf, np.array([0.9, 0.7, -np.inf], np.float32))
    assert conf.dtype == np.float32


def test_vote_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, size=(200, 6))
    scores = -np.sort(-rng.random((200, 6)), axis=1).astype(np.float32)
    ids[5, 4:] = -1
    scores[5, 4:] = -np.inf
    id_to_label = {i: f"L{i % 7}" for i in range(30)}
    for k in (None, 1, 3, 6, 10):
        kk = 3 if k is None else k
        expected = vote_by_hand(scores, ids, id_to_label, kk)
        got = predict_labels(SearchResult(scores, ids), id_to_label, method="vote", k=k)
        assert got[0] == expected[0]
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)


def test_vote_can_beat_the_nearest_neighbour_and_ties_go_to_the_better_rank():
    r = SearchResult(
        np.array([[0.9, 0.6, 0.5], [0.5, 0.3, 0.1]], np.float32), np.array([[1, 2, 3]] * 2)
    )
    labels, conf = predict_labels(r, {1: "a", 2: "b", 3: "b"}, method="vote")
    assert labels == ["b", "a"]  # 0.6 + 0.5 > 0.9; then a 0.5 > b 0.3 + 0.1
    np.testing.assert_allclose(conf, [1.1, 0.5], rtol=1e-6)
    tie = SearchResult(np.array([[0.5, 0.5]], np.float32), np.array([[2, 1]]))
    assert predict_labels(tie, {1: "a", 2: "b"}, method="vote")[0] == ["b"]


def test_errors():
    r = SearchResult(np.array([[0.9, 0.8]], np.float32), np.array([[1, 2]]))
    with pytest.raises(KeyError, match="id 2 \\(query row 0\\)"):
        predict_labels(r, {1: "a"}, method="vote")
    with pytest.raises(ValueError, match="method"):
        predict_labels(r, {1: "a"}, method="mean")
    with pytest.raises(ValueError, match="k must be"):
        predict_labels(r, {1: "a"}, method="vote", k=0)
    with pytest.raises(ValueError, match="equal 2-D shapes"):
        predict_labels(SearchResult(r.scores, r.ids[:, :1]), {1: "a"})
    assert predict_labels(
        SearchResult(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)), {}
    ) == (
        [],
        pytest.approx(np.zeros(0, np.float32)),
    )


def sum_by_hand(scores, ids, id_to_label, k):
    """Henkel & Singer's rule written plainly: each label's k best scores, summed."""
    labels, conf = [], []
    for s_row, i_row in zip(scores, ids):
        per_label, first_rank = {}, {}
        for rank, (s, i) in enumerate(zip(s_row, i_row)):
            if i is None or i == -1 or s == -np.inf:
                continue
            lab = id_to_label[i]
            per_label.setdefault(lab, []).append(float(s))
            first_rank.setdefault(lab, rank)
        if not per_label:
            labels.append(None)
            conf.append(-np.inf)
            continue
        sums = {lab: sum(sorted(v, reverse=True)[:k]) for lab, v in per_label.items()}
        best = max(sums, key=lambda lab: (sums[lab], -first_rank[lab]))
        labels.append(best)
        conf.append(sums[best])
    return labels, np.array(conf, np.float32)


def test_sum_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 40, size=(300, 12))
    scores = -np.sort(-rng.random((300, 12)), axis=1).astype(np.float32)
    ids[7, 6:] = -1
    scores[7, 6:] = -np.inf
    ids[8, :] = -1
    scores[8, :] = -np.inf
    id_to_label = {i: f"L{i % 5}" for i in range(40)}
    differs_from_vote = 0
    for k in (None, 1, 2, 3, 12):
        kk = 3 if k is None else k
        expected = sum_by_hand(scores, ids, id_to_label, kk)
        got = predict_labels(SearchResult(scores, ids), id_to_label, method="sum", k=k)
        assert got[0] == expected[0]
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)
        vote = predict_labels(SearchResult(scores, ids), id_to_label, method="vote", k=k)
        differs_from_vote += sum(a != b for a, b in zip(got[0], vote[0]))
    assert got[0][8] is None and got[1][8] == -np.inf
    assert differs_from_vote > 0, "the random cases must tell 'sum' from 'vote'"


def test_sum_by_hand_case():
    # Scores are exact in binary, so the sums below are exact. Labels by rank: a b b a a a.
    # k=3: a = 0.75 + 0.25 + 0.125 = 1.125 (its 4th, 0.125, is left out), b = 0.5 + 0.5 = 1.0.
    # 'vote' over the row's top 3 (a 0.75, b 0.5, b 0.5) says b instead.
    r = SearchResult(
        np.array([[0.75, 0.5, 0.5, 0.25, 0.125, 0.125]], np.float32),
        np.array([[1, 2, 3, 4, 5, 6]]),
    )
    id_to_label = {1: "a", 2: "b", 3: "b", 4: "a", 5: "a", 6: "a"}
    assert predict_labels(r, id_to_label, method="sum") == (["a"], np.float32([1.125]))
    assert predict_labels(r, id_to_label, method="vote", k=3)[0] == ["b"]
    # k=2: a = 0.75 + 0.25 = 1.0 ties b = 1.0: the label met first wins.
    assert predict_labels(r, id_to_label, method="sum", k=2) == (["a"], np.float32([1.0]))
    assert predict_labels(r, id_to_label, method="sum", k=6) == (["a"], np.float32([1.25]))
    with pytest.raises(ValueError, match="'sum'"):
        predict_labels(r, id_to_label, method="summ")
