"""Seeding every random number generator a training run touches."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from retrieval_kit._checks import non_negative_int

__all__ = ["seed_everything"]

logger = logging.getLogger(__name__)


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every CUDA device).

    Args:
        seed: the seed, a non-negative integer.
        deterministic: also ask torch for deterministic kernels
            (``torch.use_deterministic_algorithms(True)``, cuDNN deterministic, no cuDNN autotuning)
            and set ``CUBLAS_WORKSPACE_CONFIG`` when unset, so that a rerun, or a run resumed from a
            checkpoint, gives bit-identical weights on the same machine. Slower on GPU; an op
            without a deterministic kernel then raises instead of silently differing.

    Returns:
        The seed, for logging.

    Example:
        >>> seed_everything(0)
        0
    """
    seed = non_negative_int(seed, "seed")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy's legacy global seed must fit in 32 bits
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # cuBLAS needs this set before its first use to be reproducible (CUDA >= 10.2).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    logger.debug("seeded everything with %d (deterministic=%s)", seed, deterministic)
    return seed
