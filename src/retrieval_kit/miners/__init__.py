"""Miners: in-batch (subclasses of PML's ``BaseMiner``) and offline dataset-wide (faiss).

Example:
    >>> import retrieval_kit as rk
    >>> miner = rk.miners.BatchHardMiner()
"""

from __future__ import annotations

from retrieval_kit.miners.batch_hard_miner import BatchHardMiner
from retrieval_kit.miners.index_miner import HardNegatives, IndexMiner
from retrieval_kit.miners.registry import create_miner, list_miners, register_miner
from retrieval_kit.miners.semi_hard_miner import SemiHardMiner

__all__ = [
    "BatchHardMiner",
    "HardNegatives",
    "IndexMiner",
    "SemiHardMiner",
    "create_miner",
    "list_miners",
    "register_miner",
]
