"""Non-landmark-aware training on the landmark demo: GAP without and with reranking, per pool.

Run: ``python benchmarks/non_landmark_report.py [--seeds 0 1 2] [--out docs/landmark.md]
[--workdir DIR] [--collect]``.

For every seed it runs the demo (``examples/landmark/run.py demo --set seed=S``) once per
training variant, each in a fresh process: the default triplet training, then with
``train.non_landmarks`` from ``index`` (random) and from a folder of non-landmark images
(random and hard), and ``index`` hard. The folder is made once by ``rk.data.synthetic_landmarks``
with generator seed 1 (the demo's data uses 0): 200 non-landmark pictures of the demo's kinds,
none of them a demo image. It writes the table between the
``<!-- non_landmark_report.table:begin -->`` / ``:end -->`` markers of ``--out``
(``benchmarks/doc_section.py``). About 4 minutes per run on a quiet 2-core CPU, 5 runs a seed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # sibling scripts, not a package

from doc_section import write_section  # noqa: E402
from run import machine_info  # noqa: E402

RUN_PY = ROOT / "examples" / "landmark" / "run.py"
COMMAND = "python benchmarks/non_landmark_report.py"
FOLDER = "{folder}"
#: (name, --set overrides); FOLDER is replaced by the generated folder.
VARIANTS = (
    ("triplet (default)", []),
    ("+ index, random", ["train.non_landmarks=index"]),
    ("+ folder, random", [f"train.non_landmarks={FOLDER}"]),
    ("+ folder, hard", [f"train.non_landmarks={FOLDER}", "train.non_landmark_mining=hard"]),
    ("+ index, hard", ["train.non_landmarks=index", "train.non_landmark_mining=hard"]),
)


def make_folder(work: Path) -> Path:
    """200 synthetic non-landmark images (generator seed 1), in ``work``; their folder."""
    import retrieval_kit as rk

    root = work / "non_landmark_data"
    rk.data.synthetic_landmarks(
        root,
        num_landmarks=1,
        train_images_per_landmark=2,
        train_clutter_per_landmark=0,
        index_images_per_landmark=0,
        num_index_non_landmark=200,
        num_test_landmark_queries=0,
        num_test_non_landmark=0,
        seed=1,
    )
    return root / "index"  # index_images_per_landmark=0: non-landmarks only


def _dir(work: Path, seed: int, variant: int) -> Path:
    return work / f"seed{seed}_variant{variant}"


def run_one(seed: int, variant: int, work: Path, folder: Path) -> float:
    """One demo run; its wall seconds."""
    out = _dir(work, seed, variant)
    sets = [s.replace(FOLDER, str(folder)) for s in VARIANTS[variant][1]]
    cmd = [sys.executable, str(RUN_PY), "demo", "--out", str(out), "--no-progress"]
    for s in [f"seed={seed}", *sets]:
        cmd += ["--set", s]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    (work / f"{out.name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {out.name}.log")
    return time.perf_counter() - start


def collect(seed: int, variant: int, work: Path) -> dict[str, Any] | None:
    """GAP without reranking, with it, mAP@100 and top-1 of a finished run, or None."""
    path = _dir(work, seed, variant) / "metrics.json"
    if not path.is_file():
        return None
    m = json.loads(path.read_text(encoding="utf-8"))
    return {
        "seed": seed,
        "variant": variant,
        "gap_without_rerank": m["gap_without_rerank"],
        "gap": m["gap"],
        "map_at_100": m["map_at_100"],
        "top1_accuracy": m["top1_accuracy"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| seed | training | GAP w/o rerank | GAP (distractor penalty) | mAP@100 | top-1 |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["seed"], r["variant"])):
        lines.append(
            f"| {r['seed']} | {VARIANTS[r['variant']][0]} | {r['gap_without_rerank']:.3f} | "
            f"{r['gap']:.3f} | {r['map_at_100']:.3f} | {r['top1_accuracy']:.3f} |"
        )
    base = {r["seed"]: r for r in rows if r["variant"] == 0}
    lines.append("")
    for v in range(1, len(VARIANTS)):
        pairs = [(r, base[r["seed"]]) for r in rows if r["variant"] == v and r["seed"] in base]
        if not pairs:
            continue
        parts = []
        for key, name in (("gap_without_rerank", "GAP w/o rerank"), ("gap", "GAP")):
            d = [r[key] - b[key] for r, b in pairs]
            sd = f" ± {statistics.stdev(d):.3f}" if len(d) > 1 else ""
            parts.append(f"{name} {statistics.mean(d):+.3f}{sd}")
        seeds = ", ".join(str(r["seed"]) for r, _ in pairs)
        lines.append(f"- {VARIANTS[v][0]} vs the default: {'; '.join(parts)} (seeds {seeds}).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "landmark.md")
    p.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument("--collect", action="store_true", help="run nothing: table from --workdir")
    a = p.parse_args(argv)
    info = machine_info()
    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if not a.collect:
            folder = make_folder(work)
            for seed in a.seeds:
                for v in range(len(VARIANTS)):
                    if collect(seed, v, work) is None:
                        print(f"[non_landmark_report] seed {seed}: {VARIANTS[v][0]}", flush=True)
                        run_one(seed, v, work, folder)
        rows = [r for s in a.seeds for v in range(len(VARIANTS)) if (r := collect(s, v, work))]
        if not rows:
            p.error(f"no finished run in {work}")
        if a.collect:
            how = f"Collected {started} by `{COMMAND} --collect` from finished runs"
        else:
            minutes = (time.perf_counter() - t0) / 60
            how = f"Generated {started} by `{COMMAND}` (these runs took {minutes:.0f} min)"
        head = (
            f"<!-- generated by `{COMMAND}`: do not edit by hand -->\n"
            f"{how} on {info['cpu']} ({info['cpus_usable']} usable CPUs), torch "
            f"{info['versions']['torch']}; load average at the end of the runs "
            f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}. The demo (seed = "
            "the training seed; the data are the same), triplet loss, "
            "`train.non_landmarks_per_batch: 8`; the folder holds 200 synthetic non-landmark "
            "images made with another generator seed than the demo's data; `index` is the "
            "demo's index.csv (96 views of the demo's landmarks and 40 non-landmarks), also the "
            "distractor pool of the reranking."
        )
        done = {(r["seed"], r["variant"]) for r in rows}
        missing = [
            f"seed {s} {VARIANTS[v][0]}"
            for s in a.seeds
            for v in range(len(VARIANTS))
            if (s, v) not in done
        ]
        if missing:
            head += f" Not finished, so not shown: {', '.join(missing)}."
        write_section(a.out, "non_landmark_report.table", head + "\n\n" + table(rows))
        print(f"[non_landmark_report] wrote {len(rows)} runs into {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
