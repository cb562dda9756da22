"""SubCenterArcFaceLoss(non_landmark_margin=...): negative labels leave the softmax and are
pushed below the margin to every class; checked against a float64 loop by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from retrieval_kit.losses import SubCenterArcFaceLoss
from retrieval_kit.samplers import non_landmark_labels

torch.set_num_threads(1)


def by_hand(emb, labels, W, margin, scale, sub_centers, nl_margin, classes=None):
    """Mean over rows: ArcFace cross-entropy for a class row, softplus(s (max cos - m)) else."""
    emb = emb.detach().double().numpy()
    W = W.detach().double().numpy()
    n_classes = W.shape[1] // sub_centers
    classes = list(range(n_classes)) if classes is None else [int(c) for c in classes]
    total = 0.0
    for x, y in zip(emb, labels.tolist()):
        x = x / np.linalg.norm(x)
        cosines = []
        for c in classes:
            cols = W[:, c * sub_centers : (c + 1) * sub_centers]
            cols = cols / np.linalg.norm(cols, axis=0, keepdims=True)
            cosines.append(float((x @ cols).max()))
        if y < 0:
            z = scale * (max(cosines) - nl_margin)
            total += max(z, 0.0) + math.log1p(math.exp(-abs(z)))  # softplus, stable
            continue
        logits = []
        for c, cos in zip(classes, cosines):
            if c == y:
                theta = math.acos(max(-1.0, min(1.0, cos)))
                cos = math.cos(theta + margin) if theta <= math.pi - margin else cos
            logits.append(scale * cos)
        logits = np.array(logits)
        t = classes.index(y)
        total += -(logits[t] - logits.max() - math.log(np.exp(logits - logits.max()).sum()))
    return total / len(emb)


def _batch(seed, n=16, dim=8, classes=6, non_landmarks=5):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n + non_landmarks, dim, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    labels = torch.cat([labels, torch.from_numpy(non_landmark_labels(non_landmarks))])
    return emb, labels[torch.randperm(len(labels), generator=g)]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sub_centers", [1, 3])
def test_value_matches_a_loop_by_hand(seed, sub_centers):
    loss_fn = SubCenterArcFaceLoss(
        6, 8, sub_centers=sub_centers, margin=0.3, scale=16, non_landmark_margin=0.2
    )
    emb, labels = _batch(seed)
    expected = by_hand(emb, labels, loss_fn.W, 0.3, 16, sub_centers, 0.2)
    assert loss_fn(emb, labels).item() == pytest.approx(expected, rel=1e-5)
    # Landmark-only statistics: the accuracy is over the class rows.
    assert 0.0 <= loss_fn.last_stats["accuracy"] <= 1.0


def test_without_non_landmark_rows_it_is_the_plain_loss():
    emb, labels = _batch(4, non_landmarks=0)
    a = SubCenterArcFaceLoss(6, 8, margin=0.3, scale=16, non_landmark_margin=0.2)
    b = SubCenterArcFaceLoss(6, 8, margin=0.3, scale=16)
    b.W.data.copy_(a.W.data)
    assert a(emb, labels).item() == pytest.approx(b(emb, labels).item(), rel=1e-7)


def test_gradient_lowers_the_non_landmarks_top_cosine():
    torch.manual_seed(0)
    loss_fn = SubCenterArcFaceLoss(4, 8, sub_centers=2, margin=0.3, scale=16, non_landmark_margin=0)
    emb = torch.randn(6, 8, requires_grad=True)
    labels = torch.from_numpy(non_landmark_labels(6))
    before = loss_fn.class_cosines(emb).max(dim=1).values.mean().item()
    opt = torch.optim.SGD([emb], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        loss_fn(emb, labels).backward()
        opt.step()
    after = loss_fn.class_cosines(emb).max(dim=1).values.mean().item()
    assert after < before - 0.1 and loss_fn.last_stats == {}


def test_partial_fc_scores_only_the_landmark_rows_classes_and_others():
    loss_fn = SubCenterArcFaceLoss(
        40, 8, margin=0.3, scale=16, partial_fc=0.25, seed=1, non_landmark_margin=0.1
    )
    emb, labels = _batch(5, n=6, classes=40, non_landmarks=3)
    labels = torch.where(labels >= 0, labels % 39 + 1, labels)  # class 0 is nobody's label
    fresh = SubCenterArcFaceLoss(40, 8, partial_fc=0.25, seed=1)
    wanted = fresh.sample_classes(labels[labels >= 0])  # the draw for the class rows alone
    loss = loss_fn(emb, labels)
    classes = loss_fn.sampled_classes
    assert classes.tolist() == wanted.tolist() and len(classes) == 10
    assert set(labels[labels >= 0].tolist()) <= set(classes.tolist())
    expected = by_hand(emb, labels, loss_fn.W, 0.3, 16, 3, 0.1, classes=classes.tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_negative_labels_need_the_option_and_the_margin_is_checked():
    emb, labels = _batch(0)
    with pytest.raises(ValueError, match=r"label -\d is out of range.*non_landmark_margin"):
        SubCenterArcFaceLoss(6, 8)(emb, labels)
    for bad in (1.0, -1.5, True, "0.2"):
        with pytest.raises(ValueError, match="non_landmark_margin"):
            SubCenterArcFaceLoss(6, 8, non_landmark_margin=bad)
    assert "non_landmark_margin=0.2" in repr(SubCenterArcFaceLoss(6, 8, non_landmark_margin=0.2))
