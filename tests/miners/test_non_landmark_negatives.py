"""Rows labelled by ``non_landmark_labels`` are only ever negatives of the triplet family.

A batch of two landmark classes and two non-landmark rows, laid out so that the answer is known
by hand: the non-landmark row 4 sits between the two classes, closer to every anchor than any
landmark negative, and row 5 is far away.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from retrieval_kit.losses import SubspaceTripletLoss, TripletLoss
from retrieval_kit.miners import BatchHardMiner
from retrieval_kit.samplers import non_landmark_labels

EMB = torch.tensor([[0.0, 0.0], [0.0, 1.0], [5.0, 0.0], [5.0, 1.0], [0.2, 0.5], [9.0, 9.0]])
LABELS = torch.tensor([0, 0, 1, 1, *non_landmark_labels(2).tolist()])
EUCLID = LpDistance(normalize_embeddings=False)


def _triplets(tup):
    return sorted(zip(*(t.tolist() for t in tup), strict=True))


@pytest.mark.parametrize("miner", [BatchHardMiner, pml_miners.BatchHardMiner])
def test_batch_hard_uses_the_non_landmark_as_every_anchors_hardest_negative(miner):
    got = _triplets(miner(distance=EUCLID)(EMB, LABELS))
    # By hand: anchors are the landmark rows only; each one's positive is its class mate and
    # its closest negative is row 4 (0.54 and 4.83 away against 5 and more for the other class).
    assert got == [(0, 1, 4), (1, 0, 4), (2, 3, 4), (3, 2, 4)]


def test_all_triplets_have_landmark_anchors_and_positives():
    anchors, positives, negatives = lmu.get_all_triplets_indices(LABELS)
    expected = [
        (a, p, n)
        for a, p in itertools.permutations(range(4), 2)
        if LABELS[a] == LABELS[p]
        for n in range(6)
        if LABELS[n] != LABELS[a]
    ]
    got = sorted(zip(anchors.tolist(), positives.tolist(), negatives.tolist(), strict=True))
    assert got == sorted(expected) and len(got) == 16
    assert {n for _, _, n in got} >= {4, 5}
    mined = pml_miners.TripletMarginMiner(margin=100, type_of_triplets="all")(EMB, LABELS)
    assert _triplets(mined) == sorted(expected)


def _by_hand(emb: np.ndarray, margin: float) -> float:
    d = np.linalg.norm(emb[:, None] - emb[None], axis=2)
    losses = [
        max(0.0, d[a, p] - d[a, n] + margin)
        for a, p in itertools.permutations(range(4), 2)
        if LABELS[a] == LABELS[p]
        for n in range(6)
        if LABELS[n] != LABELS[a]
    ]
    positive = [v for v in losses if v > 0]
    return sum(positive) / len(positive)


def test_triplet_loss_over_all_triplets_equals_the_hand_sum():
    loss = TripletLoss(margin=0.7, distance=EUCLID)(EMB, LABELS)
    assert loss.item() == pytest.approx(_by_hand(EMB.double().numpy(), 0.7), rel=1e-6)


def test_subspace_triplet_loss_mines_non_landmarks_only_as_negatives():
    emb = torch.cat([torch.randn(6, 2), EMB], dim=1)  # subspace 1 is the hand layout
    loss_fn = SubspaceTripletLoss(2, margin=0.7, miner=BatchHardMiner(distance=EUCLID))
    loss_fn.distance = EUCLID
    # Subspace chunks are L2-normalised: the hand answer on the normalised layout.
    chunk = torch.nn.functional.normalize(EMB, dim=1)
    mined = _triplets(BatchHardMiner(distance=EUCLID)(chunk, LABELS))
    assert all(a < 4 and p < 4 for a, p, _ in mined) and len(mined) == 4
    d = torch.cdist(chunk.double(), chunk.double())
    by_hand = [max(0.0, float(d[a, p] - d[a, n]) + 0.7) for a, p, n in mined]
    by_hand = [v for v in by_hand if v > 0]
    got = loss_fn(emb, LABELS, subspace=1)
    assert got.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)
