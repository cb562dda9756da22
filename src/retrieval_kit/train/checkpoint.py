"""Safe, atomic training checkpoints: save, load (``weights_only=True``), find the latest.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)``: a crafted file cannot run code on load. It is written through
``retrieval_kit._io.atomic_write`` (temporary file, fsync, rename), so a process killed mid-write
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import inspect
import logging
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval_kit._version import __version__
from retrieval_kit.io import atomic_write
from retrieval_kit.train.distributed import unwrap_model

__all__ = ["CHECKPOINT_FORMAT", "latest_checkpoint", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "retrieval_kit.checkpoint/1"


def _rng_state() -> dict[str, Any]:
    # numpy's state holds an ndarray, which weights_only refuses: store a tensor + plain values.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning(
                "checkpoint has CUDA RNG states for %d devices, this machine has %d: not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


def _sampler_state(sampler: Any, epoch: int, step: int) -> Any:
    # A DataLoader (with workers) draws batches ahead of the loop, so the sampler's own count can
    # exceed what was trained on; rk.samplers accept the true count (``batches_yielded``).
    if getattr(sampler, "epoch", None) == epoch:
        params = inspect.signature(sampler.state_dict).parameters
        if "batches_yielded" in params:
            return sampler.state_dict(batches_yielded=step)
    return sampler.state_dict()


_PLAIN = (type(None), bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)


def _check_plain(obj: Any, where: str) -> None:
    # Refuse at save time what weights_only would refuse at load time (numpy scalars, custom
    # classes...), so a run never writes a checkpoint it cannot resume from.
    if isinstance(obj, _PLAIN):
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__name__}; checkpoints hold only tensors, "
        f"numbers, strings, None and lists/tuples/dicts of them (convert it: int(x), x.tolist()...)"
    )


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    sampler: Any | None = None,
    scaler: Any | None = None,
    loss: torch.nn.Module | None = None,
    epoch: int,
    step: int = 0,
    config: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a training checkpoint atomically.

    Saves the state dicts of ``model`` (unwrapped from DDP), ``optimizer``, ``scheduler``,
    ``scaler`` (AMP ``GradScaler``), ``loss`` (a loss with parameters or state of its own: an
    ArcFace head, its partial-FC generator) and the sampler's state, plus ``epoch``, ``step``, the
    ``config`` and ``extra`` dicts, this process's RNG states (Python, numpy, torch CPU and CUDA)
    and the library and torch versions. Convention: ``epoch`` is the epoch in progress and
    ``step`` the number of its batches already trained on; at the end of epoch ``e`` save
    ``epoch=e + 1, step=0``. Under torch.distributed call it on rank 0 only
    (``rk.train.distributed.is_main_process()``).

    Args:
        path: destination file (its folder is created).
        model, optimizer, scheduler, sampler, scaler, loss: objects whose state is saved
            (``None`` skips).
        epoch: epoch in progress (see above).
        step: batches of ``epoch`` already done (a mid-epoch checkpoint), 0 at epoch boundaries.
            When the sampler is in ``epoch`` and its ``state_dict`` takes ``batches_yielded``
            (``rk.samplers``), ``step`` is saved as its position: the batches trained on, not
            those a ``DataLoader`` already drew ahead.
        config: the run's configuration (plain types only: it must load with ``weights_only``).
        extra: anything else of plain types (metrics, best score...).

    Returns:
        ``path`` as a ``Path``.

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> save_checkpoint("ckpt.pt", model=net, epoch=1)  # doctest: +SKIP
    """
    if int(epoch) != epoch or epoch < 0 or int(step) != step or step < 0:
        raise ValueError(f"epoch and step must be non-negative integers, got {epoch!r}, {step!r}")
    sampler_state = _sampler_state(sampler, epoch, step) if sampler is not None else None
    for name, value in (("config", config), ("extra", extra), ("sampler state", sampler_state)):
        _check_plain(value, name)
    state: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is not weights_only-safe
        "epoch": int(epoch),
        "step": int(step),
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "sampler": sampler_state,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "loss": unwrap_model(loss).state_dict() if loss is not None else None,
        "config": config,
        "extra": extra,
        "rng": _rng_state(),
    }
    path = Path(path)
    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    logger.info("saved checkpoint %s (epoch %d, step %d)", path, epoch, step)
    return path


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    sampler: Any | None = None,
    scaler: Any | None = None,
    loss: torch.nn.Module | None = None,
    map_location: str | torch.device | None = "cpu",
    restore_rng: bool = True,
    strict: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint written by ``save_checkpoint`` safely and restore the given objects.

    The file is read with ``torch.load(weights_only=True)``: only tensors and plain containers are
    accepted, so a crafted pickle cannot run code; such a file raises ``ValueError`` naming it.

    Args:
        path: the checkpoint file.
        model, optimizer, scheduler, sampler, scaler, loss: objects to restore in place (``None``
            skips; a DDP-wrapped model is unwrapped). A state the file lacks raises ``KeyError``
            (checkpoints written before ``loss`` existed hold none).
        map_location: where tensors are loaded (``"cpu"`` by default; the optimizer moves its state
            to its parameters' device itself).
        restore_rng: also restore the Python, numpy and torch RNG states, so a resumed run draws the
            same random numbers as the uninterrupted one.
        strict: passed to ``model.load_state_dict`` and ``loss.load_state_dict``.

    Returns:
        The checkpoint dict (``epoch``, ``step``, ``config``, ``extra``, ``version``, states).

    Example:
        >>> ckpt = load_checkpoint("ckpt.pt", model=net, optimizer=opt)  # doctest: +SKIP
        >>> start_epoch, start_step = ckpt["epoch"], ckpt["step"]  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refusing to load {path}: it is not a plain checkpoint of tensors and containers "
            f"(weights_only=True rejected it, so nothing in it was executed): {e}"
        ) from e
    except (RuntimeError, EOFError) as e:
        raise ValueError(
            f"{path} is not a readable torch checkpoint (truncated or corrupt?): {e}"
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path} is not a retrieval_kit checkpoint (format {found!r}, expected "
            f"{CHECKPOINT_FORMAT!r})"
        )
    for name, obj in (
        ("optimizer", optimizer),
        ("scheduler", scheduler),
        ("sampler", sampler),
        ("scaler", scaler),
        ("loss", loss),
    ):
        if obj is not None and state.get(name) is None:
            raise KeyError(f"{path} holds no {name} state, but a {name} was given to restore")
    if model is not None:
        unwrap_model(model).load_state_dict(state["model"], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    if sampler is not None:
        sampler.load_state_dict(state["sampler"])
    if scaler is not None:
        scaler.load_state_dict(state["scaler"])
    if loss is not None:
        unwrap_model(loss).load_state_dict(state["loss"], strict=strict)
    if restore_rng:
        _restore_rng(state["rng"])
    logger.info("loaded checkpoint %s (epoch %d, step %d)", path, state["epoch"], state["step"])
    return state


def latest_checkpoint(folder: str | os.PathLike, pattern: str = "*.pt") -> Path | None:
    """The most recently written checkpoint in ``folder`` (``None`` when there is none).

    Hidden files (such as ``atomic_write``'s unfinished ``.name.tmp`` files) are ignored; ties in
    modification time are broken by name.

    Example:
        >>> latest_checkpoint("runs/demo")  # doctest: +SKIP
        PosixPath('runs/demo/last.pt')
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = [p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith(".")]
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime_ns, p.name))
