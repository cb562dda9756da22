"""Runs stages in order, skipping those whose outputs are complete, and records their timings."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from retrieval_kit._io import atomic_write_json, atomic_write_text

from .config import Config, config_to_dict, section_hash
from .context import Context
from .data_stages import stage_clean, stage_prepare, stage_split
from .eval_stages import (
    stage_embed,
    stage_evaluate,
    stage_index,
    stage_predict,
    stage_submit,
    stage_visualize,
)
from .state import StageMarker
from .train_stage import stage_train

__all__ = ["STAGES", "run_stages", "save_config"]

logger = logging.getLogger(__name__)

StageFn = Callable[[Context], "tuple[list[Path], dict[str, Any]]"]

#: stage -> (function, config sections it depends on, stages it reads from)
STAGES: dict[str, tuple[StageFn, tuple[str, ...], tuple[str, ...]]] = {
    "prepare": (stage_prepare, ("data",), ()),
    "clean": (stage_clean, ("clean",), ("prepare",)),
    "split": (stage_split, ("split",), ("clean",)),
    "train": (stage_train, ("seed", "model", "train"), ("split",)),
    "embed": (stage_embed, ("model", "embed"), ("split", "train")),
    "index": (stage_index, ("index",), ("split", "embed")),
    "predict": (stage_predict, ("predict", "evaluate"), ("split", "embed", "index")),
    "evaluate": (stage_evaluate, ("evaluate",), ("split", "predict")),
    "visualize": (stage_visualize, ("seed", "visualize"), ("split", "predict", "evaluate")),
    "submit": (stage_submit, ("submit",), ("split", "predict")),
}


def save_config(config: Config, out: Path) -> Path:
    """Write the config actually used to ``out/config.yaml`` (atomically)."""
    path = out / "config.yaml"
    text = "# The configuration this run used (written by run.py).\n" + yaml.safe_dump(
        config_to_dict(config), sort_keys=False
    )
    previous = path.read_text(encoding="utf-8") if path.is_file() else None
    if previous is not None and previous != text:
        logger.info("configuration differs from the previous run's %s; updating it", path)
    if previous != text:
        atomic_write_text(path, text)
    return path


def run_stages(
    config: Config,
    out: Path,
    stages: Sequence[str],
    *,
    force: bool = False,
    progress: bool = True,
    require_upstream: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in pipeline order; return ``{stage: {"status", "seconds", "info"}}``.

    A stage is skipped when its completion marker is current (see :class:`StageMarker`), unless
    ``force``. With ``require_upstream`` a stage whose inputs are not complete is an error naming
    the stage to run first.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx = Context(config, out, Context.resolve_device(config.device), progress=progress)
    report: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        if name not in stages:
            continue
        fn, sections, upstream = STAGES[name]
        marker = StageMarker(out, name)
        chash = section_hash(config, *sections)
        for up in upstream:
            up_hash = section_hash(config, *STAGES[up][1])
            why = StageMarker(out, up).why_incomplete(up_hash, STAGES[up][2])
            if why is not None and require_upstream:
                raise RuntimeError(
                    f"stage {name!r} needs stage {up!r}, which is not complete ({why}); "
                    f"run: run.py {up} --config ... --out {out}"
                )
        why = marker.why_incomplete(chash, upstream)
        if why is None and not force:
            prev = marker.read() or {}
            logger.info("stage %-9s complete, skipped (use --force to redo)", name)
            report[name] = {
                "status": "skipped",
                "seconds": prev.get("seconds"),
                "info": prev.get("info", {}),
            }
            continue
        logger.info("stage %-9s running (%s)", name, "forced" if why is None else why)
        marker.invalidate()  # from here until the new marker is written the stage is incomplete
        ctx.force = force
        start = time.perf_counter()
        outputs, info = fn(ctx)
        seconds = time.perf_counter() - start
        if outputs or name != "train":  # train on a non-main torchrun rank writes nothing
            marker.write(chash, outputs, upstream=upstream, seconds=seconds, info=_plain(info))
        logger.info("stage %-9s done in %.1f s", name, seconds)
        report[name] = {"status": "ran", "seconds": round(seconds, 3), "info": info}
        _update_timings(out, name, seconds)
    return report


def _update_timings(out: Path, stage: str, seconds: float) -> None:
    path = out / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(seconds, 3)
    atomic_write_json(path, timings)


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
