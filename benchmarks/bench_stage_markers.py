"""Stage markers of the landmark example: re-checking a complete run by stat vs by hashing.

Run: ``python benchmarks/bench_stage_markers.py [--total-gb 5] [--workdir DIR] [--repeats 5]
[--write docs/benchmarks.md]``.

Builds a complete run folder of ``examples/landmark`` - its ten stages, with outputs laid out as
in a GLDv2 run (embeddings and indexes hold most of the bytes) and totalling ``--total-gb`` of
random bytes written to disk (``os.urandom``; no sparse files, so hashing reads real data) - and
writes every stage's completion marker as the runner does when a stage ends (each output hashed
once, then). Then, in this one process and on the same files, it times re-checking the complete
run:

- ``run_stages`` over every stage (all skipped): the default check, size and ``mtime_ns`` of each
  output against its marker;
- the same with ``verify=True`` (``run.py --verify``): every output hashed once;
- the check as the runner did it before (reproduced with the same marker code): every check of a
  stage hashed all its outputs, and a stage was checked for itself and again for each stage
  reading it (the embeddings for ``embed``, ``index`` and ``predict``, ...).

The files were just written, so the hashing rows read from the page cache: they measure hashing,
and a cold cache (a run folder on a network disk) makes them slower still. The folder is deleted
at the end. ``--write`` replaces this script's section of that markdown file (through
``benchmarks/doc_section.py``). ``run(...)`` returns the rows as dicts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples" / "landmark"))

from landmark_pipeline.config import Config, config_from_dict  # noqa: E402
from landmark_pipeline.runner import STAGES, run_stages  # noqa: E402

SECTION = "bench_stage_markers"  # its section of docs/benchmarks.md (benchmarks/doc_section.py)
CHUNK = 16 << 20

#: (stage, output, share of the total bytes): a GLDv2-like run, embeddings and indexes first.
LAYOUT: tuple[tuple[str, str, float], ...] = (
    ("prepare", "prepare/images.csv", 0.01),
    ("clean", "clean/images.csv", 0.01),
    ("split", "split/images.csv", 0.01),
    ("train", "train/model.pt", 0.04),
    ("train", "train/model_init.pt", 0.04),
    ("embed", "embed/trained/db.npy", 0.25),
    ("embed", "embed/trained/test.npy", 0.05),
    ("embed", "embed/baseline/db.npy", 0.25),
    ("embed", "embed/baseline/test.npy", 0.05),
    ("index", "index/trained/db.index", 0.125),
    ("index", "index/baseline/db.index", 0.125),
    ("predict", "predict/trained/test_neighbours.npz", 0.015),
    ("predict", "predict/baseline/test_neighbours.npz", 0.015),
    ("evaluate", "metrics.json", 0.0),
    ("visualize", "viz/grid.png", 0.0),
    ("submit", "submission.csv", 0.01),
)
SMALL = 4096  # bytes of the outputs whose share is 0


def _write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            f.write(os.urandom(n))
            left -= n


def build_run(out: Path, total_bytes: int, config: Config) -> tuple[int, int, float]:
    """Write the outputs and every stage's marker; (files, bytes, seconds spent on the markers)."""
    outputs: dict[str, list[Path]] = {name: [] for name in STAGES}
    written = 0
    for stage, rel, share in LAYOUT:
        size = int(total_bytes * share) if share else SMALL
        _write_random(out / rel, size)
        outputs[stage].append(out / rel)
        written += size
    start = time.perf_counter()
    for stage in STAGES.values():  # pipeline order: upstream fingerprints exist
        stage.marker(out).write(
            stage.config_hash(config), outputs[stage.name], upstream=stage.upstream, seconds=0.0
        )
    return len(LAYOUT), written, time.perf_counter() - start


def recheck_as_before(out: Path, config: Config) -> None:
    """The former check of a complete run: every check hashes, upstream stages checked again."""
    for stage in STAGES.values():
        for up in (*stage.upstream, stage.name):
            s = STAGES[up]
            why = s.marker(out).why_incomplete(s.config_hash(config), s.upstream, verify=True)
            if why is not None:
                raise RuntimeError(f"stage {up!r} is not complete: {why}")


def _recheck(out: Path, config: Config, verify: bool) -> None:
    report = run_stages(config, out, list(STAGES), progress=False, verify=verify)
    ran = [name for name, r in report.items() if r["status"] != "skipped"]
    if ran or len(report) != len(STAGES):
        raise RuntimeError(f"the complete run was not recognised as complete: ran {ran}")


