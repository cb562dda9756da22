from __future__ import annotations

import faiss
import numpy as np
import pytest

import retrieval_kit as rk
from retrieval_kit.index import SearchResult, auto_factory, build_index


def clustered(n, d, n_clusters=50, noise=0.25, seed=0):
    """Unit vectors around random unit centres (a stand-in for image embeddings)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = centres[rng.integers(0, n_clusters, n)] + noise * rng.normal(size=(n, d)) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact(x, q, k, metric):
    flat = faiss.IndexFlatIP(x.shape[1]) if metric == "ip" else faiss.IndexFlatL2(x.shape[1])
    flat.add(x)
    d, i = flat.search(q, k)
    return (d if metric == "ip" else -d), i


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("id_kind", ["int", "str", "none"])
def test_flat_matches_faiss_exact_search(metric, id_kind):
    x = clustered(2000, 16, seed=1)
    q = clustered(50, 16, seed=2)
    ids = {
        "int": [1000 + 3 * i for i in range(len(x))],
        "str": [f"{i:016x}" for i in range(len(x))],
        "none": None,
    }[id_kind]
    index = build_index(x, ids, metric=metric, gpu=False)
    assert index.factory == "Flat" and index.metric == metric and len(index) == 2000
    assert index.dim == 16
    result = index.search(q, 10, batch_size=7)  # several batches
    assert isinstance(result, SearchResult)
    d, i = exact(x, q, 10, metric)
    np.testing.assert_allclose(result.scores, d, rtol=1e-5, atol=1e-5)
    assert result.scores.dtype == np.float32
    expected_ids = i if ids is None else np.asarray(ids, dtype=object)[i]
    if id_kind == "str":
        assert result.ids.dtype == object and isinstance(result.ids[0, 0], str)
    else:
        assert result.ids.dtype == np.int64
    assert (result.ids == expected_ids).all()


def test_auto_is_exact_for_small_sets():
    assert build_index(clustered(500, 8), gpu=False).factory == "Flat"
    assert auto_factory(50_000, 512, memory_budget=1 << 40) == "Flat"
    assert auto_factory(300_000, 256, memory_budget=1 << 40) == "IVF2191,Flat"
    assert auto_factory(300_000, 256, memory_budget=100 << 20).endswith("PQ64np")
    with pytest.raises(ValueError, match="memory_budget"):
        auto_factory(300_000, 256, memory_budget=1000)


def test_auto_ivf_meets_recall_on_held_out_queries():
    # Database and queries are independent draws from one clustered distribution: a query is no
    # copy of a database row, so its nearest neighbour is just the closest member of its cluster.
    data = clustered(22_000, 32, n_clusters=300, noise=0.6, seed=3)
    x, q = data[:20_000], data[20_000:]
    index = build_index(x, factory="auto", exact_max_size=5000, gpu=False, seed=0)
    assert index.factory.startswith("IVF") and index.factory.endswith(",Flat")
    nlist = faiss.extract_index_ivf(index.faiss_index).nlist
    nprobe = index.search_params["nprobe"]
    assert 1 <= nprobe < nlist  # genuinely approximate
    assert index.info["tuned_recall"] >= 0.95
    _, i = exact(x, q, 1, "ip")
    recall = (index.search(q, 1).ids[:, 0] == i[:, 0]).mean()
    assert recall >= 0.95
    # The tuning mattered: one probe misses held-out neighbours (so a tuner that let tuning
    # queries find themselves, and stopped at nprobe=1, fails above).
    index.set_search_params(nprobe=1)
    assert (index.search(q, 1).ids[:, 0] == i[:, 0]).mean() < 0.93
    index.set_search_params(nprobe=nprobe)
    # a lower target needs no more probes
    low = build_index(x, exact_max_size=5000, target_recall=0.5, gpu=False, seed=0)
    assert low.search_params["nprobe"] <= nprobe and low.info["tuned_recall"] >= 0.5


def test_memory_budget_picks_compressed_index():
    x = clustered(4000, 16, seed=4)
    index = build_index(x, exact_max_size=100, memory_budget=4000 * 20, gpu=False)
    assert "PQ" in index.factory
    result = index.search(x[:5], 3)
    assert result.ids.shape == (5, 3) and (result.ids >= 0).all()


def test_factory_strings_and_bad_factory():
    x = clustered(3000, 16, seed=5)
    ivf = build_index(x, factory="IVF16,Flat", target_recall=None, gpu=False)
    assert ivf.search_params == {} and faiss.extract_index_ivf(ivf.faiss_index).nprobe == 1
    tuned = build_index(x, factory="IVF16,Flat", gpu=False)
    assert tuned.info["tuned_recall"] >= 0.95
    hnsw = build_index(x, factory="HNSW8", gpu=False)
    assert hnsw.info["tuned_param"] == "efSearch"
    assert hnsw.search(x[:3], 1).ids[:, 0].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="factory string 'NotAnIndex'"):
        build_index(x, factory="NotAnIndex", gpu=False)


class SpyMemmap(np.memmap):
    """Records how many rows each read touches."""

    reads: list[int] = []

    def __getitem__(self, item):
        out = super().__getitem__(item)
        if isinstance(out, np.ndarray) and out.ndim == 2:
            SpyMemmap.reads.append(out.shape[0])
        return out


def test_memmap_is_read_in_chunks(tmp_path):
    x = clustered(6000, 16, seed=6)
    mm = np.memmap(tmp_path / "emb.f32", dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    spy = SpyMemmap(tmp_path / "emb.f32", dtype=np.float32, mode="r", shape=x.shape)
    SpyMemmap.reads = []
    index = build_index(
        spy,
        factory="IVF32,Flat",
        chunk_size=1000,
        train_size=1500,
        tune_queries=200,
        gpu=False,
    )
    assert SpyMemmap.reads and max(SpyMemmap.reads) <= 1500
    ref = build_index(x, factory="IVF32,Flat", train_size=1500, tune_queries=200, gpu=False)
    assert index.search_params == ref.search_params
    assert (index.search(x[:20], 5).ids == ref.search(x[:20], 5).ids).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_rows_are_refused_and_named(bad):
    x = clustered(3000, 8, seed=7).astype(np.float64)
    x[2500, 3] = bad
    with pytest.raises(ValueError, match="row 2500"):
        build_index(x, chunk_size=1000, gpu=False)
    y = clustered(3000, 8, seed=7).astype(np.float64)
    y[10, 0] = 1e300  # finite in float64, inf once float32
    with pytest.raises(ValueError, match="row 10"):
        build_index(y, gpu=False)


def test_dtype_conversion_and_input_checks():
    x64 = clustered(100, 8).astype(np.float64)
    index = build_index(np.asfortranarray(x64), gpu=False)
    assert (index.search(x64[:3], 1).ids[:, 0] == [0, 1, 2]).all()
    assert len(build_index(np.eye(4, dtype=np.int32), gpu=False)) == 4
    with pytest.raises(ValueError, match="empty"):
        build_index(np.zeros((0, 8), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        build_index(np.zeros(8, np.float32))
    with pytest.raises(TypeError, match="real numbers"):
        build_index(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="metric"):
        build_index(x64, metric="cosine")
    with pytest.raises(ValueError, match="3 entries but there are 100"):
        build_index(x64, ids=[1, 2, 3])
    with pytest.raises(ValueError, match="duplicate id 'b'.*rows 1 and 3"):
        build_index(x64[:4], ids=["a", "b", "c", "b"])
    with pytest.raises(ValueError, match="duplicate id 5"):
        build_index(x64[:3], ids=np.array([5, 6, 5]))
    with pytest.raises(TypeError, match="entry 1"):
        build_index(x64[:2], ids=[1, "x"])


def test_search_edge_cases():
    x = clustered(5, 4, seed=8)
    for ids, missing in (([10, 11, 12, 13, 14], -1), (list("abcde"), None)):
        index = build_index(x, ids, gpu=False)
        r = index.search(x[:2], 8)
        assert r.scores.shape == r.ids.shape == (2, 8)
        assert np.isneginf(r.scores[:, 5:]).all() and np.isfinite(r.scores[:, :5]).all()
        assert all(v is missing or v == missing for v in r.ids[:, 5:].ravel())
        assert r.valid[:, :5].all() and not r.valid[:, 5:].any()
        assert set(r.ids[0, :5]) == set(ids)
    with pytest.raises(ValueError, match="dimension 3 but the index holds dimension 4"):
        index.search(np.zeros((2, 3), np.float32), 1)
    q = x[:3].copy()
    q[2, 1] = np.nan
    with pytest.raises(ValueError, match="queries row 2"):
        index.search(q, 1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(x, 0)
    assert index.search(np.zeros((0, 4), np.float32), 3).scores.shape == (0, 3)


def test_l2_scores_are_negated_squared_distances():
    x = np.array([[0, 0], [3, 4]], np.float32)
    r = build_index(x, metric="l2", gpu=False).search(np.array([[0, 0]], np.float32), 2)
    assert r.ids.tolist() == [[0, 1]] and r.scores.tolist() == [[0.0, -25.0]]


def test_rows_of_and_reconstruct():
    x = clustered(3000, 8, seed=9)
    for factory in ("Flat", "IVF8,Flat", "HNSW8"):
        index = build_index(x, [f"id{i}" for i in range(3000)], factory=factory, gpu=False)
        assert index.rows_of(["id7", "id2999"]).tolist() == [7, 2999]
        np.testing.assert_allclose(index.reconstruct(["id7"]), x[7:8], atol=1e-6)
        with pytest.raises(KeyError, match="nope"):
            index.rows_of(["nope"])


def test_gpu_true_without_gpu_is_clear():
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no GPU"):
        build_index(np.eye(3, dtype=np.float32), gpu=True)
    assert not build_index(np.eye(3, dtype=np.float32), gpu="auto").on_gpu


def test_lazy_public_names():
    assert rk.index.build_index is build_index
    assert set(rk.index.__all__) >= {"Index", "SearchResult", "build_index", "load_index"}
