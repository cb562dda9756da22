"""Backbone registry, timm-style: register with a decorator, create by name, list what exists."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from retrieval_kit.backbones.embedding_model import EmbeddingModel
from retrieval_kit.backbones.state_dict import load_weights
from retrieval_kit.backbones.timm_backbone import HF_HUB_PREFIX, suggest_names

logger = logging.getLogger(__name__)

__all__ = ["create_backbone", "is_backbone", "list_backbones", "register_backbone"]

TIMM_PREFIX = "timm/"

TrunkFn = TypeVar("TrunkFn", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str | Callable[..., nn.Module] | None = None) -> Any:
    """Register a trunk builder under a name (decorator; the function name when none is given).

    The builder is called as ``fn(pretrained=bool, **kwargs)`` and returns an ``nn.Module`` whose
    ``forward_features(x)`` (or ``forward(x)``) gives (B, C, H, W). It should set ``num_features``
    (C) and may set ``data_config`` (mean, std, image_size, resize_size); see
    :class:`EmbeddingModel` for the defaults. Registering a taken name raises ValueError.

    Example:
        >>> from torch import nn
        >>> @register_backbone("tiny_cnn")
        ... def tiny_cnn(pretrained: bool = False, **kwargs) -> nn.Module:
        ...     trunk = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU())
        ...     trunk.num_features = 16
        ...     return trunk
        >>> create_backbone("tiny_cnn", embedding_dim=8).embedding_dim
        8
    """

    def decorator(fn: TrunkFn) -> TrunkFn:
        key = name if isinstance(name, str) else fn.__name__
        if not key or key.startswith(TIMM_PREFIX):
            raise ValueError(
                f"invalid backbone name {key!r} (empty, or using the reserved 'timm/')"
            )
        if key in _REGISTRY:
            raise ValueError(f"backbone {key!r} is already registered (by {_REGISTRY[key]!r})")
        _REGISTRY[key] = fn
        return fn

    if callable(name):  # used bare: @register_backbone
        return decorator(name)
    return decorator


def list_backbones(filter: str = "") -> list[str]:
    """Sorted names of the registered backbones, optionally filtered by a shell pattern.

    ``"timm/<name>"`` works for any timm model but is not listed (see ``timm.list_models``).

    Example:
        >>> list_backbones("resnet1*")
        ['resnet101', 'resnet152', 'resnet18']
    """
    names = sorted(_REGISTRY)
    if filter:
        names = [n for n in names if fnmatch.fnmatch(n, filter)]
    return names


def is_backbone(name: str) -> bool:
    """True if ``name`` is registered, or is ``"timm/<model>"`` for a model timm knows.

    ``"timm/hf-hub:<org>/<repo>"`` counts when timm is installed (whether the hub or the local
    cache has it is only known when it is created).
    """
    if name.startswith(TIMM_PREFIX):
        try:
            import timm
        except ImportError:
            return False
        model_name = name[len(TIMM_PREFIX) :]
        if model_name.startswith(HF_HUB_PREFIX):
            return "/" in model_name[len(HF_HUB_PREFIX) :]
        return bool(timm.is_model(model_name))
    return name in _REGISTRY


def _unknown_name_error(name: str) -> ValueError:
    candidates = list(_REGISTRY)
    try:
        import timm

        candidates += [TIMM_PREFIX + n for n in timm.list_models()]
    except ImportError:
        pass
    close = suggest_names(name, candidates)
    if not close and not name.startswith(TIMM_PREFIX):  # "vit_tiny_patch16_224" -> "timm/..."
        close = suggest_names(TIMM_PREFIX + name, candidates)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return ValueError(
        f"unknown backbone {name!r}{hint}; registered: {list_backbones()} "
        "(or 'timm/<model>' for any timm model)"
    )


def create_backbone(
    name: str,
    *,
    pretrained: bool | str | os.PathLike | Mapping[str, torch.Tensor] = False,
    embedding_dim: int | None = 512,
    pooling: str | nn.Module = "gem",
    normalize: bool = True,
    **kwargs: Any,
) -> EmbeddingModel:
    """Create an :class:`EmbeddingModel` by backbone name.

    Args:
        name: A name from :func:`list_backbones` (ResNets, ConvNeXt, EfficientNetV2, RegNet,
            ``efficientnet_lite0/1/2``) or ``"timm/<model>"`` for any timm model (needs timm),
            including ``"timm/hf-hub:<org>/<repo>"``. A misspelt name raises ValueError with
            suggestions.
        pretrained: False (random init); True (the backbone's ImageNet weights: torchvision's for
            its backbones, downloaded once into the torch hub cache; the offline packages' for
            ``efficientnet_lite0/1/2``); or a path (``torch.save`` or ``*.safetensors``) / state
            dict of local weights (a trunk-only dict, a full classifier dict, or one saved from
            an EmbeddingModel).
        embedding_dim: Size of the Linear + BatchNorm1d head; None for no head.
        pooling: ``"gem"``, ``"mac"``, ``"spoc"`` / ``"mean"``, a pooling module, or ``"cls"``
            (the class token; token models such as ViTs only). For token models the others
            pool the patch tokens, leaving out class and register tokens.
        normalize: L2-normalise the output embedding.
        **kwargs: Passed to the trunk builder (e.g. ``weights="IMAGENET1K_V1"`` for torchvision
            backbones, which also sets the data config). Kept as ``model.backbone_kwargs`` for
            :func:`save_model`.

    Returns:
        The model; ``model.data_config`` holds its preprocessing.

    Example:
        >>> model = create_backbone("resnet18", embedding_dim=128)
        >>> model.embedding_dim, model.data_config["image_size"]
        (128, 224)
    """
    if not isinstance(name, str):
        raise TypeError(f"backbone name must be a string, got {type(name).__name__}")
    if name.startswith(TIMM_PREFIX):
        from retrieval_kit.backbones.timm_backbone import timm_trunk

        builder: Callable[..., nn.Module] = lambda **kw: timm_trunk(name[len(TIMM_PREFIX) :], **kw)  # noqa: E731
    elif name in _REGISTRY:
        builder = _REGISTRY[name]
    else:
        raise _unknown_name_error(name)
    if isinstance(pretrained, bool):
        load_from = None
    elif isinstance(pretrained, (str, os.PathLike, Mapping)):
        load_from = pretrained
    else:
        raise TypeError(
            "pretrained must be True/False, a path or a state dict, "
            f"got {type(pretrained).__name__}"
        )
    trunk = builder(pretrained=pretrained is True, **kwargs)
    model = EmbeddingModel(
        trunk, embedding_dim=embedding_dim, pooling=pooling, normalize=normalize, name=name
    )
    # What save_model needs to rebuild the architecture (the weights travel separately).
    model.backbone_kwargs = dict(kwargs)
    if load_from is not None:
        load_weights(model, load_from)
    logger.debug("created backbone %s (pretrained=%r)", name, pretrained)
    return model