def run(total_gb: float = 5.0, workdir: str | None = None, repeats: int = 5) -> list[dict]:
    """Build a complete run of ``total_gb`` GB in ``workdir``, time the checks; rows as dicts."""
    total = int(total_gb * 1e9)
    base = Path(workdir or tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < total * 1.1 + (64 << 20):
        raise SystemExit(f"{base} has {free / 1e9:.1f} GB free; --total-gb {total_gb} needs more")
    config = config_from_dict({"device": "cpu"})
    tmp = Path(tempfile.mkdtemp(prefix="bench_stage_markers_", dir=base))
    try:
        out = tmp / "run"
        files, size, marker_s = build_run(out, total, config)
        _recheck(out, config, verify=False)  # warm-up: imports, and markers settle (racy files)
        stat_s = [_timed(_recheck, out, config, False) for _ in range(repeats)]
        passes = max(1, min(repeats, 2))  # hashing gigabytes: fewer passes
        verify_s = [_timed(_recheck, out, config, True) for _ in range(passes)]
        before_s = [_timed(recheck_as_before, out, config) for _ in range(passes)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    common = {"files": files, "gb": size / 1e9}
    before = statistics.median(before_s)
    rows = [
        {"check": "writing the markers (each output hashed once, as its stage ends)",
         "seconds": marker_s, "passes": 1},
        {"check": "re-check, size + mtime_ns (default)", "seconds": statistics.median(stat_s),
         "passes": repeats},
        {"check": "re-check, `--verify` (each output hashed once)",
         "seconds": statistics.median(verify_s), "passes": passes},
        {"check": "re-check as before (every check hashes; upstream stages again)",
         "seconds": before, "passes": passes},
    ]  # fmt: skip
    for r in rows:
        r.update(common, x_before=r["seconds"] / before)
    return rows


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def markdown(rows: list[dict]) -> str:
    """The table (without the section's markers or title)."""
    lines = [
        "| check of a complete run | outputs | GB | seconds (median) | passes | x as before |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['check']} | {r['files']} | {r['gb']:.2f} | {r['seconds']:.3f} | "
            f"{r['passes']} | {r['x_before']:.3g} |"
        )
    return "\n".join(lines)


def section(rows: list[dict], args: argparse.Namespace, seconds: float) -> str:
    from doc_section import machine_line

    stat = rows[1]["seconds"]
    verdict = "PASS" if stat < 1.0 else "FAIL"
    return "\n".join(
        [
            "## Stage markers of the landmark example: re-checking a complete run",
            "",
            f"A complete run folder of `examples/landmark` (ten stages, {rows[0]['files']} "
            f"outputs, {rows[0]['gb']:.2f} GB of random bytes on disk, embeddings and indexes "
            "holding most of them), every stage skipped. The default check reads each output's "
            "size and `mtime_ns` and compares them with the stage's marker; `--verify` hashes "
            "each output once; the former check hashed every output at each check, and checked "
            "a stage again for every stage reading it. All rows on the same files in one process; "
            "the hashing rows read from the page cache (the files were just written). Protocol: "
            "docstring of `benchmarks/bench_stage_markers.py`.",
            "",
            markdown(rows),
            "",
            f"Default re-check of {rows[0]['gb']:.2f} GB: **{stat:.3f} s** (target < 1 s: "
            f"{verdict}). {machine_line()}",
            "",
            f"_Reproduce: `python benchmarks/bench_stage_markers.py --total-gb {args.total_gb:g} "
            f"--write docs/benchmarks.md`; this section took {seconds:.0f} s._",
        ]
    )


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--total-gb", type=float, default=5.0, help="bytes of outputs, in GB (1e9)")
    p.add_argument("--workdir", help="where the run folder is built (default: system temp)")
    p.add_argument("--repeats", type=int, default=5, help="passes of the default check")
    p.add_argument("--write", type=Path, help="replace this script's section in this file")
    a = p.parse_args(argv)
    start = time.perf_counter()
    rows = run(a.total_gb, a.workdir, a.repeats)
    text = section(rows, a, time.perf_counter() - start)
    print(text)
    if a.write:
        from doc_section import write_section

        write_section(a.write, SECTION, text)
    return rows


if __name__ == "__main__":
    main()
