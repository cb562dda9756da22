"""Train and eval transforms built from a backbone's ``data_config``.

The reproduced landmark pipeline squashed every image to a square (no aspect-preserving resize):
256 x 256 then a random 224 crop and a horizontal flip for training, 224 x 224 at evaluation.
These builders do the same with torchvision's ``transforms.v2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchvision.transforms import v2

__all__ = ["build_eval_transform", "build_train_transform"]

_KEYS = ("mean", "std", "image_size", "resize_size")


def build_eval_transform(data_config: Any, image_size: int | None = None) -> v2.Compose:
    """Squash-resize to ``image_size x image_size``, convert to float and normalise.

    Args:
        data_config: a backbone's ``data_config`` dict (keys ``mean``, ``std``, ``image_size``,
            ``resize_size``) or any object with a ``data_config`` attribute (a model).
        image_size: the output side; defaults to ``data_config["image_size"]``.

    Returns:
        A transform mapping a PIL image to a ``(3, image_size, image_size)`` float32 tensor.

    Example:
        >>> t = build_eval_transform({"mean": (0.5,) * 3, "std": (0.5,) * 3, "image_size": 32,
        ...                           "resize_size": 36})
        >>> from PIL import Image
        >>> t(Image.new("RGB", (50, 20))).shape
        torch.Size([3, 32, 32])
    """
    cfg = _check_config(data_config)
    size = _check_size(cfg["image_size"] if image_size is None else image_size, "image_size")
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((size, size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"])),
        ]
    )


def build_train_transform(
    data_config: Any,
    image_size: int | None = None,
    *,
    random_resized_crop: bool = False,
    scale: tuple[float, float] = (0.25, 1.0),
    hflip: bool = True,
) -> v2.Compose:
    """Training augmentation: squash to ``resize_size``, random ``image_size`` crop, h-flip.

    Args:
        data_config: as for :func:`build_eval_transform`.
        image_size: the crop side; defaults to ``data_config["image_size"]``. When it differs from
            the config's, the squash size scales with it
            (``resize_size * image_size / config size``).
        random_resized_crop: use ``RandomResizedCrop(image_size, scale=scale)`` instead of
            squash-then-crop.
        scale: area range for ``random_resized_crop``.
        hflip: random horizontal flip with probability 0.5.

    Returns:
        A transform mapping a PIL image to a ``(3, image_size, image_size)`` float32 tensor.

    Example:
        >>> cfg = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "image_size": 224, "resize_size": 256}
        >>> t = build_train_transform(cfg)  # squash 256x256, random 224 crop, flip
    """
    cfg = _check_config(data_config)
    base = _check_size(cfg["image_size"], "data_config['image_size']")
    size = _check_size(base if image_size is None else image_size, "image_size")
    resize = _check_size(cfg["resize_size"], "data_config['resize_size']")
    if size != base:
        resize = max(size, round(resize * size / base))
    if resize < size:
        raise ValueError(f"resize_size={resize} is smaller than the crop image_size={size}")
    steps: list[Any] = [v2.ToImage()]
    if random_resized_crop:
        steps.append(v2.RandomResizedCrop(size, scale=scale, antialias=True))
    else:
        steps += [v2.Resize((resize, resize), antialias=True), v2.RandomCrop(size)]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    steps += [
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(cfg["mean"]), std=list(cfg["std"])),
    ]
    return v2.Compose(steps)


def _check_config(data_config: Any) -> Mapping[str, Any]:
    if not isinstance(data_config, Mapping) and hasattr(data_config, "data_config"):
        data_config = data_config.data_config
    if not isinstance(data_config, Mapping):
        raise TypeError(
            "data_config must be a mapping or have a .data_config, got "
            f"{type(data_config).__name__}"
        )
    missing = [k for k in _KEYS if k not in data_config]
    if missing:
        raise KeyError(f"data_config is missing key(s) {missing}; it needs {list(_KEYS)}")
    for key in ("mean", "std"):
        value = data_config[key]
        if len(value) != 3:
            raise ValueError(f"data_config[{key!r}] must have 3 values, got {value!r}")
    if any(float(s) <= 0 for s in data_config["std"]):
        raise ValueError(f"data_config['std'] must be positive, got {data_config['std']!r}")
    return data_config


def _check_size(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value
