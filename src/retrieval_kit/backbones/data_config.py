"""A backbone's preprocessing (mean, std, image sizes), kept beside it as timm's ``PretrainedCfg``.

A :class:`DataConfig` is validated once, when it is made; everything that reads one (the
transforms, the extractor, ``save_model``) can rely on its fields. It is also a read-only mapping
(``cfg["mean"]``, ``dict(cfg)``, ``{**cfg, "image_size": 320}``), so code written for the former
plain dicts keeps working, and a plain dict is accepted wherever a config is expected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

from retrieval_kit._checks import positive_int

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DataConfig", "make_data_config"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_REQUIRED = ("mean", "std", "image_size", "resize_size")
# Optional fields appear as mapping keys only when set, so configs saved before they existed (and
# dicts written by hand) compare equal and round-trip through save_model unchanged.
_OPTIONAL_DEFAULTS: dict[str, Any] = {"retrieval_size": None, "fixed_input_size": False}


class _MissingKeysError(KeyError, ValueError):
    """Required keys missing from a mapping: a ``KeyError`` and a ``ValueError``."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


@dataclasses.dataclass(frozen=True, eq=False)
class DataConfig(Mapping):
    """How images are prepared for a backbone.

    Args:
        mean: per-channel mean (RGB, 0..1 scale).
        std: per-channel standard deviation (RGB, all > 0).
        image_size: the classification input side (the crop of the eval transform).
        resize_size: the side resized to before that crop; default ``round(image_size / 0.875)``
            (256 for 224).
        interpolation: the resampling the weights were trained with (``"bilinear"``,
            ``"bicubic"``).
        retrieval_size: the long side to use for retrieval (``resize="long_side"``), if known.
        fixed_input_size: the model needs exactly ``image_size`` squares (e.g. a ViT with fixed
            position embeddings); extraction then never keeps the aspect ratio.

    Example:
        >>> cfg = DataConfig(image_size=224)
        >>> cfg.resize_size, cfg["mean"]
        (256, (0.485, 0.456, 0.406))
        >>> dict(cfg.replace(image_size=320))["resize_size"]
        256
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    image_size: int = 224
    resize_size: int | None = None
    interpolation: str = "bilinear"
    retrieval_size: int | None = None
    fixed_input_size: bool = False

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            try:
                value = tuple(float(v) for v in getattr(self, name))
            except (TypeError, ValueError):
                raise ValueError(
                    f"data_config[{name!r}] must be 3 numbers, got {getattr(self, name)!r}"
                ) from None
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(f"data_config[{name!r}] must have 3 finite values, got {value!r}")
            object.__setattr__(self, name, value)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"data_config['std'] must be positive, got {self.std!r}")
        size = positive_int(self.image_size, "data_config['image_size']")
        object.__setattr__(self, "image_size", size)
        resize = self.resize_size
        resize = int(round(size / 0.875)) if resize is None else resize
        object.__setattr__(self, "resize_size", positive_int(resize, "data_config['resize_size']"))
        if not isinstance(self.interpolation, str) or not self.interpolation:
            raise ValueError(
                f"data_config['interpolation'] must be a name, got {self.interpolation!r}"
            )
        retrieval = positive_int(
            self.retrieval_size, "data_config['retrieval_size']", allow_none=True
        )
        object.__setattr__(self, "retrieval_size", retrieval)
        if not isinstance(self.fixed_input_size, bool):
            raise ValueError(
                f"data_config['fixed_input_size'] must be True or False, "
                f"got {self.fixed_input_size!r}"
            )

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], where: str = "") -> DataConfig:
        """Build from a mapping that has at least ``mean``, ``std``, ``image_size``,
        ``resize_size`` (an unknown key is an error, so a typo is never ignored).

        Example:
            >>> DataConfig.from_mapping({"mean": (0.5,) * 3, "std": (0.5,) * 3,
            ...                          "image_size": 32, "resize_size": 36}).image_size
            32
        """
        if isinstance(config, DataConfig):
            return config
        if not isinstance(config, Mapping):
            raise TypeError(
                f"data_config must be a mapping or have a .data_config, got {type(config).__name__}"
            )
        of = f" of {where}" if where else ""
        missing = [k for k in _REQUIRED if k not in config]
        if missing:
            raise _MissingKeysError(
                f"data_config{of} lacks keys {missing}; required: {list(_REQUIRED)}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"data_config{of} has unknown keys {unknown}; known: {sorted(known)}")
        try:
            return cls(**config)
        except ValueError as exc:
            raise ValueError(f"{exc}{of}" if where else str(exc)) from None

    @classmethod
    def of(cls, source: Any, where: str = "") -> DataConfig:
        """The config of ``source``: a DataConfig, a mapping, or an object with ``.data_config``
        (a model).

        Example:
            >>> DataConfig.of({"mean": (0,) * 3, "std": (1,) * 3, "image_size": 8,
            ...                "resize_size": 8}).resize_size
            8
        """
        if not isinstance(source, Mapping) and hasattr(source, "data_config"):
            source = source.data_config
        return cls.from_mapping(source, where)

    @classmethod
    def from_timm(cls, pretrained_cfg: Mapping[str, Any]) -> DataConfig:
        """Convert a timm ``pretrained_cfg`` (mean, std, input_size, crop_pct).

        Example:
            >>> DataConfig.from_timm({"input_size": (3, 224, 224), "crop_pct": 0.875}).resize_size
            256
        """
        image_size = int(pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        crop_pct = float(pretrained_cfg.get("crop_pct") or 0.875)
        return cls(
            mean=tuple(pretrained_cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(pretrained_cfg.get("std", IMAGENET_STD)),
            image_size=image_size,
            # timm's eval transform resizes the short side to floor(size / crop_pct), then crops.
            resize_size=int(math.floor(image_size / crop_pct)),
            interpolation=str(pretrained_cfg.get("interpolation") or "bilinear"),
        )

    def replace(self, **changes: Any) -> DataConfig:
        """A copy with ``changes`` applied (validated again).

        Example:
            >>> DataConfig().replace(retrieval_size=512).retrieval_size
            512
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready: tuples, ints, str), with only the optional fields set.

        Example:
            >>> sorted(DataConfig().to_dict())
            ['image_size', 'interpolation', 'mean', 'resize_size', 'std']
        """
        return dict(self.items())

    # Read-only mapping, for code that indexes the former dicts.
    def __getitem__(self, key: str) -> Any:
        if key in self._keys():
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def _keys(self) -> tuple[str, ...]:
        optional = tuple(
            k for k, default in _OPTIONAL_DEFAULTS.items() if getattr(self, k) != default
        )
        return (*_REQUIRED, "interpolation", *optional)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._keys())
        return f"DataConfig({fields})"


def make_data_config(
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    image_size: int = 224,
    resize_size: int | None = None,
    interpolation: str = "bilinear",
) -> DataConfig:
    """A :class:`DataConfig`; ``resize_size`` defaults to ``round(image_size / 0.875)``.

    Example:
        >>> make_data_config()["resize_size"]
        256
    """
    return DataConfig(mean, std, image_size, resize_size, interpolation)
