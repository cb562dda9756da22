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
