"""Miners by name: ``create_miner`` / ``list_miners`` / ``register_miner``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_metric_learning.miners as pml_miners
from pytorch_metric_learning.miners import BaseMiner

from retrieval_kit._registry import ComponentRegistry
from retrieval_kit.miners.batch_hard_miner import BatchHardMiner
from retrieval_kit.miners.semi_hard_miner import SemiHardMiner

__all__ = ["create_miner", "list_miners", "register_miner"]

_MINERS = ComponentRegistry("miner", "list_miners", pml_miners, BaseMiner)


def register_miner(name: str | Callable[..., Any] | None = None, *, replace: bool = False) -> Any:
    """Register a miner class or factory under ``name`` (decorator; default its own name).

    PML's class names are reserved; a taken name raises ``ValueError`` unless ``replace=True``.

    Example:
        >>> from pytorch_metric_learning.miners import MultiSimilarityMiner
        >>> @register_miner("my_ms")
        ... class MyMiner(MultiSimilarityMiner):
        ...     pass
        >>> type(create_miner("my_ms", epsilon=0.2)).__name__
        'MyMiner'
    """
    return _MINERS.register(name, replace=replace)


def list_miners(filter: str = "", pml: bool = True) -> list[str]:
    """retrieval_kit's miner names (sorted), then pytorch-metric-learning's class names.

    Example:
        >>> list_miners(pml=False)
        ['batch_hard', 'semi_hard']
    """
    return _MINERS.names(filter, pml)


def create_miner(name: str, **kwargs: Any) -> Any:
    """Build an in-batch miner by name: ``"batch_hard"``, ``"semi_hard"``, anything registered
    with ``register_miner``, else any ``pytorch_metric_learning.miners`` class name.

    Raises:
        KeyError: an unknown name (the message suggests close names).
        TypeError: a keyword the miner does not take (named with the miner).

    Example:
        >>> type(create_miner("semi_hard", margin=0.2)).__name__
        'SemiHardMiner'
        >>> type(create_miner("MultiSimilarityMiner", epsilon=0.1)).__name__
        'MultiSimilarityMiner'
    """
    return _MINERS.create(name, **kwargs)


_MINERS.register("batch_hard")(BatchHardMiner)
_MINERS.register("semi_hard")(SemiHardMiner)
