"""FaceNet semi-hard negative mining."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_metric_learning.miners import BaseMiner

from retrieval_kit.miners._masks import dissimilarity_matrix, label_masks


class SemiHardMiner(BaseMiner):
    """One triplet per positive pair (a, p) with a semi-hard negative (Schroff et al., FaceNet).

    A negative n is semi-hard when ``d_ap < d_an < d_ap + margin``: farther than the positive
    but still inside the margin. Among them the hardest (smallest ``d_an``) is taken, as in
    TensorFlow Addons' ``triplet_semihard_loss``. Where none is semi-hard the hardest negative
    of the anchor (smallest ``d_an``) is taken, so the pair still gives a loss to learn from
    (TF Addons takes the *largest* ``d_an`` there instead, which usually gives none). For
    similarities (inverted distances) the same rule runs on the negated similarity. Anchors
    without a positive or a negative are skipped.

    Memory O(B^2): each anchor's negative distances are sorted once and every positive pair
    finds its first farther negative by binary search (no (B, B, B) tensor).

    Args:
        margin: width of the semi-hard band, in the distance's units.
        **kwargs: PML collaborators (``distance``, ``collect_stats``).

    Example:
        >>> import torch
        >>> from pytorch_metric_learning.distances import LpDistance
        >>> miner = SemiHardMiner(margin=1.0, distance=LpDistance(normalize_embeddings=False))
        >>> emb = torch.tensor([[0.0], [1.0], [1.5], [3.0]])
        >>> a, p, n = miner(emb, torch.tensor([0, 0, 1, 1]))
        >>> n.tolist()  # (1, 0) and (2, 3) have no semi-hard negative: their hardest
        [2, 2, 1, 1]
    """

    def __init__(self, margin: float = 0.2, **kwargs: Any) -> None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float)):
            raise TypeError(f"margin must be a number, got {margin!r}")
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.add_to_recordable_attributes(name="margin", is_stat=False)

    def mine(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor,
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(anchors, positives, negatives) index tensors (see ``BaseMiner``)."""
        d = dissimilarity_matrix(self.distance, embeddings, ref_emb)
        pos_mask, neg_mask = label_masks(labels, ref_labels)
        num_neg = neg_mask.sum(dim=1)
        pos_mask &= (num_neg > 0).unsqueeze(1)
        anchors, positives = pos_mask.nonzero(as_tuple=True)
        if len(anchors) == 0:
            return anchors, positives, positives.clone()
        # Non-negatives sort to the end (+inf), so row a's first num_neg[a] entries are its
        # negatives in increasing distance.
        neg_sorted, order = d.masked_fill(~neg_mask, float("inf")).sort(dim=1)
        del neg_mask
        # first[a, p]: position of the first negative of a strictly farther than d[a, p].
        first = torch.searchsorted(neg_sorted, d.contiguous(), right=True)
        j = first[anchors, positives]
        d_ap = d[anchors, positives]
        del first
        inside = j < num_neg[anchors]
        j = j.clamp(max=d.shape[1] - 1)
        semi_hard = inside & (neg_sorted[anchors, j] < d_ap + self.margin)
        hardest = order[anchors, 0]
        negatives = torch.where(semi_hard, order[anchors, j], hardest)
        return anchors, positives, negatives
