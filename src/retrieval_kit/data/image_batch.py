"""A collated batch that keeps failed items apart instead of crashing or zero-filling."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from retrieval_kit.data.failed_item import FailedItem

__all__ = ["ImageBatch"]


class ImageBatch(NamedTuple):
    """What :func:`collate_images` returns.

    Attributes:
        images: ``(G, C, H, W)`` tensor of the G items that loaded (empty if none did).
        targets: their labels (a tensor when the labels are numbers, else a list).
        rows: ``(G,)`` int64 tensor, the dataset rows of those items.
        failures: a :class:`FailedItem` ``(row, path, reason)`` for each item that did not
            load, in batch order.

    Example:
        >>> batch = ImageBatch(torch.zeros(0, 3, 4, 4), [], torch.zeros(0, dtype=torch.long), [])
        >>> len(batch.failures)
        0
    """

    images: torch.Tensor
    targets: Any
    rows: torch.Tensor
    failures: list[FailedItem]
