"""Run every benchmark side by side and write its sections of ``docs/benchmarks.md``.

Run: ``python benchmarks/run.py [--quick] [--only mining index metrics extraction rerank]
[--scale] [--out docs/benchmarks.md]``.

Each table compares retrieval_kit with what a user would pick instead, both measured in this one
run on this machine (see the scripts named in each section for the details of a table). Its
sections of the document (``run_header``, ``run_<table>``) are generated: never edit their figures
by hand, rerun this script; the sections other scripts write are left as they are. ``--quick``
uses smaller sizes (a few minutes); the default preset fits in about 15 minutes on 2 cores. The
index table's largest size (2M vectors) comes from ``benchmarks/simulate_scale.py`` (its latest
results file); ``--scale`` runs it first (adds ~10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))  # the bench_* scripts are siblings, not a package

from doc_section import write_sections  # noqa: E402

SCALE_RESULTS = HERE / "results" / "simulate_scale.json"

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {
        "mining": {"sizes": (256, 1024, 2048, 4096), "repeats": 5},
        "index": {"sizes": (100_000, 300_000), "dim": 256, "n_queries": 1000},
        "metrics": {"predictions": 1_000_000, "map_queries": 10_000, "repeats": 3},
        "extraction": {
            "model_name": "resnet50",
            "n_images": 128,
            "batch_size": 32,
            "workers": (0, 1, 2),
            "repeats": 2,
        },
        "rerank": {"n_queries": 1000, "sizes": (10_000, 100_000), "dim": 512, "repeats": 2},
    },
    "quick": {
        "mining": {"sizes": (256, 1024, 2048), "repeats": 3},
        "index": {"sizes": (100_000,), "dim": 256, "n_queries": 500, "repeats": 2},
        "metrics": {"predictions": 200_000, "map_queries": 2000, "repeats": 2},
        "extraction": {
            "model_name": "resnet50",
            "n_images": 64,
            "batch_size": 32,
            "workers": (0, 2),
            "repeats": 1,
        },
        "rerank": {"n_queries": 500, "sizes": (10_000, 50_000), "dim": 512, "repeats": 2},
    },
    # Seconds in total, one thread (tiny work on many threads only measures OpenMP barriers on a
    # busy machine); for tests/benchmarks/test_benchmarks_smoke.py, meaningless as figures.
    "smoke": {
        "mining": {"sizes": (64,), "dim": 32, "repeats": 1, "memory": False},
        "index": {
            "sizes": (3000,),
            "dim": 16,
            "n_queries": 50,
            "repeats": 1,
            "threads": 1,
            # a compressed index too: a row whose recall is certainly far below exact search
            "factories": ("IVF16,Flat", "IVF16,PQ8x4np"),
        },
        "metrics": {"predictions": 2000, "map_queries": 50, "repeats": 1},
        "extraction": {
            "model_name": "resnet18",
            "n_images": 4,
            "batch_size": 2,
            "workers": (0,),
            "draft": False,
            "image_size": 32,
            "repeats": 1,
            "threads": 1,
            "jpeg_sizes": (40, 64),
        },
        "rerank": {"n_queries": 20, "sizes": (200,), "dim": 16, "repeats": 1, "threads": 1},
    },
}

TABLES = ("mining", "index", "metrics", "extraction", "rerank")


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, library versions, thread counts, date and load."""
    import faiss
    import numpy
    import PIL
    import pytorch_metric_learning
    import torch
    import torchvision

    import retrieval_kit

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from doc_section import cpu_model

    cpu = cpu_model()
    ram = None
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
        ram = f"{kb / 2**20:.1f} GiB"
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "cpus_usable": usable,
        "ram": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            "retrieval_kit": retrieval_kit.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "faiss": faiss.__version__,
            "pytorch-metric-learning": pytorch_metric_learning.__version__,
            "numpy": numpy.__version__,
            "pillow": PIL.__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _load(v: Any) -> str:
    return "n/a" if v is None else " / ".join(f"{x:.1f}" for x in v)


# ---------------------------------------------------------------- one function per table


