"""Preprocessing configs kept beside each backbone (mean, std, image sizes), as timm does."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_REQUIRED = ("mean", "std", "image_size", "resize_size")


def make_data_config(
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    image_size: int = 224,
    resize_size: int | None = None,
    interpolation: str = "bilinear",
) -> dict[str, Any]:
    """Build a data config; ``resize_size`` defaults to ``round(image_size / 0.875)`` (256 for 224).

    Example:
        >>> make_data_config()["resize_size"]
        256
    """
    if resize_size is None:
        resize_size = int(round(image_size / 0.875))
    return {
        "mean": tuple(float(m) for m in mean),
        "std": tuple(float(s) for s in std),
        "image_size": int(image_size),
        "resize_size": int(resize_size),
        "interpolation": str(interpolation),
    }


def data_config_from_timm(pretrained_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Convert a timm ``pretrained_cfg`` (mean, std, input_size, crop_pct) to our data config.

    Example:
        >>> cfg = {"input_size": (3, 224, 224), "crop_pct": 0.875}
        >>> data_config_from_timm(cfg)["resize_size"]
        256
    """
    image_size = int(pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(pretrained_cfg.get("crop_pct") or 0.875)
    return make_data_config(
        mean=tuple(pretrained_cfg.get("mean", IMAGENET_MEAN)),
        std=tuple(pretrained_cfg.get("std", IMAGENET_STD)),
        image_size=image_size,
        # timm's eval transform resizes the short side to floor(size / crop_pct) before the crop.
        resize_size=int(math.floor(image_size / crop_pct)),
        interpolation=str(pretrained_cfg.get("interpolation") or "bilinear"),
    )


def check_data_config(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Validate a data config and return a normalised copy (tuples, ints)."""
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise ValueError(
            f"data_config of {where} lacks keys {missing}; required: {list(_REQUIRED)}"
        )
    out = dict(config)
    for key in ("mean", "std"):
        value = tuple(float(v) for v in config[key])
        if len(value) != 3:
            raise ValueError(f"data_config[{key!r}] of {where} must have 3 values, got {value}")
        out[key] = value
    out["image_size"] = int(config["image_size"])
    out["resize_size"] = int(config["resize_size"])
    out.setdefault("interpolation", "bilinear")
    return out
