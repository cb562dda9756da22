"""Cost of distractor reranking vs one exact search of the same size.

Run: ``python benchmarks/bench_rerank.py [--queries 2000] [--distractors 10000 100000]
[--dim 512] [--k 5] [--threads N]``.

For each distractor-set size D, side by side in one run and with the same faiss thread count:

* **exact search**: ``faiss.IndexFlatIP`` over the D distractor vectors, one search of the Q
  queries for their top k + 1 (what the reranker itself needs: k, plus one in case a query is
  among the distractors). The reference: 1.00x.
* **DistractorReranker(...)**: building the reranker (copying D vectors into its exact index).
* **.rerank(queries, result)**: penalising the top-10 database results of Q queries by each
  query's mean top-k similarity to the distractors, then re-sorting (``query_ids`` given, so
  self-matches are found by id).
* **.rerank with neighbour_penalty=True**: the stronger variant that also penalises each of the
  10 database neighbours of every query (a fresh reranker per timing, construction included, so
  its per-id penalty cache starts empty); the 10 Q neighbours are all distinct database rows.

Vectors are random unit vectors (the cost of exact search and of this reranking does not depend
on the data). Timings are the best of ``--repeats``.

``run(...)`` returns one dict per row, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from retrieval_kit.index import SearchResult
from retrieval_kit.rerank import DistractorReranker

RESULT_K = 10


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _best(fn: Callable[[], Any], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(
    n_queries: int = 2000,
    sizes: tuple[int, ...] = (10_000, 100_000),
    dim: int = 512,
    k: int = 5,
    threads: int | None = None,
    repeats: int = 3,
    seed: int = 0,
) -> list[dict]:
    """Time exact search, reranker construction and reranking for each distractor-set size."""
    threads = threads or os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    queries = _unit(rng, n_queries, dim)
    query_ids = np.arange(n_queries)
    database = _unit(rng, RESULT_K * n_queries, dim)
    # A plausible first-stage result: each query's 10 "neighbours" are distinct database rows.
    result_ids = rng.permutation(len(database))[: n_queries * RESULT_K].reshape(n_queries, RESULT_K)
    result_scores = -np.sort(-rng.random((n_queries, RESULT_K), dtype=np.float32), axis=1)
    result = SearchResult(result_scores, result_ids)
    rows: list[dict] = []
    for d in sizes:
        distractors = _unit(rng, d, dim)
        distractor_ids = np.arange(n_queries, n_queries + d)  # disjoint from the query ids

        flat = faiss.IndexFlatIP(dim)
        flat.add(distractors)
        exact_s = _best(lambda flat=flat: flat.search(queries, k + 1), repeats)
        build_s = _best(
            lambda d_=distractors, i_=distractor_ids: DistractorReranker(
                d_, k=k, distractor_ids=i_
            ),
            repeats,
        )
        rr = DistractorReranker(distractors, k=k, distractor_ids=distractor_ids)
        rerank_s = _best(lambda rr=rr: rr.rerank(queries, result, query_ids=query_ids), repeats)
        # A fresh reranker per timing: its per-id penalty cache would otherwise make repeats free.
        nb_s = _best(
            lambda d_=distractors, i_=distractor_ids: DistractorReranker(
                d_, k=k, distractor_ids=i_, neighbour_penalty=True, database_embeddings=database
            ).rerank(queries, result, query_ids=query_ids),
            repeats,
        )
        common = {"queries": n_queries, "distractors": d, "dim": dim, "k": k, "threads": threads}
        for name, seconds in (
            (f"faiss IndexFlatIP search, top {k + 1} (exact)", exact_s),
            ("DistractorReranker(...) construction", build_s),
            (f".rerank(queries, top-{RESULT_K} result)", rerank_s),
            (f"construction + .rerank, neighbour_penalty=True ({RESULT_K} neighbours/query)", nb_s),
        ):
            rows.append(
                {**common, "method": name, "seconds": seconds, "x_exact": seconds / exact_s}
            )
        del flat, rr
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| Q queries | D distractors | D dim | method | seconds | x exact search |",
        "|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['queries']:,} | {r['distractors']:,} | {r['dim']} | {r['method']} "
            f"| {r['seconds']:.3f} | {r['x_exact']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--distractors", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    rows = run(a.queries, tuple(a.distractors), a.dim, a.k, a.threads, a.repeats)
    print(f"{os.cpu_count()} CPUs, faiss {faiss.__version__} ({rows[0]['threads']} threads)\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
