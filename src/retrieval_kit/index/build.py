"""``build_index``: choose, train, fill and tune a faiss index, chunk by chunk."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from retrieval_kit._arrays import as_matrix, float32_chunk, float32_rows, normalize_ids
from retrieval_kit._checks import check_metric
from retrieval_kit._progress import progress_bar
from retrieval_kit.index._faiss_io import METRICS, ivf_of, maybe_to_gpu
from retrieval_kit.index.index import Index

__all__ = ["auto_factory", "build_index"]

logger = logging.getLogger(__name__)

# Ground truth keeps a few neighbours so that the query itself and exact ties can be set aside.
_GT_K = 4


def build_index(
    embeddings: Any,
    ids: Sequence[Any] | np.ndarray | None = None,
    *,
    factory: str = "auto",
    metric: str = "ip",
    gpu: bool | str = "auto",
    chunk_size: int = 65536,
    train_size: int | None = None,
    target_recall: float | None = 0.95,
    memory_budget: int | None = None,
    exact_max_size: int = 50_000,
    tune_queries: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> Index:
    """Build a searchable index over ``embeddings`` without ever loading them all at once.

    Args:
        embeddings: ``(N, D)`` array of any real dtype, e.g. a float32 ``np.memmap`` written by
            ``rk.embed.extract_embeddings(..., out=path)``. Read ``chunk_size`` rows at a time.
        ids: one int or str per row (default: the row numbers). Duplicates are an error.
        factory: ``"auto"`` or any faiss factory string (``"Flat"``, ``"IVF4096,Flat"``,
            ``"HNSW32"``, ``"OPQ32,IVF4096,PQ32"`` ...). ``"auto"``: exact search up to
            ``exact_max_size`` vectors; above, ``IVF{~4 sqrt(N)},Flat``, or ``IVF...,PQm`` when the
            raw vectors would exceed ``memory_budget``.
        metric: ``"ip"`` (inner product = cosine on unit vectors) or ``"l2"``.
        gpu: ``"auto"`` (a GPU when faiss sees one), ``True`` (required) or ``False``.
        chunk_size: rows read, checked and added per step.
        train_size: rows sampled to train IVF/PQ (default ``min(N, max(50 * nlist, 10000))``).
        target_recall: for IVF and HNSW indexes, ``nprobe`` / ``efSearch`` is raised until the
            estimated recall@1 against exact search reaches this. ``None`` keeps faiss' defaults.
        memory_budget: bytes the index may take (default: half the machine's memory).
        exact_max_size: ``"auto"`` uses exact search up to this many vectors.
        tune_queries: database rows sampled as tuning queries.
        seed: seeds every sample (training rows, tuning queries, k-means).
        progress: show a tqdm bar while adding.

    Returns:
        An ``Index``. ``index.info`` holds the tuned recall, the sample sizes and timings.

    Raises:
        ValueError: empty database, NaN/inf in a row (named), bad ids, unknown factory string.

    Example:
        >>> import numpy as np, retrieval_kit as rk
        >>> x = np.random.default_rng(0).normal(size=(100, 8)).astype("float32")
        >>> index = rk.index.build_index(x, ids=[f"img{i}" for i in range(100)], metric="l2")
        >>> index.factory, index.search(x[:1], k=1).ids[0, 0]
        ('Flat', 'img0')
    """
    t0 = time.perf_counter()
    x = as_matrix(embeddings, "embeddings")
    n, d = x.shape
    if n == 0:
        raise ValueError("cannot build an index over an empty database (0 vectors)")
    check_metric(metric)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if target_recall is not None and not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
    id_arr = normalize_ids(ids, n)
    rng = np.random.default_rng(seed)

    if factory == "auto":
        budget = _default_memory_budget() if memory_budget is None else int(memory_budget)
        factory = auto_factory(n, d, memory_budget=budget, exact_max_size=exact_max_size)
        logger.info("auto index for %d x %d vectors: %s", n, d, factory)
    if not isinstance(factory, str):
        raise TypeError(f"factory must be a string, got {type(factory).__name__}")
    try:
        index = faiss.index_factory(d, factory, METRICS[metric])
    except RuntimeError as e:
        raise ValueError(f"faiss cannot build factory string {factory!r}: {e}") from e
    ivf = ivf_of(index)
    if ivf is not None:
        ivf.cp.seed = seed
    index, gpu_res = maybe_to_gpu(index, gpu)
    info: dict[str, Any] = {"n": n, "chunk_size": chunk_size, "seed": seed}

    if not index.is_trained:
        nlist = ivf.nlist if ivf is not None else 0
        size = train_size if train_size is not None else max(50 * nlist, 10_000)
        size = min(n, int(size))
        rows = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
        sample = float32_rows(x, rows, "embeddings")
        t = time.perf_counter()
        index.train(sample)
        del sample
        info["train_size"] = size
        info["train_seconds"] = round(time.perf_counter() - t, 3)

    tune = target_recall is not None and _tunable(index) is not None
    if tune:
        q_rows = np.sort(rng.choice(n, size=min(tune_queries, n), replace=False))
        queries = float32_rows(x, q_rows, "embeddings")
        heap = faiss.ResultHeap(len(q_rows), min(_GT_K, n), keep_max=metric == "ip")

    chunks = progress_bar(range(0, n, chunk_size), enabled=progress, desc="indexing", unit="chunk")
    t = time.perf_counter()
    for start in chunks:
        chunk = float32_chunk(x, start, start + chunk_size, "embeddings")
        index.add(chunk)
        if tune:  # exact neighbours of the tuning queries, accumulated in the same pass
            dist, idx = faiss.knn(queries, chunk, min(_GT_K, len(chunk)), METRICS[metric])
            heap.add_result(dist, idx + start)
    info["add_seconds"] = round(time.perf_counter() - t, 3)
    if ivf is not None and gpu_res is None:
        ivf.make_direct_map()  # lets reconstruct() (query expansion, DBA) find vectors by row

    result = Index(index, id_arr, metric=metric, factory=factory, info=info, gpu_resources=gpu_res)
    if tune:
        heap.finalize()
        _tune(result, queries, q_rows, heap.D, heap.I, target_recall)
    info["build_seconds"] = round(time.perf_counter() - t0, 3)
    return result


def auto_factory(n: int, d: int, *, memory_budget: int, exact_max_size: int = 50_000) -> str:
    """The factory string ``build_index(factory="auto")`` picks for ``n`` vectors of dim ``d``.

    Example:
        >>> auto_factory(300_000, 256, memory_budget=8 << 30)
        'IVF2191,Flat'
        >>> auto_factory(300_000, 256, memory_budget=100 << 20)
        'IVF2191,PQ64np'
    """
    raw = n * (4 * d + 8)
    if n <= exact_max_size and raw <= memory_budget:
        return "Flat"
    # ~4 sqrt(N) lists balances the coarse search against list scans; at least 39 training
    # points per centroid keeps k-means from warning about (and suffering from) too few points.
    nlist = max(1, min(int(round(4 * math.sqrt(n))), n // 39))
    coarse = f"IVF{nlist}_HNSW32" if nlist > 16384 else f"IVF{nlist}"
    if raw + nlist * d * 4 <= memory_budget:
        return f"{coarse},Flat"
    # Largest code that fits, up to 64 bytes: more sub-quantizers train slowly for little gain.
    for m in (64, 32, 16, 8, 4, 2, 1):
        if m <= max(1, d // 2) and d % m == 0 and n * (m + 8) + nlist * d * 4 <= memory_budget:
            return f"{coarse},PQ{m}np"  # np: skip polysemous training (slow, unused here)
    raise ValueError(
        f"{n} vectors of dimension {d} do not fit in memory_budget={memory_budget} bytes even "
        "compressed; raise the budget or pass a factory string"
    )


def _default_memory_budget() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # not POSIX
        return 8 << 30


def _tunable(index: faiss.Index) -> tuple[str, int] | None:
    """(parameter name, largest useful value) for IVF and HNSW indexes, else ``None``."""
    ivf = ivf_of(index)
    if ivf is not None:
        return "nprobe", int(ivf.nlist)
    inner = faiss.downcast_index(index)
    while isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if isinstance(inner, faiss.IndexHNSW):
        return "efSearch", 4096
    return None


def _tune(
    index: Index,
    queries: np.ndarray,
    q_rows: np.ndarray,
    gt_d: np.ndarray,
    gt_i: np.ndarray,
    target: float,
) -> None:
    """Smallest nprobe / efSearch whose leave-one-out recall@1 reaches ``target``.

    Tuning queries are database rows; each one's own row is set aside both in the exact and in the
    approximate results, so recall measures finding the *nearest other* vector, the way a real query
    near the data would (finding itself would be trivially easy and overestimate recall). Exact ties
    with the true nearest count as hits.
    """
    name, top = _tunable(index.faiss_index)
    if index.metric == "l2":
        gt_d = -gt_d
    self_mask = gt_i == q_rows[:, None]
    gt_d = np.where(self_mask | (gt_i < 0), -np.inf, gt_d)
    best = gt_d.max(axis=1)
    tol = 1e-5 * np.maximum(1.0, np.abs(best))
    ok_sets = gt_d >= (best - tol)[:, None]
    has_gt = np.isfinite(best)
    if not has_gt.any():  # a single-vector database: nothing to tune
        return

    def recall(value: int) -> float:
        index.set_search_params(**{name: value})
        _, rows = index.search_rows(queries, min(_GT_K, len(index)))
        rows = np.where(rows == q_rows[:, None], -1, rows)
        first = np.where(rows >= 0, rows, np.iinfo(np.int64).max)
        # first non-self row returned (rows keep search order; -1 marks self/missing)
        pick = np.argmax(rows >= 0, axis=1)
        found = first[np.arange(len(rows)), pick]
        hit = ((gt_i == found[:, None]) & ok_sets).any(axis=1)
        return float(hit[has_gt].mean())

    tried: dict[int, float] = {}
    lo, hi = 0, 1
    while True:
        tried[hi] = recall(hi)
        if tried[hi] >= target or hi >= top:
            break
        lo, hi = hi, min(hi * 2, top)
    if tried[hi] >= target:
        while hi - lo > 1:  # bisect between the last failing and the first passing value
            mid = (lo + hi) // 2
            tried[mid] = recall(mid)
            if tried[mid] >= target:
                hi = mid
            else:
                lo = mid
    else:
        # Target out of reach (compressed codes): take the cheapest setting near the best recall
        # rather than scanning every list for nothing.
        top_recall = max(tried.values())
        hi = min(v for v, r in tried.items() if r >= top_recall - 0.005)
        logger.warning(
            "%s reaches an estimated recall@1 of only %.3f (%s=%d), below the target %.3f; "
            "use a finer index (less compression) for higher recall",
            index.factory,
            tried[hi],
            name,
            hi,
            target,
        )
    index.set_search_params(**{name: hi})
    index.info.update(
        tuned_param=name,
        tuned_value=hi,
        tuned_recall=round(tried[hi], 4),
        tune_queries=int(has_gt.sum()),
        target_recall=target,
    )
    logger.info("tuned %s=%d: estimated recall@1 %.3f", name, hi, tried[hi])
