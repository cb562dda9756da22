"""Batches whose classes all come from one cluster of look-alike classes."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from retrieval_kit.samplers.base_batch_sampler import BaseBatchSampler

logger = logging.getLogger(__name__)


class ClusterBatchSampler(BaseBatchSampler):
    """P x K batches whose P classes all come from ONE cluster, so in-batch negatives are hard.

    The reproduced landmark pipeline's "subspaces" (classes clustered by their mean embedding,
    see ``cluster_classes``) and the batches of Divide and Conquer (Sanakoyeu et al., 2019).
    An epoch visits every class once: each cluster's classes are shuffled and cut into groups
    of P, a cluster's last group is topped up with other classes of the same cluster, and the
    batches of all clusters are shuffled together. A cluster with fewer than P classes still
    gives full P x K batches from that cluster alone: all its classes, with some repeated
    (those give 2K, 3K ... distinct rows while they have them). A one-class cluster therefore
    gives batches without negatives (a warning is logged); merge such clusters if that matters.

    ``set_clusters`` re-clusters between epochs (e.g. with the current model's embeddings).
    ``state_dict`` stores the clusters too, so a resumed run continues the same epoch.
    Sharding across ranks, padding and ``drop_last`` work as in ``PKSampler``.

    Args:
        labels: one label per dataset row (ints or strings).
        class_to_cluster: ``{label: cluster}`` covering every label in ``labels``.
        classes_per_batch: P.
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
        >>> labels = [0, 0, 1, 1, 2, 2, 3, 3]
        >>> sampler = ClusterBatchSampler(labels, {0: 0, 1: 0, 2: 1, 3: 1}, 2, 2)
        >>> sorted(sorted({labels[i] for i in b}) for b in sampler)
        [[0, 1], [2, 3]]
        >>> sampler.batch_cluster(next(iter(sampler))) in (0, 1)
        True
    """

    def __init__(
        self,
        labels: Sequence | np.ndarray | torch.Tensor,
        class_to_cluster: Mapping[Hashable, Hashable],
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
        self.set_clusters(class_to_cluster)

    def set_clusters(self, class_to_cluster: Mapping[Hashable, Hashable]) -> None:
        """Replace the clusters; the next iteration (call it between epochs) uses them.

        Labels in ``class_to_cluster`` that the dataset lacks are ignored.
        """
        if not isinstance(class_to_cluster, Mapping):
            raise TypeError(
                f"class_to_cluster must be a mapping label -> cluster, got "
                f"{type(class_to_cluster).__name__}"
            )
        cluster_of_class = []
        for label in self.classes:
            if label not in class_to_cluster:
                raise ValueError(f"class_to_cluster has no cluster for label {label!r}")
            cluster_of_class.append(class_to_cluster[label])
        cluster_ids, members_of = np.unique(np.asarray(cluster_of_class), return_inverse=True)
        members_of = members_of.ravel()
        self.class_to_cluster: dict = dict(
            zip(self.classes, cluster_ids[members_of].tolist(), strict=True)
        )
        self.cluster_ids: list = cluster_ids.tolist()
        self._members = [np.nonzero(members_of == c)[0] for c in range(len(cluster_ids))]
        lonely = [
            cid for cid, m in zip(self.cluster_ids, self._members, strict=True) if len(m) == 1
        ]
        if lonely:
            logger.warning(
                "clusters %s have a single class: their batches contain no negatives", lonely[:10]
            )

    def batch_cluster(self, batch: Sequence[int]) -> Hashable:
        """The cluster a batch (list of dataset rows) was drawn from.

        In a training step that only has the batch's labels, ``class_to_cluster[label]`` of any
        of them gives the same; with ``cluster_classes``'s clusters (0..K-1) that is the
        ``SubspaceTripletLoss`` subspace to train.
        """
        if len(batch) == 0:
            raise ValueError("empty batch")
        return self.class_to_cluster[self.classes[self._class_of_row[int(batch[0])]]]

    def _num_global_batches(self) -> int:
        p = self.classes_per_batch
        return sum(-(-len(m) // p) for m in self._members)

    def _epoch_batches(self, rng: np.random.Generator) -> list[list[int]]:
        batches = []
        for members in self._members:
            batches += [self._draw_batch(rng, g) for g in self._chunk_classes(rng, members)]
        order = rng.permutation(len(batches))
        return [batches[i] for i in order]

    def _extra_batch(self, rng: np.random.Generator) -> list[int]:
        sizes = np.array([len(m) for m in self._members], dtype=np.float64)
        members = self._members[rng.choice(len(sizes), p=sizes / sizes.sum())]
        p = self.classes_per_batch
        if len(members) >= p:
            return self._draw_batch(rng, rng.choice(members, size=p, replace=False))
        top_up = rng.choice(members, size=p - len(members), replace=True)
        return self._draw_batch(rng, np.concatenate([members, top_up]))

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "num_classes": len(self.classes)}

    def state_dict(self, batches_yielded: int | None = None) -> dict[str, Any]:
        """Like ``PKSampler.state_dict``, plus the current clusters (plain lists)."""
        state = super().state_dict(batches_yielded)
        state["class_to_cluster"] = {
            "labels": list(self.classes),
            "clusters": [self.class_to_cluster[c] for c in self.classes],
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the clusters (when stored) and the resume point."""
        if "class_to_cluster" in state:
            stored = state["class_to_cluster"]
            try:
                mapping = dict(zip(stored["labels"], stored["clusters"], strict=True))
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(f"sampler state has a malformed class_to_cluster: {err}") from err
            self.set_clusters(mapping)
        super().load_state_dict(state)
