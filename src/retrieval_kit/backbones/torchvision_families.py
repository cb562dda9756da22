"""More torchvision trunks: ConvNeXt, EfficientNetV2 and RegNet (X and Y), registered by name.

Each registered name is torchvision's builder name; ``weights`` (default ``"DEFAULT"``) picks the
ImageNet weights and, with them, torchvision's eval preprocessing (e.g. efficientnet_v2_s: 384/384
bilinear; efficientnet_v2_l: 480/480 bicubic with mean = std = 0.5; convnext_tiny: 236 -> 224).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from retrieval_kit.backbones._registry import register_backbone
from retrieval_kit.backbones.torchvision_trunk import torchvision_trunk

__all__ = ["CONVNEXT", "EFFICIENTNET_V2", "REGNET"]

# ConvNeXt's final LayerNorm sits in its classifier (after the average pooling) and is dropped
# with it, as timm's ``forward_features`` does; the pooled features are then un-normalised.
CONVNEXT = ("convnext_tiny", "convnext_small", "convnext_base", "convnext_large")
EFFICIENTNET_V2 = ("efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l")
REGNET = tuple(
    f"regnet_{kind}_{size}"
    for kind in ("x", "y")
    for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")
)
_CHILDREN = {
    **{arch: ("features",) for arch in CONVNEXT + EFFICIENTNET_V2},
    **{arch: ("stem", "trunk_output") for arch in REGNET},
}


def _builder(arch: str) -> Callable[..., nn.Module]:
    children = _CHILDREN[arch]

    def build(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return torchvision_trunk(arch, pretrained, children, **kwargs)

    build.__name__ = build.__qualname__ = arch
    build.__doc__ = (
        f"torchvision {arch} trunk ({', '.join(children)}). kwargs: ``weights`` (enum name, "
        "default DEFAULT), torchvision options."
    )
    return build


for _arch in _CHILDREN:
    register_backbone(_arch)(_builder(_arch))
