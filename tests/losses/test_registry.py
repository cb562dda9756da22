"""Losses by name: own names, PML class names, errors, registration, smoke tests of each."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

import retrieval_kit as rk
from retrieval_kit.losses import create_loss, list_losses, register_loss

torch.set_num_threads(1)

# Arguments the own losses need; a registered loss missing here fails the smoke test.
REQUIRED = {
    "subcenter_arcface": {"num_classes": 4, "embedding_size": 8},
    "arcface": {"num_classes": 4, "embedding_size": 8},
    "subspace_triplet": {"num_subspaces": 2},
    "combined": {
        "losses": {
            "t": {"name": "triplet"},
            "a": {"name": "arcface", "num_classes": 4, "embedding_size": 8},
        }
    },
}
OWN = ["arcface", "combined", "subcenter_arcface", "subspace_triplet", "triplet"]


def own_names():
    return [n for n in list_losses(pml=False) if not n.startswith("test_")]


def test_lists_own_names_then_pml_classes():
    names = list_losses()
    assert own_names() == OWN
    assert names.index("triplet") < names.index("AngularLoss")  # own names first
    for pml_name in ("MultiSimilarityLoss", "ArcFaceLoss", "TripletMarginLoss", "CircleLoss"):
        assert pml_name in names
    assert "BaseMetricLossFunction" not in names
    assert list_losses("*arcface*", pml=False) == ["arcface", "subcenter_arcface"]


@pytest.mark.parametrize("name", own_names())
def test_every_own_loss_builds_runs_and_backpropagates(name):
    loss_fn = create_loss(name, **REQUIRED.get(name, {}))
    emb = torch.randn(8, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = loss_fn(emb, labels)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss) and torch.isfinite(emb.grad).all()
    assert emb.grad.abs().sum() > 0


def test_own_names_build_own_classes_and_class_names_build_pml():
    assert type(create_loss("triplet", margin=0.1)) is rk.losses.TripletLoss
    arc = create_loss("arcface", num_classes=5, embedding_size=3, margin=0.2)
    assert type(arc) is rk.losses.SubCenterArcFaceLoss and arc.sub_centers == 1
    assert arc.margins.tolist() == pytest.approx([0.2] * 5)
    sub = create_loss("subcenter_arcface", num_classes=5, embedding_size=3)
    assert sub.sub_centers == 3
    ms = create_loss("MultiSimilarityLoss", alpha=3.0, beta=40.0)
    assert type(ms) is pml_losses.MultiSimilarityLoss and ms.alpha == 3.0
    pml_arc = create_loss("SubCenterArcFaceLoss", num_classes=5, embedding_size=3)
    assert type(pml_arc) is pml_losses.SubCenterArcFaceLoss  # class names are PML's


def test_unknown_name_suggests_close_names():
    with pytest.raises(KeyError, match=r"unknown loss 'tripplet'; did you mean 'triplet'"):
        create_loss("tripplet")
    with pytest.raises(KeyError, match="'MultiSimilarityLoss'"):
        create_loss("MultiSimilarityLos")
    with pytest.raises(KeyError, match="'subcenter_arcface'"):
        create_loss("subcenter-arcface")


def test_bad_keyword_names_the_loss_and_the_keyword():
    with pytest.raises(TypeError, match=r"loss 'triplet' rejected keyword argument 'margn'"):
        create_loss("triplet", margn=0.1)
    with pytest.raises(TypeError, match=r"'MultiSimilarityLoss' rejected keyword argument 'alfa'"):
        create_loss("MultiSimilarityLoss", alfa=2.0)
    with pytest.raises(TypeError, match=r"'arcface'.*'scal'"):
        create_loss("arcface", num_classes=3, embedding_size=2, scal=3)


def test_register_a_users_loss():
    @register_loss("test_mean_distance")
    class MeanDistance(torch.nn.Module):
        def __init__(self, power: float = 1.0):
            super().__init__()
            self.power = power

        def forward(self, embeddings, labels=None, indices_tuple=None):
            return torch.cdist(embeddings, embeddings).pow(self.power).mean()

    assert "test_mean_distance" in list_losses(pml=False)
    loss_fn = create_loss("test_mean_distance", power=2.0)
    assert isinstance(loss_fn, MeanDistance) and loss_fn.power == 2.0
    with pytest.raises(TypeError, match=r"'test_mean_distance' got unknown keyword.*\['pow'\]"):
        create_loss("test_mean_distance", pow=2.0)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("test_mean_distance")(torch.nn.Identity)
    with pytest.raises(ValueError, match="pytorch-metric-learning"):
        register_loss("ContrastiveLoss")(MeanDistance)
    register_loss("test_mean_distance", replace=True)(MeanDistance)  # explicit override is fine
