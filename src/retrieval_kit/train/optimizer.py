"""Optimizers over a model and its loss's own parameters (an ArcFace head), each with its lr."""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch

__all__ = ["build_optimizer", "param_groups"]

_SHORT_NAMES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}


def param_groups(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module | None = None,
    *,
    lr: float,
    loss_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """Parameter groups for any torch optimizer: the model's trainable parameters at ``lr``,
    the loss's at ``lr * loss_lr_mult`` (a group named ``"loss"``, left out when it has none).

    A parameter reachable from both (a loss holding the model) is only in the model's group.

    Example:
        >>> import retrieval_kit as rk
        >>> head = rk.losses.SubCenterArcFaceLoss(10, 4)
        >>> groups = param_groups(torch.nn.Linear(8, 4), head, lr=0.01, loss_lr_mult=10)
        >>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
        [('model', 0.01, 2), ('loss', 0.1, 1)]
    """
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if isinstance(loss_lr_mult, bool) or not isinstance(loss_lr_mult, (int, float)):
        raise ValueError(f"loss_lr_mult must be a number, got {loss_lr_mult!r}")
    if not loss_lr_mult >= 0:
        raise ValueError(f"loss_lr_mult must be >= 0, got {loss_lr_mult!r}")
    model_params = [p for p in model.parameters() if p.requires_grad]
    seen = {id(p) for p in model_params}
    loss_params = []
    if isinstance(loss_fn, torch.nn.Module):
        loss_params = [p for p in loss_fn.parameters() if p.requires_grad and id(p) not in seen]
    groups = [{"params": model_params, "lr": float(lr), "name": "model"}]
    if loss_params:
        groups.append({"params": loss_params, "lr": float(lr) * loss_lr_mult, "name": "loss"})
    return groups


def build_optimizer(
    model: torch.nn.Module,
    loss_fn: torch.nn.Module | None = None,
    *,
    name: str = "sgd",
    lr: float,
    loss_lr_mult: float = 1.0,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """An optimizer over the model's and the loss's trainable parameters (see ``param_groups``).

    Args:
        model: the network.
        loss_fn: a loss with parameters of its own (``SubCenterArcFaceLoss``, PML's
            ``ArcFaceLoss``, ``CombinedLoss``...), or None. Move it to the training device
            first: the optimizer holds its parameters.
        name: ``"sgd"``, ``"adam"``, ``"adamw"`` or any ``torch.optim`` class name.
        lr: the model's learning rate.
        loss_lr_mult: the loss parameters' learning rate is ``lr * loss_lr_mult`` (a freshly
            initialised class head often learns faster than a pretrained backbone).
        **kwargs: passed to the optimizer (``momentum``, ``weight_decay``, ``betas``...).

    Example:
        >>> import retrieval_kit as rk
        >>> head = rk.losses.SubCenterArcFaceLoss(10, 4)
        >>> opt = build_optimizer(torch.nn.Linear(8, 4), head, lr=0.01, momentum=0.9)
        >>> type(opt).__name__, [g["lr"] for g in opt.param_groups]
        ('SGD', [0.01, 0.01])
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be an optimizer name, got {name!r}")
    class_name = _SHORT_NAMES.get(name.lower(), name)
    cls = getattr(torch.optim, class_name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        known = list(_SHORT_NAMES) + [
            n
            for n, c in vars(torch.optim).items()
            if inspect.isclass(c) and issubclass(c, torch.optim.Optimizer) and n != "Optimizer"
        ]
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown optimizer {name!r}{hint}")
    groups = param_groups(model, loss_fn, lr=lr, loss_lr_mult=loss_lr_mult)
    try:
        return cls(groups, lr=float(lr), **kwargs)
    except TypeError as e:
        raise TypeError(
            f"optimizer {class_name} rejected its arguments {sorted(kwargs)}: {e}"
        ) from e
