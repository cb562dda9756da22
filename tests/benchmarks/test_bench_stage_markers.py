"""benchmarks/bench_stage_markers.py, tiny: the stat check hashes nothing, the others do."""

from __future__ import annotations

from pathlib import Path


def test_tiny_run_counts_hashes_and_writes_its_section(load_benchmark, tmp_path, monkeypatch):
    bench = load_benchmark("bench_stage_markers")
    from landmark_pipeline import state

    hashed: list[str] = []
    real = state.file_digest
    monkeypatch.setattr(state, "file_digest", lambda p: (hashed.append(Path(p).name), real(p))[1])
    total = 2_000_000
    out = tmp_path / "run"
    config = bench.config_from_dict({"device": "cpu"})
    files, size, _ = bench.build_run(out, total, config)
    assert files == len(bench.LAYOUT) == len(hashed)  # each output hashed once, when recorded
    assert size >= total - len(bench.LAYOUT)
    outputs = [p for p in out.rglob("*") if p.is_file() and p.parent.name != "stages"]
    assert sum(p.stat().st_size for p in outputs) == size
    assert (out / "embed" / "trained" / "db.npy").stat().st_blocks * 512 >= total * 0.25 * 0.9
    bench._recheck(out, config, verify=False)  # settles the markers of racily clean outputs
    hashed.clear()
    bench._recheck(out, config, verify=False)
    assert hashed == []  # the default check reads no file
    bench._recheck(out, config, verify=True)
    assert sorted(hashed) == sorted(Path(rel).name for _, rel, _ in bench.LAYOUT)
    hashed.clear()
    bench.recheck_as_before(out, config)
    # embed's 2 db.npy: by embed, index and predict; index's 2 db.index: by index and predict
    assert (hashed.count("db.npy"), hashed.count("db.index")) == (2 * 3, 2 * 2)
    # A changed output (same size) is caught by the default check.
    (out / "metrics.json").write_bytes(b"x" * bench.SMALL)
    evaluate = bench.STAGES["evaluate"]
    why = evaluate.marker(out).why_incomplete(evaluate.config_hash(config), evaluate.upstream)
    assert why == "output metrics.json changed content"


def test_main_writes_only_its_section(load_benchmark, tmp_path, monkeypatch):
    bench = load_benchmark("bench_stage_markers")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# B\n\n<!-- other:begin -->\nkeep\n<!-- other:end -->\n", encoding="utf-8")
    rows = bench.main(
        ["--total-gb", "0.002", "--repeats", "1", "--workdir", str(tmp_path), "--write", str(doc)]
    )
    assert [r["passes"] for r in rows] == [1, 1, 1, 1]
    assert rows[-1]["x_before"] == 1.0 and all(r["seconds"] > 0 for r in rows)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# B\n\n<!-- other:begin -->\nkeep\n<!-- other:end -->\n\n")
    assert "<!-- bench_stage_markers:begin -->\n## Stage markers" in text
    assert [p.name for p in tmp_path.iterdir()] == ["benchmarks.md"]  # the run folder is gone