def table_mining(cfg: dict) -> tuple[str, list[dict]]:
    m = importlib.import_module("bench_mining")
    rows = m.run(**cfg)
    text = (
        "retrieval_kit `BatchHardMiner` + `TripletLoss(margin=None)` (soft margin) against "
        "pytorch-metric-learning `BatchHardMiner` + `TripletMarginLoss(margin=0, "
        "smooth_loss=True)`, the same triplets and loss: one forward + backward on random "
        f"{rows[0]['dim']}-d embeddings, 8 images per class, median of "
        f"{cfg.get('repeats', 5)} alternating repeats. Peak memory: extra resident memory of "
        f"one step in a fresh process ({rows[0].get('memory_method', 'not measured')}). "
        "`loss diff` = |ours - PML| (same value expected).\n\n" + m.markdown(rows)
    )
    return text, rows


def _scale_rows(dim: int) -> tuple[list[dict], str]:
    """The simulate_scale results as bench_index rows, and a note saying where they come from."""
    if not SCALE_RESULTS.exists():
        return [], (
            "No 2M-vector row: `benchmarks/simulate_scale.py` has not been run on this machine "
            "yet (`python benchmarks/run.py --scale` runs it first)."
        )
    r = json.loads(SCALE_RESULTS.read_text(encoding="utf-8"))
    peaks = r["peaks"]
    build_added = peaks["build"]["rss_anon"] - peaks.get("start", {}).get("rss_anon", 0)
    params = ", ".join(f"{k}={v}" for k, v in r["search_params"].items())
    common = {"n": r["n"], "dim": r["dim"], "queries": r["queries"]}
    rows = [
        {**common, "method": "faiss exact search (faiss.knn, chunked over the memmap)",
         "build_s": None, "search_s": r["exact_s"], "x_exact_time": 1.0, "recall@1": 1.0,
         "reference": True, "index_bytes": None, "peak_rss_added": None},
        {**common, "method": f"build_index({r['factory_requested']!r}) -> {r['factory']}",
         "params": params, "build_s": r["build_s"], "search_s": r["search_s"],
         "x_exact_time": r["search_s"] / r["exact_s"], "recall@1": r["recall_at_1"],
         "tuned_recall": r.get("tuned_recall"), "index_bytes": r["index_bytes_approx"],
         "peak_rss_added": build_added},
    ]  # fmt: skip
    note = (
        f"Rows at N = {r['n']:,} come from `benchmarks/simulate_scale.py` (run {r['date']}, "
        f"{r['dim']}-d, {r['queries']:,} held-out queries, load average "
        f"{_load(r.get('loadavg_start'))} at its start), not from this run: vectors streamed "
        "to a `.npy` memmap, the index built from the memmap, exact search chunk by chunk; "
        "there its exact search reads the memmap from disk/page cache (no prebuilt flat index), "
        "index MB is approximate (codes + ids + centroids) and peak RSS is the heap (RssAnon) "
        "added while building. No numpy brute-force row at that size. See docs/scaling.md."
    )
    if r["dim"] != dim:
        note += f" Note the dimension differs from the rows above ({r['dim']} vs {dim})."
    return rows, note


def table_index(cfg: dict) -> tuple[str, list[dict]]:
    m = importlib.import_module("bench_index")
    rows = m.run(**cfg)
    dim = rows[0]["dim"]
    scale_rows, note = _scale_rows(dim)
    sizes = ", ".join(f"{n:,}" for n in sorted({r["n"] for r in rows}))
    text = (
        f'`build_index` (`"auto"` and factory strings; nprobe / efSearch tuned by build_index '
        f"for an estimated recall@1 of 0.95) against faiss exact search (`IndexFlatIP`) and numpy "
        f"brute force (chunked matrix product + argpartition), on clustered unit vectors "
        f"({dim}-d) read from a float32 memmap, {rows[0]['queries']:,} held-out queries, k=10, "
        f"{rows[0]['threads']} threads. Sizes measured in this run: {sizes} (capped to fit the "
        "time budget of the default run on 2 cores). recall@1 is against exact search (the "
        "exact rows are that reference: —); `—` also marks what a method does not have or what "
        "was not measured (numpy brute force: build, index, memory; the 2M exact row: build, "
        "index, memory); "
        "`tuned (LOO) recall` is build_index's own estimate on database rows.\n\n"
        + m.markdown(rows + scale_rows)
        + f"\n\n{note}"
    )
    return text, rows + scale_rows


