"""Metric-learning losses; subclasses of pytorch-metric-learning's ``BaseMetricLossFunction``.

Example:
    >>> import retrieval_kit as rk
    >>> loss_fn = rk.losses.TripletLoss(margin=None)  # soft margin
"""

from __future__ import annotations

from retrieval_kit.losses.subspace_triplet_loss import SubspaceTripletLoss
from retrieval_kit.losses.triplet_loss import TripletLoss

__all__ = ["SubspaceTripletLoss", "TripletLoss"]
