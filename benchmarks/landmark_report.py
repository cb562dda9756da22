"""Run the landmark demo and the quickstart several times and write their tables into the docs.

Run: ``python benchmarks/landmark_report.py [--seeds 0 1 2] [--threads 1 2]
[--out docs/landmark.md] [--workdir DIR]``.

What it runs, each in a fresh process on this machine:

* the demo (``examples/landmark/run.py demo --set seed=S``) once per seed, with the default
  distractor pool (``split.distractor_source: index``); then the same run directory again with
  ``split.distractor_source=other_usage`` (the reproduced pipeline's pool, chosen with the test
  labels): the trained model is reused from the checkpoint (checked by its SHA-256), only the
  split and the later stages are redone;
  and the same run directory once more with ``predict.confidence=learned`` (only the predict
  stage and those after it are redone): its ``metrics.json`` ``ablation`` list, every step of the
  prediction pipeline through the learned confidence, is the ablation table;
* the quickstart (``examples/quickstart.py --seed S``) for every seed and ``OMP_NUM_THREADS``.
* the first seed's demo again on one process with 1 thread, and under ``torchrun`` with 2
  processes of 1 thread: the torchrun table holds it beside the 1-process runs, with the spread
  that float rounding alone gives (1 vs 2 threads).

It writes each table between the ``<!-- landmark_report.NAME:begin -->`` and
``<!-- landmark_report.NAME:end -->`` markers of ``--out`` (``benchmarks/doc_section.py``; machine,
date, the command that regenerates them, the run-to-run spread). The figures in
docs/landmark.md are generated: never edit them by hand, rerun this script (about 10 minutes on
a quiet 2-core CPU; longer when the cores are shared).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # run.py (machine_info) is a sibling script, not a package

from doc_section import load_note, write_section  # noqa: E402
from retrieval_kit.io import atomic_write  # noqa: E402
from run import machine_info  # noqa: E402

RUN_PY = ROOT / "examples" / "landmark" / "run.py"
QUICKSTART = ROOT / "examples" / "quickstart.py"
COMMAND = "python benchmarks/landmark_report.py"
TABLES = ("quickstart", "demo", "ablation", "torchrun")


def _run(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, str]:
    """Run ``cmd``; returns (wall seconds, stdout). Its output goes to ``log`` as well."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return seconds, proc.stdout


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rescore(
    out: Path, work: Path, seed: int, variant: str, override: str, env: dict[str, str]
) -> dict[str, Any]:
    """A copy of the finished run ``out``, its later stages rerun with ``override``: metrics.

    The copy keeps the trained model (checked by hash), so only the evaluation side differs.
    """
    copy = work / f"demo_seed{seed}_{variant}"
    shutil.copytree(out, copy)
    _run(
        [sys.executable, str(RUN_PY), "all", "--out", str(copy), "--no-progress",
         "--set", override],
        env,
        work / f"demo_seed{seed}_{variant}.log",
    )  # fmt: skip
    if _sha256(out / "train" / "model.pt") != _sha256(copy / "train" / "model.pt"):
        raise RuntimeError(f"seed {seed}: the {variant} run retrained instead of reusing")
    return json.loads((copy / "metrics.json").read_text())


