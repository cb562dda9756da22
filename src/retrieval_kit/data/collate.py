"""Collate for :class:`ImageListDataset` batches that may contain :class:`FailedItem` markers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import default_collate

from retrieval_kit.data.failed_item import FailedItem
from retrieval_kit.data.image_batch import ImageBatch

__all__ = ["collate_images"]


def collate_images(batch: Sequence[Any]) -> ImageBatch:
    """Stack the items that loaded and report the ones that did not.

    Each item is ``(image, target)`` or ``(image, target, row)`` (as :class:`ImageListDataset`
    returns with ``return_row=True``), or a :class:`FailedItem`; ``rows`` is -1 for 2-tuples.
    Failed items are left out of ``images`` (never zero-filled, never silently dropped: they are
    listed in ``failures`` with their row).

    Args:
        batch: the list of items a ``DataLoader`` hands to its ``collate_fn``.

    Returns:
        An :class:`ImageBatch`.

    Example:
        >>> items = [(torch.ones(3, 2, 2), 5, 0), FailedItem(1, "x.jpg", "not an image")]
        >>> out = collate_images(items)
        >>> out.images.shape, out.rows.tolist(), out.failures
        (torch.Size([1, 3, 2, 2]), [0], [FailedItem(row=1, path='x.jpg', reason='not an image')])
    """
    good = [item for item in batch if not isinstance(item, FailedItem)]
    failures = [f.without_error() for f in batch if isinstance(f, FailedItem)]
    if good:
        images = torch.stack([item[0] for item in good])
        targets = default_collate([item[1] for item in good])
        rows = torch.as_tensor(
            [int(item[2]) if len(item) > 2 else -1 for item in good], dtype=torch.long
        )
    else:
        images = torch.zeros(0)
        targets = []
        rows = torch.zeros(0, dtype=torch.long)
    return ImageBatch(images, targets, rows, failures)
