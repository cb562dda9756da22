"""Train the landmark demo with each loss of the GLR recipes and write the comparison into the docs.

Run: ``python benchmarks/loss_ablation.py [--seeds 0 1 2] [--variants ...] [--jobs N]
[--out docs/landmark.md] [--workdir DIR]``.

Each variant is the demo (``examples/landmark/run.py demo``) with one training recipe, run once
per seed (``--set seed=S``: the training's seed; the synthetic data and the split keep the demo's
own seeds, as ``benchmarks/landmark_report.py`` does):

* ``triplet``: the demo as shipped (batch-hard triplets in batches of look-alike classes);
* ``subspace_triplet``: the same with ``train.loss=subspace_triplet`` (one embedding chunk per
  cluster of classes);
* ``subcenter_arcface``: ``--config configs/demo_arcface.yaml``, sub-center ArcFace with dynamic
  margins (Ha et al. 2020), the head started at the class means (``train.head_init``);
* ``subcenter_arcface_random_head``: the same with the loss's random head, at the head rate it
  needed (x300: the recipe before ``head_init``), to show what the start is worth;
* ``arcface_triplet``: that recipe with ``train.loss=combined``: the same ArcFace head plus a
  batch-hard triplet term, weight 1 each;
* ``multi_similarity``: pytorch-metric-learning's ``MultiSimilarityLoss`` and
  ``MultiSimilarityMiner`` by name (``--set train.loss=... --set train.miner=...``), its default
  arguments, the triplet demo's optimizer and batches: any PML loss trains with no code change.

The data, clean and split stages run once into ``WORKDIR/shared`` and every run starts from a
copy of them (``data.root`` points at the shared images), so only train and the later stages are
redone. It writes the table between the ``<!-- loss_ablation.demo:begin -->`` and
``<!-- loss_ablation.demo:end -->`` markers of ``--out`` (``benchmarks/doc_section.py``) with the
machine, the date, the load, the commands and the run-to-run spread; never edit it by hand.
Eighteen demo runs: about half an hour on a quiet 2-core CPU, longer when the cores are shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # doc_section and run.py are sibling scripts, not a package

from doc_section import load_note, write_section  # noqa: E402
from run import machine_info  # noqa: E402

RUN_PY = ROOT / "examples" / "landmark" / "run.py"
COMMAND = "python benchmarks/loss_ablation.py"
SECTION = "loss_ablation.demo"
SHARED_STAGES = ("prepare", "clean", "split")


@dataclass(frozen=True)
class Variant:
    """One training recipe: what the table calls it and the ``run.py`` arguments that make it."""

    name: str
    label: str
    args: tuple[str, ...]


_COMBINED = (
    "train.loss_kwargs={losses: {arcface: {name: subcenter_arcface, scale: 30.0}, "
    "triplet: {name: triplet, miner: batch_hard}}}"
)
VARIANTS = {
    v.name: v
    for v in (
        Variant("triplet", "triplet (the demo's default)", ()),
        Variant("subspace_triplet", "subspace triplet", ("--set", "train.loss=subspace_triplet")),
        Variant(
            "subcenter_arcface",
            "sub-center ArcFace, dynamic margins",
            ("--config", "configs/demo_arcface.yaml"),
        ),
        Variant(
            "subcenter_arcface_random_head",
            "sub-center ArcFace, random head (x300)",
            (
                "--config",
                "configs/demo_arcface.yaml",
                "--set",
                "train.head_init=random",
                "--set",
                "train.loss_lr_mult=300",
            ),
        ),  # fmt: skip
        Variant(
            "arcface_triplet",
            "sub-center ArcFace + triplet",
            (
                "--config",
                "configs/demo_arcface.yaml",
                "--set",
                "train.loss=combined",
                "--set",
                _COMBINED,
            ),
        ),  # fmt: skip
        Variant(
            "multi_similarity",
            "PML MultiSimilarityLoss + MultiSimilarityMiner",
            (
                "--set",
                "train.loss=MultiSimilarityLoss",
                "--set",
                "train.miner=MultiSimilarityMiner",
            ),
        ),
    )
}


def _run(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` from the repository root; its output goes to ``log``. Wall seconds."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return seconds


def _sets(extra: list[str]) -> list[str]:
    return [arg for value in extra for arg in ("--set", value)]


def prepare_shared(work: Path, env: dict[str, str], extra: list[str]) -> Path:
    """The demo's data, clean and split stages, once, in ``work/shared``."""
    shared = work / "shared"
    for stage in SHARED_STAGES:
        cmd = [sys.executable, str(RUN_PY), stage, "--out", str(shared), "--no-progress",
               "--config", "configs/demo.yaml", "--set", f"data.root={shared / 'data'}",
               *_sets(extra)]  # fmt: skip
        _run(cmd, env, work / f"shared_{stage}.log")
    return shared


