"""Backbones: a registry of image trunks turned into embedding models (pooling, head, L2 norm).

Example:
    >>> import retrieval_kit as rk
    >>> model = rk.backbones.create_backbone("resnet50", embedding_dim=512, pooling="gem")
    >>> model.embedding_dim
    512
"""

from __future__ import annotations

from retrieval_kit.backbones import torchvision_families  # noqa: F401  (registers the families)
from retrieval_kit.backbones._registry import (
    create_backbone,
    is_backbone,
    list_backbones,
    register_backbone,
)
from retrieval_kit.backbones.data_config import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataConfig,
    make_data_config,
)
from retrieval_kit.backbones.efficientnet_lite import (
    EFFICIENTNET_LITE0_DATA_CONFIG,
    EFFICIENTNET_LITE_DATA_CONFIGS,
    efficientnet_lite0_imagenet_state_dict,
    efficientnet_lite0_weights_path,
    efficientnet_lite_imagenet_state_dict,
    efficientnet_lite_weights_path,
)
from retrieval_kit.backbones.embedding_model import EmbeddingModel
from retrieval_kit.backbones.model_file import load_model, save_model
from retrieval_kit.backbones.model_file_error import ModelFileError
from retrieval_kit.backbones.pooling import MAC, ClassToken, GeM, SPoC, gem, get_pooling, mac, spoc
from retrieval_kit.backbones.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from retrieval_kit.backbones.state_dict import (
    load_state_dict_file,
    load_weights,
    map_state_dict_by_position,
)

__all__ = [
    "DataConfig",
    "EFFICIENTNET_LITE0_DATA_CONFIG",
    "EFFICIENTNET_LITE_DATA_CONFIGS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAC",
    "ClassToken",
    "EmbeddingModel",
    "ModelFileError",
    "GeM",
    "SPoC",
    "create_backbone",
    "efficientnet_lite0_imagenet_state_dict",
    "efficientnet_lite0_weights_path",
    "efficientnet_lite_imagenet_state_dict",
    "efficientnet_lite_weights_path",
    "gem",
    "get_pooling",
    "is_backbone",
    "list_backbones",
    "load_model",
    "load_state_dict_file",
    "load_weights",
    "make_data_config",
    "map_state_dict_by_position",
    "mac",
    "register_backbone",
    "resnet101",
    "resnet152",
    "resnet18",
    "resnet34",
    "resnet50",
    "save_model",
    "spoc",
]