def run_demo(seed: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One demo run (default pool), then its trained model rescored: other_usage pool, learned
    confidence."""
    out = work / f"demo_seed{seed}"
    cmd = [sys.executable, str(RUN_PY), "demo", "--out", str(out), "--no-progress"]
    seconds, _ = _run([*cmd, "--set", f"seed={seed}"], env, work / f"demo_seed{seed}.log")
    index_metrics = json.loads((out / "metrics.json").read_text())
    pool = "split.distractor_source=other_usage"
    other_metrics = _rescore(out, work, seed, "other_usage", pool, env)
    learned_metrics = _rescore(out, work, seed, "learned", "predict.confidence=learned", env)
    record = {
        "seed": seed,
        "seconds": seconds,
        "index": index_metrics,
        "other": other_metrics,
        "learned": learned_metrics,
    }
    (work / f"demo_seed{seed}.json").write_text(json.dumps(record), encoding="utf-8")
    return record


#: The torchrun comparison's runs: (name, processes, threads per process). The 1-process rows
#: differ from each other by float rounding only (the thread count changes the order of sums),
#: which is the spread a multi-process run can be held to.
TORCHRUN_RUNS = (("1 process x 2 threads", 1, 2), ("1 process x 1 thread", 1, 1),
                 ("2 processes x 1 thread (torchrun)", 2, 1))  # fmt: skip


def run_torchrun(seed: int, work: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    """The demo of ``seed`` on one process (2 and 1 threads) and under torchrun (2 x 1 thread).

    The 1-process, 2-thread run is the demo table's run when ``work`` holds it.
    """
    rows = []
    for name, procs, threads in TORCHRUN_RUNS:
        out = work / f"demo_seed{seed}" if (procs, threads) == (1, 2) else (
            work / f"demo_seed{seed}_p{procs}t{threads}")  # fmt: skip
        record = work / f"{out.name}.json"
        if record.is_file():  # this run's earlier invocation, or the demo table's run
            data = json.loads(record.read_text(encoding="utf-8"))
            metrics, seconds = data.get("index", data.get("metrics")), data["seconds"]
        else:
            launch = [sys.executable]
            if procs > 1:
                launch += ["-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={procs}"]  # fmt: skip
            cmd = [*launch, str(RUN_PY), "demo", "--out", str(out), "--no-progress",
                   "--set", f"seed={seed}", "--set", f"threads={threads}"]  # fmt: skip
            seconds, _ = _run(
                cmd, {**env, "OMP_NUM_THREADS": str(threads)}, work / f"{out.name}.log"
            )
            metrics = json.loads((out / "metrics.json").read_text())
            data = {"seconds": seconds, "metrics": metrics}
            record.write_text(json.dumps(data), encoding="utf-8")
        rows.append({"name": name, "seconds": seconds, "metrics": metrics})
    return rows


def torchrun_table(rows: list[dict[str, Any]], seed: int) -> str:
    """The torchrun run beside the 1-process runs, and the spread rounding alone gives."""
    keys = (("gap", "GAP"), ("map_at_100", "mAP@100"), ("top1_accuracy", "top-1"))
    lines = [
        f"The demo, seed {seed}, trained on one process and under "
        "`torchrun --standalone --nproc_per_node=2 examples/landmark/run.py demo --out DIR` "
        "(each rank a share of every global batch, the head's BatchNorm over the global batch, "
        "each image's crop seeded from (seed, epoch, row)):",
        "",
        "| run | GAP | mAP@100 | top-1 | wall s |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, wall = r["metrics"], r["seconds"]
        lines.append(
            f"| {r['name']} | {m['gap']:.3f} | {m['map_at_100']:.3f} | {m['top1_accuracy']:.3f} "
            f"| {'—' if wall is None else f'{wall:.0f}'} |"
        )
    one = [r["metrics"] for r in rows if not r["name"].startswith("2 ")]
    two = [r["metrics"] for r in rows if r["name"].startswith("2 ")]
    rounding = ", ".join(f"{label} {abs(one[0][k] - one[1][k]):.3f}" for k, label in keys)
    lines += ["", f"- Rounding alone (1 process, 2 vs 1 threads): |difference| {rounding}."]
    for m in two:
        diffs = ", ".join(f"{label} {min(abs(m[k] - o[k]) for o in one):.3f}" for k, label in keys)
        # Within: no farther from the nearer 1-process run than the two 1-process runs are
        # from each other, metric by metric.
        inside = all(
            min(abs(m[k] - o[k]) for o in one) <= abs(one[0][k] - one[1][k]) + 1e-9 for k, _ in keys
        )
        lines.append(
            f"- torchrun against the nearer 1-process run: |difference| {diffs}: "
            + ("within" if inside else "outside")
            + " the rounding spread above."
        )
    return "\n".join(lines)


def collect_demo(seed: int, work: Path) -> dict[str, Any] | None:
    """A finished demo run of an earlier (possibly interrupted) invocation, or None."""
    record = work / f"demo_seed{seed}.json"
    if record.is_file():
        return json.loads(record.read_text(encoding="utf-8"))
    paths = [work / f"demo_seed{seed}" / "metrics.json",
             work / f"demo_seed{seed}_other_usage" / "metrics.json"]  # fmt: skip
    if not all(p.is_file() for p in paths):
        return None
    index_metrics, other_metrics = (json.loads(p.read_text()) for p in paths)
    # The process wall time was not recorded: fall back on the stage times in metrics.json.
    record = {"seed": seed, "seconds": None, "index": index_metrics, "other": other_metrics}
    learned = work / f"demo_seed{seed}_learned" / "metrics.json"
    if learned.is_file():
        record["learned"] = json.loads(learned.read_text())
    return record


def collect_ablation(seed: int, work: Path) -> dict[str, Any] | None:
    """The learned-confidence run of one seed (its metrics.json holds every step), or None."""
    path = work / f"demo_seed{seed}_learned" / "metrics.json"
    if not path.is_file():
        return None
    return {"seed": seed, "learned": json.loads(path.read_text())}


def run_quickstart(seed: int, threads: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, str(QUICKSTART), "--seed", str(seed), "--data", str(work / "qdata")]
    env = {**env, "OMP_NUM_THREADS": str(threads)}
    seconds, stdout = _run(cmd, env, work / f"quickstart_seed{seed}_t{threads}.log")
    record = {"seed": seed, "threads": threads, "seconds": seconds, **_recalls(stdout)}
    (work / f"quickstart_seed{seed}_t{threads}.json").write_text(json.dumps(record))
    return record


def _recalls(stdout: str) -> dict[str, float]:
    before = float(re.search(r"recall@1 before training: ([\d.]+)", stdout).group(1))
    after = float(re.search(r"recall@1 after training: ([\d.]+)", stdout).group(1))
    return {"before": before, "after": after}


def collect_quickstart(seed: int, threads: int, work: Path) -> dict[str, Any] | None:
    """A finished quickstart run of an earlier (possibly interrupted) invocation, or None."""
    record = work / f"quickstart_seed{seed}_t{threads}.json"
    if record.is_file():
        return json.loads(record.read_text(encoding="utf-8"))
    log = work / f"quickstart_seed{seed}_t{threads}.log"
    if not log.is_file():
        return None
    # Its wall time was not recorded (shown as "—").
    return {"seed": seed, "threads": threads, "seconds": None, **_recalls(log.read_text())}


def _spread(values: list[float], fmt: str = ".3f") -> str:
    if len(values) == 1:
        return f"{values[0]:{fmt}} (one run)"
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    lo, hi = min(values), max(values)
    return f"{mean:{fmt}} ± {sd:{fmt}} ({lo:{fmt}}–{hi:{fmt}})"


def demo_tables(runs: list[dict[str, Any]]) -> str:
    def row(m: dict[str, Any], seed: int, pool: str) -> str:
        gain = m["gap"] - m["baseline_gap"]
        return (
            f"| {seed} | {pool} | {m['baseline_gap']:.3f} | **{m['gap']:.3f}** | {gain:+.3f} "
            f"| {m['baseline_gap_without_rerank']:.3f} | {m['gap_without_rerank']:.3f} "
            f"| {m['baseline_top1_accuracy']:.3f} | {m['top1_accuracy']:.3f} "
            f"| {m['baseline_map_at_100']:.3f} | {m['map_at_100']:.3f} |"
        )

    first = runs[0]["index"]
    lines = [
        f"Test protocol: {first['scored_queries']} scored queries "
        f"({first['scored_landmark_queries']} with a landmark). Pretrained = "
        f"{first['baseline']['description']}. Trained = the demo's model after its training.",
        "",
        "| seed | distractor pool | GAP pretrained | GAP trained | gain | GAP w/o rerank, "
        "pretrained | GAP w/o rerank, trained | top-1 pretrained | top-1 trained "
        "| mAP@100 pretrained | mAP@100 trained |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pool in ("index", "other"):
        name = "index (default)" if pool == "index" else "other_usage"
        lines += [row(r[pool], r["seed"], name) for r in runs]
    lines.append("")
    for pool, name in (("index", "index (default)"), ("other", "other_usage")):
        gaps = [r[pool]["gap"] for r in runs]
        base = [r[pool]["baseline_gap"] for r in runs]
        gains = [g - b for g, b in zip(gaps, base)]
        lines.append(
            f"- {name}: trained GAP {_spread(gaps)}; pretrained {_spread(base)}; "
            f"gain {_spread(gains)}"
            + (" (mean ± standard deviation (min–max) over seeds " if len(runs) > 1 else " (seed ")
            + f"{', '.join(str(r['seed']) for r in runs)})."
        )
    val = [r["index"].get("val") for r in runs if r["index"].get("val")]
    if val:
        lines.append(
            f"- Validation split ({val[0]['queries']} landmark-only queries of classes never "
            f"trained on, no reranking): GAP pretrained {_spread([v['baseline_gap'] for v in val])}"
            f", trained {_spread([v['gap'] for v in val])}."
        )
    walls = [r["seconds"] for r in runs if r["seconds"] is not None]
    what = "Wall time of one demo run (`python examples/landmark/run.py demo --out DIR`)"
    if walls:
        lines.append(
            f"- {what}: {_spread(walls, '.0f')} s over {len(walls)} run(s), on the machine "
            "named above."
        )
    if len(walls) < len(runs):
        lines.append(
            f"- {what}: not measured for {len(runs) - len(walls)} run(s) (interrupted and "
            "resumed from their checkpoints, which gives the same metrics but no meaningful "
            "time); rerun this script to measure it."
        )
    return "\n".join(lines)


def ablation_table(runs: list[dict[str, Any]]) -> str:
    """Each prediction step's effect (trained model, default distractor pool), per seed."""
    runs = [r for r in runs if r.get("learned", {}).get("ablation")]
    if not runs:
        return "No run with an ablation (run the demo with this script)."
    steps = [a["step"] for a in runs[0]["learned"]["ablation"]]

    def cell(a: dict[str, Any], key: str) -> str:
        return "—" if a[key] is None else f"{a[key]:.3f}"

    lines = [
        "Every step of the prediction pipeline, each measured on the test queries "
        "(`metrics.json` `ablation`, run with `--set predict.confidence=learned`; each row adds "
        "one step to the row above; the last is the reported GAP of that run).",
        "",
        "| seed | step | GAP | mAP@100 | top-1 |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in runs:
        for a in r["learned"]["ablation"]:
            lines.append(
                f"| {r['seed']} | {a['step']} | {cell(a, 'gap')} | {cell(a, 'map_at_100')} "
                f"| {cell(a, 'top1_accuracy')} |"
            )
    lines.append("")
    seeds = ", ".join(str(r["seed"]) for r in runs)
    for i in range(1, len(steps)):
        deltas = [
            r["learned"]["ablation"][i]["gap"] - r["learned"]["ablation"][i - 1]["gap"]
            for r in runs
        ]
        spread = (
            f" ± {statistics.stdev(deltas):.3f} (min {min(deltas):+.3f}, max {max(deltas):+.3f})"
            if len(deltas) > 1
            else ""
        )
        lines.append(
            f"- {steps[i]} vs {steps[i - 1]}: GAP {statistics.fmean(deltas):+.3f}{spread} "
            f"(seeds {seeds})."
        )
    return "\n".join(lines)


def quickstart_table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | OMP_NUM_THREADS | recall@1 before | recall@1 after | gain | wall s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['seed']} | {r['threads']} | {r['before']:.3f} | {r['after']:.3f} "
            f"| {r['after'] - r['before']:+.3f} "
            f"| {'—' if r['seconds'] is None else format(r['seconds'], '.0f')} |"
        )
    gains = [r["after"] - r["before"] for r in runs]
    lines += [
        "",
        f"Gain over the {len(runs)} runs: {_spread(gains)}; smallest {min(gains):+.3f}. "
        f"tests/examples/test_quickstart.py asserts a gain of at least +0.05.",
    ]
    return "\n".join(lines)


