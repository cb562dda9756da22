"""build_index ("auto" and factory strings) vs faiss exact search and numpy brute force.

Run: ``python benchmarks/bench_index.py [--sizes 300000] [--dim 256] [--queries 1000]
[--factories IVF1024,Flat HNSW32] [--threads N]``.

Every method indexes the same clustered unit vectors (read from a float32 memmap, as a large
extraction would leave them) and answers the same held-out queries (new points from the same
clusters, not in the database) with the same faiss/BLAS thread count, in one run. Columns: build
seconds, search seconds for all queries at k=10 (best of ``--repeats``), search time relative to
faiss exact search (``IndexFlatIP``), recall@1 against exact search, index bytes, and the peak
resident memory added while building (sampled every 5 ms).

The generator: 1000 clusters on the unit sphere of power-law sizes (like landmark classes); each
cluster varies mostly inside its own random 16-dimensional subspace (viewpoints, lighting) plus
small isotropic noise, then every vector is L2-normalised.

``run(...)`` returns the rows as dicts, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from retrieval_kit.index import build_index

K = 10


class ClusteredSphere:
    """Clustered unit vectors: centre + in-cluster subspace variation + isotropic noise."""

    def __init__(self, dim: int, n_clusters: int = 1000, sub_dim: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        centres = rng.normal(size=(n_clusters, dim))
        self.centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
        self.bases = rng.normal(size=(n_clusters, sub_dim, dim)).astype(np.float32) / np.sqrt(dim)
        weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.8  # a long tail of small clusters
        self.weights = weights / weights.sum()
        self.spread = 0.45  # in-subspace scale per direction
        self.noise = 0.25  # isotropic scale (norm of the noise vector)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        c = rng.choice(len(self.centres), size=n, p=self.weights)
        z = rng.normal(size=(n, self.bases.shape[1])).astype(np.float32) * self.spread
        x = self.centres[c] + np.einsum("ns,nsd->nd", z, self.bases[c])
        x += rng.normal(size=(n, self.dim)).astype(np.float32) * (self.noise / np.sqrt(self.dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def to_memmap(self, path: Path, n: int, seed: int, chunk: int = 50_000) -> np.memmap:
        mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, self.dim))
        rng = np.random.default_rng(seed)
        for start in range(0, n, chunk):
            mm[start : start + chunk] = self.sample(min(chunk, n - start), rng)
        mm.flush()
        return np.memmap(path, dtype=np.float32, mode="r", shape=(n, self.dim))


class PeakRss:
    """Peak resident memory above the starting level, sampled from /proc in a thread (Linux)."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    @property
    def added(self) -> int:
        return self.peak - self.base


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def numpy_topk(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """Brute force in numpy: one matrix product per chunk, partial sort, merge."""
    cand_s, cand_i = [], []
    for start in range(0, len(x), chunk):
        s = q @ np.asarray(x[start : start + chunk]).T
        kk = min(k, s.shape[1])
        part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        cand_s.append(np.take_along_axis(s, part, axis=1))
        cand_i.append(part + start)
    s, i = np.concatenate(cand_s, axis=1), np.concatenate(cand_i, axis=1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(i, order, axis=1)


def _measure_size(
    gen: ClusteredSphere,
    x: np.ndarray,
    q: np.ndarray,
    factories: tuple[str, ...],
    threads: int,
    repeats: int,
    seed: int,
    numpy_brute_force: bool,
) -> list[dict]:
    n, dim = x.shape
    rows: list[dict] = []
    with PeakRss() as mem:
        t = time.perf_counter()
        flat = faiss.IndexFlatIP(dim)
        for start in range(0, n, 65536):
            flat.add(np.ascontiguousarray(x[start : start + 65536]))
        build = time.perf_counter() - t
    exact_s, (_, truth) = _best_time(lambda: flat.search(q, K), repeats)
    flat.reset()

    def row(method: str, build_s: float, search_s: float, ids: np.ndarray, **kw: Any) -> dict:
        return {"n": n, "dim": dim, "queries": len(q), "threads": threads, "method": method,
                "build_s": build_s, "search_s": search_s, "x_exact_time": search_s / exact_s,
                "recall@1": float((ids[:, 0] == truth[:, 0]).mean()), **kw}  # fmt: skip

    # The exact rows are the reference of recall@1 (1.0 by definition): the table shows "—".
    rows.append(row("faiss IndexFlatIP (exact)", build, exact_s, truth, reference=True,
                    index_bytes=n * dim * 4, peak_rss_added=mem.added))  # fmt: skip
    if numpy_brute_force:
        np_s, ids = _best_time(lambda: numpy_topk(x, q, K), max(1, repeats - 1))
        # No build step, no index, memory not measured: None, shown as "—".
        rows.append(row("numpy brute force", None, np_s, ids, index_bytes=None,
                        peak_rss_added=None))  # fmt: skip
    for factory in ("auto", *factories):
        with PeakRss() as mem:
            t = time.perf_counter()
            index = build_index(x, factory=factory, gpu=False, seed=seed)
            build = time.perf_counter() - t
        search_s, res = _best_time(lambda index=index: index.search(q, K), repeats)
        name = f"build_index('auto') -> {index.factory}" if factory == "auto" else factory
        params = ", ".join(f"{k}={v}" for k, v in index.search_params.items())
        rows.append(row(name, build, search_s, res.ids,
                        index_bytes=int(faiss.serialize_index(index.faiss_index).size),
                        peak_rss_added=mem.added, params=params,
                        tuned_recall=index.info.get("tuned_recall")))  # fmt: skip
    return rows


def run(
    sizes: tuple[int, ...] = (300_000,),
    dim: int = 256,
    n_queries: int = 1000,
    factories: tuple[str, ...] = ("IVF1024,Flat", "IVF1024,PQ32np"),
    threads: int | None = None,
    repeats: int = 3,
    seed: int = 0,
    numpy_brute_force: bool = True,
    workdir: str | None = None,
) -> list[dict]:
    """Measure every method on each size; returns one dict per (size, method)."""
    threads = threads or os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    gen = ClusteredSphere(dim, seed=seed)
    q = gen.sample(n_queries, np.random.default_rng(seed + 2))
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, threadpool_limits(threads):
        for n in sizes:
            x = gen.to_memmap(Path(tmp) / f"db_{n}.f32", n, seed=seed + 1)
            rows += _measure_size(gen, x, q, factories, threads, repeats, seed, numpy_brute_force)
            del x
    return rows


def markdown(rows: list[dict]) -> str:
    head = (
        "| N | method | search params | build s | search s | x exact time | recall@1 "
        "| tuned (LOO) recall | index MB | peak RSS added MB |\n"
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )

    def cell(value: float | None, fmt: str, scale: float = 1.0) -> str:
        # None: not applicable or not measured; never a literal that reads as a measurement.
        return "—" if value is None else format(value / scale, fmt)

    lines = []
    for r in rows:
        recall = None if r.get("reference") else r["recall@1"]
        lines.append(
            f"| {r['n']:,} | {r['method']} | {r.get('params', '')} | {cell(r['build_s'], '.1f')} "
            f"| {r['search_s']:.3f} | {r['x_exact_time']:.3f} | {cell(recall, '.3f')} "
            f"| {cell(r.get('tuned_recall'), '.3f').replace('—', '')} "
            f"| {cell(r['index_bytes'], '.0f', 2**20)} "
            f"| {cell(r['peak_rss_added'], '.0f', 2**20)} |"
        )
    return head + "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[300_000])
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--factories", nargs="*", default=["IVF1024,Flat", "IVF1024,PQ32np"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-numpy", action="store_true", help="skip numpy brute force")
    p.add_argument("--workdir", default=None, help="folder for the temporary memmaps")
    a = p.parse_args()
    rows = run(tuple(a.sizes), a.dim, a.queries, tuple(a.factories), a.threads, a.repeats,
               numpy_brute_force=not a.no_numpy, workdir=a.workdir)  # fmt: skip
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"threads={rows[0]['threads']}, faiss {faiss.__version__}, k={K}\n")  # fmt: skip
    print(markdown(rows))
    for n in sorted({r["n"] for r in rows}):
        auto = next(r for r in rows if r["n"] == n and r["method"].startswith("build_index"))
        ok = auto["recall@1"] >= 0.95 and auto["x_exact_time"] <= 0.2
        print(
            f"\nN={n:,}: auto recall@1 {auto['recall@1']:.3f} (>= 0.95) at "
            f"{auto['x_exact_time']:.3f}x exact search time (<= 0.2): {'PASS' if ok else 'FAIL'}"
        )


if __name__ == "__main__":
    main()
