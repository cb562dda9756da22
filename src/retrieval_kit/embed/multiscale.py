"""Multi-scale descriptors as cirtorch computes them: a power mean over scales.

cirtorch (filipradenovic/cnnimageretrieval-pytorch, ``utils/evaluate``/``networks/imageretrievalnet
.extract_ms``) embeds the image resized by each scale factor (bilinear, ``align_corners=False``),
raises each L2-normalised descriptor to the power ``p`` of the network's GeM pooling (1 when the
network has no GeM or ends in a learned whitening/projection), averages, takes the ``1/p`` power
and L2-normalises: ``x = normalize((mean_s x_s ** p) ** (1 / p))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from retrieval_kit.backbones.pooling import GeM

__all__ = ["multiscale_embed", "multiscale_power", "power_mean"]


def multiscale_power(model: nn.Module) -> float:
    """The power-mean exponent cirtorch would use for ``model``.

    The GeM ``p`` when the model's output is the GeM-pooled features (``model.pooling`` is a
    :class:`~retrieval_kit.backbones.GeM` and ``model.head`` an ``nn.Identity``: the output is
    non-negative), else 1.

    Example:
        >>> multiscale_power(nn.Linear(2, 2))
        1.0
    """
    pooling, head = getattr(model, "pooling", None), getattr(model, "head", None)
    if isinstance(pooling, GeM) and isinstance(head, nn.Identity):
        return float(pooling.p.detach().float().reshape(-1)[0])
    return 1.0


def power_mean(vectors: Sequence[torch.Tensor], p: float) -> torch.Tensor:
    """``normalize((mean_i v_i ** p) ** (1 / p))`` over a list of ``(B, D)`` tensors.

    Example:
        >>> v = power_mean([torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])], 3.0)
        >>> v.round(decimals=4)
        tensor([[0.7071, 0.7071]])
    """
    stacked = torch.stack([v.float() for v in vectors])
    if p != 1.0:
        if (stacked < 0).any():
            raise ValueError(
                f"a power mean with p={p} needs non-negative embeddings (GeM-pooled features); "
                "this model returned negative values: use scale_power=1"
            )
        stacked = stacked.pow(p)
    return F.normalize(stacked.mean(0).pow(1.0 / p), dim=1)


def multiscale_embed(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    scales: Sequence[float],
    p: float,
) -> torch.Tensor:
    """Embed ``x`` at each scale and combine with :func:`power_mean`.

    Args:
        forward: maps a ``(B, 3, H, W)`` batch to ``(B, D)``.
        x: the batch at scale 1.
        scales: resize factors; ``(1.0,)`` returns ``forward(x)`` unchanged.
        p: the power-mean exponent (see :func:`multiscale_power`).

    Example:
        >>> net = lambda x: F.normalize(x.mean((2, 3)), dim=1)
        >>> multiscale_embed(net, torch.rand(2, 3, 8, 8), (1.0, 0.5), 3.0).shape
        torch.Size([2, 3])
    """
    if tuple(scales) == (1.0,):
        return forward(x)
    outs = []
    for s in scales:
        xs = (
            x
            if s == 1.0
            else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        )
        outs.append(forward(xs))
    return power_mean(outs, p)
