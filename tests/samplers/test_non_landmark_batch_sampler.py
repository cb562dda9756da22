"""NonLandmarkBatchSampler: pool rows appended to every batch; hard draws; ranks; resume."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval_kit.samplers import (
    ClusterBatchSampler,
    NonLandmarkBatchSampler,
    PKSampler,
    nearest_pool_rows,
    non_landmark_labels,
)

LABELS = np.repeat(np.arange(9) * 10, [3, 4, 2, 5, 3, 3, 4, 2, 6])  # 32 landmark rows
POOL = np.arange(len(LABELS), len(LABELS) + 11)  # 11 non-landmark rows after them


def _base(kind="pk", **kw):
    if kind == "pk":
        return PKSampler(LABELS, 3, 2, seed=4, **kw)
    clusters = {c: (c // 10) % 2 for c in np.unique(LABELS).tolist()}
    return ClusterBatchSampler(LABELS, clusters, 3, 2, seed=4, **kw)


def _make(kind="pk", per_batch=4, candidates=None, **kw):
    return NonLandmarkBatchSampler(_base(kind, **kw), POOL, per_batch, candidates, seed=9)


@pytest.mark.parametrize("kind", ["pk", "cluster"])
def test_landmark_rows_unchanged_and_pool_rows_appended(kind):
    base, sampler = _base(kind), _make(kind)
    for epoch in (0, 1):
        base.set_epoch(epoch)
        sampler.set_epoch(epoch)
        plain, mixed = list(base), list(sampler)
        assert len(mixed) == len(plain) == len(sampler)
        for b, m in zip(plain, mixed, strict=True):
            assert m[: len(b)] == b
            extra = m[len(b) :]
            assert len(extra) == 4 and set(extra) <= set(POOL.tolist())
            assert len(set(extra)) == 4  # the pool has enough: drawn without replacement
    # Deterministic, and another epoch draws other pool rows.
    sampler.set_epoch(0)
    again = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == again
    sampler.set_epoch(1)
    assert [b[6:] for b in sampler] != [b[6:] for b in again]


def test_hard_candidates_restrict_the_draw_to_the_batch_classes_lists():
    n_classes = len(np.unique(LABELS))
    table = np.full((n_classes, 2), -1)
    table[:, 0] = np.arange(n_classes)  # class c -> pool position c (9 of 11 positions)
    table[0, 1] = 10  # and class 0 (label 0) also -> position 10
    sampler = _make(candidates=table, per_batch=2)
    class_of = {lab: c for c, lab in enumerate(np.unique(LABELS).tolist())}
    seen = set()
    for batch in sampler:
        classes = {class_of[int(LABELS[r])] for r in batch[:6]}
        allowed = {int(POOL[c]) for c in classes} | ({int(POOL[10])} if 0 in classes else set())
        extra = batch[6:]
        assert set(extra) <= allowed, (batch, allowed)
        seen.update(extra)
    assert int(POOL[9]) not in seen  # position 9 is in no class's list


def test_small_candidate_list_is_drawn_with_replacement():
    table = np.zeros((len(np.unique(LABELS)), 1), dtype=np.int64)  # every class -> position 0
    for batch in _make(candidates=table, per_batch=3):
        assert batch[6:] == [int(POOL[0])] * 3


@pytest.mark.parametrize("kind", ["pk", "cluster"])
@pytest.mark.parametrize(("world_size", "per_batch"), [(2, 4), (3, 3), (6, 6)])
def test_split_batches_shares_are_the_one_process_batch_row_for_row(kind, world_size, per_batch):
    one = _make(kind, per_batch)
    ranks = [
        _make(kind, per_batch, rank=r, world_size=world_size, split_batches=True)
        for r in range(world_size)
    ]
    for epoch in (0, 3):
        for s in (one, *ranks):
            s.set_epoch(epoch)
        whole, shares = list(one), [list(s) for s in ranks]
        assert all(len(s) == len(whole) for s in shares)
        for i, batch in enumerate(whole):
            assert sum((s[i] for s in shares), []) == batch


def test_split_batches_needs_a_divisible_batch():
    with pytest.raises(ValueError, match="divisible by the world size"):
        _make(per_batch=1, rank=0, world_size=2, split_batches=True)  # 6 + 1 rows


def test_whole_batches_per_rank_follow_the_global_list():
    ranks = [_make(rank=r, world_size=2) for r in range(2)]
    glob = ranks[0]._global_batches()
    assert [list(s) for s in ranks] == [glob[0::2], glob[1::2]]


@pytest.mark.parametrize("kind", ["pk", "cluster"])
def test_resume_mid_epoch_continues_exactly(kind):
    full = _make(kind)
    full.set_epoch(2)
    expected = list(full)
    first = _make(kind)
    first.set_epoch(2)
    it = iter(first)
    done = [next(it), next(it)]
    state = first.state_dict()
    assert state["batches_yielded"] == 2 and state["non_landmarks_per_batch"] == 4
    resumed = _make(kind)
    resumed.load_state_dict(state)
    assert resumed.epoch == 2
    assert done + list(resumed) == expected
    assert list(resumed) == expected  # the resume point is used once


def test_load_state_refuses_other_settings():
    state = _make().state_dict()
    with pytest.raises(ValueError, match="non_landmarks_per_batch=4"):
        _make(per_batch=2).load_state_dict(state)
    plain = _base().state_dict()
    with pytest.raises(ValueError, match="saved without non-landmarks"):
        _make().load_state_dict(plain)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="pool row 3 is one of the sampler's 32 landmark rows"):
        NonLandmarkBatchSampler(_base(), [40, 3], 2)
    with pytest.raises(ValueError, match="non-empty"):
        NonLandmarkBatchSampler(_base(), [], 2)
    with pytest.raises(TypeError, match="BaseBatchSampler"):
        NonLandmarkBatchSampler([[0, 1]], POOL, 2)
    with pytest.raises(ValueError, match=r"shape \(9, L\)"):
        _make(candidates=np.zeros((8, 2), dtype=np.int64))
    bad = np.zeros((9, 2), dtype=np.int64)
    bad[4, 1] = 11
    with pytest.raises(ValueError, match="row 4 .class 40. holds 11"):
        _make(candidates=bad)
    empty = np.zeros((9, 1), dtype=np.int64)
    empty[2] = -1
    with pytest.raises(ValueError, match="row 2 .class 20. lists no pool image"):
        _make(candidates=empty)


def test_non_landmark_labels_are_distinct_and_negative():
    labels = non_landmark_labels(5)
    assert labels.tolist() == [-1, -2, -3, -4, -5] and labels.dtype == np.int64


def test_nearest_pool_rows_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    labels = rng.integers(0, 5, size=30) * 3
    pool = rng.normal(size=(17, 8)).astype(np.float32)
    table = nearest_pool_rows(emb, labels, pool, k=4)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    pool_unit = pool / np.linalg.norm(pool, axis=1, keepdims=True)
    for c, label in enumerate(np.unique(labels)):
        centre = unit[labels == label].mean(axis=0)
        sims = pool_unit @ (centre / np.linalg.norm(centre))
        assert table[c].tolist() == np.argsort(-sims)[:4].tolist()
    assert nearest_pool_rows(emb, labels, pool[:2], k=4).shape == (5, 2)
    with pytest.raises(ValueError, match="pool_embeddings row 1 is not finite"):
        nearest_pool_rows(emb, labels, np.array([[0] * 8, [np.nan] * 8], np.float32), 1)
