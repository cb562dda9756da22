"""A map-style dataset over image files that names bad files or reports them, as asked."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from retrieval_kit._checks import check_on_error
from retrieval_kit.data.failed_item import FailedItem
from retrieval_kit.data.image_io import DEFAULT_MAX_PIXELS, load_image

__all__ = ["ImageListDataset"]


class ImageListDataset(Dataset):
    """Images from a list of paths, with optional labels and a transform.

    ``dataset[i]`` is ``(image, target)``: the transformed image (a float tensor in [0, 1] of shape
    ``(3, H, W)`` when ``transform`` is ``None``) and ``labels[i]``, or ``i`` when there are no
    labels. With ``return_row=True`` it is ``(image, target, i)``.

    Args:
        paths: image files, one per item.
        labels: one label per path (ints or strings), or ``None``.
        transform: applied to the RGB ``PIL.Image`` from :func:`load_image`.
        on_error: ``"raise"``: a bad file raises :class:`ImageLoadError` naming it. ``"skip"``: the
            item is a :class:`FailedItem` (row, path, reason) instead; batch these with
            :func:`collate_images`, which lists them in ``ImageBatch.failures``.
        max_pixels: decompression-bomb limit passed to :func:`load_image`.
        draft_size: JPEG draft decoding size passed to :func:`load_image` (speed knob).
        return_row: also return the row index (used by extraction to keep input order).
        seed: when set, the transform's random draws (crops, flips: torch's global RNG) of row
            ``i`` are seeded from ``(seed, epoch, i)``, with the epoch of :meth:`set_epoch`: an
            image gets the same augmentation whichever process or loader worker loads it (runs on
            1 or N processes see the same pixels), and the global RNG is left as it was. A row
            loaded twice in one epoch gets the same augmentation both times. ``None``: the
            transform draws from the global RNG.

    Example:
        >>> ds = ImageListDataset(["a.jpg", "b.jpg"], labels=[3, 7], on_error="skip")
        >>> loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_images)
        ... # doctest: +SKIP
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        labels: Sequence[Any] | None = None,
        transform: Callable[[Any], Any] | None = None,
        on_error: str = "raise",
        *,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        draft_size: tuple[int, int] | None = None,
        return_row: bool = False,
        seed: int | None = None,
    ) -> None:
        if isinstance(paths, (str, bytes, os.PathLike)):
            raise TypeError("paths must be a sequence of paths, not a single path")
        check_on_error(on_error)
        self.paths = [os.fspath(p) for p in paths]
        if labels is not None:
            labels = list(labels)
            if len(labels) != len(self.paths):
                raise ValueError(
                    f"labels has {len(labels)} entries but paths has {len(self.paths)}"
                )
        self.labels = labels
        self.transform = transform
        self.on_error = on_error
        self.max_pixels = max_pixels
        self.draft_size = draft_size
        self.return_row = return_row
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0
        ):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch that, with ``seed``, seeds each row's augmentation.

        Call it before the loader's iterator is created: loader workers hold a copy of the
        dataset made then (with ``persistent_workers=True``, made once for all epochs).
        """
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def _transform(self, image: Any, index: int) -> Any:
        if self.seed is None:
            return self.transform(image)
        # The default generator's own seed/state calls: torch.manual_seed also seeds every
        # accelerator (~150 us a call, measured on a loaded 2-core CPU), these take ~5 us.
        gen = torch.default_generator
        state = gen.get_state()
        entropy = [self.seed, self.epoch, index]
        gen.manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))
        try:
            return self.transform(image)
        finally:
            gen.set_state(state)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Any:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        index = index % len(self)
        path = self.paths[index]
        try:
            image = load_image(path, max_pixels=self.max_pixels, draft_size=self.draft_size)
        except OSError as exc:  # ImageLoadError and friends; a bug in the transform still raises
            if self.on_error == "raise":
                raise
            return FailedItem.from_exception(index, path, exc)
        if self.transform is None:
            image = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
            image = image.as_subclass(torch.Tensor)
        else:
            image = self._transform(image, index)
        target = index if self.labels is None else self.labels[index]
        return (image, target, index) if self.return_row else (image, target)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n={len(self)}, labels={self.labels is not None}, "
            f"on_error={self.on_error!r})"
        )