def header(
    info: dict[str, Any], started: str, seconds: float | None, load: tuple[float, ...] | None
) -> str:
    took = "" if seconds is None else f" (these runs took {seconds / 60:.1f} min)"
    text = (
        f"Generated {started} by `{COMMAND}`{took} on {info['cpu']} "
        f"({info['cpus_usable']} usable CPUs), torch {info['versions']['torch']}"
    )
    if load is None:
        return text + "."
    return f"{text}; {load_note(load, info['cpus_usable'])}."


GRIDS = ("most_confident_correct", "most_confident_incorrect")


def copy_grids(run_dir: Path) -> None:
    """The tutorial's prediction grids, from the first seed's demo run (default pool)."""
    for kind in GRIDS:
        src = run_dir / "viz" / f"{kind}.png"
        if src.is_file():
            with atomic_write(ROOT / "docs" / "img" / f"landmark_{kind}.png", "wb") as f:
                f.write(src.read_bytes())


def _write(out: Path, name: str, body: str) -> None:
    note = f"<!-- generated by `{COMMAND}`: do not edit by hand -->"
    write_section(out, f"landmark_report.{name}", note + "\n" + body)
    print(f"[landmark_report] wrote the {name} table into {out}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="quickstart threads")
    p.add_argument(
        "--only", nargs="+", choices=TABLES, default=list(TABLES), help="ablation: with demo"
    )
    p.add_argument("--jobs", type=int, default=1, help="quickstart runs at a time")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "landmark.md")
    p.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: write the tables from the finished runs in --workdir",
    )
    a = p.parse_args(argv)
    info = machine_info()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if a.collect:
        if a.workdir is None:
            p.error("--collect needs --workdir")
        _collect(a, info)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        # Each table is written as soon as its runs are done, with its own date, load and time.
        if "quickstart" in a.only:
            started, load, t0 = _now(), os.getloadavg(), time.perf_counter()
            keys = [(seed, threads) for seed in a.seeds for threads in a.threads]
            print(f"[landmark_report] quickstart: {keys}", file=sys.stderr, flush=True)
            # --jobs > 1 runs several at a time (shorter in all, each run's wall time longer).
            with ThreadPoolExecutor(max_workers=a.jobs) as pool:
                quick = list(pool.map(lambda k: run_quickstart(*k, work, env), keys))
            head = header(info, started, time.perf_counter() - t0, load)
            if a.jobs > 1:
                head += f" Up to {a.jobs} quickstart runs at a time."
            _write(a.out, "quickstart", head + "\n\n" + quickstart_table(quick))
        if "demo" in a.only:
            started, load, t0 = _now(), os.getloadavg(), time.perf_counter()
            demos = []
            for seed in a.seeds:
                print(f"[landmark_report] demo, seed {seed} ...", file=sys.stderr, flush=True)
                demos.append(run_demo(seed, work, env))
            head = header(info, started, time.perf_counter() - t0, load)
            _write(a.out, "demo", head + "\n\n" + demo_tables(demos))
            _write(a.out, "ablation", head + "\n\n" + ablation_table(demos))
            copy_grids(work / f"demo_seed{a.seeds[0]}")
        if "torchrun" in a.only:
            started, load, t0 = _now(), os.getloadavg(), time.perf_counter()
            print(f"[landmark_report] torchrun, seed {a.seeds[0]} ...", file=sys.stderr, flush=True)
            rows = run_torchrun(a.seeds[0], work, env)
            head = header(info, started, time.perf_counter() - t0, load)
            _write(a.out, "torchrun", head + "\n\n" + torchrun_table(rows, a.seeds[0]))


