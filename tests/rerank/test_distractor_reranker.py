from __future__ import annotations

import numpy as np
import pytest

from retrieval_kit.index import SearchResult, build_index
from retrieval_kit.rerank import DistractorReranker, Reranker


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def penalty_by_hand(q, distractors, k, skip=()):
    """Mean of the k largest cosines of q to the distractors, skipping rows in ``skip``."""
    sims = []
    for j, d in enumerate(distractors):
        if j in skip:
            continue
        sims.append(float(np.dot(unit(q), unit(d))))
    sims.sort(reverse=True)
    top = sims[:k]
    return sum(top) / len(top) if top else 0.0


def setup(seed=0, n_db=40, n_q=6, n_d=25, d=8):
    rng = np.random.default_rng(seed)
    db = unit(rng.normal(size=(n_db, d))).astype(np.float32)
    q = (3.0 * rng.normal(size=(n_q, d))).astype(np.float32)  # not unit: cosine is still used
    distractors = (2.0 * rng.normal(size=(n_d, d))).astype(np.float32)
    index = build_index(db, [f"db{i}" for i in range(n_db)], gpu=False)
    return db, q, distractors, index


@pytest.mark.parametrize(("k", "alpha"), [(1, 1.0), (5, 1.0), (3, 0.5)])
def test_query_penalty_matches_the_formula(k, alpha):
    db, q, distractors, index = setup()
    result = index.search(q, 6)
    out = DistractorReranker(distractors, k=k, alpha=alpha).rerank(q, result)
    for i in range(len(q)):
        pen = penalty_by_hand(q[i], distractors, k)
        np.testing.assert_allclose(out.scores[i], result.scores[i] - alpha * pen, atol=1e-5)
        assert list(out.ids[i]) == list(result.ids[i])  # a per-query shift keeps the order
    assert isinstance(out, SearchResult) and out.scores.dtype == np.float32


def test_self_match_excluded_by_id_and_by_similarity():
    db, q, distractors, index = setup(seed=1)
    # the queries themselves sit among the distractors (e.g. a test image in the non-landmark set)
    mixed = np.concatenate([distractors, q[:3]])
    d_ids = [f"d{i}" for i in range(len(distractors))] + ["q0", "q1", "q2"]
    result = index.search(q, 4)
    n = len(distractors)
    # each query skips its own copy; the other queries' copies are genuine distractors for it
    expected = [penalty_by_hand(q[i], mixed, 5, skip={n + i}) for i in range(len(q))]

    by_id = DistractorReranker(mixed, k=5, distractor_ids=d_ids)
    pen = by_id.query_penalty(q, query_ids=[f"q{i}" for i in range(len(q))])
    np.testing.assert_allclose(pen, expected, atol=1e-5)

    by_sim = DistractorReranker(mixed, k=5)  # no ids: near-1 cosine means "that is me"
    np.testing.assert_allclose(by_sim.query_penalty(q), expected, atol=1e-5)
    np.testing.assert_allclose(
        by_sim.rerank(q, result).scores, result.scores - np.array(expected)[:, None], atol=1e-5
    )

    # ids given but different: the copy is a genuine distractor and counts
    not_me = DistractorReranker(mixed, k=5, distractor_ids=d_ids)
    pen0 = not_me.query_penalty(q[:1], query_ids=["someone-else"])[0]
    assert pen0 == pytest.approx(penalty_by_hand(q[0], mixed, 5), abs=1e-5)
    with pytest.raises(TypeError, match="both be strings"):
        not_me.query_penalty(q[:1], query_ids=[7])


def test_many_duplicates_of_the_query_are_all_skipped():
    _, q, distractors, _ = setup(seed=2)
    mixed = np.concatenate([np.repeat(q[:1], 9, axis=0), distractors])
    pen = DistractorReranker(mixed, k=3).query_penalty(q[:1])[0]
    assert pen == pytest.approx(penalty_by_hand(q[0], distractors, 3), abs=1e-5)


