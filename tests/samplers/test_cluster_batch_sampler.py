from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from retrieval_kit.samplers import ClusterBatchSampler


def _data():
    rng = np.random.default_rng(0)
    n_classes = 30
    labels = np.repeat(np.arange(n_classes), rng.integers(2, 9, size=n_classes))
    # cluster sizes 13, 9, 5, 2, 1 classes (the last two smaller than P=4)
    sizes = [13, 9, 5, 2, 1]
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    rng.shuffle(clusters)
    return labels, {c: int(k) for c, k in enumerate(clusters)}


def test_one_cluster_per_batch_exact_size_and_coverage():
    labels, c2k = _data()
    sampler = ClusterBatchSampler(labels, c2k, classes_per_batch=4, samples_per_class=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4 + 3 + 2 + 1 + 1
    per_cluster = Counter()
    for b in batches:
        assert len(b) == 12
        clusters = {c2k[labels[i]] for i in b}
        assert len(clusters) == 1
        assert sampler.batch_cluster(b) == clusters.pop()
        per_cluster[sampler.batch_cluster(b)] += 1
        assert all(c % 3 == 0 for c in Counter(labels[b].tolist()).values())
    assert per_cluster == {0: 4, 1: 3, 2: 2, 3: 1, 4: 1}
    assert {labels[i] for b in batches for i in b} == set(labels.tolist())


def test_small_clusters_repeat_their_classes_with_distinct_rows():
    labels = np.array([0] * 8 + [1] * 2)
    sampler = ClusterBatchSampler(labels, {0: "x", 1: "x"}, 4, 2)
    (batch,) = list(sampler)
    counts = Counter(labels[batch].tolist())
    assert sum(counts.values()) == 8 and set(counts) == {0, 1}
    rows0 = [i for i in batch if labels[i] == 0]
    assert len(set(rows0)) == len(rows0)  # class 0 has 8 rows: no repeats needed


def test_set_clusters_between_epochs_and_resume_keeps_clusters():
    labels, c2k = _data()
    sampler = ClusterBatchSampler(labels, c2k, 4, 2, seed=3)
    new = {c: c % 2 for c in c2k}
    sampler.set_clusters(new)
    sampler.set_epoch(1)
    full = list(sampler)
    assert all(len({new[labels[i]] for i in b}) == 1 for b in full)
    it = iter(sampler)
    next(it), next(it), next(it)
    state = sampler.state_dict()
    resumed = ClusterBatchSampler(labels, c2k, 4, 2, seed=3)  # built with the OLD clusters
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert list(resumed) == full[3:]
    assert resumed.class_to_cluster == new


def test_distributed_shards():
    labels, c2k = _data()
    single = list(ClusterBatchSampler(labels, c2k, 4, 2, seed=0, drop_last=True, world_size=1))
    assert len(single) == 11
    shards = [
        list(ClusterBatchSampler(labels, c2k, 4, 2, seed=0, rank=r, world_size=2)) for r in range(2)
    ]
    assert [len(s) for s in shards] == [6, 6]  # 11 padded to 12
    union = [b for s in shards for b in s]
    assert len({tuple(b) for b in union}) == 12
    assert all(b in union for b in single)
    for b in union:
        assert len({c2k[labels[i]] for i in b}) == 1


def test_deterministic_and_seeded():
    labels, c2k = _data()
    assert list(ClusterBatchSampler(labels, c2k, 4, 2, seed=4)) == list(
        ClusterBatchSampler(labels, c2k, 4, 2, seed=4)
    )
    assert list(ClusterBatchSampler(labels, c2k, 4, 2, seed=4)) != list(
        ClusterBatchSampler(labels, c2k, 4, 2, seed=5)
    )


def test_errors_and_warning(caplog):
    labels, c2k = _data()
    missing = dict(c2k)
    del missing[7]
    with pytest.raises(ValueError, match="label 7"):
        ClusterBatchSampler(labels, missing, 4, 2)
    with pytest.raises(TypeError, match="mapping"):
        ClusterBatchSampler(labels, [0, 1], 4, 2)
    with caplog.at_level("WARNING"):
        ClusterBatchSampler(labels, c2k, 4, 2)
    assert "single class" in caplog.text
    state = ClusterBatchSampler(labels, c2k, 4, 2).state_dict()
    state["class_to_cluster"] = {"labels": [1, 2]}
    with pytest.raises(ValueError, match="malformed"):
        ClusterBatchSampler(labels, c2k, 4, 2).load_state_dict(state)


def test_tensor_labels():
    labels, c2k = _data()
    a = list(ClusterBatchSampler(torch.as_tensor(labels), c2k, 4, 2))
    assert a == list(ClusterBatchSampler(labels.tolist(), c2k, 4, 2))