def run_one(
    variant: Variant, seed: int, work: Path, env: dict[str, str], extra: list[str]
) -> dict[str, Any]:
    """One demo run of ``variant`` from a copy of the shared stages; its record (also saved)."""
    name = f"{variant.name}_seed{seed}"
    record_path = work / f"{name}.json"
    if record_path.is_file():  # finished by an earlier, interrupted invocation
        return json.loads(record_path.read_text(encoding="utf-8"))
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(work / "shared", out, ignore=shutil.ignore_patterns("config.yaml"))
    cmd = [sys.executable, str(RUN_PY), "demo", "--out", str(out), "--no-progress",
           *variant.args, "--set", f"data.root={work / 'shared' / 'data'}",
           "--set", f"seed={seed}", *_sets(extra)]  # fmt: skip
    print(f"[loss_ablation] {name} ...", file=sys.stderr, flush=True)
    seconds = _run(cmd, env, work / f"{name}.log")
    log = (work / f"{name}.log").read_text(encoding="utf-8")
    redone = [s for s in SHARED_STAGES if f"stage {s:<9} complete, skipped" not in log]
    if redone:
        raise RuntimeError(f"{name}: redid the shared stage(s) {redone}; see {work / name}.log")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    record = {"variant": variant.name, "seed": seed, "seconds": seconds, "metrics": metrics}
    record_path.write_text(json.dumps(record), encoding="utf-8")
    return record


def _spread(values: list[float], fmt: str = ".3f") -> str:
    if len(values) == 1:
        return f"{values[0]:{fmt}}"
    return f"{statistics.fmean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


COLUMNS = (
    ("GAP", "gap", "baseline_gap"),
    ("GAP w/o rerank", "gap_without_rerank", "baseline_gap_without_rerank"),
    ("mAP@100", "map_at_100", "baseline_map_at_100"),
    ("top-1", "top1_accuracy", "baseline_top1_accuracy"),
)


def table(records: list[dict[str, Any]], variants: list[Variant]) -> str:
    """One row per variant (mean ± standard deviation over seeds), the pretrained model first."""
    by_variant = {v.name: [r for r in records if r["variant"] == v.name] for v in variants}
    first = records[0]["metrics"]
    lines = [
        "| training | seeds | " + " | ".join(c[0] for c in COLUMNS) + " | train s |",
        "|---|---:|" + "---:|" * len(COLUMNS) + "---:|",
    ]
    baseline = [r["metrics"] for r in records]
    lines.append(
        "| none (pretrained, no head) | — | "
        + " | ".join(_spread([m[c[2]] for m in baseline]) for c in COLUMNS)
        + " | — |"
    )
    for v in variants:
        runs = [r["metrics"] for r in by_variant[v.name]]
        if not runs:
            continue
        cells = [_spread([m[c[1]] for m in runs]) for c in COLUMNS]
        train_s = _spread([m["stage_seconds"]["train"] for m in runs], ".0f")
        lines.append(f"| {v.label} | {len(runs)} | " + " | ".join(cells) + f" | {train_s} |")
    seeds = sorted({r["seed"] for r in records})
    over = (
        f"Mean ± standard deviation over the training seeds {', '.join(map(str, seeds))}"
        if len(seeds) > 1
        else f"One run per row (training seed {seeds[0]}: no spread; `--seeds 0 1 2` gives it)"
    )
    lines += [
        "",
        f"{over} (the "
        f"data and split are the same in every run). Test protocol: {first['scored_queries']} "
        f"scored queries, {first['scored_landmark_queries']} with a landmark; GAP with the "
        "demo's distractor reranking, then without it. train s: the train stage's wall time "
        "(`metrics.json` `stage_seconds`).",
        "",
        "What each row ran (`python examples/landmark/run.py demo --out DIR --set seed=S` plus):",
        "",
    ]
    for v in variants:
        args = " ".join(f"'{a}'" if " " in a else a for a in v.args) or "(nothing)"
        lines.append(f"- {v.label}: `{args}`")
    return "\n".join(lines)


def header(info: dict[str, Any], started: str, seconds: float, load: tuple[float, ...]) -> str:
    return (
        f"Generated {started} by `{COMMAND}` (these runs took {seconds / 60:.1f} min) on "
        f"{info['cpu']} ({info['cpus_usable']} usable CPUs), torch {info['versions']['torch']}; "
        f"{load_note(load, info['cpus_usable'])}."
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--jobs", type=int, default=1, help="demo runs at a time")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "landmark.md")
    p.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    p.add_argument(
        "--set",
        dest="extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an override for every run (e.g. a smaller model to try the script quickly)",
    )
    a = p.parse_args(argv)
    if a.jobs < 1:
        p.error("--jobs must be >= 1")
    info = machine_info()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    variants = [VARIANTS[n] for n in a.variants]
    started, load, t0 = _now(), os.getloadavg(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        lock = work / "loss_ablation.lock"
        try:  # two invocations in one work folder would train into the same run folders
            os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            p.error(f"{lock} exists: another loss_ablation.py uses {work} (delete it if not)")
        try:
            if not (work / "shared" / "stages" / "split.done.json").is_file():
                prepare_shared(work, env, a.extra)
            keys = [(v, s) for s in a.seeds for v in variants]
            with ThreadPoolExecutor(max_workers=a.jobs) as pool:
                records = list(pool.map(lambda k: run_one(*k, work, env, a.extra), keys))
        finally:
            lock.unlink()
    head = header(info, started, time.perf_counter() - t0, load)
    if a.jobs > 1:
        head += f" Up to {a.jobs} runs at a time."
    left_out = [n for n in VARIANTS if n not in a.variants]
    if left_out:
        head += f" Not run this time (`--variants`): {', '.join(left_out)}."
    if a.extra:
        head += " Every run also had " + " ".join(f"`--set {x}`" for x in a.extra) + "."
    note = f"<!-- generated by `{COMMAND}`: do not edit by hand -->"
    write_section(a.out, SECTION, note + "\n" + head + "\n\n" + table(records, variants))
    print(f"[loss_ablation] wrote {SECTION} into {a.out}", file=sys.stderr, flush=True)
    return records


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


if __name__ == "__main__":
    main()
