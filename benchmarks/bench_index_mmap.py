"""Memory of opening an index: ``from_faiss(path, ids, mmap=True)`` vs reading it (``mmap=False``).

Run: ``python benchmarks/bench_index_mmap.py [--n 600000] [--dim 128] [--factories IVF1024,Flat
Flat HNSW32] [--docs docs/index.md]``.

For each factory string, ``build_index`` builds an index over random unit vectors and
``Index.to_faiss`` writes it to a plain faiss file. Then, for each way of opening it, a fresh
Python process (so that nothing is shared or cached in the interpreter) records its resident memory
(Linux ``/proc/self/status``) before ``from_faiss``, after it, and after searching 100 queries at
k=10. Anonymous memory (``RssAnon``: private copies) and file-backed memory (``RssFile``: pages of
the mapped file, shared with the OS page cache and dropped under memory pressure) are reported
apart. The file was just written, so it sits in the page cache for both ways; what differs is
whether the process makes a private copy of it.

``--docs PATH`` replaces the table between the ``bench_index_mmap`` markers in that markdown file
(atomically, through ``benchmarks/doc_section.py``), naming the machine and the date. ``run(...)``
returns the rows as dicts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FACTORIES = ("IVF1024,Flat", "IVF1024,SQ8", "IVF1024,PQ32np", "Flat", "HNSW32", "IVF1024,PQ32x4fs")
# HNSW builds slowly on a small machine: it gets a sixth of the vectors.
SMALLER = {"HNSW32": 6}
SECTION = "bench_index_mmap"  # its section of docs/index.md (benchmarks/doc_section.py)


def _status() -> dict[str, int]:
    """Resident memory figures of this process, in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _child(path: str, mmap: bool, dim: int) -> None:
    """Open ``path``, search, print the memory figures as JSON (runs in a fresh process)."""
    import faiss

    from retrieval_kit.index import from_faiss

    faiss.omp_set_num_threads(1)
    queries = np.random.default_rng(1).normal(size=(100, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    before = _status()
    t = time.perf_counter()
    index = from_faiss(path, None, mmap=mmap)
    open_s = time.perf_counter() - t
    opened = _status()
    if "nprobe" in index.search_params:
        index.set_search_params(nprobe=16)
    t = time.perf_counter()
    index.search(queries, 10)
    search_s = time.perf_counter() - t
    searched = _status()
    print(
        json.dumps(
            {"before": before, "opened": opened, "searched": searched, "open_s": open_s}
            | {"search_s": search_s, "type": type(index.faiss_index).__name__}
        )
    )


def _open_in_fresh_process(path: Path, mmap: bool, dim: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--mmap", str(int(mmap))]
        + ["--dim", str(dim)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    n: int = 600_000, dim: int = 128, factories: tuple[str, ...] = FACTORIES, seed: int = 0
) -> list[dict[str, Any]]:
    """Build, write and open each index both ways; one row per (factory, way of opening)."""
    import faiss

    from retrieval_kit.index import build_index

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for factory in factories:
            size = n // SMALLER.get(factory, 1)
            index = build_index(x[:size], factory=factory, gpu=False, target_recall=None)
            path = Path(tmp) / "index.faiss"
            index.to_faiss(path)
            del index
            mb = path.stat().st_size / 2**20
            for mmap in (False, True):
                m = _open_in_fresh_process(path, mmap, dim)
                b, o, s = m["before"], m["opened"], m["searched"]
                rows.append(
                    {
                        "factory": factory,
                        "n": size,
                        "file_mb": mb,
                        "mmap": mmap,
                        "open_anon_mb": o["RssAnon"] - b["RssAnon"],
                        "open_file_mb": o["RssFile"] - b["RssFile"],
                        "peak_mb": o["VmHWM"] - b["VmRSS"],
                        "search_anon_mb": s["RssAnon"] - b["RssAnon"],
                        "search_file_mb": s["RssFile"] - b["RssFile"],
                        "open_s": m["open_s"],
                        "search_s": m["search_s"],
                    }
                )
            path.unlink()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, plus the ratio of resident memory after opening."""
    lines = [
        "| index | vectors | file MB | opened | RSS added by opening (anon + file) MB | "
        "peak added MB | after 100 searches (anon + file) MB | open s |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['factory']} | {r['n']:,} | {r['file_mb']:.0f} | "
            f"{'mmap=True' if r['mmap'] else 'read'} | "
            f"{r['open_anon_mb']:.0f} + {r['open_file_mb']:.0f} | {r['peak_mb']:.0f} | "
            f"{r['search_anon_mb']:.0f} + {r['search_file_mb']:.0f} | {r['open_s']:.2f} |"
        )
    ratios = []
    for read, mapped in zip(rows[::2], rows[1::2]):
        total_read = read["open_anon_mb"] + read["open_file_mb"]
        total_mapped = mapped["open_anon_mb"] + mapped["open_file_mb"]
        ratios.append(f"{read['factory']} {total_mapped / max(total_read, 1e-9):.3f}")
    lines.append("")
    lines.append("Resident memory added by opening, mmap=True / read: " + "; ".join(ratios) + ".")
    return "\n".join(lines)


def machine() -> str:
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
        f"load average {load}, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
    )


def write_docs(path: Path, text: str) -> None:
    """Replace this script's section of ``path`` (appended when absent), atomically."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from doc_section import write_section

    write_section(path, SECTION, text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--factories", nargs="+", default=list(FACTORIES))
    parser.add_argument("--docs", type=Path, help="markdown file whose marked block to replace")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mmap", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, bool(args.mmap), args.dim)
        return
    if not Path("/proc/self/status").exists():
        raise SystemExit("this benchmark reads /proc/self/status (Linux only)")
    rows = run(args.n, args.dim, tuple(args.factories))
    text = (
        f"Measured by `python benchmarks/bench_index_mmap.py` ({args.n:,} x {args.dim} random unit "
        f"vectors, 1 thread) on {machine()}; the machine was shared with other jobs, so the "
        "times are noisy (the memory figures are not).\n\n" + markdown(rows)
    )
    print(text)
    if args.docs:
        write_docs(args.docs, text)


if __name__ == "__main__":
    main()
