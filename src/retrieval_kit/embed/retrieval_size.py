"""The default retrieval eval size of each backbone, chosen by measurement on real photos.

A backbone's ``data_config["image_size"]`` is its classification size (224 for most ImageNet
models). Retrieval keeps the aspect ratio and does better at larger sizes (cirtorch evaluates at a
long side of 1024; the Kaggle landmark winners at 512-768), so the size used by default for
``resize="long_side"`` is looked up here. A model whose ``data_config`` has a ``"retrieval_size"``
key overrides the table; a backbone that was never measured falls back to its classification size.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

__all__ = ["RETRIEVAL_IMAGE_SIZES", "retrieval_image_size"]

logger = logging.getLogger(__name__)

#: Long side per backbone registry name. Measured with ``benchmarks/realphoto_eval.py`` (the table
#: in docs/benchmarks.md, section "Extraction settings on real photos"); only backbones with offline
#: ImageNet weights could be measured.
RETRIEVAL_IMAGE_SIZES: dict[str, int] = {
    "efficientnet_lite0": 512,
}


def retrieval_image_size(model: nn.Module) -> int:
    """The long side to extract at when none is given.

    Order: ``model.data_config["retrieval_size"]``, then :data:`RETRIEVAL_IMAGE_SIZES` by
    ``model.name``, then ``model.data_config["image_size"]`` (the classification size).

    Example:
        >>> class M(nn.Module):
        ...     name, data_config = "efficientnet_lite0", {"image_size": 224}
        >>> retrieval_image_size(M())
        512
    """
    config: Any = getattr(model, "data_config", None) or {}
    if config.get("retrieval_size"):
        return int(config["retrieval_size"])
    name = getattr(model, "name", None)
    if isinstance(name, str) and name in RETRIEVAL_IMAGE_SIZES:
        return RETRIEVAL_IMAGE_SIZES[name]
    if "image_size" not in config:
        raise ValueError("model has no data_config['image_size']: pass image_size explicitly")
    logger.debug(
        "no measured retrieval size for %r; using its classification size %d",
        name,
        config["image_size"],
    )
    return int(config["image_size"])
