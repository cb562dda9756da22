"""``recalibrate_batchnorm``: exact BatchNorm running statistics over a dataset."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm

from retrieval_kit._progress import progress_bar
from retrieval_kit.train.distributed import is_distributed
from retrieval_kit.train.loop import _IMAGE_KEYS

__all__ = ["recalibrate_batchnorm"]

logger = logging.getLogger(__name__)


def _images(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        for key in _IMAGE_KEYS:  # the same batches as train_one_epoch takes
            if key in batch:
                return batch[key]
        raise KeyError(f"a dict batch needs one of the keys {_IMAGE_KEYS}, got {sorted(batch)}")
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    raise TypeError(f"expected a tensor, (images, ...) or a dict batch, got {type(batch).__name__}")


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module,
    loader: Iterable,
    *,
    modules: torch.nn.Module | Iterable[torch.nn.Module] | None = None,
    device: str | torch.device | None = None,
    all_reduce: bool | None = None,
    progress: bool = False,
) -> int:
    """Set BatchNorm running statistics to the exact moments of their inputs over ``loader``.

    A freshly initialised head's BatchNorm has running mean 0 and variance 1, so in eval mode it
    is the identity while in training mode it centres every batch: embeddings computed in eval
    mode before training (to imprint an ArcFace head, to cluster classes) then live in another
    space than the ones the loss sees. One pass over the training images fixes that.

    The whole model runs in eval mode during the pass and a hook records each chosen
    BatchNorm's input, so nothing else changes (a pretrained trunk keeps its statistics, no
    collective runs: ranks may feed different numbers of batches), and the result is the exact
    mean and unbiased variance over all rows (summed across ranks under torch.distributed, each
    rank feeding its own shard), not ``torch.optim.swa_utils.update_bn``'s average of per-batch
    estimates. Exact for BatchNorms that do not feed one another (a head's); where one chosen
    BatchNorm feeds another, the later one sees inputs normalised with the earlier one's old
    statistics: recalibrate them one at a time, front to back, or use ``update_bn``. The
    model's training mode is restored afterwards.

    Args:
        model: the network; called on each batch's images.
        loader: yields image tensors, ``(images, ...)`` or dicts with an ``"image"`` key.
        modules: the BatchNorms to recalibrate, or a sub-module whose BatchNorms are (e.g.
            ``model.head``); default every BatchNorm of ``model``.
        device: where batches go; default the device of the model's first parameter.
        all_reduce: sum the moments across ranks; default: when torch.distributed is
            initialised.
        progress: show a tqdm bar.

    Returns:
        The number of rows each statistic is over (all ranks).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
        >>> data = [torch.randn(8, 2) + 5 for _ in range(3)]
        >>> recalibrate_batchnorm(net, data, modules=net[1])
        24
        >>> bool((net[1].running_mean.abs() > 0.1).any())
        True
    """
    if modules is None:
        modules = model
    if isinstance(modules, torch.nn.Module):
        modules = [modules]
    targets = list(
        {id(m): m for top in modules for m in top.modules() if isinstance(m, _BatchNorm)}.values()
    )
    if not targets:
        raise ValueError("no BatchNorm module to recalibrate")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    sums: dict[int, list[Any]] = {}

    def hook(module: _BatchNorm, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach().double()
        dims = [d for d in range(x.ndim) if d != 1]  # every axis but the channels
        total = sums.setdefault(id(module), [0.0, 0.0, 0])
        total[0] = total[0] + x.sum(dim=dims)
        total[1] = total[1] + (x * x).sum(dim=dims)
        total[2] += x.numel() // x.shape[1]

    was_training = model.training
    handles = [m.register_forward_pre_hook(hook) for m in targets]
    try:
        model.eval()
        for batch in progress_bar(loader, enabled=progress, desc="recalibrate BatchNorm"):
            model(_images(batch).to(device, non_blocking=True))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if all_reduce is None:
        all_reduce = is_distributed()
    rows = 0
    for m in targets:
        if id(m) not in sums:
            raise ValueError(f"{type(m).__name__} saw no input: is it used by model's forward?")
        s, sq, n = sums[id(m)]
        stacked = torch.cat([s, sq, torch.tensor([float(n)], dtype=s.dtype, device=s.device)])
        if all_reduce:
            dist.all_reduce(stacked)
        channels = len(s)
        s, sq, n = stacked[:channels], stacked[channels : 2 * channels], stacked[-1].item()
        if n < 2:
            raise ValueError(f"{int(n)} row(s) seen: a variance needs at least 2")
        mean = s / n
        var = (sq - s * mean).clamp_min(0) / (n - 1)
        if m.running_mean is not None:
            m.running_mean.copy_(mean.to(m.running_mean.dtype))
            m.running_var.copy_(var.to(m.running_var.dtype))
        rows = int(n)
    logger.info("recalibrated %d BatchNorm module(s) over %d rows", len(targets), rows)
    return rows
