from __future__ import annotations

import faiss
import numpy as np
import pytest

from retrieval_kit.miners import IndexMiner


def _brute_force(x, labels, k, metric):
    if metric == "ip":
        s = x @ x.T
        order_key = -s
    else:
        s = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        order_key = s
    idx = np.full((len(x), k), -1)
    for i in range(len(x)):
        negs = [j for j in np.argsort(order_key[i], kind="stable") if labels[j] != labels[i]]
        idx[i, : min(k, len(negs))] = negs[:k]
    return idx, s


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("batch_size", [7, 1000])
def test_matches_brute_force(metric, batch_size):
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).astype(np.float32)
    # uneven class sizes, one large class (40) to force a deep search
    labels = np.concatenate([np.zeros(40, int), rng.integers(1, 15, size=80)])
    rng.shuffle(labels)
    got = IndexMiner(k=5, metric=metric, batch_size=batch_size).mine(x, labels)
    idx, s = _brute_force(x.astype(np.float64), labels, 5, metric)
    np.testing.assert_array_equal(got.indices, idx)
    np.testing.assert_allclose(got.scores, np.take_along_axis(s, idx, axis=1), rtol=1e-4, atol=1e-4)
    assert (labels[got.indices] != labels[:, None]).all()


def test_missing_negatives_are_filled_and_string_labels():
    x = np.eye(4, dtype=np.float32)
    res = IndexMiner(k=3, metric="ip").mine(x, ["a", "a", "b", "b"])
    assert (res.indices[:, 2] == -1).all() and np.isneginf(res.scores[:, 2]).all()
    assert set(res.indices[0, :2]) == {2, 3}
    res = IndexMiner(k=3, metric="l2").mine(x, ["a", "a", "b", "b"])
    assert np.isposinf(res.scores[:, 2]).all()


def test_normalize_and_prebuilt_index():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 4)).astype(np.float32) * rng.uniform(0.1, 10, size=(50, 1))
    labels = rng.integers(0, 5, size=50)
    got = IndexMiner(k=3, normalize=True).mine(x, labels)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    idx, _ = _brute_force(xn.astype(np.float64), labels, 3, "ip")
    np.testing.assert_array_equal(got.indices, idx)
    index = faiss.IndexFlatIP(4)
    index.add(xn)
    np.testing.assert_array_equal(IndexMiner(k=3).mine(xn, labels, index=index).indices, idx)


def test_errors():
    x = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="metric"):
        IndexMiner(metric="cos")
    with pytest.raises(ValueError, match="k must"):
        IndexMiner(k=0)
    with pytest.raises(ValueError, match="labels must have shape"):
        IndexMiner().mine(x, [0, 1])
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        IndexMiner().mine(bad, [0, 0, 1, 1])
    index = faiss.IndexFlatIP(2)
    with pytest.raises(ValueError, match="index holds 0"):
        IndexMiner().mine(x, [0, 0, 1, 1], index=index)
