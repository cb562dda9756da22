"""Extractor: one extraction run, one job per method (load, batch by shape, forward, write).

Aspect-kept images differ in shape and cannot be stacked into one tensor. Rather than padding
(the padded border changes what every convolution near it sees, not only the pooling, so the
embedding would depend on the batch), the loaded images are regrouped by shape: a batch is
forwarded once ``batch_size`` images of one shape have arrived, so the model sees full batches at
any mix of aspect ratios, and every embedding is written to its own row, so the output keeps the
input order.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from retrieval_kit._progress import progress_bar
from retrieval_kit.backbones.data_config import DataConfig
from retrieval_kit.data.failed_item import FailedItem
from retrieval_kit.data.image_list_dataset import ImageListDataset
from retrieval_kit.data.image_load_error import ImageLoadError
from retrieval_kit.data.transforms import build_eval_transform
from retrieval_kit.embed._writer import _Writer
from retrieval_kit.embed.extraction_config import ExtractionConfig
from retrieval_kit.embed.multiscale import multiscale_embed, multiscale_power
from retrieval_kit.embed.retrieval_size import retrieval_image_size
from retrieval_kit.embed.shards import _npy_path, shard_path, shard_range, write_meta
from retrieval_kit.train.distributed import resolve_rank

__all__ = ["Extractor"]

logger = logging.getLogger(__name__)


class Extractor:
    """Embeds images with ``model`` as ``config`` says; :meth:`run` does a whole extraction.

    Args:
        model: maps a ``(B, 3, H, W)`` batch to ``(B, D)``; its ``data_config`` (mean, std,
            image_size, resize_size) builds the transform for paths.
        config: the options (:class:`ExtractionConfig`); default all defaults.

    Attributes:
        image_size: the resolved size for paths (``config.image_size`` or the backbone default).
        power: the multi-scale power-mean exponent (``config.scale_power`` or the model's GeM p).

    Example:
        >>> ex = Extractor(model, ExtractionConfig(image_size=384))  # doctest: +SKIP
        >>> emb, failed = ex.run(paths)  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, config: ExtractionConfig | None = None) -> None:
        self.model = model
        self.config = config or ExtractionConfig()
        self.power = (
            float(self.config.scale_power)
            if self.config.scale_power is not None
            else multiscale_power(model)
        )
        self._image_size: int | None = None

    @property
    def resize(self) -> str:
        """The resize mode used: ``config.resize``, except that a model whose ``data_config`` has
        ``fixed_input_size=True`` (e.g. a ViT with fixed position embeddings) is always squashed."""
        config = getattr(self.model, "data_config", None) or {}
        if self.config.resize == "long_side" and config.get("fixed_input_size"):
            return "squash"
        return self.config.resize

    @property
    def image_size(self) -> int:
        if self._image_size is None:
            if self.config.image_size is not None:
                self._image_size = self.config.image_size
            elif self.resize == "long_side":
                self._image_size = retrieval_image_size(self.model)
            else:
                self._image_size = int(_data_config(self.model)["image_size"])
        return self._image_size

    @property
    def shape_step(self) -> int:
        step = self.config.shape_step
        return step if step is not None else max(1, self.image_size // 32)

    # -- loading ---------------------------------------------------------------------------
    def dataset(self, images: Any) -> tuple[Dataset, list[str] | None]:
        """``images`` as a Dataset of tensors, and the paths when known (for error messages)."""
        if isinstance(images, Dataset):
            paths = getattr(images, "paths", None)
            return images, list(paths) if paths is not None else None
        if isinstance(images, (str, bytes, os.PathLike)):
            raise TypeError("images must be a sequence of paths or a Dataset, not a single path")
        transform = build_eval_transform(
            _data_config(self.model),
            self.image_size,
            resize=self.resize,
            step=self.shape_step,
        )
        dataset = ImageListDataset(
            list(images), transform=transform, max_pixels=self.config.max_pixels
        )
        return dataset, dataset.paths

    # -- batching --------------------------------------------------------------------------
    def loader(
        self, dataset: Dataset, start: int, stop: int, paths: list[str] | None, device: torch.device
    ) -> DataLoader:
        """Rows ``[start, stop)`` in input order, ``batch_size`` per load, grouped by shape."""
        return DataLoader(
            _Rows(dataset, start, stop, paths),
            batch_size=self.config.batch_size,
            shuffle=False,
            num_workers=self.config.num_workers,
            collate_fn=_collate,
            pin_memory=device.type == "cuda",
        )

    def batches(
        self, loader: DataLoader
    ) -> Iterator[tuple[torch.Tensor | None, list[int], list[FailedItem]]]:
        """``(images, rows, failures)``: full one-shape batches as soon as they fill up.

        Failures are yielded as they arrive (with ``images=None``), so the lowest failing row of
        a sequential loader comes first. What is left in partial batches comes out at the end.
        """
        pending: dict[tuple[int, ...], list[tuple[torch.Tensor, list[int]]]] = {}
        counts: dict[tuple[int, ...], int] = {}
        size = self.config.batch_size
        for groups, failures in loader:
            if failures:
                yield None, [], failures
            for images, rows in groups:
                shape = tuple(images.shape[1:])
                pending.setdefault(shape, []).append((images, rows))
                counts[shape] = counts.get(shape, 0) + len(rows)
                while counts[shape] >= size:
                    batch, rows_out = _take(pending[shape], size)
                    counts[shape] -= size
                    yield batch, rows_out, []
        for shape, parts in pending.items():
            if counts[shape]:
                batch, rows_out = _take(parts, counts[shape])
                yield batch, rows_out, []

    # -- forward ---------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` embeddings of a normalised batch, multi-scale when configured."""
        return multiscale_embed(self._forward, x, self.config.scales, self.power)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.model(x)
        if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[0] != x.shape[0]:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(
                f"model must return a (B, D) tensor for a batch of {x.shape[0]}, got {shape}"
            )
        return v

    # -- writing ---------------------------------------------------------------------------
    def run(
        self,
        images: Sequence[str | os.PathLike] | Dataset,
        *,
        out: str | os.PathLike | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> tuple[np.ndarray, list[FailedItem]]:
        """Extract every row (or this rank's share) into memory or ``out``.

        See :func:`~retrieval_kit.embed.extract_embeddings` for the arguments and the result.
        """
        cfg = self.config
        dataset, paths = self.dataset(images)
        num_rows = len(dataset)
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        rank, world_size = resolve_rank(rank, world_size)
        start, stop = shard_range(num_rows, rank, world_size)
        target = None
        if out is not None:
            target = _npy_path(out) if world_size == 1 else shard_path(out, rank, world_size)
            if target.exists() and not cfg.overwrite:
                raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
        device = self._device()
        loader = self.loader(dataset, start, stop, paths, device)
        writer = _Writer(stop - start, target, cfg.chunk_size)
        failed: list[FailedItem] = []
        was_training = self.model.training
        self.model.eval()
        autocast = (
            torch.autocast("cuda", dtype=torch.float16)
            if cfg.amp and device.type == "cuda"
            else contextlib.nullcontext()
        )
        try:
            with (
                torch.inference_mode(),
                autocast,
                progress_bar(
                    enabled=cfg.progress, total=stop - start, unit="img", desc="extract"
                ) as bar,
            ):
                for batch, rows, failures in self.batches(loader):
                    if failures:
                        if cfg.on_error == "raise":
                            _raise_first(failures)
                        failed.extend(f.without_error() for f in failures)
                    if rows:
                        x = batch.to(device, non_blocking=True)
                        emb = self.embed(x).float().cpu().numpy()
                        writer.write(np.asarray(rows) - start, emb)
                    bar.update(len(rows) + len(failures))
            if writer.dim is None:
                writer.allocate(self._embedding_dim(device))
            result = writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            self.model.train(was_training)

        failed.sort(key=lambda f: f.row)
        if failed:
            logger.warning(
                "%d of %d images could not be loaded (rows left zero); first: row %d %s: %s",
                len(failed),
                stop - start,
                *failed[0],
            )
        if target is not None:
            write_meta(
                target,
                num_rows_total=num_rows,
                start=start,
                stop=stop,
                dim=int(result.shape[1]),
                failed=failed,
                rank=rank,
                world_size=world_size,
            )
            result = np.load(target, mmap_mode="r")
        logger.info(
            "extracted %d embeddings (rows %d-%d of %d)", stop - start, start, stop, num_rows
        )
        return result, failed

    def _device(self) -> torch.device:
        if self.config.device is None:
            param = next(iter(self.model.parameters()), None)
            return param.device if param is not None else torch.device("cpu")
        device = torch.device(self.config.device)
        self.model.to(device)
        return device

    def _embedding_dim(self, device: torch.device) -> int:
        # Nothing loaded (every image failed, or no rows for this rank): we still owe (n, D).
        dim = getattr(self.model, "embedding_dim", None)
        if isinstance(dim, int) and dim > 0:
            return dim
        try:
            size = self.image_size
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(
                "no image could be embedded and the embedding size is unknown: give the model "
                "an embedding_dim attribute"
            ) from None
        with torch.inference_mode():
            return int(self.embed(torch.zeros(1, 3, size, size, device=device)).shape[1])


def _data_config(model: nn.Module) -> DataConfig:
    config = getattr(model, "data_config", None)
    if config is None:
        raise ValueError(
            "model has no data_config (mean, std, image_size, resize_size): give it one, or pass "
            "a Dataset with its own transform"
        )
    return DataConfig.of(config, "the model")


def _raise_first(failures: list[FailedItem]) -> None:
    first = min(failures, key=lambda f: f.row)
    if first.error is not None:
        raise first.error
    raise ImageLoadError(first.path, first.reason)


def _take(parts: list[tuple[torch.Tensor, list[int]]], n: int) -> tuple[torch.Tensor, list[int]]:
    """Pop the first ``n`` images (and rows) off a shape's queue of stacked pieces."""
    images, rows, need = [], [], n
    while need:
        piece, piece_rows = parts[0]
        if len(piece_rows) <= need:
            parts.pop(0)
            images.append(piece)
            rows += piece_rows
            need -= len(piece_rows)
        else:
            images.append(piece[:need])
            rows += piece_rows[:need]
            parts[0] = (piece[need:], piece_rows[need:])
            need = 0
    return (images[0] if len(images) == 1 else torch.cat(images)), rows


class _Rows(Dataset):
    """Rows ``[start, stop)`` of a dataset as ``(image, row)``; load errors become FailedItems."""

    def __init__(self, dataset: Dataset, start: int, stop: int, paths: list[str] | None) -> None:
        self.dataset, self.start, self.stop, self.paths = dataset, start, stop, paths

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> Any:
        row = self.start + i
        try:
            item = self.dataset[row]
        except OSError as exc:  # image and file errors; other exceptions are bugs and propagate
            return FailedItem.from_exception(row, self._path(row), exc)
        if isinstance(item, FailedItem):
            return item._replace(row=row)
        image = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"dataset item {row} must be a tensor or a tuple starting with one, got "
                f"{type(image).__name__} (give the Dataset a transform that returns tensors)"
            )
        return image, row

    def _path(self, row: int) -> str:
        return str(self.paths[row]) if self.paths is not None else f"<item {row}>"


def _collate(batch: list[Any]) -> tuple[list[tuple[torch.Tensor, list[int]]], list[FailedItem]]:
    """Stack the loaded images shape by shape (first-seen order); keep failures apart."""
    groups: dict[tuple[int, ...], tuple[list[torch.Tensor], list[int]]] = {}
    failures = []
    for item in batch:
        if isinstance(item, FailedItem):
            failures.append(item)
            continue
        image, row = item
        images, rows = groups.setdefault(tuple(image.shape), ([], []))
        images.append(image)
        rows.append(row)
    return [(torch.stack(images), rows) for images, rows in groups.values()], failures
