"""Per-class ArcFace margins from class frequencies (dynamic margins, Ha et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["dynamic_margins"]


def dynamic_margins(
    class_counts: Sequence[int] | np.ndarray | torch.Tensor,
    a: float | None = None,
    b: float | None = None,
    lam: float = 0.25,
    *,
    margin_range: tuple[float, float] = (0.05, 0.5),
) -> torch.Tensor:
    """One ArcFace margin per class, ``m_c = a * n_c ** -lam + b``: rare classes get larger ones.

    The dynamic margins of Ha et al., "Google Landmark Recognition 2020 Competition Third Place
    Solution" (arXiv 2010.05350). With ``a`` and ``b`` left ``None`` they are chosen so the
    margins span ``margin_range`` exactly (the rarest class gets the upper end, the most
    frequent the lower): the authors' code (haqishen/Google-Landmark-Recognition-2020-3rd-Place-
    Solution, ``train.py``) uses ``lam = 1/4`` and the range ``[0.05, 0.5]``, the defaults here.

    Args:
        class_counts: images per class, indexed by class id (every count >= 1).
        a: the scale of ``n ** -lam``; give ``a`` and ``b`` together, or neither.
        b: the offset (the margin an infinitely frequent class would get).
        lam: the exponent (> 0 gives rare classes larger margins).
        margin_range: ``(low, high)`` in radians, used when ``a`` and ``b`` are ``None``
            (equal counts everywhere: every class gets the middle of the range).

    Returns:
        A float32 tensor of ``len(class_counts)`` margins in radians, ready for
        ``SubCenterArcFaceLoss(margin=...)``.

    Example:
        >>> [round(m, 4) for m in dynamic_margins([1, 16, 10000]).tolist()]
        [0.5, 0.25, 0.05]
        >>> [round(m, 4) for m in dynamic_margins([1, 16], a=0.4, b=0.1).tolist()]
        [0.5, 0.3]
    """
    counts = torch.as_tensor(np.asarray(class_counts), dtype=torch.float64)
    if counts.ndim != 1 or len(counts) == 0:
        raise ValueError(f"class_counts must be a non-empty 1-D sequence, got shape {counts.shape}")
    bad = torch.nonzero(~(counts >= 1)).flatten()  # also catches NaN
    if len(bad):
        c = int(bad[0])
        raise ValueError(
            f"class_counts[{c}] = {counts[c].item()!r}: every class needs at least one image"
        )
    if (a is None) != (b is None):
        raise ValueError("give both a and b, or neither (then margin_range decides them)")
    if not np.isfinite(lam):
        raise ValueError(f"lam must be a finite number, got {lam!r}")
    powered = counts ** (-float(lam))
    if a is None:
        low, high = (float(v) for v in margin_range)
        if not 0 <= low <= high:
            raise ValueError(
                f"margin_range must be (low, high) with 0 <= low <= high, got {margin_range!r}"
            )
        spread = powered.max() - powered.min()
        if spread == 0:  # every class equally frequent: no information, the middle of the range
            return torch.full_like(powered, (low + high) / 2, dtype=torch.float32)
        a = (high - low) / float(spread)
        b = low - a * float(powered.min())
    return (a * powered + b).to(torch.float32)
