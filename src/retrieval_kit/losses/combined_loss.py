"""A weighted sum of losses, each with its own miner if wanted (e.g. ArcFace + triplet)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from retrieval_kit.losses.registry import create_loss, register_loss
from retrieval_kit.miners.registry import create_miner

__all__ = ["CombinedLoss"]

Part = torch.nn.Module | tuple | Mapping[str, Any]


def _is_classification(loss: torch.nn.Module) -> bool:
    # Classification losses (ArcFace, CosFace, ...) score classes, not pairs: a pair/triplet
    # tuple would only re-weight their samples, which is not what a batch-level miner is for.
    return callable(getattr(loss, "get_logits", None))


@register_loss("combined")
class CombinedLoss(torch.nn.Module):
    """``sum_i weight_i * loss_i(embeddings, labels, tuple_i)``: several losses trained together.

    Each part is a loss, or ``(loss, weight)``, or ``(loss, weight, miner)``, or (from a config)
    a dict ``{"name": ..., "weight": ..., "miner": ..., **kwargs}`` built with
    ``rk.losses.create_loss`` (``miner`` a name for ``rk.miners.create_miner``, or a dict
    ``{"name": ..., **kwargs}``). Which triplets each part sees:

    - a part with its own miner mines the batch itself;
    - otherwise a pair/triplet loss gets the ``indices_tuple`` given to this loss (``None``:
      all pairs/triplets of the batch, as the loss itself decides);
    - a classification loss (one with ``get_logits``, e.g. ``SubCenterArcFaceLoss``) gets
      ``None``, whatever was mined.

    The parts' parameters (an ArcFace head) are this module's parameters, so
    ``rk.train.build_optimizer`` and the checkpoint functions handle them.

    Args:
        losses: name -> part (see above), in the order they are computed.

    Attributes:
        last_stats: after each call, ``loss/<name>`` (each part's unweighted value) and the
            parts' own ``last_stats`` as ``<name>/<stat>``.

    Example:
        >>> import torch, retrieval_kit as rk
        >>> loss_fn = CombinedLoss({
        ...     "arcface": (rk.losses.SubCenterArcFaceLoss(4, 8, sub_centers=1), 1.0),
        ...     "triplet": (rk.losses.TripletLoss(), 0.5, rk.miners.BatchHardMiner()),
        ... })
        >>> emb, labels = torch.randn(8, 8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        >>> loss_fn(emb, labels).ndim, sorted(loss_fn.last_stats)[:2]
        (0, ['arcface/accuracy', 'arcface/mean_angle'])
    """

    def __init__(self, losses: Mapping[str, Part]) -> None:
        super().__init__()
        if not isinstance(losses, Mapping) or not losses:
            raise ValueError("CombinedLoss needs a non-empty mapping name -> loss")
        self.losses = torch.nn.ModuleDict()
        self.miners = torch.nn.ModuleDict()
        self._plain_miners: dict[str, Callable[..., Any]] = {}
        self.weights: dict[str, float] = {}
        for name, part in losses.items():
            loss, weight, miner = self._parse(str(name), part)
            self.losses[str(name)] = loss
            self.weights[str(name)] = weight
            if isinstance(miner, torch.nn.Module):
                self.miners[str(name)] = miner
            elif miner is not None:
                self._plain_miners[str(name)] = miner
        self.last_stats: dict[str, float] = {}

    @staticmethod
    def _parse(name: str, part: Part) -> tuple[torch.nn.Module, float, Any]:
        miner: Any = None
        weight: Any = 1.0
        if isinstance(part, Mapping):
            config = dict(part)
            if "name" not in config:
                raise ValueError(f"CombinedLoss part {name!r}: a dict part needs a 'name' key")
            weight = config.pop("weight", 1.0)
            miner = config.pop("miner", None)
            if isinstance(miner, str):
                miner = create_miner(miner)
            elif isinstance(miner, Mapping):
                miner_config = dict(miner)
                miner = create_miner(miner_config.pop("name"), **miner_config)
            loss = create_loss(config.pop("name"), **config)
        elif isinstance(part, tuple):
            if not 1 <= len(part) <= 3:
                raise ValueError(
                    f"CombinedLoss part {name!r}: expected (loss, weight[, miner]), got "
                    f"{len(part)} items"
                )
            loss, weight, miner = [*part, *[1.0, None][len(part) - 1 :]]
        else:
            loss = part
        if not isinstance(loss, torch.nn.Module):
            raise TypeError(
                f"CombinedLoss part {name!r}: the loss must be a torch Module, got "
                f"{type(loss).__name__}"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise TypeError(f"CombinedLoss part {name!r}: weight must be a number, got {weight!r}")
        if miner is not None and not callable(miner):
            raise TypeError(f"CombinedLoss part {name!r}: miner must be callable, got {miner!r}")
        return loss, float(weight), miner

    def forward(
        self,
        embeddings: torch.Tensor,
        labels: torch.Tensor | None = None,
        indices_tuple: tuple[torch.Tensor, ...] | None = None,
        ref_emb: torch.Tensor | None = None,
        ref_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The weighted sum of the parts' losses (see the class docstring for the tuples)."""
        total: torch.Tensor | None = None
        stats: dict[str, float] = {}
        ref = {} if ref_emb is None else {"ref_emb": ref_emb, "ref_labels": ref_labels}
        for name, loss in self.losses.items():
            miner = self.miners[name] if name in self.miners else self._plain_miners.get(name)
            if miner is not None:
                tuple_ = miner(embeddings, labels, ref_emb, ref_labels)
            elif _is_classification(loss):
                tuple_ = None
            else:
                tuple_ = indices_tuple
            value = loss(embeddings, labels, tuple_, **ref)
            stats[f"loss/{name}"] = float(value.detach())
            for key, stat in getattr(loss, "last_stats", {}).items():
                stats[f"{name}/{key}"] = float(stat)
            term = self.weights[name] * value
            total = term if total is None else total + term
        self.last_stats = stats
        assert total is not None  # non-empty by construction
        return total

    def extra_repr(self) -> str:
        return ", ".join(f"{k}: {w:g}" for k, w in self.weights.items())
