"""Smoke tests: every benchmark script runs at a tiny size and its figures are self-consistent.

These check that the scripts work (and keep working as the library changes), not speed: sizes are
seconds in total. The real figures come from ``python benchmarks/run.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def sections(load_benchmark, tmp_path_factory):
    """All five tables of run.py's smoke preset, run once and shared by the tests below."""
    import faiss
    import torch

    threads, omp = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)  # tiny work: one thread avoids OpenMP barrier stalls on a busy CI box
    run = load_benchmark("run")
    try:
        out = {s["name"]: s for s in run.run_tables("smoke")}
    finally:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(omp)
    return out


def test_every_table_runs(sections):
    assert list(sections) == ["mining", "index", "metrics", "extraction", "rerank"]
    failed = {k: s.get("error") for k, s in sections.items() if not s["ok"]}
    assert not failed
    for s in sections.values():
        assert s["rows"] and "|---" in s["text"]


def test_mining_same_loss_as_pml(sections):
    (row,) = sections["mining"]["rows"]
    assert row["loss_abs_diff"] < 1e-4
    assert row["ours_s"] > 0 and row["pml_s"] > 0


def test_index_recall_column_is_recomputed_independently(load_benchmark, sections):
    """Rebuild the smoke table's data and score each row without bench_index's own truth."""
    import faiss

    from retrieval_kit.index import build_index

    cfg = load_benchmark("run").PRESETS["smoke"]["index"]
    (n,), dim, seed = cfg["sizes"], cfg["dim"], 0
    # rows of this run only (run.py may append the 2M rows of an earlier simulate_scale run)
    rows = {r["method"]: r for r in sections["index"]["rows"] if r["n"] == n}
    gen = load_benchmark("bench_index").ClusteredSphere(dim, seed=seed)
    q = gen.sample(cfg["n_queries"], np.random.default_rng(seed + 2))
    x = gen.sample(n, np.random.default_rng(seed + 1))  # what to_memmap writes in one chunk
    truth = np.argmax(q @ x.T, axis=1)  # plain numpy, no faiss
    assert not (x[truth] == q).all(axis=1).any()  # held-out: no query is a database row
    assert rows["faiss IndexFlatIP (exact)"]["recall@1"] == 1.0
    assert rows["numpy brute force"]["recall@1"] == 1.0
    auto = next(r for m, r in rows.items() if m.startswith("build_index('auto')"))
    assert auto["method"].endswith("-> Flat") and auto["recall@1"] == 1.0
    # The approximate rows: the same builds (seeded, one thread as in the smoke preset) scored
    # against the numpy truth. The compressed index's recall is far below 1, so a recall column
    # that compared a method with itself (or queries that were database rows) would show here.
    recalls = []
    omp = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for factory in cfg["factories"]:
            index = build_index(x, factory=factory, gpu=False, seed=seed)
            recall = (index.search(q, 1).ids[:, 0] == truth).mean()
            assert rows[factory]["params"] == f"nprobe={index.search_params['nprobe']}"
            assert rows[factory]["recall@1"] == pytest.approx(recall), factory
            recalls.append(recall)
    finally:
        faiss.omp_set_num_threads(omp)
    assert min(recalls) < 0.8


def test_metrics_match_plain(sections):
    rows = sections["metrics"]["rows"]
    for plain, ours in zip(rows[::2], rows[1::2]):
        assert plain["case"] == ours["case"]
        assert ours["value"] == pytest.approx(plain["value"], abs=1e-9)


def test_extraction_pipeline_feeds_the_same_tensors(sections):
    rows = sections["extraction"]["rows"]
    assert rows[0]["workers"] is None and rows[0]["ratio"] == 1.0
    assert rows[1]["setting"].startswith("data only") and rows[1]["images_per_s"] > 0
    pipe = rows[2:]
    assert [r["workers"] for r in pipe] == [0]
    assert pipe[0]["max_abs_diff"] < 1e-4  # same decode + transform + model => same embeddings
    assert pipe[0]["images_per_s"] > 0


def test_rerank_rows(sections):
    rows = sections["rerank"]["rows"]
    assert len(rows) == 4
    assert rows[0]["x_exact"] == 1.0
    assert all(r["seconds"] > 0 for r in rows)


