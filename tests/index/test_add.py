"""Index.add: results equal building over the concatenation; ids checked; nothing half done."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from retrieval_kit.index import build_index, load_index


def unit(n, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


X1, X2 = unit(2000), unit(700, seed=1)
QUERIES = unit(40, seed=2)


def ids_for(kind, start, n):
    return (
        [f"id{i:05d}" for i in range(start, start + n)]
        if kind == "str"
        else list(range(10 * start, 10 * (start + n), 10))
    )


def assert_same(a, b):
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.ids.dtype == b.ids.dtype and (a.ids == b.ids).all()


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("kind", ["str", "int"])
def test_flat_add_equals_build_on_concatenation(metric, kind):
    index = build_index(X1, ids_for(kind, 0, 2000), factory="Flat", metric=metric, gpu=False)
    index.add(X2, ids_for(kind, 2000, 700), chunk_size=256)  # several chunks
    whole = build_index(
        np.concatenate([X1, X2]), ids_for(kind, 0, 2700), factory="Flat", metric=metric, gpu=False
    )
    assert len(index) == 2700 and index.info["added"] == 700
    assert_same(index.search(QUERIES, 10), whole.search(QUERIES, 10))
    assert (index.ids == whole.ids).all()
    assert index.rows_of(ids_for(kind, 2699, 1)).tolist() == [2699]  # lookup sees the new ids


def test_default_ids_continue_the_row_numbers():
    index = build_index(X1, factory="Flat", gpu=False)
    index.add(X2)
    whole = build_index(np.concatenate([X1, X2]), factory="Flat", gpu=False)
    assert_same(index.search(QUERIES, 5), whole.search(QUERIES, 5))


def test_ivf_add_with_every_list_probed_equals_build_on_concatenation():
    index = build_index(X1, ids_for("str", 0, 2000), factory="IVF16,Flat", gpu=False)
    tuned = index.search_params["nprobe"]
    index.add(X2, ids_for("str", 2000, 700))
    assert index.search_params["nprobe"] == tuned  # centroids and tuning are kept
    whole = build_index(
        np.concatenate([X1, X2]), ids_for("str", 0, 2700), factory="IVF16,Flat", gpu=False
    )
    for ix in (index, whole):
        ix.set_search_params(nprobe=16)
    assert_same(index.search(QUERIES, 10), whole.search(QUERIES, 10))
    # the direct map grows too: new vectors come back by id
    np.testing.assert_array_equal(index.reconstruct(["id02000", "id02699"]), X2[[0, 699]])


def test_ivfpq_add_equals_the_same_trained_index_filled_at_once():
    index = build_index(X1, factory="IVF16,PQ4np", gpu=False, target_recall=None)
    reference = faiss.clone_index(index.faiss_index)
    reference.reset()
    reference.add(np.concatenate([X1, X2]))
    index.add(X2, chunk_size=300)
    d, i = reference.search(QUERIES, 10)
    result = index.search(QUERIES, 10)
    np.testing.assert_array_equal(result.scores, d)
    assert (result.ids == i).all()


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW8"])
def test_save_load_after_add(tmp_path, factory):
    index = build_index(X1, ids_for("str", 0, 2000), factory=factory, gpu=False)
    index.add(X2, ids_for("str", 2000, 700))
    index.save(tmp_path / "db.npz")
    loaded = load_index(tmp_path / "db.npz")
    assert len(loaded) == 2700 and loaded.info["added"] == 700
    assert_same(index.search(QUERIES, 10), loaded.search(QUERIES, 10))
    # HNSW: the added vectors are linked into the graph
    assert (index.search(X2[:20], 1).ids[:, 0] == ids_for("str", 2000, 20)).all()


def test_bad_additions_are_refused_and_change_nothing():
    index = build_index(X1, ids_for("str", 0, 2000), factory="Flat", gpu=False)
    before = index.search(QUERIES, 5)
    new = X2[:3]
    cases = [
        (["a", "b", "a"], ValueError, "duplicate id 'a'"),
        (
            ["a", "id00017", "c"],
            ValueError,
            r"id 'id00017' \(row 1 of the new vectors\) is "
            r"already in the index \(row 17\)",
        ),
        ([1, 2, 3], ValueError, r"holds string ids but integer ids were given \(first: 1\)"),
        (["a", 2, "c"], TypeError, "all integers or all strings"),
        (["a", "b"], ValueError, "has 2 entries but there are 3 vectors"),
        (None, ValueError, "string ids: pass one new id"),
    ]
    for ids, error, message in cases:
        with pytest.raises(error, match=message):
            index.add(new, ids)
    with pytest.raises(ValueError, match="dimension 8 but the index holds dimension 16"):
        index.add(unit(3, d=8), ["a", "b", "c"])
    bad = X2.copy()
    bad[650, 3] = np.nan  # in the last of several chunks
    with pytest.raises(ValueError, match="vectors row 650 contains NaN"):
        index.add(bad, ids_for("str", 2000, 700), chunk_size=100)
    assert len(index) == 2000 and len(index.ids) == 2000
    assert_same(before, index.search(QUERIES, 5))

    ints = build_index(X1, factory="Flat", gpu=False)
    with pytest.raises(ValueError, match=r"integer ids but string ids were given \(first: 'a'\)"):
        ints.add(new, ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"id 1999 \(row 2 of the new vectors\)"):
        ints.add(new, [5000, 5001, 1999])
    ints.add(np.zeros((0, 16), np.float32), [])  # nothing to add is fine
    assert len(ints) == 2000


def test_untrained_index_is_refused():
    from retrieval_kit.index import from_faiss

    empty = faiss.index_factory(16, "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    index = from_faiss(empty, None)
    with pytest.raises(RuntimeError, match="not trained"):
        index.add(X2[:3])


def test_faiss_failure_mid_add_keeps_ids_and_vectors_in_step():
    index = build_index(X1, factory="Flat", gpu=False)
    real = index.faiss_index

    class FailsOnSecondChunk:
        calls = 0

        def __getattr__(self, name):
            return getattr(real, name)

        def add(self, chunk):
            FailsOnSecondChunk.calls += 1
            if FailsOnSecondChunk.calls == 2:
                raise RuntimeError("out of memory")
            real.add(chunk)

    index._index = FailsOnSecondChunk()
    with pytest.raises(RuntimeError, match="out of memory"):
        index.add(X2, chunk_size=300)
    index._index = real
    assert len(index) == len(index.ids) == 2300  # the first chunk went in, with its ids
    assert (index.search(X2[:5], 1).ids[:, 0] == np.arange(2000, 2005)).all()


def test_default_ids_must_not_collide_with_given_ones():
    index = build_index(X1[:10], ids=list(range(10, 20)), factory="Flat", gpu=False)
    with pytest.raises(ValueError, match=r"id 10 \(row 0 of the new vectors\) is already"):
        index.add(X2[:3])  # the next row numbers would be 10, 11, 12
    assert len(index) == 10
