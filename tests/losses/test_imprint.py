"""imprint_weights: class means by a hand loop, PML's weight layout, sub-centre jitter, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

import retrieval_kit as rk
from retrieval_kit.losses import CombinedLoss, SubCenterArcFaceLoss, TripletLoss, imprint_weights

torch.set_num_threads(1)


def data(num_classes=4, per_class=3, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(num_classes * per_class, dim)) * rng.uniform(0.5, 3, (1, 1))
    return emb.astype(np.float32), np.repeat(np.arange(num_classes), per_class)


def hand_means(emb, labels, num_classes):
    out = []
    for c in range(num_classes):
        rows = [e / np.linalg.norm(e) for e, y in zip(emb, labels) if y == c]
        m = np.sum(rows, axis=0)
        out.append(m / np.linalg.norm(m))
    return np.array(out)


def test_arcface_columns_are_the_normalised_class_means():
    emb, labels = data()
    head = SubCenterArcFaceLoss(4, 6, sub_centers=1)
    assert imprint_weights(head, emb, labels) == 4
    np.testing.assert_allclose(head.W.detach().t().numpy(), hand_means(emb, labels, 4), atol=1e-6)


@pytest.mark.parametrize("loss_cls", ["rk", "pml"])
def test_sub_centres_follow_pmls_layout(loss_cls):
    # Column c * K + k is sub-centre k of class c: PML's own forward must then score each class
    # mean highest at its own class, with every sub-centre close to the mean and none equal.
    emb, labels = data(num_classes=5, dim=8)
    if loss_cls == "rk":
        head = SubCenterArcFaceLoss(5, 8, sub_centers=3)
    else:
        head = pml_losses.SubCenterArcFaceLoss(num_classes=5, embedding_size=8, sub_centers=3)
    imprint_weights(head, emb, labels, jitter=0.05)
    means = hand_means(emb, labels, 5)
    w = head.W.detach().t().numpy().reshape(5, 3, 8)  # (class, sub-centre, dim)
    cos = np.einsum("ckd,cd->ck", w, means)
    assert cos.min() > 0.99
    assert np.abs(w[:, 0] - w[:, 1]).max() > 1e-4  # the jitter separates them
    np.testing.assert_allclose(np.linalg.norm(w, axis=2), 1.0, atol=1e-6)
    logits = head.get_logits(torch.as_tensor(means, dtype=torch.float32))
    assert logits.argmax(dim=1).tolist() == [0, 1, 2, 3, 4]


def test_jitter_is_seeded_and_absent_classes_keep_their_weights():
    emb, labels = data(num_classes=3)
    keep = labels != 1
    a, b = SubCenterArcFaceLoss(3, 6), SubCenterArcFaceLoss(3, 6)
    before = a.W.detach().clone()
    assert imprint_weights(a, emb[keep], labels[keep], seed=7) == 2
    imprint_weights(b, emb[keep], labels[keep], seed=7)
    w_a, w_b = a.W.detach(), b.W.detach()
    torch.testing.assert_close(w_a[:, 0:3], w_b[:, 0:3])  # same seed, same jitter
    torch.testing.assert_close(w_a[:, 3:6], before[:, 3:6])  # class 1 had no rows


def test_every_head_of_a_combined_loss_is_imprinted():
    emb, labels = data()
    arc = SubCenterArcFaceLoss(4, 6, sub_centers=1)
    pml_arc = pml_losses.ArcFaceLoss(num_classes=4, embedding_size=6)
    loss = CombinedLoss({"a": arc, "b": pml_arc, "t": TripletLoss()})
    imprint_weights(loss, emb, labels)
    for head in (arc, pml_arc):
        np.testing.assert_allclose(
            head.W.detach().t().numpy(), hand_means(emb, labels, 4), atol=1e-6
        )


def test_imprinted_head_classifies_its_training_rows():
    # Well separated classes: from the start the head's accuracy is 1 (a random head's is not).
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(10, 16))
    labels = np.repeat(np.arange(10), 4)
    emb = centres[labels] + 0.1 * rng.normal(size=(40, 16))
    head = SubCenterArcFaceLoss(10, 16, margin=0.2, scale=30)
    head(torch.as_tensor(emb, dtype=torch.float32), torch.as_tensor(labels))
    random_accuracy = head.last_stats["accuracy"]
    imprint_weights(head, emb, labels)
    head(torch.as_tensor(emb, dtype=torch.float32), torch.as_tensor(labels))
    assert head.last_stats["accuracy"] == 1.0 > random_accuracy


def test_bad_input_is_named():
    emb, labels = data()
    with pytest.raises(ValueError, match="no class weight W"):
        imprint_weights(TripletLoss(), emb, labels)
    with pytest.raises(ValueError, match="shape \\(8, 12\\); for embeddings of 6 dimensions"):
        imprint_weights(SubCenterArcFaceLoss(4, 8), emb, labels)
    with pytest.raises(ValueError, match="label 4 is out of range"):
        imprint_weights(SubCenterArcFaceLoss(4, 6), emb, np.where(labels == 3, 4, labels))
    emb[5, 2] = np.nan
    with pytest.raises(ValueError, match="row 5 is not finite"):
        imprint_weights(SubCenterArcFaceLoss(4, 6), emb, labels)
    with pytest.raises(ValueError, match="expected \\(N, D\\)"):
        imprint_weights(SubCenterArcFaceLoss(4, 6), emb, labels[:-1])


def test_exported():
    assert rk.losses.imprint_weights is imprint_weights
