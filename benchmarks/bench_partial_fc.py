"""Partial FC against the full ArcFace head at 200k classes x 512-d: step time and peak memory.

Each configuration trains the head alone (no backbone: a (B, 512) embedding tensor that needs a
gradient) with SGD + momentum 0.9: loss forward, backward, optimizer step. Compared side by side
in one run: pytorch-metric-learning's ``ArcFaceLoss`` (full head), retrieval_kit's
``SubCenterArcFaceLoss`` with every class (``partial_fc=1.0``) and with a sampled fraction of
them (``partial_fc=0.1`` and ``0.01``: every class of the batch plus uniformly drawn others).

Every (configuration, round) runs in a fresh subprocess, rounds alternate the order, and the
table shows medians. Memory, per process (Linux ``/proc/self/status``):

- ``state MB``: resident memory the head holds between steps (``W``, its gradient, the momentum
  buffer), measured after a warm-up step, relative to before the head was built;
- ``step peak MB``: the extra resident memory at the peak of a training step above that (the
  kernel's peak counter is reset by ``/proc/self/clear_refs`` before the timed steps): the
  normalised weights, logits and their gradients, which partial FC shrinks.

Usage:
    python benchmarks/bench_partial_fc.py [--classes 200000] [--dim 512] [--batch 64]
        [--rounds 2] [--steps 3] [--write docs/benchmarks.md]

``--write`` replaces the section between the partial-FC markers of that markdown file (appending
it when absent) and leaves the rest of the file untouched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

CONFIGS = {
    "pml_full": "PML ArcFaceLoss (full head)",
    "rk_full": "rk SubCenterArcFaceLoss, partial_fc=1.0",
    "rk_0.1": "rk SubCenterArcFaceLoss, partial_fc=0.1",
    "rk_0.01": "rk SubCenterArcFaceLoss, partial_fc=0.01",
}
SECTION = "bench_partial_fc"  # its section of docs/benchmarks.md (benchmarks/doc_section.py)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _make_loss(config: str, classes: int, dim: int) -> torch.nn.Module:
    if config == "pml_full":
        from pytorch_metric_learning.losses import ArcFaceLoss

        return ArcFaceLoss(classes, dim, margin=math.degrees(0.5), scale=64)
    from retrieval_kit.losses import SubCenterArcFaceLoss

    fraction = 1.0 if config == "rk_full" else float(config.split("_")[1])
    return SubCenterArcFaceLoss(
        classes, dim, sub_centers=1, margin=0.5, scale=64, partial_fc=fraction, seed=0
    )


def _child(config: str, classes: int, dim: int, batch: int, steps: int) -> dict:
    _make_loss(config, 10, dim)  # imports and lazy inits outside the measurement
    torch.manual_seed(0)
    emb = torch.randn(batch, dim)
    labels = torch.randint(0, classes, (batch,))
    start_kb = _status_kb("VmRSS")
    loss_fn = _make_loss(config, classes, dim)
    opt = torch.optim.SGD(loss_fn.parameters(), lr=0.01, momentum=0.9)

    def step() -> float:
        x = emb.clone().requires_grad_(True)
        loss = loss_fn(x, labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # keep the gradient buffer, as a training loop would
        return loss.item()

    step()  # warm-up: gradient and momentum buffers now exist
    before_kb = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS counter
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak_kb = _status_kb("VmHWM")
    return {
        "seconds": statistics.median(times),
        "state_mb": (before_kb - start_kb) / 1024,
        "step_peak_mb": (peak_kb - before_kb) / 1024,
    }


def run(
    classes: int = 200_000,
    dim: int = 512,
    batch: int = 64,
    rounds: int = 2,
    steps: int = 3,
    configs: tuple[str, ...] = tuple(CONFIGS),
) -> list[dict]:
    """Median step time and memory of each configuration (fresh subprocess per round)."""
    results: dict[str, list[dict]] = {c: [] for c in configs}
    for r in range(rounds):
        order = configs if r % 2 == 0 else tuple(reversed(configs))
        for config in order:
            cmd = [sys.executable, __file__, "--_child", config, str(classes), str(dim),
                   str(batch), str(steps)]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            results[config].append(json.loads(out.strip().splitlines()[-1]))
    rows = []
    for config in configs:
        runs = results[config]
        rows.append(
            {
                "config": config,
                "seconds": statistics.median(r["seconds"] for r in runs),
                "state_mb": statistics.median(r["state_mb"] for r in runs),
                "step_peak_mb": statistics.median(r["step_peak_mb"] for r in runs),
            }
        )
    base = next((r for r in rows if r["config"] == "rk_full"), rows[0])
    for row in rows:
        row["time_ratio"] = row["seconds"] / base["seconds"]
        row["peak_ratio"] = row["step_peak_mb"] / base["step_peak_mb"]
    return rows


def machine() -> str:
    """CPU, cores, torch threads, library versions, date and load."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from doc_section import cpu_model

    cpu = cpu_model()
    import pytorch_metric_learning

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), pytorch-metric-learning {pytorch_metric_learning.__version__}; {date}; "
        f"load average {load}"
    )


def markdown(rows: list[dict], classes: int, dim: int, batch: int, seconds: float) -> str:
    """The section for docs/benchmarks.md (without its markers)."""
    lines = [
        "## Partial FC: the ArcFace head at scale",
        "",
        f"One training step of the head alone (no backbone) with {classes:,} classes x {dim}-d, "
        f"one centre per class, a batch of {batch} embeddings, SGD with momentum: loss forward, "
        "backward, optimizer step. `state MB` is what the head keeps between steps (weights, "
        "gradient, momentum: the same for every row); `step peak MB` is the extra memory at "
        "the peak of a step, which partial FC shrinks. `W` and its gradient stay full-size, "
        "and the optimizer still updates all of `W` (momentum moves unsampled classes too).",
        "",
        "| configuration | seconds / step | x full | state MB | step peak MB | x full |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {CONFIGS[r['config']]} | {r['seconds']:.3f} | {r['time_ratio']:.2f} | "
            f"{r['state_mb']:.0f} | {r['step_peak_mb']:.0f} | {r['peak_ratio']:.2f} |"
        )
    lines += [
        "",
        f"Machine: {machine()}. Medians over fresh processes that alternate their order; other "
        "jobs on a shared machine slow the absolute times, the ratios hold up better.",
        "",
        f"_Reproduce: `python benchmarks/bench_partial_fc.py --write docs/benchmarks.md`; this "
        f"section took {seconds:.0f} s._",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        config, classes, dim, batch, steps = sys.argv[2], *map(int, sys.argv[3:7])
        print(json.dumps(_child(config, classes, dim, batch, steps)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None, help="markdown file to update")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = run(args.classes, args.dim, args.batch, args.rounds, args.steps)
    section = markdown(rows, args.classes, args.dim, args.batch, time.perf_counter() - start)
    print(section)
    if args.write is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from doc_section import write_section

        write_section(args.write, SECTION, section)


if __name__ == "__main__":
    main()
