"""torchvision ResNet trunks (resnet18/34/50/101/152) without avgpool and fc.

``weights="DEFAULT"`` is ``IMAGENET1K_V1`` for resnet18/34 and ``IMAGENET1K_V2`` for 50/101/152,
whose eval transform resizes to 232 (not 256) before the 224 crop; ``weights="IMAGENET1K_V1"``
gives the older weights and 256.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from retrieval_kit.backbones._registry import register_backbone
from retrieval_kit.backbones.torchvision_trunk import torchvision_trunk

__all__ = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

_TRUNK_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


@register_backbone
def resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-18 trunk (512 channels). kwargs: ``weights`` (enum name), torchvision options."""
    return torchvision_trunk("resnet18", pretrained, _TRUNK_LAYERS, **kwargs)


@register_backbone
def resnet34(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-34 trunk (512 channels)."""
    return torchvision_trunk("resnet34", pretrained, _TRUNK_LAYERS, **kwargs)


@register_backbone
def resnet50(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-50 trunk (2048 channels)."""
    return torchvision_trunk("resnet50", pretrained, _TRUNK_LAYERS, **kwargs)


@register_backbone
def resnet101(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-101 trunk (2048 channels): the reproduced landmark pipeline's backbone."""
    return torchvision_trunk("resnet101", pretrained, _TRUNK_LAYERS, **kwargs)


@register_backbone
def resnet152(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """ResNet-152 trunk (2048 channels)."""
    return torchvision_trunk("resnet152", pretrained, _TRUNK_LAYERS, **kwargs)
