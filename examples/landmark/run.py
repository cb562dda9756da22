#!/usr/bin/env python
"""Google Landmark Recognition with retrieval_kit: the reproduced pipeline, stage by stage.

    python examples/landmark/run.py demo --out runs/demo          # everything, demo data
    python examples/landmark/run.py all --config examples/landmark/configs/gldv2.yaml \
        --set data.root=/data/gldv2 --out runs/gldv2
    python examples/landmark/run.py train --config examples/landmark/configs/gldv2.yaml \
        --out runs/gldv2
    python examples/landmark/run.py evaluate --out runs/gldv2     # reuses runs/gldv2/config.yaml
    torchrun --standalone --nproc_per_node=2 examples/landmark/run.py demo --out runs/demo2

A relative --config is looked up from the current folder, then from this example's folder.

Stages: prepare, clean, split, train, embed, index, predict, evaluate, visualize, submit. A stage
whose outputs are complete is skipped (``--force`` redoes it; ``--verify`` re-hashes every output
instead of checking sizes and modification times); an interrupted run picks up where it
stopped (train resumes from its last checkpoint). Under torchrun every process trains
(data-parallel) and rank 0 runs the other stages and writes every output. See README.md beside
this file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

# Light imports only: torch & co. load when a stage runs, so --help answers at once.
from landmark_pipeline.config import ConfigError, check_inputs, load_config
from landmark_pipeline.runner import STAGES, run_stages, save_config

HERE = Path(__file__).resolve().parent
DEMO_CONFIG = HERE / "configs" / "demo.yaml"

logger = logging.getLogger("landmark")


def _parse_override(text: str) -> tuple[str, object]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or "not a YAML value"
        raise argparse.ArgumentTypeError(f"--set {text}: {problem}") from None


def _find_config(path: Path) -> Path:
    """``path`` from the current folder, else from this example's folder."""
    if path.is_file() or path.is_absolute() or not (HERE / path).is_file():
        return path
    return HERE / path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=["demo", "all", *STAGES], help="what to run")
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML config (default: demo.yaml for demo, else OUT/config.yaml from an earlier run)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--force", action="store_true", help="redo the stage(s) even if complete")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="hash every output of a complete stage and compare it with its marker (slow on big "
        "runs; by default an output is hashed again only when its size or mtime changed)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        type=_parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.epochs=1 (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)

    rank = int(os.environ.get("RANK", "0") or 0)
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    logging.basicConfig(
        # Under torchrun the other ranks only warn: rank 0 tells the story.
        level=logging.DEBUG if args.verbose else logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s {f'[rank {rank}] ' if world_size > 1 else ''}"
        "%(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    config_path = args.config
    if config_path is None:
        if args.stage == "demo":
            config_path = DEMO_CONFIG
        elif (args.out / "config.yaml").is_file():
            config_path = args.out / "config.yaml"
        else:
            parser.error(f"--config is required ({args.out / 'config.yaml'} does not exist yet)")
    config_path = _find_config(config_path)
    try:
        config = load_config(config_path, dict(args.overrides))
        check_inputs(config)  # before anything is written to --out
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if config.data.root is None:
        config.data.root = str((args.out / "data").resolve())
    if rank == 0:
        args.out.mkdir(parents=True, exist_ok=True)
        save_config(config, args.out)

    stages = list(STAGES) if args.stage in ("demo", "all") else [args.stage]
    start = time.perf_counter()
    report = run_stages(
        config,
        args.out,
        stages,
        force=args.force,
        progress=not args.no_progress,
        verify=args.verify,
    )
    total = time.perf_counter() - start
    if world_size > 1:
        import retrieval_kit as rk

        rk.train.distributed.destroy_distributed()
    if args.stage in ("demo", "all") and rank == 0:
        _print_results(args.out, report, total)
    return 0


def _print_results(out: Path, report: dict, total: float) -> None:
    metrics_path = out / "metrics.json"
    if not metrics_path.is_file():
        return
    m = json.loads(metrics_path.read_text())
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [
        "",
        f"Results ({m['protocol']} queries: {m['scored_queries']}, "
        f"{m['scored_landmark_queries']} with a landmark)",
        "",
        "| model      | GAP    | GAP without reranking | top-1  | mAP@100 |",
        "|------------|--------|-----------------------|--------|---------|",
        f"| pretrained | {fmt(m['baseline_gap'])} | {fmt(m['baseline_gap_without_rerank'])}"
        f"                | {fmt(m['baseline_top1_accuracy'])} "
        f"| {fmt(m['baseline_map_at_100'])}  |",
        f"| trained    | {fmt(m['gap'])} | {fmt(m['gap_without_rerank'])}"
        f"                | {fmt(m['top1_accuracy'])} | {fmt(m['map_at_100'])}  |",
        "",
        "Stage times (s): "
        + ", ".join(
            f"{k} {v['seconds']:.1f}" for k, v in report.items() if v["seconds"] is not None
        ),
        f"This invocation: {total:.1f} s. Metrics: {metrics_path}; grids: {out / 'viz'}; "
        f"submission: {out / 'submission.csv'}",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
