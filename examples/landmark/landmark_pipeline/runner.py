"""Runs stages in order, skipping those whose outputs are complete, and records their timings.

Under ``torchrun`` every process runs this loop together: rank 0 decides which stages to run and
runs them (writing outputs and markers) while the other ranks wait for it, except the stages marked
``distributed`` (``train``), which every rank runs (data-parallel) and rank 0 records. Stage
modules (torch, torchvision, faiss) are imported when a stage first runs, so ``run.py --help``
stays fast.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, config_to_dict, section_hash
from .state import StageMarker

if TYPE_CHECKING:
    from .context import Context

__all__ = [
    "DISTRIBUTED_STAGES",
    "STAGES",
    "Stage",
    "run_stages",
    "save_config",
    "stage_config_hash",
]

logger = logging.getLogger(__name__)


StageFunction = Callable[["Context"], tuple[list[Path], dict[str, Any]]]


class _LazyStage:
    """A stage function imported from its module on first call."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, ctx: Context) -> tuple[list[Path], dict[str, Any]]:
        fn: StageFunction = getattr(
            importlib.import_module(f".{self.module}", __package__), self.name
        )
        return fn(ctx)

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage and what decides whether it must be redone.

    Attributes:
        name: the stage's name (``run.py NAME``, ``stages/NAME.done.json``).
        function: ``fn(ctx) -> (outputs, info)``; the outputs are recorded in the marker.
        sections: the config sections it depends on: a change to one redoes the stage.
        upstream: the stages whose outputs it reads: one redone makes this one stale.
        distributed: every torchrun rank runs it (data-parallel); else rank 0 alone does.

    Example:
        >>> STAGES["embed"].upstream
        ('split', 'train')
    """

    name: str
    function: StageFunction
    sections: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    distributed: bool = False

    def config_hash(self, config: Config) -> str:
        """Hash of the config sections this stage depends on (stored in its marker)."""
        return section_hash(config, *self.sections)

    def marker(self, out: Path) -> StageMarker:
        """This stage's completion marker in the run folder ``out``."""
        return StageMarker(out, self.name)


def _stages(*stages: Stage) -> dict[str, Stage]:
    return {s.name: s for s in stages}


def _lazy(module: str, name: str) -> _LazyStage:
    return _LazyStage(module, f"stage_{name}")


_DATA, _TRAIN, _EVAL = "data_stages", "train_stage", "eval_stages"

#: every stage, in pipeline order.
STAGES: dict[str, Stage] = _stages(
    Stage("prepare", _lazy(_DATA, "prepare"), ("data",)),
    Stage("clean", _lazy(_DATA, "clean"), ("clean",), ("prepare",)),
    Stage("split", _lazy(_DATA, "split"), ("split",), ("clean",)),
    Stage(
        "train", _lazy(_TRAIN, "train"), ("seed", "model", "train"), ("split",), distributed=True
    ),
    Stage("embed", _lazy(_EVAL, "embed"), ("model", "embed"), ("split", "train")),
    Stage("index", _lazy(_EVAL, "index"), ("index",), ("split", "embed")),
    Stage("predict", _lazy(_EVAL, "predict"), ("predict", "evaluate"), ("split", "embed", "index")),
    Stage("evaluate", _lazy(_EVAL, "evaluate"), ("evaluate",), ("split", "predict")),
    Stage(
        "visualize",
        _lazy(_EVAL, "visualize"),
        ("seed", "visualize"),
        ("split", "predict", "evaluate"),
    ),
    Stage("submit", _lazy(_EVAL, "submit"), ("submit",), ("split", "predict")),
)

#: stages every torchrun rank runs; rank 0 alone runs the others.
DISTRIBUTED_STAGES = frozenset(s.name for s in STAGES.values() if s.distributed)


def stage_config_hash(config: Config, name: str) -> str:
    """The config hash stage ``name`` records (e.g. to tell whether a checkpoint is resumable)."""
    return STAGES[name].config_hash(config)


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


class _Verdicts:
    """Why each stage is incomplete (None: complete), worked out once until a stage runs.

    A stage's outputs are checked when it is considered and again for every stage reading them;
    with ``verify`` each check hashes, so one run checks each stage once.
    """

    def __init__(self, out: Path, config: Config, verify: bool) -> None:
        self.out, self.config, self.verify = out, config, verify
        self._why: dict[str, str | None] = {}

    def why(self, stage: Stage) -> str | None:
        if stage.name not in self._why:
            self._why[stage.name] = stage.marker(self.out).why_incomplete(
                stage.config_hash(self.config), stage.upstream, verify=self.verify
            )
        return self._why[stage.name]

    def forget(self) -> None:
        self._why.clear()


def _decide(
    stage: Stage, verdicts: _Verdicts, force: bool, require_upstream: bool
) -> tuple[str, Any]:
    """("error", message) | ("skip", previous marker) | ("run", why) for ``stage``."""
    out = verdicts.out
    for up in stage.upstream:
        why = verdicts.why(STAGES[up])
        if why is not None and require_upstream:
            return "error", (
                f"stage {stage.name!r} needs stage {up!r}, which is not complete ({why}); "
                f"run: run.py {up} --config ... --out {out}"
            )
    why = verdicts.why(stage)
    if why is None and not force:
        return "skip", stage.marker(out).read() or {}
    return "run", "forced" if why is None else why


def run_stages(
    config: Config,
    out: Path,
    stages: Sequence[str],
    *,
    force: bool = False,
    progress: bool = True,
    require_upstream: bool = True,
    verify: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in pipeline order; return ``{stage: {"status", "seconds", "info"}}``.

    A stage is skipped when its completion marker is current (see :class:`StageMarker`), unless
    ``force``; ``verify`` compares every output with its stored SHA-256 (else size and
    modification time, and the hash only of outputs whose time moved). With
    ``require_upstream`` a stage whose inputs are not complete is an error naming the stage to
    run first. Under ``torchrun`` the process group is joined here (leave it with
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
    verdicts = _Verdicts(out, config, verify)
    for stage in STAGES.values():
        if stage.name not in stages:
            continue
        name = stage.name
        decision, detail = ranks.share(
            _decide(stage, verdicts, force, require_upstream) if ranks.main else None
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
        verdicts.forget()
        if ranks.main:
            # From here until the new marker is written the stage is incomplete.
            stage.marker(out).invalidate()
        start = time.perf_counter()
        outputs, info, failure = [], {}, None
        if ranks.main or stage.distributed:
            try:
                outputs, info = stage.function(ctx)
            except BaseException as e:
                if ranks.world_size == 1 or stage.distributed:
                    raise  # a distributed stage's peers fail in their collectives
                failure = e
        seconds = time.perf_counter() - start
        if ranks.main and failure is None:
            stage.marker(out).write(
                stage.config_hash(config),
                outputs,
                upstream=stage.upstream,
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
            info = (stage.marker(out).read() or {}).get("info", {})
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