def table_metrics(cfg: dict) -> tuple[str, list[dict]]:
    m = importlib.import_module("bench_metrics")
    rows = m.run(**cfg)
    lines = [
        f"| case | implementation | seconds (best of {cfg.get('repeats', 3)}) | x plain | value |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['impl']} | {r['seconds']:.3f} | {r['ratio']:.2f} "
            f"| {r['value']:.6f} |"
        )
    text = (
        "`rk.metrics.global_average_precision` and `mean_average_precision_at_k` against plain "
        "Python implementations of the same definitions (`sorted()` + one loop), on the same "
        "synthetic predictions (string ids as in GLDv2). `value` shows that both agree.\n\n"
        + "\n".join(lines)
    )
    return text, rows


def table_extraction(cfg: dict) -> tuple[str, list[dict]]:
    m = importlib.import_module("bench_extraction")
    rows = m.run(**cfg)
    r = rows[0]
    text = (
        f"images/s of `rk.embed.extract_embeddings` on {r['n_images']} JPEG files "
        f"({r['jpeg_sizes'][0]}-{r['jpeg_sizes'][1]} px per side, quality 90; decode with PIL, "
        f"squash-resize to {r['image_size']} px, "
        f"normalise, model) with DataLoader workers, against the same model "
        f"({r['model']}, random weights, batch {r['batch_size']}, {r['threads']} torch threads) "
        "on the same images pre-decoded into one tensor. Each side keeps its fastest of "
        f"{cfg.get('repeats', 2)} alternating passes. `max abs diff` is to the model-only "
        "embeddings (0 = the pipeline feeds the model the very same tensors; draft decoding "
        "changes pixels slightly). Target: the pipeline reaches >= 0.9 of model-only speed. On "
        "a 2-core machine the decode workers take CPU time from the model's own threads, so "
        "more workers are not always faster.\n\n" + m.markdown(rows) + "\n\n" + m.verdict(rows)
    )
    return text, rows


def table_rerank(cfg: dict) -> tuple[str, list[dict]]:
    m = importlib.import_module("bench_rerank")
    rows = m.run(**cfg)
    text = (
        "`rk.rerank.DistractorReranker` (query penalty = mean of the top-k cosine similarities "
        "to a set of D distractor images) against one exact faiss search of the same Q queries "
        "over the same D vectors (`IndexFlatIP`, top k+1, what the penalty needs). Random unit "
        "vectors (cost does not depend on the data), best of "
        f"{cfg.get('repeats', 3)}. The neighbour-penalty variant also scores each of the 10 "
        "database neighbours of every query against the distractors (10 Q distinct "
        "neighbours).\n\n" + m.markdown(rows)
    )
    return text, rows


TITLES: dict[str, tuple[str, str, Callable[[dict], tuple[str, list[dict]]]]] = {
    "mining": ("1. Batch-hard mining + triplet loss vs pytorch-metric-learning",
               "bench_mining.py", table_mining),
    "index": ("2. build_index vs faiss exact search and numpy brute force", "bench_index.py",
              table_index),
    "metrics": ("3. Metrics vs plain implementations", "bench_metrics.py", table_metrics),
    "extraction": ("4. Extraction: whole pipeline vs the model alone", "bench_extraction.py",
                   table_extraction),
    "rerank": ("5. Distractor reranking vs one exact search", "bench_rerank.py", table_rerank),
}  # fmt: skip