def _collect(a: argparse.Namespace, info: dict[str, Any]) -> None:
    """Write the tables from the finished runs in ``a.workdir``, naming the missing ones."""
    for name in a.only:
        if name == "torchrun":
            print("[landmark_report] torchrun: not collected (rerun with --only torchrun)",
                  file=sys.stderr)  # fmt: skip
            continue
        if name == "quickstart":
            keys = [(s, t) for s in a.seeds for t in a.threads]
            runs = [collect_quickstart(s, t, a.workdir) for s, t in keys]
            names = [f"seed {s} x {t} thread(s)" for s, t in keys]
            first = a.workdir / "qdata"
        else:
            collect = collect_demo if name == "demo" else collect_ablation
            runs = [collect(s, a.workdir) for s in a.seeds]
            names = [f"seed {s}" for s in a.seeds]
            first = a.workdir / f"demo_seed{a.seeds[0]}" / "stages" / "prepare.done.json"
        done = [r for r in runs if r]
        if not done or not first.exists():
            print(f"[landmark_report] no finished {name} run in {a.workdir}", file=sys.stderr)
            continue
        started = dt.datetime.fromtimestamp(first.stat().st_mtime, dt.timezone.utc)
        head = (
            f"Runs started {started.replace(microsecond=0).isoformat()} on {info['cpu']} "
            f"({info['cpus_usable']} usable CPUs), torch {info['versions']['torch']}; collected by "
            f"`{COMMAND} --collect` from their work folder. The machine's load during them was not "
            "recorded (a busy machine makes the wall times longer, not the metrics different); "
            "a wall time shown as — was not recorded."
        )
        missing = [n for n, r in zip(names, runs) if not r]
        if missing:
            head += (
                f" Only the finished runs are shown; not finished in the time this run was "
                f"given: {', '.join(missing)}."
            )
        if name == "quickstart":
            _write(a.out, name, head + "\n\n" + quickstart_table(done))
        elif name == "ablation":
            _write(a.out, name, head + "\n\n" + ablation_table(done))
        else:
            _write(a.out, name, head + "\n\n" + demo_tables(done))
            copy_grids(a.workdir / f"demo_seed{done[0]['seed']}")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


if __name__ == "__main__":
    main()
