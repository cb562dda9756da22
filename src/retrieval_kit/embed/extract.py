"""Batched embedding extraction: paths or a Dataset in, one float32 row per input, in input order.

Large sets go straight to a ``.npy`` memmap on disk (written to a temporary file and renamed when
complete), so memory stays at one batch whatever the number of images. Under torch.distributed
each rank embeds a contiguous share into its own shard; :func:`merge_shards` puts them back
together. The options live in :class:`ExtractionConfig`; the work is done by :class:`Extractor`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import Dataset

from retrieval_kit.data.failed_item import FailedItem
from retrieval_kit.embed.extraction_config import ExtractionConfig
from retrieval_kit.embed.extractor import Extractor

__all__ = ["extract_embeddings"]


def extract_embeddings(
    model: nn.Module,
    images: Sequence[str | os.PathLike] | Dataset,
    *,
    config: ExtractionConfig | None = None,
    out: str | os.PathLike | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    **options: Any,
) -> tuple[np.ndarray, list[FailedItem]]:
    """Embed images with ``model``: one float32 row per input, in input order.

    Args:
        model: maps a ``(B, 3, H, W)`` batch to ``(B, D)``. Put in eval mode for the call (its
            previous mode is restored) and run under ``torch.inference_mode``.
        images: image paths, or a ``Dataset`` whose items are an image tensor or a tuple starting
            with one (its own transform is used; the resize options are then ignored). Items of
            different shapes are batched shape by shape.
        config: an :class:`ExtractionConfig`; default all defaults.
        out: a ``.npy`` path: write a float32 memmap there instead of returning an in-memory array
            (written in place in a temporary file, renamed when complete; a ``out + ".json"``
            sidecar with the failures is written last). Under several ranks each rank writes
            ``shard_path(out, rank, world_size)``; merge them with ``merge_shards``.
        rank, world_size: embed only the contiguous share ``shard_range(N, rank, world_size)`` of
            the rows. Default: torch.distributed's rank and world size when it is initialised,
            else all rows.
        **options: any :class:`ExtractionConfig` field, overriding ``config``: ``resize``
            (``"long_side"`` default, ``"squash"``, ``"center_crop"``), ``image_size``,
            ``scales``, ``scale_power``, ``batch_size`` (32), ``num_workers`` (0), ``shape_step``,
            ``on_error`` (``"raise"`` | ``"skip"``), ``progress``, ``device``, ``amp``,
            ``max_pixels``, ``chunk_size``, ``overwrite``. An unknown name is a ``TypeError``.

    Returns:
        ``(emb, failed)``: ``emb`` is ``(n, D)`` float32 (a read-only ``np.memmap`` of ``out`` when
        given), where ``n`` is the number of inputs, or this rank's share; ``failed`` is a list of
        ``(row, path, reason)`` with global row numbers, sorted by row.

    Raises:
        ImageLoadError: (``on_error="raise"``) the first unreadable image, by row.
        FileExistsError: ``out`` exists and ``overwrite`` is False.

    Example:
        >>> model = rk.backbones.create_backbone("resnet18")  # doctest: +SKIP
        >>> emb, failed = extract_embeddings(model, paths, on_error="skip")  # doctest: +SKIP
        >>> emb.shape  # doctest: +SKIP
        (1000, 512)
        >>> ms = ExtractionConfig(image_size=512, scales=(1, 2**-0.5, 2**0.5))
        >>> emb, _ = extract_embeddings(model, paths, config=ms)  # doctest: +SKIP
    """
    config = (config or ExtractionConfig()).replace(**options)
    return Extractor(model, config).run(images, out=out, rank=rank, world_size=world_size)
