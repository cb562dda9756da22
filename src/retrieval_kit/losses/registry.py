"""Losses by name: ``create_loss`` / ``list_losses`` / ``register_loss``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_metric_learning.losses as pml_losses
import torch

from retrieval_kit._registry import ComponentRegistry
from retrieval_kit.losses.subcenter_arcface_loss import SubCenterArcFaceLoss
from retrieval_kit.losses.subspace_triplet_loss import SubspaceTripletLoss
from retrieval_kit.losses.triplet_loss import TripletLoss

__all__ = ["create_loss", "list_losses", "register_loss"]

_LOSSES = ComponentRegistry("loss", "list_losses", pml_losses, torch.nn.Module)


def register_loss(name: str | Callable[..., Any] | None = None, *, replace: bool = False) -> Any:
    """Register a loss class or factory under ``name`` (decorator; default its own name).

    PML's class names are reserved; a taken name raises ``ValueError`` unless ``replace=True``.

    Example:
        >>> from pytorch_metric_learning.losses import ContrastiveLoss
        >>> @register_loss("my_contrastive")
        ... class MyContrastive(ContrastiveLoss):
        ...     pass
        >>> type(create_loss("my_contrastive", pos_margin=0.1)).__name__
        'MyContrastive'
    """
    return _LOSSES.register(name, replace=replace)


def list_losses(filter: str = "", pml: bool = True) -> list[str]:
    """retrieval_kit's loss names (sorted), then pytorch-metric-learning's class names.

    Args:
        filter: a shell pattern (``"*arcface*"``); empty keeps all.
        pml: include ``pytorch_metric_learning.losses`` classes.

    Example:
        >>> list_losses(pml=False)[:3]
        ['arcface', 'combined', 'subcenter_arcface']
    """
    return _LOSSES.names(filter, pml)


def create_loss(name: str, **kwargs: Any) -> torch.nn.Module:
    """Build a loss by name: a retrieval_kit snake_case name, else a PML loss class name.

    (``"combined"`` is registered by :mod:`retrieval_kit.losses.combined_loss` itself, which
    builds its parts with this function.)

    ``"triplet"``, ``"subspace_triplet"``, ``"subcenter_arcface"``, ``"arcface"``
    (``sub_centers=1``), ``"combined"`` (``losses={name: {"name": ..., "weight": ...}}``, see
    ``CombinedLoss``), anything registered with ``register_loss``, or any class of
    ``pytorch_metric_learning.losses`` (``"MultiSimilarityLoss"``, ``"ArcFaceLoss"``: note PML
    margins in degrees).

    Raises:
        KeyError: an unknown name (the message suggests close names).
        TypeError: a keyword the loss does not take (named with the loss).

    Example:
        >>> create_loss("triplet", margin=0.2).margin
        0.2
        >>> type(create_loss("MultiSimilarityLoss", alpha=2.0)).__name__
        'MultiSimilarityLoss'
    """
    return _LOSSES.create(name, **kwargs)


def _arcface(num_classes: int, embedding_size: int, **kwargs: Any) -> SubCenterArcFaceLoss:
    if kwargs.get("sub_centers", 1) != 1:
        raise TypeError("'arcface' has one centre per class; use 'subcenter_arcface'")
    kwargs.pop("sub_centers", None)
    return SubCenterArcFaceLoss(num_classes, embedding_size, sub_centers=1, **kwargs)


_LOSSES.register("triplet")(TripletLoss)
_LOSSES.register("subspace_triplet")(SubspaceTripletLoss)
_LOSSES.register("subcenter_arcface")(SubCenterArcFaceLoss)
_LOSSES.register("arcface")(_arcface)
