from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval_kit.samplers import cluster_classes


def test_well_separated_blobs_are_recovered():
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:4] * 10  # 4 orthogonal blob centres
    n_classes, per_class = 40, 5
    blob_of_class = np.arange(n_classes) % 4
    labels = np.repeat(np.arange(n_classes) + 100, per_class)
    class_centres = centres[blob_of_class] + rng.normal(scale=1.0, size=(n_classes, 8))
    emb = np.repeat(class_centres, per_class, axis=0) + rng.normal(scale=0.5, size=(len(labels), 8))
    got = cluster_classes(emb.astype(np.float32), labels, num_clusters=4, seed=0)
    assert set(got) == set(labels.tolist())
    # the clustering is the blob partition (up to renaming the clusters)
    pairs = {(blob_of_class[c - 100], k) for c, k in got.items()}
    assert len(pairs) == 4 and len({k for _, k in pairs}) == 4
    # torch input gives the same answer
    assert cluster_classes(torch.as_tensor(emb), torch.as_tensor(labels), 4, seed=0) == got


def test_errors():
    emb = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="number of classes"):
        cluster_classes(emb, [0, 0, 1, 1], num_clusters=3)
    with pytest.raises(ValueError, match="labels must have shape"):
        cluster_classes(emb, [0, 1], num_clusters=1)
    bad = emb.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="row 3"):
        cluster_classes(bad, [0, 0, 1, 1], num_clusters=1)
