"""SubCenterArcFaceLoss against PML, a float64 loop by hand, autocast and partial FC."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning.miners import MultiSimilarityMiner

import retrieval_kit as rk
from retrieval_kit.losses import SubCenterArcFaceLoss

torch.set_num_threads(1)


def batch(n=24, dim=16, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, dim, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return emb, labels


def loss_and_grads(loss_fn, emb, labels, indices_tuple=None):
    emb = emb.clone().requires_grad_(True)
    loss_fn.zero_grad()
    loss = loss_fn(emb, labels, indices_tuple)
    loss.backward()
    return loss.detach(), emb.grad, loss_fn.W.grad.clone()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sub_centers", [1, 3])
def test_equals_pml_in_value_and_gradients(seed, sub_centers):
    classes, dim = 10, 16
    if sub_centers == 1:
        ref = pml_losses.ArcFaceLoss(classes, dim, margin=math.degrees(0.3), scale=30)
    else:
        ref = pml_losses.SubCenterArcFaceLoss(
            num_classes=classes,
            embedding_size=dim,
            margin=math.degrees(0.3),
            scale=30,
            sub_centers=sub_centers,
        )
    ours = SubCenterArcFaceLoss(classes, dim, sub_centers=sub_centers, margin=0.3, scale=30)
    assert ours.W.shape == ref.W.shape == (dim, classes * sub_centers)
    ours.W.data.copy_(ref.W.data)
    emb, labels = batch(seed=seed, dim=dim, classes=classes)
    miner_out = MultiSimilarityMiner(epsilon=0.5)(emb, labels)  # per-sample weights, as PML
    for indices_tuple in (None, miner_out):
        a = loss_and_grads(ref, emb, labels, indices_tuple)
        b = loss_and_grads(ours, emb, labels, indices_tuple)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)


def by_hand(emb, labels, W, margins, scale, sub_centers, classes=None):
    """The loss in float64 numpy, one sample at a time."""
    emb = emb.detach().double().numpy()
    W = W.detach().double().numpy()
    n_classes = W.shape[1] // sub_centers
    classes = list(range(n_classes)) if classes is None else [int(c) for c in classes]
    total = 0.0
    for x, y in zip(emb, labels.tolist()):
        x = x / np.linalg.norm(x)
        logits = []
        for c in classes:
            cols = W[:, c * sub_centers : (c + 1) * sub_centers]
            cos = max(
                float(x @ (cols[:, k] / np.linalg.norm(cols[:, k]))) for k in range(sub_centers)
            )
            if c == y:
                m = float(margins[y])
                theta = math.acos(max(-1.0, min(1.0, cos)))
                cos = math.cos(theta + m) if theta <= math.pi - m else cos - m * math.sin(m)
            logits.append(scale * cos)
        logits = np.array(logits)
        target = classes.index(y)
        total += -(logits[target] - logits.max() - math.log(np.exp(logits - logits.max()).sum()))
    return total / len(emb)


def test_per_class_margins_match_a_loop_by_hand():
    classes, dim = 8, 6
    margins = torch.linspace(0.05, 0.6, classes)
    loss_fn = SubCenterArcFaceLoss(classes, dim, sub_centers=2, margin=margins, scale=16)
    emb, labels = batch(n=20, dim=dim, classes=classes, seed=3)
    expected = by_hand(emb, labels, loss_fn.W, margins.numpy(), 16, 2)
    assert loss_fn(emb, labels).item() == pytest.approx(expected, rel=1e-5)
    # A list of margins, and one margin repeated, equal a float margin.
    same = SubCenterArcFaceLoss(classes, dim, sub_centers=2, margin=[0.2] * classes, scale=16)
    flat = SubCenterArcFaceLoss(classes, dim, sub_centers=2, margin=0.2, scale=16)
    flat.W.data.copy_(same.W.data)
    assert same(emb, labels).item() == pytest.approx(flat(emb, labels).item(), rel=1e-7)


def test_margins_are_radians_and_validated():
    with pytest.raises(ValueError, match="degrees"):
        SubCenterArcFaceLoss(4, 3, margin=28.6)
    with pytest.raises(ValueError, match="4 values"):
        SubCenterArcFaceLoss(4, 3, margin=[0.1, 0.2])
    with pytest.raises(ValueError, match="partial_fc"):
        SubCenterArcFaceLoss(4, 3, partial_fc=0)
    loss_fn = SubCenterArcFaceLoss(4, 3)
    with pytest.raises(ValueError, match="label 4 is out of range"):
        loss_fn(torch.randn(2, 3), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="embedding_size=3"):
        loss_fn(torch.randn(2, 5), torch.tensor([0, 1]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_safe_under_half_precision_autocast(dtype):
    loss_fn = SubCenterArcFaceLoss(50, 32, sub_centers=3, margin=0.5, scale=64)
    emb, labels = batch(n=64, dim=32, classes=50, seed=4)
    reference = loss_fn(emb, labels)
    low = emb.to(dtype).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        loss = loss_fn(low, labels)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert torch.isfinite(low.grad).all() and torch.isfinite(loss_fn.W.grad).all()
    # Logits in float32: exactly the float32 loss of the bf16-rounded embeddings...
    assert loss.item() == loss_fn(low.detach().float(), labels).item()
    # ...and close to the float32 loss of the unrounded ones.
    assert loss.item() == pytest.approx(reference.item(), rel=2e-2)


def test_partial_fc_of_one_equals_the_full_loss():
    full = SubCenterArcFaceLoss(30, 8, sub_centers=2)
    part = SubCenterArcFaceLoss(30, 8, sub_centers=2, partial_fc=1.0)
    part.W.data.copy_(full.W.data)
    emb, labels = batch(n=16, dim=8, classes=30, seed=5)
    for x, y in zip(loss_and_grads(full, emb, labels), loss_and_grads(part, emb, labels)):
        assert torch.equal(x, y)
    assert torch.equal(part.sampled_classes, torch.arange(30))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partial_fc_keeps_positives_and_equals_the_restricted_loss(seed):
    classes, dim, fraction = 40, 8, 0.25
    loss_fn = SubCenterArcFaceLoss(
        classes,
        dim,
        sub_centers=2,
        margin=torch.linspace(0.1, 0.5, classes),
        scale=16,
        partial_fc=fraction,
        seed=seed,
    )
    for step in range(5):
        emb, labels = batch(n=6, dim=dim, classes=classes, seed=100 * seed + step)
        loss, _, w_grad = loss_and_grads(loss_fn, emb, labels)
        sampled = loss_fn.sampled_classes
        assert len(sampled) == math.ceil(fraction * classes)
        assert torch.equal(sampled, torch.sort(sampled).values) and len(sampled.unique()) == 10
        assert set(labels.tolist()) <= set(sampled.tolist())
        expected = by_hand(emb, labels, loss_fn.W, loss_fn.margins.numpy(), 16, 2, sampled)
        assert loss.item() == pytest.approx(expected, rel=1e-5)
        # Only the sampled classes' sub-centres get a gradient.
        touched = w_grad.abs().sum(0).view(classes, 2).sum(1) > 0
        assert set(torch.nonzero(touched).flatten().tolist()) <= set(sampled.tolist())


def test_partial_fc_keeps_every_positive_even_past_the_fraction():
    loss_fn = SubCenterArcFaceLoss(20, 4, partial_fc=0.1, seed=0)
    labels = torch.arange(5)  # 5 positives > ceil(0.1 * 20) = 2
    loss_fn(torch.randn(5, 4), labels)
    assert loss_fn.sampled_classes.tolist() == [0, 1, 2, 3, 4]


def test_partial_fc_draws_negatives_uniformly_and_reproducibly():
    classes = 20
    a = SubCenterArcFaceLoss(classes, 4, partial_fc=0.25, seed=7)
    b = SubCenterArcFaceLoss(classes, 4, partial_fc=0.25, seed=7)
    labels = torch.tensor([0])
    counts = torch.zeros(classes)
    draws = 2000
    for _ in range(draws):
        ids = a.sample_classes(labels)
        assert torch.equal(ids, b.sample_classes(labels))
        counts[ids] += 1
    assert counts[0] == draws
    # 4 of the 19 other classes per draw: each expected 2000 * 4 / 19 = 421 times (sd ~ 18).
    expected = draws * 4 / (classes - 1)
    assert (counts[1:] - expected).abs().max() < 6 * math.sqrt(expected)
    # The generator is part of the state dict: a copy continues the same sequence.
    c = SubCenterArcFaceLoss(classes, 4, partial_fc=0.25, seed=99)
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.sample_classes(labels), a.sample_classes(labels))


def test_get_logits_and_state_dict_layout():
    loss_fn = SubCenterArcFaceLoss(6, 4, sub_centers=3, scale=10)
    emb = torch.randn(5, 4)
    logits = loss_fn.get_logits(emb)
    assert logits.shape == (5, 6)
    cos = torch.nn.functional.normalize(emb) @ torch.nn.functional.normalize(loss_fn.W, dim=0)
    torch.testing.assert_close(logits, 10 * cos.view(5, 6, 3).max(2).values)
    assert set(loss_fn.state_dict()) == {"W", "margins", "_extra_state"}


def test_dynamic_margins_formula_and_authors_rule():
    counts = np.array([1, 3, 10, 50, 400, 7])
    got = rk.losses.dynamic_margins(counts, a=0.3, b=0.1, lam=0.5)
    np.testing.assert_allclose(got.numpy(), 0.3 * counts**-0.5 + 0.1, rtol=1e-6)
    assert got.dtype == torch.float32
    # Defaults: Ha et al.'s code, min-max scaled n^(-1/4) into [0.05, 0.5].
    tmp = np.sqrt(1 / np.sqrt(counts))
    expected = (tmp - tmp.min()) / (tmp.max() - tmp.min()) * 0.45 + 0.05
    np.testing.assert_allclose(rk.losses.dynamic_margins(counts).numpy(), expected, rtol=1e-6)
    assert rk.losses.dynamic_margins([5, 5]).tolist() == pytest.approx([0.275, 0.275])
    with pytest.raises(ValueError, match=r"class_counts\[1\]"):
        rk.losses.dynamic_margins([3, 0, 2])
    with pytest.raises(ValueError, match="both a and b"):
        rk.losses.dynamic_margins([3, 2], a=0.1)
    # Ready for the loss: one margin per class.
    SubCenterArcFaceLoss(6, 4, margin=rk.losses.dynamic_margins(counts))
