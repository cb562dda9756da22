"""Batched embedding extraction: paths or a Dataset in, one float32 row per input, in input order.

Large sets go straight to a ``.npy`` memmap on disk (written to a temporary file and renamed when
complete), so memory stays at one batch whatever the number of images. Under torch.distributed
each rank embeds a contiguous share into its own shard; :func:`merge_shards` puts them back
together.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm  # not tqdm.auto: its asyncio variant calls iter() twice

from retrieval_kit.data.failed_item import FailedItem
from retrieval_kit.data.image_io import DEFAULT_MAX_PIXELS
from retrieval_kit.data.image_list_dataset import ImageListDataset, _portable, _reason
from retrieval_kit.data.image_load_error import ImageLoadError
from retrieval_kit.data.transforms import build_eval_transform
from retrieval_kit.embed.shards import (
    _npy_path,
    finish_tmp,
    meta_path,
    shard_path,
    shard_range,
    tmp_path,
    write_meta,
)

__all__ = ["extract_embeddings"]

logger = logging.getLogger(__name__)

Failure = tuple[int, str, str]


def extract_embeddings(
    model: nn.Module,
    images: Sequence[str | os.PathLike] | Dataset,
    *,
    image_size: int | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    on_error: str = "raise",
    progress: bool = False,
    scales: Sequence[float] = (1.0,),
    out: str | os.PathLike | None = None,
    chunk_size: int = 65536,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    amp: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
    overwrite: bool = False,
) -> tuple[np.ndarray, list[Failure]]:
    """Embed images with ``model``: one float32 row per input, in input order.

    Args:
        model: maps a ``(B, 3, H, W)`` batch to ``(B, D)``. Put in eval mode for the call (its
            previous mode is restored) and run under ``torch.inference_mode``.
        images: image paths, or a ``Dataset`` whose items are an image tensor or a tuple starting
            with one (its own transform is used; ``image_size`` is then ignored).
        image_size: eval size for paths (squash-resize, see ``rk.data.build_eval_transform``);
            defaults to ``model.data_config["image_size"]``.
        batch_size, num_workers: DataLoader settings; workers decode and transform in parallel.
        device: where to run; default the device of the model's parameters (the model is moved
            only when ``device`` is given).
        on_error: ``"raise"``: the first unreadable file (lowest row) raises an error naming it.
            ``"skip"``: unreadable files (any ``OSError`` from loading) leave zero rows and are all
            reported in ``failed``.
        progress: show a tqdm bar.
        scales: multi-scale extraction as in cirtorch: the batch is resized by each factor
            (bilinear), embedded, the embeddings averaged and L2-normalised again. With the
            default ``(1.0,)`` the model's output is returned unchanged.
        out: a ``.npy`` path: write a float32 memmap there instead of returning an in-memory array
            (written in place in a temporary file, renamed when complete; a ``out + ".json"``
            sidecar with the failures is written last). Under several ranks each rank writes
            ``shard_path(out, rank, world_size)``; merge them with ``merge_shards``.
        chunk_size: with ``out``, rows between flushes to disk.
        max_pixels: decompression-bomb limit for each image (see ``rk.data.load_image``).
        amp: use float16 autocast on CUDA (ignored on CPU).
        rank, world_size: embed only the contiguous share ``shard_range(N, rank, world_size)`` of
            the rows. Default: torch.distributed's rank and world size when it is initialised,
            else all rows.
        overwrite: replace an existing ``out``.

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
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    scales = tuple(float(s) for s in scales)
    if not scales or any(not s > 0 for s in scales):
        raise ValueError(f"scales must be a non-empty sequence of positive numbers, got {scales}")

    dataset, paths = _as_dataset(model, images, image_size, max_pixels)
    num_rows = len(dataset)
    rank, world_size = _resolve_rank(rank, world_size)
    start, stop = shard_range(num_rows, rank, world_size)
    target = None
    if out is not None:
        target = _npy_path(out) if world_size == 1 else shard_path(out, rank, world_size)
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")

    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    else:
        device = torch.device(device)
        model.to(device)
    loader = DataLoader(
        _Rows(dataset, start, stop, paths),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    writer = _Writer(stop - start, target, chunk_size)
    failed: list[Failure] = []
    was_training = model.training
    model.eval()
    autocast = (
        torch.autocast("cuda", dtype=torch.float16)
        if amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
    try:
        with (
            torch.inference_mode(),
            autocast,
            tqdm(total=stop - start, unit="img", desc="extract", disable=not progress) as bar,
        ):
            for images_batch, rows, failures in loader:
                if failures:
                    if on_error == "raise":
                        first = min(failures, key=lambda f: f.row)
                        if first.error is not None:
                            raise first.error
                        raise ImageLoadError(first.path, first.reason)
                    failed.extend((f.row, f.path, f.reason) for f in failures)
                if len(rows):
                    x = images_batch.to(device, non_blocking=True)
                    emb = _embed(model, x, scales).float().cpu().numpy()
                    writer.write(np.asarray(rows) - start, emb)
                bar.update(len(rows) + len(failures))
        if writer.dim is None:
            writer.allocate(_embedding_dim(model, dataset, image_size, device, scales))
        result = writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        model.train(was_training)

    failed.sort(key=lambda f: f[0])
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
    logger.info("extracted %d embeddings (rows %d-%d of %d)", stop - start, start, stop, num_rows)
    return result, failed


def _embed(model: nn.Module, x: torch.Tensor, scales: tuple[float, ...]) -> torch.Tensor:
    if scales == (1.0,):
        return _check_output(model(x), x)
    total = None
    for s in scales:
        xs = (
            x
            if s == 1.0
            else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        )
        v = _check_output(model(xs), xs).float()
        total = v if total is None else total + v
    return F.normalize(total / len(scales), dim=1)


def _check_output(v: Any, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(v, torch.Tensor) or v.ndim != 2 or v.shape[0] != x.shape[0]:
        shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(
            f"model must return a (B, D) tensor for a batch of {x.shape[0]}, got {shape}"
        )
    return v


def _as_dataset(
    model: nn.Module, images: Any, image_size: int | None, max_pixels: int | None
) -> tuple[Dataset, list[str] | None]:
    if isinstance(images, Dataset):
        paths = getattr(images, "paths", None)
        return images, list(paths) if paths is not None else None
    if isinstance(images, (str, bytes, os.PathLike)):
        raise TypeError("images must be a sequence of paths or a Dataset, not a single path")
    config = getattr(model, "data_config", None)
    if config is None:
        raise ValueError(
            "model has no data_config (mean, std, image_size, resize_size): give it one, or pass "
            "a Dataset with its own transform"
        )
    transform = build_eval_transform(config, image_size)
    dataset = ImageListDataset(list(images), transform=transform, max_pixels=max_pixels)
    return dataset, dataset.paths


def _resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if (rank is None) != (world_size is None):
        raise ValueError("give both rank and world_size, or neither")
    if rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    shard_range(0, rank, world_size)  # validates
    return rank, world_size


def _embedding_dim(
    model: nn.Module, dataset: Dataset, image_size: int | None, device: torch.device, scales
) -> int:
    # Nothing loaded (every image failed, or no rows for this rank): we still owe an (n, D) array.
    dim = getattr(model, "embedding_dim", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    config = getattr(model, "data_config", None) or {}
    size = image_size or config.get("image_size")
    if size is None:
        raise RuntimeError(
            "no image could be embedded and the embedding size is unknown: give the model an "
            "embedding_dim attribute"
        )
    with torch.inference_mode():
        return int(_embed(model, torch.zeros(1, 3, size, size, device=device), scales).shape[1])


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
            return FailedItem(row, self._path(row), _reason(exc), _portable(exc))
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


def _collate(batch: list[Any]) -> tuple[torch.Tensor, list[int], list[FailedItem]]:
    good = [b for b in batch if not isinstance(b, FailedItem)]
    failures = [b for b in batch if isinstance(b, FailedItem)]
    images = torch.stack([b[0] for b in good]) if good else torch.zeros(0)
    return images, [b[1] for b in good], failures


class _Writer:
    """Rows into an in-memory array or a ``.npy`` memmap in a temporary file, allocated lazily."""

    def __init__(self, num_rows: int, target: Path | None, chunk_size: int) -> None:
        self.num_rows, self.target, self.chunk_size = num_rows, target, chunk_size
        self.dim: int | None = None
        self.array: np.ndarray | None = None
        self.tmp: str | None = None
        self.unflushed = 0

    def allocate(self, dim: int) -> None:
        self.dim = dim
        shape = (self.num_rows, dim)
        if self.target is None:
            self.array = np.zeros(shape, dtype=np.float32)
        else:
            self.tmp = tmp_path(self.target)
            # A fresh .npy is sparse zeros, so skipped rows read as zero without being written.
            self.array = np.lib.format.open_memmap(
                self.tmp, mode="w+", dtype=np.float32, shape=shape
            )

    def write(self, local_rows: np.ndarray, emb: np.ndarray) -> None:
        if self.dim is None:
            self.allocate(emb.shape[1])
        if emb.shape[1] != self.dim:
            raise ValueError(f"model returned dimension {emb.shape[1]}, earlier batches {self.dim}")
        self.array[local_rows] = emb
        self.unflushed += len(local_rows)
        if self.tmp is not None and self.unflushed >= self.chunk_size:
            self.array.flush()
            self.unflushed = 0

    def close(self) -> np.ndarray:
        if self.tmp is None:
            return self.array
        self.array.flush()
        self.array = None  # unmap before the rename
        # The sidecar marks the .npy as finished: drop a previous run's before replacing the data,
        # so a kill between the rename and the new sidecar never pairs new rows with old metadata.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(meta_path(self.target))
        finish_tmp(self.tmp, self.target)
        self.tmp = None
        return np.load(self.target, mmap_mode="r")

    def abort(self) -> None:
        self.array = None
        if self.tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
