"""Add rows of a non-landmark pool to every batch of a P x K / cluster sampler."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from retrieval_kit._checks import non_negative_int, positive_int
from retrieval_kit.samplers.base_batch_sampler import BaseBatchSampler, ResumePoint

#: the label of pool row j is ``NON_LANDMARK_BASE - j``; see ``non_landmark_labels``.
NON_LANDMARK_BASE = -1


def non_landmark_labels(count: int) -> np.ndarray:
    """Labels for ``count`` non-landmark rows: ``-1, -2, ..., -count``, all distinct and negative.

    A label no other row shares can never be a positive: PML's miners and losses and
    ``rk.miners`` / ``rk.losses`` then use such a row only as a negative (a triplet needs an
    anchor with a positive), with no special case in them. ``SubCenterArcFaceLoss`` reads a
    negative label as "no class" (see its ``non_landmark_margin``).

    Example:
        >>> non_landmark_labels(3).tolist()
        [-1, -2, -3]
    """
    return NON_LANDMARK_BASE - np.arange(non_negative_int(count, "count"), dtype=np.int64)


class NonLandmarkBatchSampler(Sampler[list[int]]):
    """Appends ``per_batch`` rows of a non-landmark pool to every batch of ``sampler``.

    Non-landmark images (pictures that show none of the classes: rooms, people, objects) in
    the batches give the triplet losses negatives that no landmark image supplies, so that the
    embedding itself learns to keep them away from every class, instead of leaving that to a
    distractor penalty at query time. Give the pool rows labels no other row has
    (``non_landmark_labels``): they are then negatives only.

    Rows are drawn per batch with ``numpy.random.default_rng([seed, epoch, batch])``, from
    the whole pool at random (``candidates=None``), or from the pool images nearest to the
    batch's classes (``candidates``: a (num_classes, L) table of pool positions per class, e.g.
    from ``rk.samplers.nearest_pool_rows``; a batch draws uniformly, without replacement, from
    the union of its classes' lists). A list or pool smaller than ``per_batch`` is drawn with
    replacement.

    The landmark rows are ``sampler``'s, unchanged: its epochs, clusters and padding stay, and
    ``state_dict`` / ``load_state_dict`` carry its state plus the pool's settings, so a resumed
    run continues exactly. Under ``split_batches=True`` the whole batch (landmark rows, then
    non-landmark rows) is shared contiguously among the ranks, so the shares gathered in rank
    order are the one-process batch row for row; ``P x K`` (the sampler's own rule) and
    ``P x K + per_batch`` must then be divisible by the world size.

    Args:
        sampler: a ``PKSampler`` or ``ClusterBatchSampler`` (any ``BaseBatchSampler``).
        pool_rows: the dataset rows of the non-landmark images (not rows ``sampler`` draws).
        per_batch: non-landmark rows added to each batch.
        candidates: optional (num_classes, L) int table: row c lists positions in
            ``pool_rows`` of hard non-landmarks for class ``sampler.classes[c]``; ``-1`` pads.
        seed: base seed of the draws.

    Example:
        >>> from retrieval_kit.samplers import PKSampler
        >>> base = PKSampler([0, 0, 1, 1], classes_per_batch=2, samples_per_class=2)
        >>> sampler = NonLandmarkBatchSampler(base, pool_rows=[4, 5, 6], per_batch=2)
        >>> batch = next(iter(sampler))
        >>> len(batch), sorted(batch[:4]), all(r in (4, 5, 6) for r in batch[4:])
        (6, [0, 1, 2, 3], True)
    """

    def __init__(
        self,
        sampler: BaseBatchSampler,
        pool_rows: Sequence[int] | np.ndarray | torch.Tensor,
        per_batch: int,
        candidates: np.ndarray | torch.Tensor | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(sampler, BaseBatchSampler):
            raise TypeError(
                f"sampler must be a retrieval_kit BaseBatchSampler (PKSampler, "
                f"ClusterBatchSampler), got {type(sampler).__name__}"
            )
        self.sampler = sampler
        if isinstance(pool_rows, torch.Tensor):
            pool_rows = pool_rows.cpu().numpy()
        pool = np.asarray(pool_rows)
        if pool.ndim != 1 or len(pool) == 0 or not np.issubdtype(pool.dtype, np.integer):
            raise ValueError(
                f"pool_rows must be a non-empty 1-D sequence of dataset rows, got {pool!r:.80}"
            )
        if (pool < 0).any():
            raise ValueError(f"pool_rows holds the negative row {int(pool[pool < 0][0])}")
        clash = pool[pool < sampler.num_samples]
        if len(clash):
            # The base sampler draws rows 0 .. num_samples - 1: a pool row there would be
            # both a landmark (with that row's label) and a non-landmark.
            raise ValueError(
                f"pool row {int(clash[0])} is one of the sampler's {sampler.num_samples} "
                f"landmark rows; put the non-landmark images after them in the dataset"
            )
        self.pool_rows = pool.astype(np.int64)
        self.per_batch = positive_int(per_batch, "per_batch")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        self.candidates = None if candidates is None else self._check_candidates(candidates)
        world = sampler.world_size
        if sampler.split_batches and self.batch_size % world:
            raise ValueError(
                f"split_batches=True shares each batch of {self.batch_size} images "
                f"({sampler.batch_size} landmark + per_batch={self.per_batch}) among "
                f"world_size={world} ranks: the batch size must be divisible by the world size"
            )
        self._resume = ResumePoint()  # this class iterates: the base sampler's point is unused

    def _check_candidates(self, candidates: np.ndarray | torch.Tensor) -> np.ndarray:
        if isinstance(candidates, torch.Tensor):
            candidates = candidates.cpu().numpy()
        table = np.asarray(candidates)
        n = len(self.sampler.classes)
        if table.ndim != 2 or table.shape[0] != n or not np.issubdtype(table.dtype, np.integer):
            raise ValueError(
                f"candidates must be an int table of shape ({n}, L), one row per class of the "
                f"sampler, got {table.dtype} {table.shape}"
            )
        bad = (table < -1) | (table >= len(self.pool_rows))
        if bad.any():
            c = int(np.nonzero(bad.any(axis=1))[0][0])
            raise ValueError(
                f"candidates row {c} (class {self.sampler.classes[c]!r}) holds "
                f"{int(table[c][bad[c]][0])}, not a position in the pool of "
                f"{len(self.pool_rows)} (or -1)"
            )
        empty = np.nonzero((table < 0).all(axis=1))[0]
        if len(empty):
            c = int(empty[0])
            raise ValueError(
                f"candidates row {c} (class {self.sampler.classes[c]!r}) lists no pool image"
            )
        return table.astype(np.int64)

    @property
    def batch_size(self) -> int:
        """Rows per batch: the sampler's P x K plus ``per_batch``."""
        return self.sampler.batch_size + self.per_batch

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    # -- the draw ----------------------------------------------------------------------------
    def non_landmark_rows(self, batch: Sequence[int], index: int) -> list[int]:
        """The non-landmark rows added to landmark batch ``batch``, number ``index`` of the
        current epoch's global batch list (pure: depends on seed, epoch, index and batch)."""
        rng = np.random.default_rng([self.seed, self.sampler.epoch, index])
        if self.candidates is None:
            choices = np.arange(len(self.pool_rows))
        else:
            classes = np.unique(self.sampler._class_of_row[np.asarray(batch, dtype=np.int64)])
            choices = np.unique(self.candidates[classes])
            choices = choices[choices >= 0]
        replace = len(choices) < self.per_batch
        picked = rng.choice(choices, size=self.per_batch, replace=replace)
        return self.pool_rows[picked].tolist()

    def _global_batches(self) -> list[list[int]]:
        return [
            list(batch) + self.non_landmark_rows(batch, i)
            for i, batch in enumerate(self.sampler._global_batches())
        ]

    def epoch_batches(self, rank: int | None = None) -> list[list[int]]:
        """The batches of the current epoch for ``rank`` (default: the sampler's rank)."""
        base = self.sampler
        rank = base.rank if rank is None else rank
        if not 0 <= rank < base.world_size:
            raise ValueError(f"rank must be in [0, {base.world_size - 1}], got {rank}")
        if base.split_batches:
            return [base._share(b, rank) for b in self._global_batches()]
        return self._global_batches()[rank :: base.world_size]

    # -- Sampler API (resume as in BaseBatchSampler) -------------------------------------------
    def __iter__(self) -> Iterator[list[int]]:
        yield from self._resume.iterate(self.epoch, self.epoch_batches())

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        epoch = non_negative_int(epoch, "epoch")
        self._resume.new_epoch(self.epoch, epoch)
        self.sampler.set_epoch(epoch)

    def _config(self) -> dict[str, Any]:
        return {
            "non_landmark_seed": self.seed,
            "non_landmarks_per_batch": self.per_batch,
            "non_landmark_pool": len(self.pool_rows),
            "non_landmark_hard": self.candidates is not None,
        }

    def state_dict(self, batches_yielded: int | None = None) -> dict[str, Any]:
        """The sampler's state (with its settings) plus the pool's settings."""
        done = self._resume.yielded if batches_yielded is None else int(batches_yielded)
        return {**self.sampler.state_dict(done), **self._config()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: check the pool's settings, restore the sampler (its clusters too)."""
        for key, value in self._config().items():
            if key not in state:
                raise ValueError(
                    f"sampler state has no {key!r}: it was saved without non-landmarks"
                )
            if state[key] != value:
                raise ValueError(
                    f"sampler state has {key}={state[key]!r} but this sampler has {value!r}"
                )
        self.sampler.load_state_dict(state)
        self._resume.resume_at(self.sampler.epoch, int(state["batches_yielded"]))
        self.sampler._resume = ResumePoint()  # unused: this class iterates, not the sampler
