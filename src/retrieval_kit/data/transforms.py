"""Train and eval transforms built from a backbone's ``data_config``.

The reproduced landmark pipeline squashed every image to a square (no aspect-preserving resize):
256 x 256 then a random 224 crop and a horizontal flip for training, 224 x 224 at evaluation.
Retrieval keeps the aspect ratio instead and resizes the long side (cirtorch, the Kaggle landmark
solutions); :func:`build_eval_transform` offers ``resize="squash"`` (its default, the stackable
square), ``"long_side"`` and ``"center_crop"``. Every mode resizes with the same bilinear,
antialiased ``v2.Resize``, so a square image gives the same tensor under ``"squash"`` and
``"long_side"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision.transforms import v2

from retrieval_kit._checks import positive_int
from retrieval_kit.backbones.data_config import DataConfig

__all__ = ["RESIZE_MODES", "build_eval_transform", "build_train_transform", "long_side_shape"]

#: The eval resize modes: aspect kept with the long side at ``image_size``; squashed to a square;
#: short side to ``resize_size`` (scaled with ``image_size``) then the central square.
RESIZE_MODES = ("long_side", "squash", "center_crop")


def long_side_shape(width: int, height: int, size: int, step: int = 1) -> tuple[int, int]:
    """``(height, width)`` after resizing the long side to ``size``, aspect ratio kept.

    With ``step > 1`` the short side is rounded to ``size - k * step`` (k an integer), so images of
    similar aspect ratio share a shape and can be batched together; the aspect ratio then moves by
    at most ``step / 2`` pixels on the short side. A square image is always ``(size, size)``.

    Args:
        width, height: the input image's size.
        size: the output's long side.
        step: shape quantisation of the short side (1: exact aspect ratio).

    Example:
        >>> long_side_shape(640, 480, 512), long_side_shape(640, 470, 512, step=32)
        ((384, 512), (384, 512))
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    long, short = max(width, height), min(width, height)
    exact = short * size / long
    new_short = max(1, round(exact))
    if step > 1:
        quantised = size - step * round((size - exact) / step)
        new_short = quantised if quantised >= 1 else new_short
    return (size, new_short) if height >= width else (new_short, size)


class _ResizeLongSide(torch.nn.Module):
    """Resize so the long side is ``size`` (aspect kept), with squash's very interpolation."""

    def __init__(self, size: int, step: int = 1) -> None:
        super().__init__()
        self.size, self.step = size, step

    def forward(self, image: Any) -> Any:
        height, width = v2.functional.get_size(image)
        shape = long_side_shape(width, height, self.size, self.step)
        return v2.functional.resize(image, list(shape), antialias=True)

    def extra_repr(self) -> str:
        return f"size={self.size}, step={self.step}"


def build_eval_transform(
    data_config: Any,
    image_size: int | None = None,
    *,
    resize: str = "squash",
    step: int = 1,
) -> v2.Compose:
    """Resize (``resize`` mode), convert to float and normalise.

    Args:
        data_config: a backbone's ``data_config`` dict (keys ``mean``, ``std``, ``image_size``,
            ``resize_size``) or any object with a ``data_config`` attribute (a model).
        image_size: the output side (the long side for ``"long_side"``); defaults to
            ``data_config["image_size"]``.
        resize: ``"squash"``: to ``image_size x image_size`` (stacks with the default collate);
            ``"long_side"``: aspect ratio kept, long side ``image_size`` (sizes differ between
            images; ``rk.embed.extract_embeddings`` batches them by shape);
            ``"center_crop"``: short side to ``resize_size * image_size / data_config
            image_size``, then the central ``image_size`` square (the classification protocol).
        step: for ``"long_side"``, round the short side to ``image_size - k * step``
            (see :func:`long_side_shape`).

    Returns:
        A transform mapping a PIL image to a ``(3, H, W)`` float32 tensor.

    Example:
        >>> t = build_eval_transform({"mean": (0.5,) * 3, "std": (0.5,) * 3, "image_size": 32,
        ...                           "resize_size": 36})
        >>> from PIL import Image
        >>> t(Image.new("RGB", (50, 20))).shape
        torch.Size([3, 32, 32])
        >>> cfg = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "image_size": 32, "resize_size": 36}
        >>> build_eval_transform(cfg, resize="long_side")(Image.new("RGB", (50, 20))).shape
        torch.Size([3, 13, 32])
    """
    cfg = DataConfig.of(data_config)
    size = positive_int(cfg.image_size if image_size is None else image_size, "image_size")
    step = positive_int(step, "step")
    if resize == "squash":
        resizing: list[Any] = [v2.Resize((size, size), antialias=True)]
    elif resize == "long_side":
        resizing = [_ResizeLongSide(size, step)]
    elif resize == "center_crop":
        short = max(size, round(cfg.resize_size * size / cfg.image_size))
        resizing = [v2.Resize(short, antialias=True), v2.CenterCrop(size)]
    else:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    return v2.Compose(
        [
            v2.ToImage(),
            *resizing,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
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
    cfg = DataConfig.of(data_config)
    base = cfg.image_size
    size = positive_int(base if image_size is None else image_size, "image_size")
    resize = cfg.resize_size
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
        v2.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
    ]
    return v2.Compose(steps)