def test_fewer_distractors_than_k_and_missing_neighbours():
    db, q, distractors, index = setup(seed=3, n_db=3)
    result = index.search(q, 5)  # 2 missing slots per row
    out = DistractorReranker(distractors[:2], k=5).rerank(q, result)
    for i in range(len(q)):
        pen = penalty_by_hand(q[i], distractors[:2], 5)
        np.testing.assert_allclose(out.scores[i, :3], result.scores[i, :3] - pen, atol=1e-5)
    assert np.isneginf(out.scores[:, 3:]).all() and (out.ids[:, 3:] == None).all()  # noqa: E711


def test_neighbour_penalty_matches_the_formula_and_resorts():
    db, q, distractors, index = setup(seed=4)
    ids = [f"db{i}" for i in range(len(db))]
    result = index.search(q, 8)
    rr = DistractorReranker(
        distractors,
        k=3,
        alpha=1.0,
        neighbour_penalty=True,
        neighbour_alpha=2.0,
        database_embeddings=db,
        database_ids=ids,
    )
    out = rr.rerank(q, result)
    for i in range(len(q)):
        qp = penalty_by_hand(q[i], distractors, 3)
        expected = {}
        for s, nid in zip(result.scores[i], result.ids[i]):
            row = ids.index(nid)
            expected[nid] = s - qp - 2.0 * penalty_by_hand(db[row], distractors, 3)
        order = sorted(expected, key=lambda n: -expected[n])
        assert list(out.ids[i]) == order
        np.testing.assert_allclose(out.scores[i], [expected[n] for n in order], atol=1e-5)
    changed = any(list(out.ids[i]) != list(result.ids[i]) for i in range(len(q)))
    assert changed  # this data does reorder some rows, so the re-sort is exercised

    table = {n: float(rr.neighbour_penalties([n])[0]) for n in ids}
    pre = DistractorReranker(
        distractors, k=3, neighbour_penalty=True, neighbour_alpha=2.0, neighbour_penalties=table
    )
    np.testing.assert_allclose(pre.rerank(q, result).scores, out.scores, atol=1e-6)
    first = result.ids[0, 0]
    with pytest.raises(KeyError, match=f"database id '{first}' has no entry"):
        DistractorReranker(
            distractors, neighbour_penalty=True, neighbour_penalties={"nobody": 0.1}
        ).rerank(q, result)


def test_neighbour_self_match_excluded_by_id():
    db, q, distractors, index = setup(seed=5)
    # database image db0 is also in the distractor set under the same id
    mixed = np.concatenate([distractors, db[:1]])
    d_ids = [f"d{i}" for i in range(len(distractors))] + ["db0"]
    rr = DistractorReranker(
        mixed,
        k=3,
        distractor_ids=d_ids,
        neighbour_penalty=True,
        database_embeddings=db,
        database_ids=[f"db{i}" for i in range(len(db))],
    )
    assert rr.neighbour_penalties(["db0"])[0] == pytest.approx(
        penalty_by_hand(db[0], distractors, 3), abs=1e-5
    )


def test_bad_input():
    db, q, distractors, index = setup()
    result = index.search(q, 3)
    with pytest.raises(ValueError, match="neighbour_penalty=True needs"):
        DistractorReranker(distractors, neighbour_penalty=True)
    with pytest.raises(ValueError, match="empty"):
        DistractorReranker(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="row 1"):
        DistractorReranker(np.array([[1.0, 0.0], [np.nan, 1.0]]))
    rr = DistractorReranker(distractors)
    with pytest.raises(ValueError, match="dimension 4 but the distractors have 8"):
        rr.rerank(q[:, :4], result)
    with pytest.raises(ValueError, match="6 queries but the SearchResult has 2 rows"):
        rr.rerank(q, SearchResult(result.scores[:2], result.ids[:2]))
    assert isinstance(rr, Reranker)
