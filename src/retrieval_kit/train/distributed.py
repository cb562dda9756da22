"""Small helpers for data-parallel training under ``torchrun`` (``torch.distributed``).

Everything here is a no-op (rank 0 of a world of 1) when the process was not started by
``torchrun`` or ``init_distributed`` was not called, so the same script runs on one process or many.

Typical use::

    info = rk.train.distributed.init_distributed()          # reads torchrun's env vars
    model = DistributedDataParallel(model.to(info.device), device_ids=...)
    stats = rk.train.train_one_epoch(model, loader, loss_fn, miner, opt, gather_for_mining=True)
    if rk.train.distributed.is_main_process():
        rk.train.save_checkpoint(path, model=model, ...)      # rank 0 alone writes
    rk.train.distributed.barrier()
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from retrieval_kit._checks import positive_int

__all__ = [
    "DistInfo",
    "all_gather_with_grad",
    "barrier",
    "destroy_distributed",
    "gather_embeddings",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "resolve_rank",
    "unwrap_model",
]

logger = logging.getLogger(__name__)


class DistInfo(NamedTuple):
    """Where this process sits in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device


def is_distributed() -> bool:
    """True when a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes in the job (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def resolve_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the ones given, else the process group's, else ``(0, 1)``.

    Raises ``ValueError`` unless ``world_size >= 1`` and ``0 <= rank < world_size``.

    Example:
        >>> resolve_rank(), resolve_rank(1, 4)
        ((0, 1), (1, 4))
    """
    if world_size is None:
        world_size = get_world_size()
    if rank is None:
        rank = get_rank()
    world_size = positive_int(world_size, "world_size")
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ValueError(f"rank must be an int, got {rank!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size - 1}], got {rank}")
    return int(rank), world_size


def is_main_process() -> bool:
    """True on rank 0, the one process that writes checkpoints, logs and outputs."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def init_distributed(
    backend: str | None = None, *, timeout_s: float = 1800.0, device: str | None = None
) -> DistInfo:
    """Join the process group described by ``torchrun``'s environment variables.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT`` through the
    ``env://`` init method). With ``WORLD_SIZE`` unset or 1 nothing is initialised and rank 0 of 1
    is returned, so single-process runs need no special case.

    Args:
        backend: ``"nccl"``, ``"gloo"``...; default ``nccl`` when CUDA is available, else ``gloo``.
        timeout_s: collective timeout.
        device: ``"cpu"`` or ``"cuda"`` to override the choice of device; on CUDA the process uses
            ``cuda:LOCAL_RANK`` and makes it the current device.

    Returns:
        ``DistInfo(rank, world_size, local_rank, device)``.

    Example:
        >>> init_distributed().world_size  # not under torchrun
        1
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size <= 1:
        return DistInfo(0, 1, 0, dev)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world_size})")
    if not is_distributed():
        backend = backend or ("nccl" if use_cuda else "gloo")
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        logger.info("rank %d/%d joined the process group (%s)", rank, world_size, backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev)


def destroy_distributed() -> None:
    """Leave the process group (no-op when not distributed).

    Every rank waits for the others first: a rank that tears gloo down while a peer is still
    working (rank 0 writing its last checkpoint, say) can abort the peer.
    """
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel``/``DataParallel`` wrapper (else ``model``)."""
    while isinstance(
        model, (torch.nn.parallel.DistributedDataParallel, torch.nn.parallel.DataParallel)
    ):
        model = model.module
    return model


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, in rank order, with local gradients.

    Hand-written rather than PML's ``all_gather`` because that one puts the local rank first, so
    ranks see the batch in different orders; here every rank sees the batch exactly as one
    process holding the whole global batch would (rank 0's rows, then rank 1's ...), so mining
    picks the same triplets, ties included. Other ranks' rows are constants: each rank
    back-propagates into its own rows only, and the loss must be multiplied by the world size to
    give, after DDP's gradient averaging, the gradient of the loss on the global batch
    (``gather_embeddings`` users: ``train_one_epoch`` does this). Same shape on all ranks.

    Example:
        >>> all_gather_with_grad(torch.ones(2, 3)).shape  # not distributed: unchanged
        torch.Size([2, 3])
    """
    world_size = get_world_size()
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    parts[dist.get_rank()] = x  # keep the autograd graph for our own rows
    return torch.cat(parts, dim=0)


def gather_embeddings(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather ``(embeddings, labels)`` from every rank for mining over the global batch.

    See ``all_gather_with_grad``: rank order, gradients to the local rows only, so multiply the
    loss by ``get_world_size()`` before ``backward`` under DDP. Every rank must hold the same
    number of rows (samplers give each rank batches of equal size).

    Example:
        >>> e, y = gather_embeddings(torch.zeros(4, 8), torch.arange(4))  # not distributed
        >>> e.shape, y.tolist()
        (torch.Size([4, 8]), [0, 1, 2, 3])
    """
    if get_world_size() == 1:
        return embeddings, labels
    sizes = all_gather_with_grad(torch.tensor([embeddings.shape[0]], device=embeddings.device))
    if len(set(sizes.tolist())) != 1:
        raise ValueError(
            f"gather_embeddings needs the same batch size on every rank, got {sizes.tolist()}"
        )
    return all_gather_with_grad(embeddings), all_gather_with_grad(labels.to(embeddings.device))
