"""Shared helpers of the in-batch miners: a dissimilarity matrix and label masks."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import BaseDistance


def dissimilarity_matrix(
    distance: BaseDistance, embeddings: torch.Tensor, ref_emb: torch.Tensor
) -> torch.Tensor:
    """(B, R) matrix where smaller means closer, for both distances and similarities.

    Uses the same ``distance(embeddings, ref_emb)`` call as PML's miners, so the values (and
    therefore ties) are identical; inverted distances (similarities) are negated.
    """
    mat = distance(embeddings, ref_emb)
    return -mat if distance.is_inverted else mat


def label_masks(
    labels: torch.Tensor, ref_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean (B, R) masks; an anchor is not its own positive."""
    same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
    negative = ~same
    if ref_labels is labels:  # PML's rule: only then is the diagonal the anchor itself
        same.fill_diagonal_(False)
    return same, negative


def push_away(d: torch.Tensor, mask: torch.Tensor, sign: float) -> torch.Tensor:
    """``d`` with the entries under ``mask`` moved beyond every other entry (up if sign > 0).

    Unmasked entries stay bit-identical (``d + 0``). An add with a boolean is several times
    faster on CPU than ``masked_fill`` / ``torch.where`` with a random mask.
    """
    big = 4.0 * (float(d.abs().amax()) + 1.0) if d.numel() else 1.0
    return torch.add(d, mask, alpha=sign * big)


def beyond(values: torch.Tensor, d: torch.Tensor, sign: float) -> torch.Tensor:
    """True where ``values`` (reductions of ``push_away(d, ., sign)``) are pushed entries."""
    limit = 2.0 * (float(d.abs().amax()) + 1.0) if d.numel() else 0.5
    return values > limit if sign > 0 else values < -limit
