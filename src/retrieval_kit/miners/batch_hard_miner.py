"""Batch-hard mining: the hardest positive and hardest negative of every anchor."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_metric_learning.miners import BaseMiner

from retrieval_kit.miners._masks import beyond, dissimilarity_matrix, push_away


class BatchHardMiner(BaseMiner):
    """For each anchor with a positive and a negative in the batch: its farthest positive and
    its closest negative (Hermans et al., "In Defense of the Triplet Loss", 2017).

    Picks the same triplets as PML's ``BatchHardMiner`` (same distance call, same reductions)
    with fewer passes over the (B, B) matrix. Anchors without a positive or a negative are
    skipped. Memory O(B^2); device-agnostic.

    Args:
        **kwargs: PML collaborators (``distance``, ``collect_stats``).

    Example:
        >>> import torch
        >>> emb = torch.tensor([[0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [3.0, 0.0]])
        >>> a, p, n = BatchHardMiner()(emb, torch.tensor([0, 0, 1, 1]))
        >>> a.tolist(), p.tolist()
        ([0, 1, 2, 3], [1, 0, 3, 2])
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)

    def mine(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(anchors, positives, negatives) index tensors (see ``BaseMiner``)."""
        d = dissimilarity_matrix(self.distance, embeddings, ref_emb)
        same = labels.unsqueeze(1) == ref_labels.unsqueeze(0)
        # Hardest positive: largest d among same-label columns (not the anchor itself).
        not_pos = ~same
        if ref_labels is labels:  # PML's rule: only then is the diagonal the anchor itself
            not_pos.fill_diagonal_(True)
        pos_d, positives = push_away(d, not_pos, -1.0).max(dim=1)
        del not_pos
        # Hardest negative: smallest d among other-label columns.
        neg_d, negatives = push_away(d, same, 1.0).min(dim=1)
        keep = ~(beyond(pos_d, d, -1.0) | beyond(neg_d, d, 1.0))
        if bool(keep.all()):
            return torch.arange(len(d), device=d.device), positives, negatives
        rows = keep.nonzero(as_tuple=True)[0]
        return rows, positives[rows], negatives[rows]
