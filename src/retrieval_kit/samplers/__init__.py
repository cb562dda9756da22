"""Batch samplers for metric learning (use as ``DataLoader(..., batch_sampler=sampler)``).

Example:
    >>> import retrieval_kit as rk
    >>> sampler = rk.samplers.PKSampler([0, 0, 1, 1], classes_per_batch=2, samples_per_class=2)
    >>> len(sampler)
    1
"""

from __future__ import annotations

from retrieval_kit.samplers.base_batch_sampler import BaseBatchSampler
from retrieval_kit.samplers.class_clustering import cluster_classes
from retrieval_kit.samplers.cluster_batch_sampler import ClusterBatchSampler
from retrieval_kit.samplers.nearest_pool_rows import nearest_pool_rows
from retrieval_kit.samplers.non_landmark_batch_sampler import (
    NonLandmarkBatchSampler,
    non_landmark_labels,
)
from retrieval_kit.samplers.pk_sampler import PKSampler

__all__ = [
    "BaseBatchSampler",
    "ClusterBatchSampler",
    "NonLandmarkBatchSampler",
    "PKSampler",
    "cluster_classes",
    "nearest_pool_rows",
    "non_landmark_labels",
]
