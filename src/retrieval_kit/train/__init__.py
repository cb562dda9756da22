"""Training helpers: one explicit epoch loop, safe atomic checkpoints, seeding, distributed helpers.

Example:
    >>> import retrieval_kit as rk
    >>> rk.train.seed_everything(0)
    0
"""

from __future__ import annotations

from retrieval_kit.train import distributed
from retrieval_kit.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from retrieval_kit.train.global_batch_norm import GlobalBatchNorm
from retrieval_kit.train.loop import train_one_epoch
from retrieval_kit.train.optimizer import build_optimizer, param_groups
from retrieval_kit.train.recalibrate import recalibrate_batchnorm
from retrieval_kit.train.schedule import warmup_cosine_factor, warmup_cosine_schedule
from retrieval_kit.train.seed import seed_everything

__all__ = [
    "GlobalBatchNorm",
    "build_optimizer",
    "distributed",
    "latest_checkpoint",
    "load_checkpoint",
    "param_groups",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "seed_everything",
    "train_one_epoch",
    "warmup_cosine_factor",
    "warmup_cosine_schedule",
]
