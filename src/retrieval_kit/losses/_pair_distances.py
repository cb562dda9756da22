"""Distances of mined triplets without building the full (B, B) matrix."""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import BaseDistance, LpDistance


def _rowwise(distance: BaseDistance, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if type(distance) is LpDistance:
        # Exact norm of the difference (cdist's value); PML's pairwise_distance adds eps=1e-6 to
        # every coordinate, which would shift values by up to ~eps*sqrt(D).
        d = torch.linalg.vector_norm(x - y, ord=distance.p, dim=1)
    else:
        d = distance.pairwise_distance(x, y)
    return d**distance.power if distance.power != 1 else d


def triplet_distances(
    distance: BaseDistance,
    query: torch.Tensor,
    ref: torch.Tensor,
    anchors: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mat[anchors, positives], mat[anchors, negatives])`` with ``mat = distance(query, ref)``,
    computed row by row: O(T * D) work and memory instead of O(B * R * D).

    Args:
        distance: a PML distance (its normalisation and ``power`` are honoured); must
            implement ``pairwise_distance`` (else ``NotImplementedError``).
        query: (B, D) embeddings.
        ref: (R, D) embeddings (may be ``query`` itself).
        anchors: (T,) indices into ``query``.
        positives: (T,) indices into ``ref``.
        negatives: (T,) indices into ``ref``.

    Example:
        >>> x = torch.eye(3)
        >>> i = torch.tensor([0])
        >>> triplet_distances(LpDistance(), x, x, i, i + 1, i + 2)
        (tensor([1.4142]), tensor([1.4142]))
    """
    q = distance.maybe_normalize(query)
    r = q if ref is query else distance.maybe_normalize(ref)
    t = len(anchors)
    if t == len(q) and torch.equal(anchors, torch.arange(t, device=anchors.device)):
        qa = q  # batch-hard: every row is an anchor once, in order; no gather needed
    else:
        qa = q.index_select(0, anchors)
    # index_select: its backward is index_add_, far faster on CPU than advanced indexing's
    # accumulating index_put_.
    rp, rn = r.index_select(0, torch.cat([positives, negatives])).split(t)
    return _rowwise(distance, qa, rp), _rowwise(distance, qa, rn)


def full_matrix_is_cheaper(num_triplets: int, num_rows: int, num_cols: int) -> bool:
    """True when gathering from the full matrix costs less than computing each triplet."""
    return 2 * num_triplets >= num_rows * num_cols
