"""benchmarks/bench_index_mmap.py runs at a tiny size and shows what it claims to measure."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

import retrieval_kit

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_index_mmap.py"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_mmap_benchmark_smoke(tmp_path, monkeypatch):
    # the fresh processes it starts must import this retrieval_kit, wherever it comes from
    src = str(Path(retrieval_kit.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    spec = importlib.util.spec_from_file_location("bench_index_mmap", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    rows = bench.run(n=60_000, dim=16, factories=("IVF16,Flat",))
    read, mapped = rows
    assert (read["mmap"], mapped["mmap"]) == (False, True) and read["file_mb"] > 3.5
    # reading copies the 3.7 MB of vectors into private memory; mapping does not
    assert read["open_anon_mb"] > 3 and mapped["open_anon_mb"] < read["open_anon_mb"] - 2.5

    begin, end = "<!-- bench_index_mmap:begin -->", "<!-- bench_index_mmap:end -->"
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{begin}\nold table\n{end}\nafter\n")
    bench.write_docs(doc, bench.markdown(rows))
    text = doc.read_text()
    assert "old table" not in text and "| IVF16,Flat | 60,000 |" in text
    assert text.startswith(f"before\n{begin}\n") and text.endswith(f"{end}\nafter\n")