def test_run_main_writes_the_document(load_benchmark, tmp_path):
    run = load_benchmark("run")
    out = tmp_path / "docs" / "benchmarks.md"
    out.parent.mkdir()
    other = (
        "<!-- bench_partial_fc:begin -->\n## Partial FC\n\n| 1.234 |\n"
        "<!-- bench_partial_fc:end -->\n"
    )
    out.write_text(f"# Benchmarks\n\n{other}", encoding="utf-8")
    failed = run.main(["--preset", "smoke", "--only", "metrics", "--out", str(out)])
    text = out.read_text(encoding="utf-8")
    assert failed == []
    assert "## Machine" in text and "faiss" in text and "Load average" in text
    assert "## 3. Metrics vs plain implementations" in text
    assert "## 1." not in text  # only the table asked for
    assert text.startswith(f"# Benchmarks\n\n{other}\n")  # another script's section is kept
    assert not list(out.parent.glob(".*.tmp"))  # atomic write left no temporary file


def test_simulate_scale_streams_and_scores(load_benchmark, tmp_path):
    scale = load_benchmark("simulate_scale")
    doc = tmp_path / "scaling.md"
    doc.write_text(f"# Scaling\n\nprose\n\n{scale.BEGIN}\nold\n{scale.END}\n\nmore prose\n")
    results = tmp_path / "scale.json"
    r = scale.main(["--n", "4000", "--dim", "16", "--factory", "IVF16,Flat", "--queries", "50",
                    "--chunk", "1000", "--threads", "1", "--workdir", str(tmp_path),
                    "--results", str(results), "--doc", str(doc)])  # fmt: skip
    assert r["factory"] == "IVF16,Flat" and r["n"] == 4000
    assert 0.8 <= r["recall_at_1"] <= 1.0
    assert r["recall_1_at_10"] >= r["recall_at_1"]
    assert json.loads(results.read_text())["recall_at_1"] == r["recall_at_1"]
    text = doc.read_text()
    assert "old" not in text and "prose" in text and "more prose" in text
    assert "IVF16,Flat" in text and text.count(scale.BEGIN) == 1
    assert not list(tmp_path.glob("*.npy"))  # the temporary vectors were removed


def test_simulate_scale_exact_knn_matches_numpy(load_benchmark, tmp_path):
    scale = load_benchmark("simulate_scale")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1050, 8)).astype(np.float32)
    q = rng.normal(size=(7, 8)).astype(np.float32)
    _, ids = scale.exact_knn(x, q, 5, chunk=100)  # 11 chunks, the last one of 50 rows
    want = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, want)


def test_fast_sampler_matches_bench_index(load_benchmark, tmp_path):
    scale = load_benchmark("simulate_scale")
    bench_index = load_benchmark("bench_index")
    a = bench_index.ClusteredSphere(24, n_clusters=50, seed=3)
    b = scale.FastClusteredSphere(24, n_clusters=50, seed=3)
    xa = a.sample(500, np.random.default_rng(1))
    xb = b.sample(500, np.random.default_rng(1))
    np.testing.assert_allclose(xa, xb, atol=1e-5)


def test_run_shows_simulate_scale_results_in_the_index_table(load_benchmark, tmp_path, monkeypatch):
    scale, run = load_benchmark("simulate_scale"), load_benchmark("run")
    results = tmp_path / "scale.json"
    scale.main(["--n", "3000", "--dim", "8", "--factory", "IVF8,Flat", "--queries", "20",
                "--chunk", "1000", "--threads", "1", "--workdir", str(tmp_path),
                "--results", str(results), "--doc", str(tmp_path / "s.md")])  # fmt: skip
    monkeypatch.setattr(run, "SCALE_RESULTS", results)
    rows, note = run._scale_rows(dim=16)
    assert [r["n"] for r in rows] == [3000, 3000]
    assert rows[0]["recall@1"] == 1.0 and rows[1]["method"].endswith("IVF8,Flat")
    assert "simulate_scale.py" in note and "dimension differs" in note
    table = load_benchmark("bench_index").markdown(rows)
    assert table.count("| 3,000 |") == 2
    monkeypatch.setattr(run, "SCALE_RESULTS", tmp_path / "missing.json")
    assert run._scale_rows(dim=16)[0] == []
