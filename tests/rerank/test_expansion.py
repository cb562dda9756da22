from __future__ import annotations

import numpy as np
import pytest

from retrieval_kit.index import SearchResult, build_index
from retrieval_kit.rerank import DatabaseAugmentation, DistractorReranker, QueryExpansion


def unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def ang(deg):
    r = np.deg2rad(deg)
    return [np.cos(r), np.sin(r)]


# four database vectors on the unit circle, at 0, 30, 90 and 180 degrees
DB = np.array([ang(0), ang(30), ang(90), ang(180)], np.float32)
IDS = ["a", "b", "c", "d"]


def expand_by_hand(q, neighbours, alpha):
    out = unit(q).copy()
    for x in neighbours:
        w = max(float(np.dot(unit(q), unit(x))), 0.0) ** alpha
        out += w * unit(x)
    return unit(out)


def test_query_expansion_by_hand():
    index = build_index(DB, IDS, gpu=False)
    q = np.array([ang(10)], np.float32)
    result = index.search(q, 3)
    assert result.ids.tolist() == [["a", "b", "c"]]
    qe = QueryExpansion(index, k=2, alpha=3.0)
    expected_q = expand_by_hand(q[0], [DB[0], DB[1]], 3.0)
    np.testing.assert_allclose(qe.expanded_queries(q, result)[0], expected_q, atol=1e-6)
    out = qe.rerank(q, result)
    sims = {i: float(np.dot(expected_q, DB[j])) for j, i in enumerate(IDS)}
    order = sorted(sims, key=lambda i: -sims[i])[:3]
    assert out.ids.tolist() == [order]
    np.testing.assert_allclose(out.scores[0], [sims[i] for i in order], atol=1e-6)
    # same with the vectors passed in rather than reconstructed from the index
    qe2 = QueryExpansion(index, k=2, alpha=3.0, database_embeddings=DB.astype(np.float64))
    np.testing.assert_allclose(qe2.rerank(q, result).scores, out.scores, atol=1e-6)


def test_query_expansion_skips_missing_and_chains():
    index = build_index(DB[:2], [5, 6], gpu=False)
    q = np.array([ang(80)], np.float32)
    result = index.search(q, 4)  # two missing slots
    expected_q = expand_by_hand(q[0], [DB[1], DB[0]], 1.0)
    qe = QueryExpansion(index, k=4, alpha=1.0)
    np.testing.assert_allclose(qe.expanded_queries(q, result)[0], expected_q, atol=1e-6)
    out = DistractorReranker(DB[2:], k=1).rerank(q, qe.rerank(q, result))
    assert out.ids.tolist() == [[6, 5, -1, -1]] and np.isneginf(out.scores[0, 2:]).all()
    with pytest.raises(ValueError, match="dimension 3"):
        qe.rerank(np.zeros((1, 3), np.float32), result)
    with pytest.raises(ValueError, match="shape"):
        QueryExpansion(index, database_embeddings=DB)


def dba_by_hand(db, k, alpha):
    out = []
    for i, x in enumerate(db):
        others = sorted(
            (j for j in range(len(db)) if j != i), key=lambda j: -np.dot(unit(x), unit(db[j]))
        )
        out.append(expand_by_hand(x, [db[j] for j in others[:k]], alpha))
    return np.array(out)


@pytest.mark.parametrize("k", [1, 2])
def test_database_augmentation_by_hand(k):
    index = build_index(DB, IDS, gpu=False)
    dba = DatabaseAugmentation(index, k=k, alpha=3.0)
    expected = dba_by_hand(DB, k, 3.0)
    np.testing.assert_allclose(dba.augment(), expected, atol=1e-6)
    new = dba.build_index()
    assert new.factory == "Flat" and new.ids.tolist() == IDS
    q = np.array([ang(20), ang(100)], np.float32)
    np.testing.assert_allclose(new.search(q, 4).scores, np.sort(q @ expected.T)[:, ::-1], atol=1e-5)
    # as a reranker: re-score the shortlist with the augmented vectors, then re-sort
    result = index.search(q, 2)
    out = dba.rerank(q, result)
    for i in range(len(q)):
        s = {n: float(np.dot(q[i], expected[IDS.index(n)])) for n in result.ids[i]}
        order = sorted(s, key=lambda n: -s[n])
        assert list(out.ids[i]) == order
        np.testing.assert_allclose(out.scores[i], [s[n] for n in order], atol=1e-6)


def test_database_augmentation_missing_slots_and_errors():
    index = build_index(DB, [1, 2, 3, 4], gpu=False)
    dba = DatabaseAugmentation(index, k=1)
    r = SearchResult(np.array([[0.5, -np.inf]], np.float32), np.array([[2, -1]]))
    out = dba.rerank(np.array([ang(0)], np.float32), r)
    assert out.ids.tolist() == [[2, -1]] and np.isneginf(out.scores[0, 1])
    with pytest.raises(KeyError, match="99"):
        dba.rerank(np.array([ang(0)], np.float32), SearchResult(r.scores, np.array([[99, -1]])))
    with pytest.raises(ValueError, match="queries row 0"):
        dba.rerank(np.array([[np.nan, 0.0]], np.float32), r)
