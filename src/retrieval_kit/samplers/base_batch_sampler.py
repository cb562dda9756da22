"""Shared machinery of the epoch-based, resumable, rank-sharded batch samplers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from retrieval_kit._checks import non_negative_int, positive_int
from retrieval_kit.train.distributed import resolve_rank


class ResumePoint:
    """Where an epoch's next iteration starts, and how many batches the epoch has yielded.

    The exact-resume rule of the batch samplers, in one place: ``load_state_dict`` sets a point
    with :meth:`resume_at`; the next iteration of that epoch skips the batches before it; the
    point is used once (a second pass over the same epoch starts afresh: the seed pipeline's
    counter was never reset); ``yielded`` counts the batches handed out, for ``state_dict``.
    """

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.offset = 0
        self.yielded = 0

    def resume_at(self, epoch: int, offset: int) -> None:
        """The next iteration of ``epoch`` starts at batch ``offset``."""
        self.epoch, self.offset, self.yielded = epoch, offset, offset

    def iterate(self, epoch: int, batches: Sequence[list[int]]) -> Iterator[list[int]]:
        """``batches`` of ``epoch`` from the resume point (if it is for this epoch), counted."""
        start = self.offset if self.epoch == epoch else 0
        self.epoch, self.offset = None, 0
        self.yielded = start
        for batch in batches[start:]:
            self.yielded += 1
            yield batch

    def new_epoch(self, old: int, new: int) -> None:
        """``set_epoch``: moving to another epoch restarts the count."""
        if new != old:
            self.yielded = 0


class BaseBatchSampler(Sampler[list[int]]):
    """Base of the batch samplers: labels -> classes, epochs, resuming and rank sharding.

    A subclass fills in ``_epoch_batches(rng)``: the whole epoch's batches (lists of dataset
    rows) for all ranks together, drawn from ``rng`` only. The base class pads that list with
    extra batches (``_extra_batch``) to a multiple of ``world_size`` (or drops the tail with
    ``drop_last=True``), deals batch ``i`` to rank ``i % world_size``, and skips the batches
    already yielded when resumed from ``state_dict``. The epoch's batches depend only on
    ``seed`` and ``epoch``, so every rank computes the same list and the shards are disjoint.

    ``split_batches=True`` shares each batch instead: every rank walks the whole epoch's
    batch list and takes its contiguous ``batch_size // world_size`` rows of each batch (rank
    0 the first rows). Gathered in rank order (``train_one_epoch(gather_for_mining=True)``)
    the shares are the one-process batch, row for row, and an epoch has as many optimizer
    steps as on one process; no padding is needed, so ``drop_last`` has no effect.

    Call ``set_epoch(epoch)`` before each epoch (as with ``DistributedSampler``); without it
    every epoch repeats the same batches.
    """

    def __init__(
        self,
        labels: Sequence | np.ndarray | torch.Tensor,
        classes_per_batch: int,
        samples_per_class: int,
        seed: int = 0,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        split_batches: bool = False,
    ) -> None:
        if isinstance(labels, torch.Tensor):
            labels = labels.cpu().numpy()
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
        self.classes_per_batch = positive_int(classes_per_batch, "classes_per_batch")
        self.samples_per_class = positive_int(samples_per_class, "samples_per_class")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.rank, self.world_size = resolve_rank(rank, world_size)
        if not isinstance(split_batches, bool):
            raise ValueError(f"split_batches must be a bool, got {split_batches!r}")
        self.split_batches = split_batches
        if split_batches and self.batch_size % self.world_size:
            raise ValueError(
                f"split_batches=True shares each batch of {self.batch_size} images "
                f"(classes_per_batch={self.classes_per_batch} x samples_per_class="
                f"{self.samples_per_class}) among world_size={self.world_size} ranks: the batch "
                f"size must be divisible by the world size"
            )
        classes, class_of = np.unique(labels, return_inverse=True)
        self.classes: list = classes.tolist()  # python ints / strs, sorted
        order = np.argsort(class_of.ravel(), kind="stable")
        bounds = np.cumsum(np.bincount(class_of.ravel(), minlength=len(classes)))[:-1]
        self._rows_of_class: list[np.ndarray] = np.split(order, bounds)
        self._class_of_row = class_of.ravel()
        self.num_samples = len(labels)
        self.epoch = 0
        self._resume = ResumePoint()

    # -- to fill in -------------------------------------------------------------------------
    def _epoch_batches(self, rng: np.random.Generator) -> list[list[int]]:
        raise NotImplementedError

    def _extra_batch(self, rng: np.random.Generator) -> list[int]:
        raise NotImplementedError

    def _num_global_batches(self) -> int:
        raise NotImplementedError

    # -- helpers for subclasses -------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Images per batch: classes_per_batch x samples_per_class."""
        return self.classes_per_batch * self.samples_per_class

    def _draw_batch(self, rng: np.random.Generator, class_slots: Sequence[int]) -> list[int]:
        """K rows per class slot; a class filling c slots gets c*K rows, distinct while it can.

        A class with fewer rows than it needs contributes all of them, and the rest is drawn
        with replacement.
        """
        slots, counts = np.unique(np.asarray(class_slots), return_counts=True)
        rows: list[int] = []
        for c, count in zip(slots.tolist(), counts.tolist(), strict=True):
            pool = self._rows_of_class[c]
            need = count * self.samples_per_class
            if len(pool) >= need:
                picked = rng.choice(pool, size=need, replace=False)
            else:
                extra = rng.choice(pool, size=need - len(pool), replace=True)
                picked = np.concatenate([rng.permutation(pool), extra])
            rows.extend(picked.tolist())
        return rows

    def _chunk_classes(self, rng: np.random.Generator, class_ids: np.ndarray) -> list[np.ndarray]:
        """Shuffle ``class_ids`` into groups of P; the last group is topped up with classes
        from the same ``class_ids`` (distinct while there are enough, else repeated)."""
        p = self.classes_per_batch
        perm = rng.permutation(class_ids)
        groups = [perm[i : i + p] for i in range(0, len(perm), p)]
        last = groups[-1]
        if len(last) < p:
            others = np.setdiff1d(class_ids, last)
            fill = p - len(last)
            if len(others) >= fill:
                top_up = rng.choice(others, size=fill, replace=False)
            else:  # fewer than P classes in all: repeat them (more images each)
                top_up = rng.choice(class_ids, size=fill - len(others), replace=True)
                top_up = np.concatenate([others, top_up])
            groups[-1] = np.concatenate([last, top_up])
        return groups

    # -- Sampler API ----------------------------------------------------------------------
    def _global_batches(self) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = self._epoch_batches(rng)
        if self.split_batches:
            return batches
        remainder = len(batches) % self.world_size
        if remainder and self.drop_last:
            batches = batches[: len(batches) - remainder]
        elif remainder:
            batches += [self._extra_batch(rng) for _ in range(self.world_size - remainder)]
        return batches

    def epoch_batches(self, rank: int | None = None) -> list[list[int]]:
        """The batches of the current epoch for ``rank`` (default: this sampler's rank), from
        the start of the epoch; pure (does not advance the resume state)."""
        rank = self.rank if rank is None else rank
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size - 1}], got {rank}")
        if self.split_batches:
            return [self._share(batch, rank) for batch in self._global_batches()]
        return self._global_batches()[rank :: self.world_size]

    def _share(self, batch: list[int], rank: int) -> list[int]:
        # Contiguous, in rank order: an all-gather in rank order rebuilds the batch as it was.
        if len(batch) % self.world_size:
            raise ValueError(
                f"split_batches=True: a batch of {len(batch)} rows does not divide among "
                f"world_size={self.world_size} ranks"
            )
        size = len(batch) // self.world_size
        return batch[rank * size : (rank + 1) * size]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._resume.iterate(self.epoch, self.epoch_batches())

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        total = self._num_global_batches()
        if self.split_batches:
            return total
        if self.drop_last:
            return total // self.world_size
        return -(-total // self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        non_negative_int(epoch, "epoch")
        self._resume.new_epoch(self.epoch, int(epoch))
        self.epoch = int(epoch)

    def _config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "classes_per_batch": self.classes_per_batch,
            "samples_per_class": self.samples_per_class,
            "num_samples": self.num_samples,
            "world_size": self.world_size,
            "drop_last": self.drop_last,
            "split_batches": self.split_batches,
        }

    def state_dict(self, batches_yielded: int | None = None) -> dict[str, Any]:
        """Epoch and batches already yielded this epoch (plus the settings, to check on load).

        Args:
            batches_yielded: override the count. A ``DataLoader`` with workers draws batches
                ahead of the training loop, so a loop that checkpoints mid-epoch should pass
                the number of batches it has actually trained on.
        """
        done = self._resume.yielded if batches_yielded is None else int(batches_yielded)
        return {"epoch": self.epoch, "batches_yielded": done, **self._config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration of ``state["epoch"]`` skips the batches already yielded."""
        for key in ("epoch", "batches_yielded"):
            if key not in state:
                raise ValueError(f"sampler state is missing key {key!r}")
        for key, value in self._config().items():
            if key in state and state[key] != value:
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has {value!r}"
                )
        done = int(state["batches_yielded"])
        if not 0 <= done <= len(self):
            raise ValueError(f"batches_yielded={done} is outside [0, {len(self)}]")
        self.epoch = int(state["epoch"])
        self._resume.resume_at(self.epoch, done)
