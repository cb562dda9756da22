from __future__ import annotations

import numpy as np
import pytest

from retrieval_kit.index import SearchResult, build_index
from retrieval_kit.rerank import DiscriminativeReranker
from retrieval_kit.rerank.reranker import resort


def rerank_by_hand(result, labels, db_labels, db_emb, queries, max_inserted):
    """The published rule written as a plain loop over ids."""
    out = []
    for row in range(len(result.ids)):
        width = len(result.ids[row])
        ids = [i for i in result.ids[row].tolist() if i is not None and i != -1]
        y = labels[row]
        if y is None:
            out.append(ids)
            continue
        first = [i for i in ids if db_labels.get(i) == y]
        rest = [i for i in ids if db_labels.get(i) != y]
        extra = [i for i in db_labels if db_labels[i] == y and i not in ids]
        if db_emb is not None:
            q = queries[row] / np.linalg.norm(queries[row])

            def cos(i, q=q):
                v = db_emb[i] / np.linalg.norm(db_emb[i])
                return float(v @ q)

            # sorted() is stable: equal similarities keep the mapping's order
            extra = sorted(extra, key=lambda i: -cos(i))
        if max_inserted is not None:
            extra = extra[:max_inserted]
        out.append((first + extra + rest)[:width])
    return out


def test_hand_case():
    r = SearchResult(
        np.array([[0.9, 0.8, 0.7, 0.6]], np.float32),
        np.array([[10, 11, 12, 13]]),
    )
    db_labels = {10: "a", 11: "b", 12: "a", 13: "b", 14: "b", 15: "c", 16: "b"}
    got = DiscriminativeReranker(db_labels).rerank(None, r, query_labels=["b"])
    # b's in the result first (11, 13), then the other b's in mapping order (14, 16): width 4
    assert got.ids.tolist() == [[11, 13, 14, 16]]
    # scores: tiers keep the order, so re-sorting by score changes nothing
    assert np.all(np.diff(got.scores[0]) <= 0)
    assert resort(got.scores, got.ids).ids.tolist() == got.ids.tolist()
    got = DiscriminativeReranker(db_labels, max_inserted=1).rerank(None, r, query_labels=["b"])
    assert got.ids.tolist() == [[11, 13, 14, 10]]
    # inserted images ranked by similarity to the query when embeddings are given
    emb = np.zeros((17, 2), np.float32)
    emb[:, 0] = 1.0
    emb[16] = [0.0, 1.0]  # id 16 points like the query
    got = DiscriminativeReranker(db_labels, database_embeddings=emb).rerank(
        np.array([[0.0, 2.0]]), r, query_labels=["b"]
    )
    assert got.ids.tolist() == [[11, 13, 16, 14]]
    # span = 1 + (max - min) of the row's similarities (1.0 and 0.0 inserted) = 2
    np.testing.assert_allclose(got.scores[0], [0.8 + 4, 0.6 + 4, 1.0 + 2, 0.0 + 2], rtol=1e-6)


def test_default_label_is_the_vote_of_the_result():
    r = SearchResult(np.array([[0.9, 0.5, 0.5]], np.float32), np.array([[1, 2, 3]]))
    dr = DiscriminativeReranker({1: "a", 2: "b", 3: "b", 4: "a"}, vote_k=3)
    assert dr.rerank(None, r).ids.tolist() == [[2, 3, 1]]  # b: 1.0 beats a: 0.9
    dr = DiscriminativeReranker({1: "a", 2: "b", 3: "b", 4: "a"}, vote_k=1)
    assert dr.rerank(None, r).ids.tolist() == [[1, 4, 2]]


@pytest.mark.parametrize("use_emb", [False, True])
@pytest.mark.parametrize("max_inserted", [None, 0, 2])
def test_matches_a_plain_loop(use_emb, max_inserted):
    rng = np.random.default_rng(0)
    n, d, n_q, k = 60, 8, 25, 10
    db = rng.standard_normal((n, d)).astype(np.float32)
    queries = rng.standard_normal((n_q, d)).astype(np.float32)
    db_labels = {i: int(rng.integers(0, 6)) for i in range(n)}
    db_labels[5] = None  # a non-landmark never matches
    index = build_index(db, factory="Flat")
    result = index.search(queries, k)
    result.ids[3, 7:] = -1  # missing neighbours
    result.scores[3, 7:] = -np.inf
    labels = [int(rng.integers(0, 7)) for _ in range(n_q)]  # label 6 has no database image
    labels[4] = None
    dr = DiscriminativeReranker(
        db_labels, database_embeddings=db if use_emb else None, max_inserted=max_inserted
    )
    got = dr.rerank(queries, result, query_labels=labels)
    want = rerank_by_hand(result, labels, db_labels, db if use_emb else None, queries, max_inserted)
    for row in range(n_q):
        ids = [i for i in got.ids[row].tolist() if i != -1]
        assert ids == want[row], row
        s = got.scores[row]
        assert np.all(np.diff(s[np.isfinite(s)]) <= 0), row
    assert got.ids[4].tolist() == result.ids[4].tolist()


def test_string_ids_and_errors():
    r = SearchResult(np.array([[0.9, -np.inf]], np.float32), np.array([["x", None]], dtype=object))
    got = DiscriminativeReranker({"x": 1, "y": 2, "z": 1}).rerank(None, r, query_labels=[1])
    assert got.ids.tolist() == [["x", "z"]]
    with pytest.raises(ValueError, match="query_labels"):
        DiscriminativeReranker({"x": 1}).rerank(None, r, query_labels=[1, 2])
    with pytest.raises(ValueError, match="queries have shape"):
        DiscriminativeReranker({0: 1}, database_embeddings=np.ones((1, 3))).rerank(
            np.ones((1, 2)),
            SearchResult(np.ones((1, 1), np.float32), np.zeros((1, 1), int)),
            query_labels=[1],
        )
