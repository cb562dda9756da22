"""Weight imprinting: start a classification head at its classes' mean embeddings."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["imprint_weights"]


def _heads(loss_fn: torch.nn.Module) -> Iterator[torch.nn.Module]:
    # The modules holding a class weight ``W``: the loss itself, or the parts of a combined loss.
    for module in loss_fn.modules():
        if isinstance(getattr(module, "W", None), torch.nn.Parameter) and hasattr(
            module, "num_classes"
        ):
            yield module


@torch.no_grad()
def imprint_weights(
    loss_fn: torch.nn.Module,
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    jitter: float = 0.05,
    seed: int = 0,
) -> int:
    """Set each class's weight vectors to the unit mean of its images' embeddings.

    Weight imprinting (Qi, Brown & Lowe, "Low-Shot Learning with Imprinted Weights", CVPR
    2018): a freshly initialised ArcFace head is random, so its first steps push the backbone
    towards arbitrary class directions, and on a short fine-tuning run the head may never catch
    up (training accuracy near chance, a trunk worse than the pretrained one). Started at the
    class means, the head classifies from the first step and the gradient reaching the trunk
    refines the pretrained geometry instead of replacing it.

    With sub-centres (``sub_centers=K > 1``) each of a class's K vectors is the class mean plus
    Gaussian noise of standard deviation ``jitter / sqrt(D)`` per coordinate (then normalised):
    identical sub-centres would tie, and only the first would ever win the max and learn.

    Works on any loss with a class weight ``W`` of shape ``(D, num_classes * K)`` in PML's
    layout (column ``c * K + k``): ``rk.losses.SubCenterArcFaceLoss``, PML's ``ArcFaceLoss``,
    ``CosFaceLoss``, ``SubCenterArcFaceLoss``, ``NormalizedSoftmaxLoss``...; inside a
    ``rk.losses.CombinedLoss`` every such part is imprinted. Classes without a row in
    ``labels`` keep their weights. Call it before the first optimizer step (an optimizer's
    state, e.g. Adam's moments, is not reset).

    Args:
        loss_fn: the loss holding the head.
        embeddings: (N, D) embeddings of training images (any scale; each is normalised first).
        labels: (N,) class ids ``0 .. num_classes - 1`` of those rows.
        jitter: noise scale between sub-centres (ignored when ``K == 1``).
        seed: seed of that noise.

    Returns:
        The number of classes imprinted (per head; the same for every part of a combination).

    Raises:
        ValueError: no head with ``W``, a size or label out of range, a non-finite embedding.

    Example:
        >>> import retrieval_kit as rk
        >>> head = rk.losses.SubCenterArcFaceLoss(2, 3, sub_centers=1)
        >>> emb = torch.tensor([[1.0, 0, 0], [3.0, 0, 0], [0, 0, 2.0]])
        >>> imprint_weights(head, emb, torch.tensor([0, 0, 1]))
        2
        >>> head.W.t().tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """
    heads = list(_heads(loss_fn))
    if not heads:
        raise ValueError(
            f"{type(loss_fn).__name__} has no class weight W to imprint (an ArcFace-family loss "
            f"or a CombinedLoss with one)"
        )
    emb = torch.as_tensor(np.asarray(embeddings), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(labels)).long()
    if emb.ndim != 2 or y.shape != (len(emb),):
        raise ValueError(
            f"expected (N, D) embeddings and N labels, got {tuple(emb.shape)} and {tuple(y.shape)}"
        )
    bad = torch.nonzero(~torch.isfinite(emb).all(dim=1)).flatten()
    if len(bad):
        raise ValueError(f"embedding row {int(bad[0])} is not finite")
    emb = F.normalize(emb, dim=1)
    done = 0
    for head in heads:
        num_classes, dim = int(head.num_classes), head.W.shape[0]
        k = int(getattr(head, "sub_centers", 1))
        if head.W.shape != (dim, num_classes * k) or emb.shape[1] != dim:
            raise ValueError(
                f"{type(head).__name__}.W has shape {tuple(head.W.shape)}; for embeddings of "
                f"{emb.shape[1]} dimensions expected ({emb.shape[1]}, num_classes * "
                f"sub_centers = {num_classes * k})"
            )
        out = y[(y < 0) | (y >= num_classes)]
        if len(out):
            raise ValueError(f"label {int(out[0])} is out of range for {num_classes} classes")
        sums = torch.zeros(num_classes, dim, dtype=torch.float64).index_add_(0, y, emb)
        present = torch.bincount(y, minlength=num_classes) > 0
        centres = F.normalize(sums, dim=1)[:, None, :].expand(num_classes, k, dim).clone()
        if k > 1:
            g = torch.Generator().manual_seed(seed)
            noise = torch.randn(num_classes, k, dim, generator=g, dtype=torch.float64)
            centres = F.normalize(centres + noise * (jitter / dim**0.5), dim=2)
        # W[:, c * K + k] is sub-centre k of class c: work on a (C, K, D) copy, then write back.
        weight = head.W.detach().view(dim, num_classes, k).permute(1, 2, 0).clone()
        weight[present] = centres[present].to(weight.dtype)
        head.W.data.copy_(weight.permute(2, 0, 1).reshape(dim, num_classes * k))
        done = int(present.sum())
    return done
