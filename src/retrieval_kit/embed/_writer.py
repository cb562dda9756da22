"""Rows into an in-memory array or a ``.npy`` memmap written atomically (internal)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from retrieval_kit.embed.shards import finish_tmp, meta_path, tmp_path


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
