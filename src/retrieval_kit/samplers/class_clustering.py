"""Cluster classes by their mean embedding (faiss k-means)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence

import faiss
import numpy as np
import torch

logger = logging.getLogger(__name__)


def cluster_classes(
    embeddings: np.ndarray | torch.Tensor,
    labels: Sequence | np.ndarray | torch.Tensor,
    num_clusters: int,
    seed: int = 0,
    niter: int = 25,
    nredo: int = 5,
) -> dict[Hashable, int]:
    """Group classes into ``num_clusters`` clusters of look-alikes: {label: cluster}.

    Each class is represented by the mean of its rows' embeddings, L2-normalised; the class
    means are clustered with faiss k-means (spherical, so cosine similarity), then each class
    joins its nearest centroid. Feed the result to ``ClusterBatchSampler``; with
    ``SubspaceTripletLoss`` use the same ``num_clusters`` as ``num_subspaces``.

    Args:
        embeddings: (N, D) embeddings of the dataset rows (numpy or torch).
        labels: N labels (ints or strings).
        num_clusters: number of clusters; at most the number of classes.
        seed: k-means seed.
        niter: k-means iterations.
        nredo: k-means restarts; the best objective wins (k-means on few points easily lands
            in a local optimum that merges two groups).

    Returns:
        ``{label: cluster}`` with clusters in ``range(num_clusters)`` (a cluster may be empty).

    Example:
        >>> emb = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], dtype="float32")
        >>> c = cluster_classes(emb, [0, 1, 2, 3], num_clusters=2)
        >>> c[0] == c[1] != c[2] == c[3]
        True
    """
    if isinstance(embeddings, torch.Tensor):
        embeddings = embeddings.detach().cpu().numpy()
    if isinstance(labels, torch.Tensor):
        labels = labels.cpu().numpy()
    x = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got shape {x.shape}")
    if labels.shape != (len(x),):
        raise ValueError(
            f"labels must have shape ({len(x)},) to match embeddings, got {labels.shape}"
        )
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, (int, np.integer)):
        raise ValueError(f"num_clusters must be an int, got {num_clusters!r}")
    if not np.isfinite(x).all():
        row = int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])
        raise ValueError(f"embeddings row {row} is not finite")
    classes, class_of = np.unique(labels, return_inverse=True)
    class_of = class_of.ravel()
    if not 1 <= num_clusters <= len(classes):
        raise ValueError(
            f"num_clusters={num_clusters} must be between 1 and the number of classes "
            f"({len(classes)})"
        )
    means = np.zeros((len(classes), x.shape[1]), dtype=np.float64)
    np.add.at(means, class_of, x)
    means = np.ascontiguousarray(means / np.bincount(class_of)[:, None], dtype=np.float32)
    faiss.normalize_L2(means)
    kmeans = faiss.Kmeans(
        means.shape[1],
        int(num_clusters),
        niter=niter,
        nredo=nredo,
        seed=int(seed),
        spherical=True,
        verbose=False,
        # Use every class (no subsampling) and do not warn about few points per centroid:
        # faiss prints those warnings itself, and a library must not print.
        min_points_per_centroid=1,
        max_points_per_centroid=max(1, -(-len(classes) // int(num_clusters))),
    )
    kmeans.train(means)
    _, assign = kmeans.index.search(means, 1)
    sizes = np.bincount(assign.ravel(), minlength=num_clusters)
    logger.info("cluster sizes (classes): min %d, max %d", sizes.min(), sizes.max())
    return dict(zip(classes.tolist(), assign.ravel().tolist(), strict=True))
