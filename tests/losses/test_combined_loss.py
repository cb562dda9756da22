"""CombinedLoss: the weighted sum by hand, and which tuples each part sees."""

from __future__ import annotations

import pytest
import torch

import retrieval_kit as rk
from retrieval_kit.losses import CombinedLoss, SubCenterArcFaceLoss, TripletLoss
from retrieval_kit.miners import BatchHardMiner

torch.set_num_threads(1)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(12, 8, generator=g), torch.arange(4).repeat_interleave(3)


def test_weighted_sum_and_routing_of_tuples():
    emb, labels = batch()
    arc, triplet, miner = (
        SubCenterArcFaceLoss(4, 8, sub_centers=2),
        TripletLoss(0.2),
        BatchHardMiner(),
    )
    loss_fn = CombinedLoss({"arc": (arc, 1.0), "tri": (triplet, 0.5)})
    mined = miner(emb, labels)
    got = loss_fn(emb, labels, mined)
    # The classification part ignores the tuple; the triplet part uses it.
    expected = arc(emb, labels) + 0.5 * triplet(emb, labels, mined)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert arc(emb, labels, mined).item() != pytest.approx(arc(emb, labels).item(), rel=1e-6)
    assert loss_fn.last_stats["loss/tri"] == pytest.approx(triplet(emb, labels, mined).item())
    assert set(loss_fn.last_stats) == {"loss/arc", "loss/tri", "arc/accuracy", "arc/mean_angle"}
    # Without a tuple the triplet part uses all triplets, as it would alone.
    expected = arc(emb, labels) + 0.5 * triplet(emb, labels)
    assert loss_fn(emb, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_part_with_its_own_miner_mines_itself():
    emb, labels = batch(1)
    triplet, miner = TripletLoss(), BatchHardMiner()
    loss_fn = CombinedLoss({"tri": (triplet, 2.0, miner), "plain": TripletLoss()})
    other = ([0], [1], [3])
    other = tuple(torch.tensor(x) for x in other)
    got = loss_fn(emb, labels, other)
    expected = 2.0 * triplet(emb, labels, miner(emb, labels)) + TripletLoss()(emb, labels, other)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradients_reach_every_part_and_config_form():
    loss_fn = rk.losses.create_loss(
        "combined",
        losses={
            "arcface": {"name": "arcface", "num_classes": 4, "embedding_size": 8, "scale": 16},
            "triplet": {"name": "triplet", "weight": 0.5, "miner": "batch_hard"},
        },
    )
    assert isinstance(loss_fn.losses["arcface"], SubCenterArcFaceLoss)
    assert isinstance(loss_fn.miners["triplet"], BatchHardMiner)
    assert loss_fn.weights == {"arcface": 1.0, "triplet": 0.5}
    emb, labels = batch(2)
    emb.requires_grad_(True)
    loss_fn(emb, labels).backward()
    assert emb.grad.abs().sum() > 0 and loss_fn.losses["arcface"].W.grad.abs().sum() > 0
    assert [n for n, _ in loss_fn.named_parameters()] == ["losses.arcface.W"]


def test_bad_parts_are_named():
    with pytest.raises(ValueError, match="non-empty"):
        CombinedLoss({})
    with pytest.raises(TypeError, match="'x'.*weight"):
        CombinedLoss({"x": (TripletLoss(), "heavy")})
    with pytest.raises(ValueError, match="'y'.*'name'"):
        CombinedLoss({"y": {"weight": 1.0}})
