"""``split_batches=True``: every rank takes its share of every batch of the one-process epoch."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval_kit.samplers import ClusterBatchSampler, PKSampler


def _labels(seed: int = 0, n_classes: int = 19):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9, size=n_classes)
    return np.repeat(np.arange(n_classes) * 10, sizes)


def _make(kind: str, labels, **kw):
    if kind == "pk":
        return PKSampler(labels, 4, 3, seed=5, **kw)
    clusters = {c: (c // 10) % 3 for c in np.unique(labels).tolist()}
    return ClusterBatchSampler(labels, clusters, 4, 3, seed=5, **kw)


@pytest.mark.parametrize("kind", ["pk", "cluster"])
@pytest.mark.parametrize("world_size", [2, 3, 4, 6])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shares_in_rank_order_are_the_one_process_batches(kind, world_size, drop_last):
    labels = _labels()
    one = _make(kind, labels)
    ranks = [
        _make(kind, labels, rank=r, world_size=world_size, split_batches=True, drop_last=drop_last)
        for r in range(world_size)
    ]
    for epoch in (0, 1):
        for s in (one, *ranks):
            s.set_epoch(epoch)
        whole = list(one)
        shares = [list(s) for s in ranks]
        # Same number of batches on every rank as on one process: no padding, nothing dropped.
        assert [len(s) for s in ranks] == [len(one)] * world_size
        assert [len(b) for b in shares] == [len(whole)] * world_size
        for i, batch in enumerate(whole):
            parts = [shares[r][i] for r in range(world_size)]
            assert all(len(p) == len(batch) // world_size for p in parts)
            assert sum(parts, []) == batch  # gathered in rank order: the same rows, same order


def test_cluster_shares_stay_in_one_cluster():
    labels = _labels()
    one = _make("cluster", labels)
    r1 = _make("cluster", labels, rank=1, world_size=2, split_batches=True)
    for whole, share in zip(one, r1, strict=True):
        assert r1.batch_cluster(share) == one.batch_cluster(whole)


def test_resume_mid_epoch_in_split_mode():
    labels = _labels()
    kw = dict(rank=1, world_size=2, split_batches=True)
    ref = _make("pk", labels, **kw)
    ref.set_epoch(2)
    expected = list(ref)
    run = _make("pk", labels, **kw)
    run.set_epoch(2)
    it = iter(run)
    done = [next(it) for _ in range(3)]
    state = run.state_dict()
    assert (state["batches_yielded"], state["split_batches"]) == (3, True)
    resumed = _make("pk", labels, **kw)
    resumed.load_state_dict(state)
    assert done + list(resumed) == expected
    # A state written by whole-batch sharding is refused, and the other way round.
    whole = _make("pk", labels, rank=1, world_size=2)
    with pytest.raises(ValueError, match="split_batches"):
        whole.load_state_dict(state)
    with pytest.raises(ValueError, match="split_batches"):
        resumed.load_state_dict(whole.state_dict())


def test_world_of_one_is_unchanged():
    labels = _labels()
    assert list(_make("pk", labels, split_batches=True)) == list(_make("pk", labels))


def test_errors():
    labels = _labels()
    with pytest.raises(ValueError, match=r"12 images.*world_size=5.*divisible"):
        _make("pk", labels, rank=0, world_size=5, split_batches=True)
    with pytest.raises(ValueError, match="split_batches must be a bool"):
        _make("pk", labels, split_batches="yes")
