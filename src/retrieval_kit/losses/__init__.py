"""Metric-learning losses; subclasses of pytorch-metric-learning's ``BaseMetricLossFunction``.

Example:
    >>> import retrieval_kit as rk
    >>> loss_fn = rk.losses.TripletLoss(margin=None)  # soft margin
"""

from __future__ import annotations

from retrieval_kit.losses.combined_loss import CombinedLoss
from retrieval_kit.losses.dynamic_margins import dynamic_margins
from retrieval_kit.losses.imprint import imprint_weights
from retrieval_kit.losses.registry import create_loss, list_losses, register_loss
from retrieval_kit.losses.subcenter_arcface_loss import SubCenterArcFaceLoss
from retrieval_kit.losses.subspace_triplet_loss import SubspaceTripletLoss
from retrieval_kit.losses.triplet_loss import TripletLoss

__all__ = [
    "CombinedLoss",
    "SubCenterArcFaceLoss",
    "SubspaceTripletLoss",
    "TripletLoss",
    "create_loss",
    "dynamic_margins",
    "imprint_weights",
    "list_losses",
    "register_loss",
]
