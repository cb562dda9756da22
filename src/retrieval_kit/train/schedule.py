"""Per-step learning-rate schedule: linear warm-up, then cosine decay."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from retrieval_kit._checks import non_negative_int

__all__ = ["warmup_cosine_factor", "warmup_cosine_schedule"]


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> float:
    """The learning-rate multiplier after ``step`` optimizer steps.

    ``step / warmup_steps`` during warm-up (from 0 up to 1), then
    ``min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * t)) / 2`` with
    ``t = (step - warmup_steps) / (total_steps - warmup_steps)`` (from 1 down to
    ``min_lr_ratio`` at ``total_steps``), and ``min_lr_ratio`` after that.

    Example:
        >>> [round(warmup_cosine_factor(s, 2, 6), 3) for s in range(8)]
        [0.0, 0.5, 1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """
    if step < warmup_steps:
        return step / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    *,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` scaling every param group's initial lr by ``warmup_cosine_factor``.

    Step it after every optimizer step (``train_one_epoch(..., scheduler=...)`` does): the lr
    rises linearly from 0 over ``warmup_steps`` steps, then follows a half cosine down to
    ``min_lr_ratio`` times the initial lr at ``total_steps``. Each group keeps its own ratio
    (the loss's ``loss_lr_mult`` of ``build_optimizer``). Its ``state_dict`` goes into
    ``save_checkpoint(scheduler=...)``.

    Args:
        optimizer: the optimizer.
        warmup_steps: optimizer steps of linear warm-up (0: none).
        total_steps: optimizer steps of the whole run (warm-up included).
        min_lr_ratio: the final lr as a fraction of the initial one.

    Example:
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
        >>> sched = warmup_cosine_schedule(opt, warmup_steps=10, total_steps=100)
        >>> opt.param_groups[0]["lr"]
        0.0
    """
    non_negative_int(warmup_steps, "warmup_steps")
    non_negative_int(total_steps, "total_steps")
    if total_steps < warmup_steps or total_steps == 0:
        raise ValueError(
            f"total_steps ({total_steps}) must be positive and >= warmup_steps ({warmup_steps})"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio!r}")

    def factor(step: int) -> float:
        return warmup_cosine_factor(step, warmup_steps, total_steps, min_lr_ratio)

    return LambdaLR(optimizer, factor)
