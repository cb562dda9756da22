"""Divide-and-Conquer subspace triplet loss."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from retrieval_kit._checks import positive_int
from retrieval_kit.losses.triplet_loss import TripletLoss


class SubspaceTripletLoss(TripletLoss):
    """Triplet loss on one of ``num_subspaces`` equal, contiguous, L2-normalised embedding chunks.

    Divide and Conquer the Embedding Space (Sanakoyeu et al., CVPR 2019): the classes are
    clustered, each cluster ``k`` trains its own chunk ``k`` of the embedding, and a final phase
    fine-tunes the whole embedding (``subspace=None``). ``loss(emb, labels, subspace=k)`` equals
    ``TripletLoss(margin)(F.normalize(emb[:, k*c:(k+1)*c]), labels)`` with ``c = D //
    num_subspaces``. With ``subspace=None`` the whole embedding is passed on unchanged (the
    distance decides whether it is normalised).

    Without ``indices_tuple`` the triplets are mined on the same chunk by ``miner`` when one is
    given (mining on the full embedding would pick the wrong hard examples), else all triplets.

    Args:
        num_subspaces: number of chunks; the embedding size must be divisible by it.
        margin: ``None`` for the soft margin, else the hinge margin (see ``TripletLoss``).
        miner: optional PML-style miner called as ``miner(chunk, labels)``.
        **kwargs: PML collaborators (``distance``, ``reducer`` ...).

    Example:
        >>> import torch
        >>> from retrieval_kit.miners import BatchHardMiner
        >>> loss_fn = SubspaceTripletLoss(4, miner=BatchHardMiner())
        >>> emb, labels = torch.randn(8, 16), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> loss_fn(emb, labels, subspace=2).ndim
        0
    """

    def __init__(
        self,
        num_subspaces: int,
        margin: float | None = None,
        miner: torch.nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        num_subspaces = positive_int(num_subspaces, "num_subspaces")
        super().__init__(margin=margin, **kwargs)
        self.num_subspaces = num_subspaces
        self.miner = miner

    def subspace_slice(self, embedding_dim: int, subspace: int) -> slice:
        """Columns of chunk ``subspace`` for an embedding of size ``embedding_dim``.

        Example:
            >>> SubspaceTripletLoss(4).subspace_slice(16, 1)
            slice(4, 8, None)
        """
        if embedding_dim % self.num_subspaces:
            raise ValueError(
                f"embedding size {embedding_dim} is not divisible by "
                f"num_subspaces={self.num_subspaces}"
            )
        if isinstance(subspace, bool) or not isinstance(subspace, int):
            raise TypeError(f"subspace must be an int or None, got {subspace!r}")
        if not 0 <= subspace < self.num_subspaces:
            raise ValueError(f"subspace={subspace} is out of range [0, {self.num_subspaces - 1}]")
        width = embedding_dim // self.num_subspaces
        return slice(subspace * width, (subspace + 1) * width)

    def subspace_view(self, embeddings: torch.Tensor, subspace: int | None) -> torch.Tensor:
        """What the loss sees on chunk ``subspace``: its L2-normalised columns (``None``: all
        of ``embeddings``, unchanged). The training loop mines on the same view.

        Example:
            >>> SubspaceTripletLoss(2).subspace_view(torch.tensor([[3.0, 4.0, 1.0, 0.0]]), 0)
            tensor([[0.6000, 0.8000]])
        """
        if subspace is None:
            return embeddings
        return F.normalize(embeddings[:, self.subspace_slice(embeddings.shape[1], subspace)], dim=1)

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple: tuple[torch.Tensor, ...] | None = None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
        subspace: int | None = None,
    ) -> torch.Tensor:
        """The reduced loss on chunk ``subspace`` (``None``: the whole embedding)."""
        if embeddings.ndim != 2:
            raise ValueError(
                f"embeddings must be (batch, dim), got shape {tuple(embeddings.shape)}"
            )
        embeddings = self.subspace_view(embeddings, subspace)
        if ref_emb is not None:
            ref_emb = self.subspace_view(ref_emb, subspace)
        if indices_tuple is None and self.miner is not None:
            if labels is None:
                raise ValueError("labels are required when the loss mines its own triplets")
            indices_tuple = self.miner(embeddings, labels, ref_emb, ref_labels)
        return super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)

    def extra_repr(self) -> str:
        return f"num_subspaces={self.num_subspaces}, {super().extra_repr()}"
