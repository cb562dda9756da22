"""Runs stages in order, skipping those whose outputs are complete, and records their timings.

Under ``torchrun`` every process runs this loop together: rank 0 decides which stages to run and
runs them (writing outputs and markers) while the other ranks wait for it, except ``train``, which
every rank runs (data-parallel) and rank 0 records. Stage modules (torch, torchvision, faiss) are
imported when a stage first runs, so ``run.py --help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, config_to_dict, section_hash
from .state import StageMarker

if TYPE_CHECKING:
    from .context import Context

__all__ = ["DISTRIBUTED_STAGES", "STAGES", "run_stages", "save_config"]

logger = logging.getLogger(__name__)


class _LazyStage:
    """A stage function imported from its module on first call."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, ctx: Context) -> tuple[list[Path], dict[str, Any]]:
        fn: Callable[[Context], tuple[list[Path], dict[str, Any]]] = getattr(
            importlib.import_module(f".{self.module}", __package__), self.name
        )
        return fn(ctx)

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


def _stage(module: str) -> Callable[[str], _LazyStage]:
    return lambda name: _LazyStage(module, f"stage_{name}")


_data, _train, _eval = _stage("data_stages"), _stage("train_stage"), _stage("eval_stages")

#: stage -> (function, config sections it depends on, stages it reads from)
STAGES: dict[str, tuple[Callable[[Context], Any], tuple[str, ...], tuple[str, ...]]] = {
    "prepare": (_data("prepare"), ("data",), ()),
    "clean": (_data("clean"), ("clean",), ("prepare",)),
    "split": (_data("split"), ("split",), ("clean",)),
    "train": (_train("train"), ("seed", "model", "train"), ("split",)),
    "embed": (_eval("embed"), ("model", "embed"), ("split", "train")),
    "index": (_eval("index"), ("index",), ("split", "embed")),
    "predict": (_eval("predict"), ("predict", "evaluate"), ("split", "embed", "index")),
    "evaluate": (_eval("evaluate"), ("evaluate",), ("split", "predict")),
    "visualize": (_eval("visualize"), ("seed", "visualize"), ("split", "predict", "evaluate")),
    "submit": (_eval("submit"), ("submit",), ("split", "predict")),
}

#: stages every torchrun rank runs; rank 0 alone runs the others.
DISTRIBUTED_STAGES = frozenset({"train"})


def save_config(config: Config, out: Path) -> Path:
    """Write the config actually used to ``out/config.yaml`` (atomically)."""
    import yaml

    from retrieval_kit.io import atomic_write_text

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


def join_process_group(config: Config) -> Any:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the process group; return the device to use.

    Each rank gets ``cuda:LOCAL_RANK`` when the config's device is CUDA (or ``auto`` with CUDA
    present), else the CPU and the gloo backend. Outside torchrun: the config's device.
    """
    from .context import Context

    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return Context.resolve_device(config.device)
    import retrieval_kit as rk

    choice = None if config.device == "auto" else config.device.split(":")[0]
    return rk.train.distributed.init_distributed(device=choice).device


class _Ranks:
    """Rank 0 decides and announces; the others follow (everything is a no-op on one process)."""

    def __init__(self) -> None:
        import retrieval_kit as rk

        self.dist = rk.train.distributed
        self.world_size = self.dist.get_world_size()
        self.main = self.dist.is_main_process()

    def share(self, obj: Any) -> Any:
        """``obj`` from rank 0, on every rank (also a barrier: everyone waits for rank 0)."""
        if self.world_size == 1:
            return obj
        import torch.distributed

        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]


def _decide(
    config: Config, out: Path, name: str, force: bool, require_upstream: bool
) -> tuple[str, Any]:
    """("error", message) | ("skip", previous marker) | ("run", why) for stage ``name``."""
    _, sections, upstream = STAGES[name]
    for up in upstream:
        up_hash = section_hash(config, *STAGES[up][1])
        why = StageMarker(out, up).why_incomplete(up_hash, STAGES[up][2])
        if why is not None and require_upstream:
            return "error", (
                f"stage {name!r} needs stage {up!r}, which is not complete ({why}); "
                f"run: run.py {up} --config ... --out {out}"
            )
    why = StageMarker(out, name).why_incomplete(section_hash(config, *sections), upstream)
    if why is None and not force:
        return "skip", StageMarker(out, name).read() or {}
    return "run", "forced" if why is None else why


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
    the stage to run first. Under ``torchrun`` the process group is joined here (leave it with
    ``rk.train.distributed.destroy_distributed()``); see the module docstring.
    """
    import torch

    from .context import Context

    out = Path(out)
    device = join_process_group(config)
    ranks = _Ranks()
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    ctx = Context(config, out, device, progress=progress and ranks.main, force=force)
    report: dict[str, dict[str, Any]] = {}
    for name in STAGES:
        if name not in stages:
            continue
        fn, sections, upstream = STAGES[name]
        decision, detail = ranks.share(
            _decide(config, out, name, force, require_upstream) if ranks.main else None
        )
        if decision == "error":
            raise RuntimeError(detail)
        if decision == "skip":
            logger.info("stage %-9s complete, skipped (use --force to redo)", name)
            report[name] = {
                "status": "skipped",
                "seconds": detail.get("seconds"),
                "info": detail.get("info", {}),
            }
            continue
        logger.info("stage %-9s running (%s)", name, detail)
        if ranks.main:
            # From here until the new marker is written the stage is incomplete.
            StageMarker(out, name).invalidate()
        start = time.perf_counter()
        outputs, info, failure = [], {}, None
        if ranks.main or name in DISTRIBUTED_STAGES:
            try:
                outputs, info = fn(ctx)
            except BaseException as e:
                if ranks.world_size == 1 or name in DISTRIBUTED_STAGES:
                    raise  # a distributed stage's peers fail in their collectives
                failure = e
        seconds = time.perf_counter() - start
        if ranks.main and failure is None:
            StageMarker(out, name).write(
                section_hash(config, *sections),
                outputs,
                upstream=upstream,
                seconds=seconds,
                info=_plain(info),
            )
            _update_timings(out, name, seconds)
        # The others wait here for rank 0's outputs and marker (or its failure).
        error = ranks.share(None if failure is None else f"{type(failure).__name__}: {failure}")
        if failure is not None:
            raise failure
        if error is not None:
            raise RuntimeError(f"rank 0 failed in stage {name!r}: {error}")
        if not ranks.main:
            info = (StageMarker(out, name).read() or {}).get("info", {})
        logger.info("stage %-9s done in %.1f s", name, seconds)
        report[name] = {"status": "ran", "seconds": round(seconds, 3), "info": info}
    return report


def _update_timings(out: Path, stage: str, seconds: float) -> None:
    from retrieval_kit.io import atomic_write_json

    path = out / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(seconds, 3)
    atomic_write_json(path, timings)


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
