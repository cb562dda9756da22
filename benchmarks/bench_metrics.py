"""GAP and mAP@100: retrieval_kit's vectorised metrics vs plain sorted()/loop implementations.

Run: ``python benchmarks/bench_metrics.py [--predictions 1000000] [--map-queries 10000]``.
Both implementations score the same synthetic predictions in one run; the table shows the best of
``--repeats`` timings, the ratio to the plain version and that both give the same value.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from retrieval_kit.metrics import global_average_precision, mean_average_precision_at_k


def plain_gap(predictions: dict, solution: dict) -> float:
    """The Kaggle definition written directly: sorted() then one loop (the reference speed)."""
    num_with_gt = sum(1 for labels in solution.values() if labels)
    ordered = sorted(predictions.items(), key=lambda kv: (-kv[1][1], kv[0], kv[1][0]))
    correct = 0
    gap = 0.0
    for total, (qid, (label, _score)) in enumerate(ordered, start=1):
        if label in solution[qid]:
            correct += 1
            gap += correct / total
    return gap / num_with_gt


def plain_map_at_k(predictions: dict, solution: dict, k: int = 100) -> float:
    """GLDv2 retrieval mAP@k as a loop (duplicates skipped but keep their position)."""
    total = 0.0
    for qid, relevant in solution.items():
        ranked = predictions.get(qid, [])
        seen, hits, ap = set(), 0, 0.0
        for i, item in enumerate(ranked[:k]):
            if item in seen:
                continue
            seen.add(item)
            if item in relevant:
                hits += 1
                ap += hits / (i + 1)
        total += ap / min(len(relevant), k)
    return total / len(solution)


def hex_ids(rng: np.random.Generator, n: int) -> list[str]:
    return [f"{x:016x}" for x in rng.integers(0, 2**63, size=n, dtype=np.int64)]


def gap_data(n: int, seed: int, tie_decimals: int | None) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    ids = hex_ids(rng, n)
    truth = rng.integers(0, 100_000, size=n)
    landmark = rng.random(n) > 0.1  # 10% non-landmark queries
    guess = np.where(rng.random(n) < 0.6, truth, rng.integers(0, 100_000, size=n))
    scores = rng.random(n)
    if tie_decimals is not None:
        scores = np.round(scores, tie_decimals)
    solution = {q: ([int(t)] if lm else []) for q, t, lm in zip(ids, truth, landmark)}
    predictions = {q: (int(g), float(s)) for q, g, s in zip(ids, guess, scores)}
    return predictions, solution


def map_data(num_queries: int, k: int, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    db = hex_ids(rng, 200_000)
    queries = hex_ids(rng, num_queries)
    solution, predictions = {}, {}
    for q in queries:
        relevant = rng.choice(len(db), size=int(rng.integers(1, 30)), replace=False)
        ranked = rng.choice(len(db), size=k, replace=True)  # replace=True: some duplicates
        hit = rng.random(k) < 0.1
        ranked[hit] = rng.choice(relevant, size=int(hit.sum()))
        solution[q] = {db[i] for i in relevant}
        predictions[q] = [db[i] for i in ranked]
    return predictions, solution


def best_time(fn: Callable[[], float], repeats: int) -> tuple[float, float]:
    best, value = float("inf"), float("nan")
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def run(
    predictions: int = 1_000_000, map_queries: int = 10_000, k: int = 100, repeats: int = 3
) -> list[dict]:
    """Time both implementations on each case; one dict per (case, implementation)."""
    rows = []
    cases = [
        (f"GAP, {predictions:,} predictions, continuous scores", gap_data(predictions, 0, None),
         plain_gap, global_average_precision),
        (f"GAP, {predictions:,} predictions, scores rounded to 3 decimals (ties)",
         gap_data(predictions, 1, 3), plain_gap, global_average_precision),
        (f"mAP@{k}, {map_queries:,} queries x {k} ids", map_data(map_queries, k, 2),
         lambda p, s: plain_map_at_k(p, s, k),
         lambda p, s: mean_average_precision_at_k(p, s, k)),
    ]  # fmt: skip
    for name, (preds, sol), plain, ours in cases:
        t_plain, v_plain = best_time(lambda: plain(preds, sol), repeats)  # noqa: B023
        t_ours, v_ours = best_time(lambda: ours(preds, sol), repeats)  # noqa: B023
        rows.append({"case": name, "impl": "plain sorted()/loop", "seconds": t_plain,
                     "value": v_plain, "ratio": 1.0})  # fmt: skip
        rows.append({"case": name, "impl": "retrieval_kit", "seconds": t_ours, "value": v_ours,
                     "ratio": t_ours / t_plain})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument("--map-queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = run(args.predictions, args.map_queries, args.k, args.repeats)
    print(f"| case | implementation | seconds (best of {args.repeats}) | x plain | value |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['impl']} | {r['seconds']:.3f} | {r['ratio']:.2f} | "
              f"{r['value']:.6f} |")  # fmt: skip


if __name__ == "__main__":
    main()
