"""Triplet loss with a hard or a soft margin (a PML ``BaseMetricLossFunction``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.reducers import AvgNonZeroReducer
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

from retrieval_kit.losses._pair_distances import full_matrix_is_cheaper, triplet_distances


class TripletLoss(BaseMetricLossFunction):
    """Triplet loss ``relu(d_ap - d_an + margin)``, or soft margin ``log(1 + exp(d_ap - d_an))``.

    With the default distance (PML's ``LpDistance``: Euclidean on L2-normalised embeddings) it
    gives the values of PML's ``TripletMarginLoss(margin=m)``; ``margin=None`` gives those of
    ``TripletMarginLoss(margin=0, smooth_loss=True)``. The reproduced landmark pipeline used the
    Euclidean distance on the raw embedding: ``distance=LpDistance(normalize_embeddings=False)``.

    Without ``indices_tuple`` every valid triplet of the batch is used, as in PML (O(B^3)
    memory: pass a miner's output for large batches). Given a tuple, only the mined pairs'
    distances are computed (O(T * D)), not the whole (B, B) matrix and its backward.

    Args:
        margin: ``None`` for the soft margin, else the hinge margin.
        **kwargs: PML collaborators (``distance``, ``reducer``, ``embedding_regularizer``,
            ``collect_stats``). The default reducer is ``AvgNonZeroReducer`` like PML's.

    Example:
        >>> import torch
        >>> from retrieval_kit.miners import BatchHardMiner
        >>> emb, labels = torch.randn(8, 4), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> loss_fn, miner = TripletLoss(margin=None), BatchHardMiner()
        >>> loss = loss_fn(emb, labels, miner(emb, labels))
        >>> loss.ndim
        0
    """

    def __init__(self, margin: float | None = None, **kwargs: Any) -> None:
        if margin is not None and not isinstance(margin, (int, float)):
            raise TypeError(f"margin must be None or a number, got {margin!r}")
        super().__init__(**kwargs)
        self.margin = None if margin is None else float(margin)
        self.smooth_loss = margin is None
        self.add_to_recordable_attributes(name="num_triplets", is_stat=True)

    def compute_loss(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None,
        indices_tuple: tuple[torch.Tensor, ...] | None,
        ref_emb: torch.Tensor,
        ref_labels: torch.Tensor | None,
    ) -> dict:
        """Per-triplet losses for PML's reducer (see ``BaseMetricLossFunction``)."""
        c_f.labels_or_indices_tuple_required(labels, indices_tuple)
        anchors, positives, negatives = lmu.convert_to_triplets(
            indices_tuple, labels, ref_labels, t_per_anchor="all"
        )
        self.num_triplets = len(anchors)
        if len(anchors) == 0:
            return self.zero_losses()
        d_ap, d_an = self._triplet_distances(embeddings, ref_emb, anchors, positives, negatives)
        violation = self.distance.margin(d_ap, d_an)
        losses = F.softplus(violation) if self.smooth_loss else F.relu(violation + self.margin)
        return {
            "loss": {
                "losses": losses,
                "indices": (anchors, positives, negatives),
                "reduction_type": "triplet",
            }
        }

    def _triplet_distances(
        self,
        embeddings: torch.Tensor,
        ref_emb: torch.Tensor,
        anchors: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not full_matrix_is_cheaper(len(anchors), len(embeddings), len(ref_emb)):
            try:
                return triplet_distances(
                    self.distance, embeddings, ref_emb, anchors, positives, negatives
                )
            except NotImplementedError:  # a distance without pairwise_distance
                pass
        mat = self.distance(embeddings, ref_emb)
        return mat[anchors, positives], mat[anchors, negatives]

    def get_default_reducer(self) -> AvgNonZeroReducer:
        """PML's default for triplet losses: the mean over triplets with a positive loss."""
        return AvgNonZeroReducer()

    def extra_repr(self) -> str:
        return f"margin={'soft' if self.margin is None else self.margin}"
