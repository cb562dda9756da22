"""Issue 6, bad input: single-image classes do not crash samplers, miners, losses or training.

GLDv2 has many landmarks with one training image. A class with one image has no positive pair:
miners must skip it as an anchor (never pair an image with itself by row), samplers must still
cover it, losses must stay finite, and a batch with no valid triplet at all must train as a no-op
rather than crash or produce NaN weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import retrieval_kit as rk

# Classes 0-2 have 4 images; classes 10-15 have one image each (rows 12-17).
LABELS = np.array([0] * 4 + [1] * 4 + [2] * 4 + list(range(10, 16)))


def _embeddings(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _check_triplets(indices_tuple, labels: torch.Tensor) -> int:
    a, p, n = (t.long() for t in indices_tuple)
    assert len(a) == len(p) == len(n)
    assert (labels[a] == labels[p]).all() and (a != p).all()
    assert (labels[a] != labels[n]).all()
    counts = {int(c): int((labels == c).sum()) for c in labels.unique()}
    assert all(counts[int(labels[i])] > 1 for i in a)  # a singleton is never an anchor
    return len(a)


@pytest.mark.parametrize(
    "miner", [rk.miners.BatchHardMiner(), rk.miners.SemiHardMiner(margin=0.5)], ids=type
)
def test_in_batch_miners_skip_single_image_classes(miner):
    labels = torch.as_tensor(LABELS)
    emb = _embeddings(len(labels))
    assert _check_triplets(miner(emb, labels), labels) > 0
    singles = torch.arange(10, 16)
    assert _check_triplets(miner(_embeddings(6), singles), singles) == 0  # no pair anywhere


@pytest.mark.parametrize("loss", [rk.losses.TripletLoss(), rk.losses.TripletLoss(margin=0.2)])
def test_losses_are_finite_with_or_without_triplets(loss):
    labels = torch.as_tensor(LABELS)
    emb = _embeddings(len(labels)).requires_grad_()
    value = loss(emb, labels, rk.miners.BatchHardMiner()(emb, labels))
    assert torch.isfinite(value) and value > 0
    value.backward()
    assert torch.isfinite(emb.grad).all()
    singles = torch.arange(6)
    emb = _embeddings(6).requires_grad_()
    value = loss(emb, singles, rk.miners.BatchHardMiner()(emb, singles))
    assert torch.isfinite(value) and value == 0
    value.backward()  # a graph with no triplets still backpropagates (zero gradient)
    assert emb.grad is None or torch.isfinite(emb.grad).all()


def test_subspace_loss_with_single_image_classes():
    loss = rk.losses.SubspaceTripletLoss(num_subspaces=2)
    labels = torch.as_tensor(LABELS)
    emb = _embeddings(len(labels))
    for k in (0, 1, None):
        assert torch.isfinite(
            loss(emb, labels, rk.miners.BatchHardMiner()(emb, labels), subspace=k)
        )


def test_samplers_cover_single_image_classes():
    pk = rk.samplers.PKSampler(LABELS, classes_per_batch=3, samples_per_class=2, seed=1)
    clusters = {int(c): int(c) % 2 for c in np.unique(LABELS)}
    cl = rk.samplers.ClusterBatchSampler(LABELS, clusters, classes_per_batch=3, samples_per_class=2)
    for sampler in (pk, cl):
        batches = list(sampler)
        assert len(batches) == len(sampler) > 0
        assert all(len(b) == 6 for b in batches)
        seen = {i for b in batches for i in b}
        assert seen <= set(range(len(LABELS)))
        assert set(range(12, 18)) <= seen  # every single-image class is sampled, none dropped


def test_index_miner_with_single_image_classes():
    x = _embeddings(len(LABELS)).numpy()
    res = rk.miners.IndexMiner(k=3, metric="l2").mine(x, LABELS)
    assert res.indices.shape == (len(LABELS), 3)
    assert (LABELS[res.indices] != LABELS[:, None]).all()


def test_training_on_batches_of_single_image_classes_is_a_finite_no_op_or_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(len(LABELS), 4, generator=torch.Generator().manual_seed(3))
    labels = torch.as_tensor(LABELS)
    only_singles = [(x[12:18], labels[12:18])]  # no positive pair in the batch at all
    stats = rk.train.train_one_epoch(
        model, only_singles, rk.losses.TripletLoss(), rk.miners.BatchHardMiner(), optimizer
    )
    assert stats["loss"] == 0.0
    for p, q in zip(model.parameters(), before):
        assert torch.equal(p, q)  # nothing to learn from: weights unchanged, not NaN
    mixed = [(x[idx], labels[idx]) for idx in rk.samplers.PKSampler(LABELS, 3, 2, seed=0)]
    stats = rk.train.train_one_epoch(
        model, mixed, rk.losses.TripletLoss(), rk.miners.BatchHardMiner(), optimizer
    )
    assert np.isfinite(stats["loss"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