def render(
    info: dict, sections: list[dict], preset: str, load_end: Any, total_s: float
) -> dict[str, str]:
    """run.py's sections of the document: ``run_header`` and one ``run_<table>`` per table run.

    Only these sections are replaced in the document; the ones other scripts write stay as they
    are, and so do the tables of run.py this run left out (``--only``).
    """
    v = info["versions"]
    names = [s["name"] for s in sections]
    if names == list(TABLES):
        scope = "Every table of run.py below was measured in this one run"
    else:
        scope = (
            f"The tables {', '.join(names)} were measured in this run (`--only`; the other "
            "tables of run.py are from an earlier run, on the date their footnote gives)"
        )
    header = [
        "<!-- Generated by `python benchmarks/run.py`: do not edit figures by hand; rerun it. -->",
        "",
        f"Generated {info['date']} by `python benchmarks/run.py"
        + ("" if preset == "default" else f" --preset {preset}")
        + ("" if names == list(TABLES) else f" --only {' '.join(names)}")
        + f"` in {total_s / 60:.1f} min. {scope}, its "
        "sides alternating or back to back on the same data with the same thread counts.",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cpus']} logical CPUs ({info['cpus_usable']} usable by this "
        f"process); RAM {info['ram']}; {info['os']}, Python {info['python']}",
        f"- GPU: {info['gpu'] or 'none (all figures are CPU)'}",
        f"- torch {v['torch']} ({info['torch_threads']} threads), torchvision {v['torchvision']}, "
        f"faiss {v['faiss']} ({info['faiss_threads']} OpenMP threads), pytorch-metric-learning "
        f"{v['pytorch-metric-learning']}, numpy {v['numpy']}, pillow {v['pillow']}, "
        f"retrieval_kit {v['retrieval_kit']}",
        f"- Load average (1 / 5 / 15 min) at the start: {_load(info['loadavg'])}; at the end: "
        f"{_load(load_end)}. The machine was shared with other jobs while this ran, so absolute "
        "times are pessimistic and somewhat noisy; the ratios compare sides measured "
        "side by side and are the figures to read.",
    ]
    out = {"run_header": "\n".join(header)}
    for s in sections:
        lines = [f"## {s['title']}", ""]
        lines.append(
            f"Compared: {s['text']}" if s["ok"] else f"**Failed in this run**: `{s['error']}`"
        )
        lines += [
            "",
            f"_Reproduce this table alone: `python benchmarks/{s['script']} --help`; "
            f"this section took {s['seconds']:.0f} s on {info['date'][:10]}._",
        ]
        out[f"run_{s['name']}"] = "\n".join(lines)
    return out


def run_tables(preset: str, only: Any = TABLES) -> list[dict]:
    """Run the tables of ``preset`` named in ``only``; one dict per table (title, text, rows...).

    A table that raises is recorded (``ok=False``, ``error``) and the others still run.
    """
    sections = []
    for name in TABLES:
        if name not in only:
            continue
        title, script, fn = TITLES[name]
        print(f"[run.py] {title} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        section = {"name": name, "title": title, "script": script, "ok": True}
        try:
            section["text"], section["rows"] = fn(dict(PRESETS[preset][name]))
        except Exception as e:  # record the failure in the document and go on with the rest
            traceback.print_exc()
            section.update(ok=False, error=f"{type(e).__name__}: {e}")
        section["seconds"] = time.perf_counter() - t
        print(f"[run.py]   {section['seconds']:.0f} s", file=sys.stderr, flush=True)
        sections.append(section)
    return sections


def main(argv: list[str] | None = None) -> list[str]:
    """Run the tables, write the document; returns the titles of the tables that failed."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="same as --preset quick")
    p.add_argument("--preset", choices=sorted(PRESETS), default="default")
    p.add_argument("--only", nargs="+", choices=TABLES, default=list(TABLES))
    p.add_argument("--scale", action="store_true", help="run simulate_scale.py first")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    a = p.parse_args(argv)
    preset = "quick" if a.quick else a.preset
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if a.scale:
        importlib.import_module("simulate_scale").main([])
    t_total = time.perf_counter()
    info = machine_info()
    sections = run_tables(preset, a.only)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    doc = render(info, sections, preset, load_end, time.perf_counter() - t_total)
    out = Path(a.out)
    write_sections(out, doc)  # only run.py's own sections: the other scripts' ones stay
    print("\n\n".join(doc.values()))
    failed = [s["title"] for s in sections if not s["ok"]]
    if failed:
        print(f"[run.py] FAILED: {failed}", file=sys.stderr)
    print(f"[run.py] wrote {out}", file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
