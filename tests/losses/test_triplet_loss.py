from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import reducers
from pytorch_metric_learning.distances import CosineSimilarity, LpDistance

import retrieval_kit.losses._pair_distances as pair_mod
from retrieval_kit.losses import TripletLoss
from retrieval_kit.miners import BatchHardMiner


def _batch(seed: int, n_classes: int = 6, per_class: int = 4, dim: int = 16):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n_classes * per_class, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    return emb, labels


def _value_and_grad(loss_fn, emb, labels, indices_tuple=None):
    x = emb.clone().requires_grad_(True)
    loss = loss_fn(x, labels, indices_tuple)
    loss.backward()
    return loss.detach(), x.grad


CASES = [
    # (ours, PML reference)
    (
        lambda **kw: TripletLoss(margin=None, **kw),
        lambda **kw: pml_losses.TripletMarginLoss(margin=0, smooth_loss=True, **kw),
    ),
    (
        lambda **kw: TripletLoss(margin=0.2, **kw),
        lambda **kw: pml_losses.TripletMarginLoss(margin=0.2, **kw),
    ),
    (
        lambda **kw: TripletLoss(margin=1.0, **kw),
        lambda **kw: pml_losses.TripletMarginLoss(margin=1.0, **kw),
    ),
]
DISTANCES = [
    lambda: None,  # PML default: LpDistance on L2-normalised embeddings
    lambda: LpDistance(normalize_embeddings=False),
    lambda: CosineSimilarity(),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("dist", range(len(DISTANCES)))
@pytest.mark.parametrize("mined", [False, True])
def test_equals_pml_values_and_gradients(case, dist, mined):
    ours_factory, pml_factory = CASES[case]
    kw = {} if DISTANCES[dist]() is None else {"distance": DISTANCES[dist]()}
    emb, labels = _batch(seed=case + 10 * dist)
    if not mined and dist == 1:
        emb = emb * 0.3  # un-normalised: keep some triplets active for margin=1 and 0.2
    tup = pml_miners.BatchHardMiner(**kw)(emb, labels) if mined else None
    ours_val, ours_grad = _value_and_grad(ours_factory(**kw), emb, labels, tup)
    ref_val, ref_grad = _value_and_grad(pml_factory(**kw), emb, labels, tup)
    assert ref_val.item() != 0.0  # the comparison means something
    torch.testing.assert_close(ours_val, ref_val, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-6, atol=1e-9)


def test_float32_close_to_pml_with_mined_pairs():
    emb, labels = _batch(seed=3, n_classes=16, per_class=8, dim=64)
    emb = emb.float()
    tup = BatchHardMiner()(emb, labels)
    ours_val, ours_grad = _value_and_grad(TripletLoss(None), emb, labels, tup)
    ref_val, ref_grad = _value_and_grad(
        pml_losses.TripletMarginLoss(margin=0, smooth_loss=True), emb, labels, tup
    )
    torch.testing.assert_close(ours_val, ref_val, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_soft_margin_formula_by_hand():
    emb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    loss_fn = TripletLoss(None, distance=LpDistance(normalize_embeddings=False))
    tup = (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    expected = torch.log1p(torch.exp(torch.tensor(1.0 - 2.0)))
    torch.testing.assert_close(loss_fn(emb, labels, tup), expected)


def test_hard_margin_by_hand_and_reducer():
    emb = torch.tensor([[0.0], [1.0], [3.0], [0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    tup = (torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([2, 3]))
    dist = LpDistance(normalize_embeddings=False)
    # d_ap = 1; d_an = 3 and 0.5 -> losses relu(1 - 3 + 0.5) = 0, relu(1 - 0.5 + 0.5) = 1
    assert TripletLoss(0.5, distance=dist)(emb, labels, tup).item() == pytest.approx(1.0)
    mean = TripletLoss(0.5, distance=dist, reducer=reducers.MeanReducer())
    assert mean(emb, labels, tup).item() == pytest.approx(0.5)
    none = TripletLoss(0.5, distance=dist, reducer=reducers.DoNothingReducer())
    assert none(emb, labels, tup)["loss"]["losses"].tolist() == pytest.approx([0.0, 1.0])


def test_pairs_tuple_and_empty_and_errors():
    emb, labels = _batch(seed=1)
    pairs = pml_miners.MultiSimilarityMiner()(emb, labels)
    assert len(pairs) == 4
    ours = TripletLoss(0.1)(emb, labels, pairs)
    ref = pml_losses.TripletMarginLoss(0.1)(emb, labels, pairs)
    torch.testing.assert_close(ours, ref)
    x = emb.clone().requires_grad_(True)
    empty = torch.empty(0, dtype=torch.long)
    loss = TripletLoss(None)(x, labels, (empty, empty, empty))
    loss.backward()
    assert loss.item() == 0.0 and x.grad is not None
    with pytest.raises(TypeError, match="margin"):
        TripletLoss(margin="0.2")


def test_triplet_distances_match_matrix_and_zero_distance_gradient_is_finite():
    x = torch.randn(10, 5, dtype=torch.float64)
    ref = torch.randn(7, 5, dtype=torch.float64)
    a, p, n = torch.tensor([0, 3, 9]), torch.tensor([1, 3, 2]), torch.tensor([4, 0, 6])
    every = torch.arange(10)
    for dist in (LpDistance(), LpDistance(normalize_embeddings=False, power=2), CosineSimilarity()):
        d_ap, d_an = pair_mod.triplet_distances(dist, x, x, a, p, n)
        torch.testing.assert_close(d_ap, dist(x)[a, p])
        torch.testing.assert_close(d_an, dist(x)[a, n])
        # every row an anchor, in order (the no-gather shortcut), and a separate ref set
        d_ap, d_an = pair_mod.triplet_distances(dist, x, ref, every, every % 7, (every + 1) % 7)
        torch.testing.assert_close(d_ap, dist(x, ref)[every, every % 7])
        torch.testing.assert_close(d_an, dist(x, ref)[every, (every + 1) % 7])
    # identical rows (a class sampled with replacement): gradient must stay finite
    y = torch.ones(2, 3, requires_grad=True)
    i = torch.tensor([0])
    sum(pair_mod.triplet_distances(LpDistance(), y, y, i, i + 1, i)).sum().backward()
    assert torch.isfinite(y.grad).all()
