"""ExtractionConfig: every option of an extraction run in one frozen, validated object."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retrieval_kit._checks import check_on_error, non_negative_int, positive_int
from retrieval_kit.data.image_io import DEFAULT_MAX_PIXELS
from retrieval_kit.data.transforms import RESIZE_MODES

__all__ = ["ExtractionConfig"]


@dataclass(frozen=True)
class ExtractionConfig:
    """How :func:`~retrieval_kit.embed.extract_embeddings` loads, resizes, batches and embeds.

    Attributes:
        resize: ``"long_side"`` (aspect ratio kept, long side ``image_size``: the retrieval
            default), ``"squash"`` (to ``image_size x image_size``) or ``"center_crop"`` (short
            side then the central square, the classification protocol). For paths only; a
            ``Dataset`` brings its own transform.
        image_size: the long side (or the square's side). ``None``: for ``"long_side"`` the
            backbone's measured retrieval size (:func:`retrieval_image_size`), for the other modes
            its classification size ``model.data_config["image_size"]``.
        scales: multi-scale factors, e.g. ``(1, 2 ** -0.5, 2 ** 0.5)``: the batch is resized by
            each factor, embedded, and the embeddings combined by a power mean (cirtorch).
            ``(1.0,)`` returns the model's output unchanged.
        scale_power: the power mean's exponent. ``None``: the model's GeM ``p`` when its output
            is the GeM-pooled features (no head), else 1 (the arithmetic mean), as cirtorch does.
        batch_size: images per forward pass.
        num_workers: DataLoader processes that decode and resize.
        shape_step: for ``"long_side"``, the short side is rounded to ``image_size - k *
            shape_step`` so that images of similar aspect ratio share a batch (1: exact aspect,
            more distinct shapes). ``None``: ``image_size // 32`` (at least 1), i.e. at most 32
            shapes per orientation and the short side off by at most 1/64 of the long side.
        on_error: ``"raise"`` (the unreadable file with the lowest row) or ``"skip"`` (its row
            stays zero and is reported).
        progress: show a tqdm bar.
        device: where to run; ``None``: where the model's parameters are (the model is moved only
            when a device is given).
        amp: float16 autocast on CUDA (ignored on CPU).
        max_pixels: decompression-bomb limit per image (``rk.data.load_image``).
        chunk_size: with ``out``, rows between flushes of the memmap.
        overwrite: replace an existing ``out``.

    Example:
        >>> cfg = ExtractionConfig(image_size=512, scales=(1, 2 ** -0.5, 2 ** 0.5))
        >>> cfg.replace(batch_size=8).batch_size, cfg.scales[0]
        (8, 1.0)
    """

    resize: str = "long_side"
    image_size: int | None = None
    scales: tuple[float, ...] = (1.0,)
    scale_power: float | None = None
    batch_size: int = 32
    num_workers: int = 0
    shape_step: int | None = None
    on_error: str = "raise"
    progress: bool = False
    device: Any = None
    amp: bool = True
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    chunk_size: int = 65536
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        check_on_error(self.on_error)
        positive_int(self.batch_size, "batch_size")
        positive_int(self.chunk_size, "chunk_size")
        positive_int(self.shape_step, "shape_step", allow_none=True)
        non_negative_int(self.num_workers, "num_workers")
        positive_int(self.image_size, "image_size", allow_none=True)
        try:
            scales = tuple(float(s) for s in self.scales)
        except (TypeError, ValueError):
            raise ValueError(f"scales must be a sequence of numbers, got {self.scales!r}") from None
        if not scales or any(not s > 0 for s in scales):
            raise ValueError(
                f"scales must be a non-empty sequence of positive numbers, got {scales}"
            )
        object.__setattr__(self, "scales", scales)
        if self.scale_power is not None and not float(self.scale_power) > 0:
            raise ValueError(f"scale_power must be > 0 or None, got {self.scale_power!r}")

    def replace(self, **changes: Any) -> ExtractionConfig:
        """A copy with ``changes`` applied; an unknown name is a ``TypeError``.

        Example:
            >>> ExtractionConfig().replace(resize="squash").resize
            'squash'
        """
        return dataclasses.replace(self, **_check_names(changes))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExtractionConfig:
        """Build from a mapping (e.g. a YAML section), checking the names.

        Example:
            >>> ExtractionConfig.from_dict({"image_size": 384, "scales": [1, 0.5]}).scales
            (1.0, 0.5)
        """
        return cls(**_check_names(dict(values)))


def _check_names(changes: dict[str, Any]) -> dict[str, Any]:
    known = {f.name for f in dataclasses.fields(ExtractionConfig)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TypeError(f"unknown extraction option(s) {unknown}; valid: {sorted(known)}")
    return changes
