"""Any timm model as a trunk: ``create_backbone("timm/<name>")``."""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["import_timm", "timm_trunk"]


def import_timm(what: str) -> Any:
    """Import timm or raise an ImportError saying how to install it."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"{what} needs timm, which is not installed: pip install retrieval_kit[timm]"
        ) from exc
    return timm


def timm_trunk(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """A timm model without classifier (``num_classes=0``); features come from ``forward_features``.

    Its ``pretrained_cfg`` (mean, std, input size, crop_pct) becomes the EmbeddingModel's
    data_config (see :func:`retrieval_kit.backbones._data_config.data_config_from_timm`).

    Example:
        >>> trunk = timm_trunk("resnet10t")  # doctest: +SKIP
    """
    timm = import_timm(f"backbone 'timm/{model_name}'")
    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('.')[0]}*")[:10]
        raise ValueError(f"timm has no model {model_name!r}; similar names: {close}")
    try:
        model = timm.create_model(model_name, pretrained=pretrained, num_classes=0, **kwargs)
    except OSError as exc:  # hub unreachable (huggingface_hub / urllib errors are OSErrors)
        raise OSError(
            f"could not fetch timm's pretrained weights for {model_name!r} ({exc}); this machine "
            "is probably offline. Use pretrained=PATH to a local state dict, pre-seed the Hugging "
            "Face cache, or create_backbone('efficientnet_lite0', pretrained=True) (offline)."
        ) from exc
    logger.debug("created timm model %s (pretrained=%s)", model_name, pretrained)
    return model
