"""P classes x K images per batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from retrieval_kit.samplers.base_batch_sampler import BaseBatchSampler

logger = logging.getLogger(__name__)


class PKSampler(BaseBatchSampler):
    """Batches of exactly ``classes_per_batch`` (P) classes x ``samples_per_class`` (K) rows.

    An epoch visits every class once: the classes are shuffled and cut into groups of P; the
    last group is topped up with other randomly chosen classes. Each class gives K distinct
    rows drawn at random; a class with fewer than K rows gives all of them plus rows drawn
    again with replacement. Batches depend only on ``seed`` and the epoch set by
    ``set_epoch``. Under ``torch.distributed`` (or with explicit ``rank``/``world_size``)
    batch i of the epoch goes to rank ``i % world_size``; the epoch is padded with extra
    random batches so that every rank gets the same number (``drop_last=True`` drops the tail
    instead, and then some classes may be skipped that epoch).

    Args:
        labels: one label per dataset row (ints or strings).
        classes_per_batch: P. If the dataset has fewer classes, classes repeat within a batch.
        samples_per_class: K.
        seed: base seed; epoch e uses ``numpy.random.default_rng([seed, e])``.
        drop_last: drop the batches that do not divide evenly among ranks.
        rank: this process's rank (default: torch.distributed's, else 0).
        world_size: number of ranks (default: torch.distributed's, else 1).
        split_batches: every rank takes its contiguous ``1/world_size`` share of every batch
            instead of whole batches, so that the batches gathered across ranks (and the
            optimizer steps per epoch) are those of one process; the batch size must be
            divisible by ``world_size``.

    Example:
        >>> sampler = PKSampler([0, 0, 1, 1, 2, 2, 3], classes_per_batch=2, samples_per_class=2)
        >>> len(sampler), [len(b) for b in sampler]
        (2, [4, 4])
        >>> # DataLoader(dataset, batch_sampler=sampler); call sampler.set_epoch(e) each epoch
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
        super().__init__(
            labels,
            classes_per_batch,
            samples_per_class,
            seed,
            drop_last,
            rank,
            world_size,
            split_batches,
        )
        if len(self.classes) < self.classes_per_batch:
            logger.warning(
                "only %d classes for classes_per_batch=%d: classes repeat within a batch",
                len(self.classes),
                self.classes_per_batch,
            )

    def _num_global_batches(self) -> int:
        return -(-len(self.classes) // self.classes_per_batch)

    def _epoch_batches(self, rng: np.random.Generator) -> list[list[int]]:
        groups = self._chunk_classes(rng, np.arange(len(self.classes)))
        return [self._draw_batch(rng, g) for g in groups]

    def _extra_batch(self, rng: np.random.Generator) -> list[int]:
        n, p = len(self.classes), self.classes_per_batch
        return self._draw_batch(rng, rng.choice(n, size=p, replace=n < p))
