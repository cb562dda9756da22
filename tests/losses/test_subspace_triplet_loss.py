from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import reducers
from pytorch_metric_learning.distances import LpDistance

from retrieval_kit.losses import SubspaceTripletLoss, TripletLoss
from retrieval_kit.miners import BatchHardMiner


def _batch(seed: int = 0, dim: int = 24):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(20, dim, generator=g, dtype=torch.float64)
    labels = torch.arange(5).repeat_interleave(4)
    return emb, labels


def _value_and_grad(fn, emb):
    x = emb.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("margin", [None, 0.3])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_subspace_k_equals_triplet_loss_on_normalised_chunk(margin, k):
    emb, labels = _batch(seed=k)
    raw = LpDistance(normalize_embeddings=False)  # so the chunk's normalisation is what counts
    ours = SubspaceTripletLoss(3, margin=margin, distance=raw)
    ref = TripletLoss(margin=margin, distance=LpDistance(normalize_embeddings=False))

    def reference(x):
        chunk = F.normalize(x[:, 8 * k : 8 * (k + 1)], dim=1)
        return ref(chunk, labels)

    got_val, got_grad = _value_and_grad(lambda x: ours(x, labels, subspace=k), emb)
    ref_val, ref_grad = _value_and_grad(reference, emb)
    assert ref_val.item() > 0
    torch.testing.assert_close(got_val, ref_val)
    torch.testing.assert_close(got_grad, ref_grad)
    # only chunk k gets gradient
    others = torch.ones(24, dtype=torch.bool)
    others[8 * k : 8 * (k + 1)] = False
    assert got_grad[:, others].abs().max() == 0


def test_mines_on_the_chunk_with_its_miner():
    emb, labels = _batch(seed=5)
    k = 1
    ours = SubspaceTripletLoss(3, margin=None, miner=BatchHardMiner())
    chunk = F.normalize(emb[:, 8:16], dim=1)
    tup = BatchHardMiner()(chunk, labels)
    expected = TripletLoss(None)(chunk, labels, tup)
    torch.testing.assert_close(ours(emb, labels, subspace=k), expected)
    # mining on the whole embedding picks other triplets, hence another value
    whole_tup = BatchHardMiner()(emb, labels)
    assert not all(torch.equal(a, b) for a, b in zip(tup, whole_tup, strict=True))
    # an explicit tuple wins over the miner
    torch.testing.assert_close(
        ours(emb, labels, whole_tup, subspace=k), TripletLoss(None)(chunk, labels, whole_tup)
    )


def test_subspace_none_is_the_whole_embedding_and_reducers_work():
    emb, labels = _batch(seed=2)
    for reducer in (None, reducers.MeanReducer()):
        kw = {} if reducer is None else {"reducer": reducer}
        ours = SubspaceTripletLoss(3, margin=0.2, **kw)
        ref = TripletLoss(margin=0.2, **kw)
        torch.testing.assert_close(ours(emb, labels), ref(emb, labels))
    per_triplet = SubspaceTripletLoss(3, reducer=reducers.DoNothingReducer())(
        emb, labels, subspace=0
    )
    assert per_triplet["loss"]["losses"].ndim == 1


def test_errors():
    emb, labels = _batch()
    with pytest.raises(ValueError, match="not divisible"):
        SubspaceTripletLoss(5)(emb, labels, subspace=0)
    with pytest.raises(ValueError, match="out of range"):
        SubspaceTripletLoss(3)(emb, labels, subspace=3)
    with pytest.raises(ValueError, match="out of range"):
        SubspaceTripletLoss(3)(emb, labels, subspace=-1)
    with pytest.raises(TypeError, match="subspace"):
        SubspaceTripletLoss(3)(emb, labels, subspace=1.0)
    with pytest.raises(ValueError, match="num_subspaces"):
        SubspaceTripletLoss(0)
