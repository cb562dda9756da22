"""Batch-hard mining + soft-margin triplet loss, forward and backward, on the CPU.

retrieval_kit's ``BatchHardMiner`` + ``TripletLoss(margin=None)`` against pytorch-metric-learning's
``BatchHardMiner`` + ``TripletMarginLoss(margin=0, smooth_loss=True)`` (the same triplets and the
same loss value), measured side by side in one run: each repeat times both, alternating which
goes first; the table shows the median.

Peak memory: each (implementation, batch size) runs once in a fresh subprocess that resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``) after its inputs exist, runs one
forward+backward, and reports ``VmHWM - VmRSS before``: the extra resident memory the step
needed at its peak (torch's CPU allocator returns large blocks to the OS, so this is the step's
own footprint). Where ``clear_refs`` is unavailable it falls back to ``ru_maxrss`` minus the RSS
before (an upper bound that includes the import-time peak).

Usage:
    python benchmarks/bench_mining.py [--sizes 256 1024 2048 4096] [--dim 512] [--repeats 5]

``run(sizes)`` returns one dict per batch size, for ``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

DEFAULT_SIZES = (256, 1024, 2048, 4096)


def _inputs(batch: int, dim: int, samples_per_class: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(batch, dim, generator=g)
    labels = torch.arange(batch // samples_per_class).repeat_interleave(samples_per_class)
    labels = torch.cat([labels, labels[: batch - len(labels)]])  # batch not divisible by K
    return emb, labels


def _make_step(impl: str):
    if impl == "retrieval_kit":
        from retrieval_kit.losses import TripletLoss
        from retrieval_kit.miners import BatchHardMiner

        miner, loss_fn = BatchHardMiner(), TripletLoss(margin=None)
    elif impl == "pml":
        from pytorch_metric_learning.losses import TripletMarginLoss
        from pytorch_metric_learning.miners import BatchHardMiner

        miner, loss_fn = BatchHardMiner(), TripletMarginLoss(margin=0, smooth_loss=True)
    else:
        raise ValueError(f"unknown implementation {impl!r}")

    def step(emb: torch.Tensor, labels: torch.Tensor) -> float:
        x = emb.clone().requires_grad_(True)
        loss = loss_fn(x, labels, miner(x, labels))
        loss.backward()
        return loss.item()

    return step


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _measure_memory_child(impl: str, batch: int, dim: int, samples_per_class: int) -> None:
    step = _make_step(impl)
    small, small_labels = _inputs(64, dim, samples_per_class)
    step(small, small_labels)  # warm-up: lazy inits outside the measurement
    emb, labels = _inputs(batch, dim, samples_per_class)
    before = _status_kb("VmRSS")
    method = "VmHWM"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak-RSS counter
    except OSError:
        method = "ru_maxrss"
    step(emb, labels)
    peak = _status_kb("VmHWM") if method == "VmHWM" else None
    if peak is None:
        method = "ru_maxrss"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": (peak - (before or 0)) / 1024, "method": method}))


def _peak_memory_mb(impl: str, batch: int, dim: int, samples_per_class: int) -> dict:
    cmd = [sys.executable, __file__, "--_memory", impl, str(batch), str(dim),
           str(samples_per_class)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run(
    sizes: tuple[int, ...] | list[int] = DEFAULT_SIZES,
    dim: int = 512,
    repeats: int = 5,
    samples_per_class: int = 8,
    memory: bool = True,
) -> list[dict]:
    """Time (and measure the peak memory of) both implementations for each batch size.

    Returns:
        One dict per size: batch, dim, ours_s, pml_s (median seconds per forward+backward),
        ours_min_s, pml_min_s (fastest repeat: less sensitive to other load on the machine),
        ratio (ours / pml, medians), loss_abs_diff, ours_peak_mb, pml_peak_mb, memory_method.
    """
    ours, pml = _make_step("retrieval_kit"), _make_step("pml")
    rows = []
    for batch in sizes:
        emb, labels = _inputs(batch, dim, samples_per_class)
        loss_ours, loss_pml = ours(emb, labels), pml(emb, labels)  # warm-up + same-value check
        times: dict[str, list[float]] = {"ours": [], "pml": []}
        for r in range(repeats):
            order = (("ours", ours), ("pml", pml)) if r % 2 == 0 else (("pml", pml), ("ours", ours))
            for name, step in order:
                start = time.perf_counter()
                step(emb, labels)
                times[name].append(time.perf_counter() - start)
        row = {
            "batch": batch,
            "dim": dim,
            "ours_s": statistics.median(times["ours"]),
            "pml_s": statistics.median(times["pml"]),
            "ours_min_s": min(times["ours"]),
            "pml_min_s": min(times["pml"]),
            "loss_abs_diff": abs(loss_ours - loss_pml),
        }
        row["ratio"] = row["ours_s"] / row["pml_s"]
        if memory:
            mem_ours = _peak_memory_mb("retrieval_kit", batch, dim, samples_per_class)
            mem_pml = _peak_memory_mb("pml", batch, dim, samples_per_class)
            row.update(
                ours_peak_mb=mem_ours["peak_mb"],
                pml_peak_mb=mem_pml["peak_mb"],
                memory_method=mem_ours["method"],
            )
        rows.append(row)
    return rows


def machine() -> str:
    """One line naming the CPU, the thread count and the library versions."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from doc_section import cpu_model

    cpu = cpu_model()
    import pytorch_metric_learning

    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), pytorch-metric-learning "
        f"{pytorch_metric_learning.__version__}"
    )


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    lines = [
        "| B | D | retrieval_kit (s) | PML (s) | ours / PML | min ours / min PML "
        "| peak MB ours | peak MB PML | loss diff |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mem_o = f"{r['ours_peak_mb']:.0f}" if "ours_peak_mb" in r else "-"
        mem_p = f"{r['pml_peak_mb']:.0f}" if "pml_peak_mb" in r else "-"
        lines.append(
            f"| {r['batch']} | {r['dim']} | {r['ours_s']:.4f} | {r['pml_s']:.4f} | "
            f"{r['ratio']:.2f}x | {r['ours_min_s'] / r['pml_min_s']:.2f}x | {mem_o} | {mem_p} | "
            f"{r['loss_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_memory":
        impl, batch, dim, k = sys.argv[2], *map(int, sys.argv[3:6])
        _measure_memory_child(impl, batch, dim, k)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples-per-class", type=int, default=8)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args.sizes, args.dim, args.repeats, args.samples_per_class, not args.no_memory)
    print(f"Batch-hard mining + soft-margin triplet loss, forward + backward, CPU ({machine()}).")
    print(f"Median of {args.repeats} repeats; peak memory: {rows[0].get('memory_method', '-')} "
          "delta in a fresh process per cell.\n")  # fmt: skip
    print(markdown(rows))


if __name__ == "__main__":
    main()
