from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from retrieval_kit.samplers import PKSampler


def _labels(seed: int = 0, n_classes: int = 23):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, size=n_classes)  # some classes smaller than K
    return np.repeat(np.arange(n_classes) * 10, sizes)  # labels need not be 0..C-1


def _check_batch(batch, labels, p, k):
    assert len(batch) == p * k
    counts = Counter(labels[batch].tolist())
    assert all(c % k == 0 for c in counts.values())  # K per class slot
    for label in counts:
        rows = [i for i in batch if labels[i] == label]
        n_avail = int((labels == label).sum())
        # distinct rows as long as the class has enough of them
        assert len(set(rows)) == min(len(rows), n_avail)


def test_exact_pk_batches_and_coverage():
    labels = _labels()
    sampler = PKSampler(labels, classes_per_batch=4, samples_per_class=5, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6  # ceil(23 / 4)
    for b in batches:
        _check_batch(b, labels, 4, 5)
        assert len(Counter(labels[b].tolist())) == 4  # 4 distinct classes
    seen = {labels[i] for b in batches for i in b}
    assert seen == set(labels.tolist())


def test_deterministic_by_seed_and_epoch():
    labels = _labels()
    a = PKSampler(labels, 4, 3, seed=1)
    b = PKSampler(labels, 4, 3, seed=1)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(PKSampler(labels, 4, 3, seed=2)) != first


def test_resume_mid_epoch_gives_identical_remaining_batches():
    labels = _labels(1, n_classes=40)
    sampler = PKSampler(labels, 3, 4, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    it = iter(sampler)
    for _ in range(4):
        next(it)
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["batches_yielded"] == 4
    # saved through torch with weights_only=True like the checkpoint helper does
    buf = __import__("io").BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = PKSampler(labels, 3, 4, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the loop calls set_epoch(start_epoch) again: must keep the resume point
    assert list(resumed) == full[4:]
    assert list(resumed) == full  # the next pass over the epoch starts afresh
    resumed.set_epoch(3)
    sampler.set_epoch(3)
    assert list(resumed) == list(sampler)


def test_a_new_epoch_starts_its_count_at_zero():
    # A checkpoint taken after set_epoch(e + 1), before any batch of it, must resume at batch 0
    # of that epoch, not skip as many batches as the previous epoch had.
    labels = _labels(1, n_classes=40)
    sampler = PKSampler(labels, 3, 4, seed=5)
    list(sampler)
    assert sampler.state_dict()["batches_yielded"] == len(sampler)
    sampler.set_epoch(1)
    state = sampler.state_dict()
    assert (state["epoch"], state["batches_yielded"]) == (1, 0)
    resumed = PKSampler(labels, 3, 4, seed=5)
    resumed.load_state_dict(state)
    assert list(resumed) == list(sampler)


def test_state_dict_override_and_validation():
    labels = _labels()
    sampler = PKSampler(labels, 4, 3)
    assert sampler.state_dict(batches_yielded=2)["batches_yielded"] == 2
    other = PKSampler(labels, 4, 3, seed=9)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError, match="batches_yielded"):
        sampler.load_state_dict({**sampler.state_dict(), "batches_yielded": 100})
    with pytest.raises(ValueError, match="missing key 'epoch'"):
        sampler.load_state_dict({"batches_yielded": 0})


@pytest.mark.parametrize("world_size", [2, 3])
def test_distributed_shards_disjoint_and_union_is_the_epoch(world_size):
    labels = _labels(2, n_classes=24)  # 24 classes / P=4 -> 6 batches: divisible by 2 and 3
    single = list(PKSampler(labels, 4, 3, seed=7))
    shards = [
        list(PKSampler(labels, 4, 3, seed=7, rank=r, world_size=world_size))
        for r in range(world_size)
    ]
    assert len({len(s) for s in shards}) == 1
    as_sets = [{tuple(b) for b in s} for s in shards]
    for i in range(world_size):
        for j in range(i + 1, world_size):
            assert not as_sets[i] & as_sets[j]
    assert sorted(b for s in shards for b in s) == sorted(single)


def test_distributed_uneven_pads_or_drops():
    labels = _labels(3, n_classes=20)  # 5 batches of P=4 for 2 ranks
    single = list(PKSampler(labels, 4, 3, seed=7))
    padded = [PKSampler(labels, 4, 3, seed=7, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in padded] == [3, 3]
    got = [list(s) for s in padded]
    assert [len(g) for g in got] == [3, 3]
    union = [b for g in got for b in g]
    assert all(b in union for b in single)  # every class still visited
    dropped = [
        list(PKSampler(labels, 4, 3, seed=7, rank=r, world_size=2, drop_last=True))
        for r in range(2)
    ]
    assert [len(d) for d in dropped] == [2, 2]
    assert sorted(b for d in dropped for b in d) == sorted(single[:4])


def test_fewer_classes_than_p_and_dataloader():
    labels = np.array([0, 0, 1])
    sampler = PKSampler(labels, classes_per_batch=3, samples_per_class=2)
    (batch,) = list(sampler)
    assert len(batch) == 6 and set(batch) == {0, 1, 2}
    data = torch.arange(len(_labels()))
    loader = DataLoader(data, batch_sampler=PKSampler(_labels(), 4, 2))
    assert [len(b) for b in loader] == [8] * 6


def test_errors():
    with pytest.raises(ValueError, match="classes_per_batch"):
        PKSampler([0, 1], 0, 2)
    with pytest.raises(ValueError, match="samples_per_class"):
        PKSampler([0, 1], 2, True)
    with pytest.raises(ValueError, match="rank"):
        PKSampler([0, 1], 2, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="labels"):
        PKSampler([], 2, 2)
    with pytest.raises(ValueError, match="epoch"):
        PKSampler([0, 1], 2, 2).set_epoch(-1)
