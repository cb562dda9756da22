"""Training-set cleaning as in the reproduced GLDv2 pipeline: the Places365 outdoor rule and the
minimum-images-per-class rule.

The outdoor rule keeps an image when at least ``min_votes`` (3) of the top-``k`` (5) Places365 scene
categories predicted for it are outdoor categories, with indoor/outdoor taken from the official
``IO_places365.txt`` (lines like ``/a/airfield 2``; 1 = indoor, 2 = outdoor; line i is category i).
The classifier is the CSAIL Places365 ResNet50, loaded from the file the user downloaded
(``resnet50_places365.pth.tar``: a ``torch.save``'d dict whose ``"state_dict"`` keys carry a
``module.`` prefix) with ``weights_only=True``, so a crafted file cannot run code. Nothing is
downloaded.

Each filter returns a boolean keep-mask and a list of removed rows with the reason, so a pipeline
can report what it removed and why (:func:`write_removed_csv`).

Example:
    >>> import retrieval_kit as rk
    >>> model = rk.data.load_places365_model("resnet50_places365.pth.tar")  # doctest: +SKIP
    >>> outdoor = rk.data.read_places365_io("IO_places365.txt")  # doctest: +SKIP
    >>> top = rk.data.places365_top_categories(  # doctest: +SKIP
    ...     model, paths, ids=ids, cache_path="p365.csv"
    ... )
    >>> keep, removed = rk.data.outdoor_filter(ids, top, outdoor, min_votes=3)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections import Counter
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from retrieval_kit._checks import check_on_error
from retrieval_kit._progress import progress_bar
from retrieval_kit.backbones.data_config import IMAGENET_MEAN, IMAGENET_STD
from retrieval_kit.data.failed_item import FailedItem
from retrieval_kit.data.image_io import load_image
from retrieval_kit.io import atomic_write

__all__ = [
    "PLACES365_NUM_CLASSES",
    "load_places365_model",
    "min_images_filter",
    "outdoor_filter",
    "outdoor_votes",
    "places365_top_categories",
    "read_places365_io",
    "write_removed_csv",
]

logger = logging.getLogger(__name__)

PLACES365_NUM_CLASSES = 365

# Places365-CNN evaluation preprocessing (CSAIL run_placesCNN_basic.py): 256 squash, 224 centre
# crop, ImageNet mean/std.

_CACHE_HEADER = "# retrieval_kit places365 top categories v1 fingerprint="


def read_places365_io(
    path: str | os.PathLike, num_classes: int = PLACES365_NUM_CLASSES
) -> np.ndarray:
    """Read the official ``IO_places365.txt`` into a boolean array, True for outdoor categories.

    Args:
        path: the file; line i (0-based) is category i, e.g. ``/a/airfield 2`` (1 indoor,
            2 outdoor).
        num_classes: expected number of lines.

    Returns:
        ``(num_classes,)`` bool array.

    Example:
        >>> outdoor = read_places365_io("IO_places365.txt")  # doctest: +SKIP
        >>> int(outdoor.sum())  # doctest: +SKIP
        190
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Places365 indoor/outdoor file not found: {path}")
    values = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("1", "2"):
                raise ValueError(
                    f"{path}, line {lineno}: expected '<category> <1|2>' (1 indoor, 2 outdoor), "
                    f"got {line.rstrip()!r}"
                )
            values.append(parts[1] == "2")
    if len(values) != num_classes:
        raise ValueError(f"{path}: expected {num_classes} categories, found {len(values)}")
    return np.asarray(values, dtype=bool)


def load_places365_model(
    checkpoint: str | os.PathLike,
    *,
    arch: str = "resnet50",
    num_classes: int = PLACES365_NUM_CLASSES,
) -> torch.nn.Module:
    """Load a Places365 scene classifier from its official CSAIL checkpoint file, in eval mode.

    Args:
        checkpoint: e.g. ``resnet50_places365.pth.tar`` - a dict with ``"state_dict"`` whose
            keys start with ``module.`` (a bare state dict is accepted too). Loaded with
            ``weights_only=True``.
        arch: torchvision architecture name the checkpoint was trained with.
        num_classes: classifier outputs (365).

    Example:
        >>> model = load_places365_model("resnet50_places365.pth.tar")  # doctest: +SKIP
    """
    import torchvision

    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"Places365 checkpoint not found: {path}")
    builder = getattr(torchvision.models, arch, None)
    if builder is None or not callable(builder):
        raise ValueError(f"unknown torchvision architecture {arch!r} for {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # the unpickler refuses anything that is not plain tensors/containers
        raise ValueError(f"{path}: not a loadable weights-only checkpoint: {e}") from e
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: expected a dict with a 'state_dict' of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = builder(num_classes=num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(
            f"{path}: weights do not fit torchvision {arch}({num_classes}): {e}"
        ) from e
    return model.eval()


def _load_batch(
    items: list[tuple[int, str]], image_size: int, resize_size: int
) -> tuple[list[int], torch.Tensor | None, list[FailedItem]]:
    # A DataLoader collate_fn (module level so worker processes can pickle it): decode, squash,
    # centre-crop, normalise; failures (rk.data.load_image names the reason: truncated, not an
    # image, decompression bomb ...) are returned, not raised, so the caller decides.
    from torchvision.transforms import functional as F

    rows, tensors, failed = [], [], []
    for row, path in items:
        try:
            im = load_image(path).resize((resize_size, resize_size), Image.BILINEAR)
            t = F.center_crop(F.to_tensor(im), [image_size, image_size])
            tensors.append(F.normalize(t, IMAGENET_MEAN, IMAGENET_STD))
            rows.append(row)
        except Exception as e:  # noqa: BLE001 - any decoding error is reported with the file
            failed.append(FailedItem(row, path, f"{type(e).__name__}: {e}"))
    return rows, (torch.stack(tensors) if tensors else None), failed


def _fingerprint(model: torch.nn.Module, top_k: int, image_size: int, resize_size: int) -> str:
    h = hashlib.sha256(f"{top_k}/{image_size}/{resize_size}".encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _read_cache(path: Path, fingerprint: str, top_k: int) -> dict[str, list[int]]:
    if not path.is_file():
        return {}
    cached: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n")
        if header != _CACHE_HEADER + fingerprint:
            raise ValueError(
                f"{path}: cache was made with another model or settings ({header!r}); "
                "delete it or give another cache_path"
            )
        for line in f:
            if not line.endswith("\n"):
                break  # torn last line of an interrupted run; recomputed
            image_id, _, cats = line.rstrip("\n").partition(",")
            values = cats.split()
            if len(values) == top_k:
                cached[image_id] = [int(v) for v in values]
    return cached


def _open_cache_for_append(path: Path, fingerprint: str):
    # An append-only log rather than an atomic rewrite: GLDv2 has 1.5M images and rewriting the
    # whole cache after every batch would cost more than the inference. A line torn by a kill is
    # cut off here, and ignored by _read_cache.
    if path.is_file():
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            with open(path, "r+b") as f:
                f.truncate(cut)
        return open(path, "a", encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(_CACHE_HEADER + fingerprint + "\n")
    return open(path, "a", encoding="utf-8")


@torch.no_grad()
def places365_top_categories(
    model: torch.nn.Module,
    paths: Sequence[str | os.PathLike],
    *,
    ids: Sequence[str] | None = None,
    top_k: int = 5,
    batch_size: int = 32,
    image_size: int = 224,
    resize_size: int = 256,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    cache_path: str | os.PathLike | None = None,
    on_error: str = "raise",
    progress: bool = False,
) -> list[list[int] | None]:
    """Predict the top-``k`` Places365 categories of each image, batched and cached.

    Args:
        model: a Places365 classifier (:func:`load_places365_model`), outputs ``(B, 365)`` logits.
        paths: image files.
        ids: one id per image (the cache key); defaults to the paths.
        top_k: categories kept per image.
        batch_size, num_workers, device: inference settings.
        image_size, resize_size: centre-crop size and squash size before it.
        cache_path: a CSV of already computed images; a rerun computes only the missing ones and an
            interrupted run keeps what it had finished. Refused if made with another model.
        on_error: ``"raise"`` (an error naming the file) or ``"skip"`` (that image gets ``None``).
        progress: show a tqdm bar.

    Returns:
        One list of ``top_k`` category indices per image (best first), or None for a skipped image.

    Example:
        >>> top = places365_top_categories(model, ["a.jpg"], cache_path="c.csv")  # doctest: +SKIP
    """
    check_on_error(on_error)
    paths = [str(p) for p in paths]
    keys = [str(i) for i in ids] if ids is not None else list(paths)
    if len(keys) != len(paths):
        raise ValueError(f"got {len(keys)} ids for {len(paths)} paths")
    if len(set(keys)) != len(keys):
        dup = next(k for k, c in Counter(keys).items() if c > 1)
        raise ValueError(f"duplicate id {dup!r}: ids must be unique (they key the cache)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.eval().to(device)

    results: list[list[int] | None] = [None] * len(paths)
    cache_file = None
    if cache_path is not None:
        fingerprint = _fingerprint(model, top_k, image_size, resize_size)
        cached = _read_cache(Path(cache_path), fingerprint, top_k)
        for i, key in enumerate(keys):
            if key in cached:
                results[i] = cached[key]
        cache_file = _open_cache_for_append(Path(cache_path), fingerprint)
    todo = [(i, paths[i]) for i in range(len(paths)) if results[i] is None]
    logger.info(
        "Places365: %d images, %d cached, %d to classify",
        len(paths),
        len(paths) - len(todo),
        len(todo),
    )
    loader = torch.utils.data.DataLoader(
        todo,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=partial(_load_batch, image_size=image_size, resize_size=resize_size),
    )
    bar = progress_bar(enabled=progress, total=len(todo), desc="places365", unit="img")
    try:
        for rows, batch, failed in loader:
            for item in failed:
                if on_error == "raise":
                    raise ValueError(f"cannot read image {item.path}: {item.reason}")
                logger.warning("skipping unreadable image %s: %s", item.path, item.reason)
            if batch is not None:
                logits = model(batch.to(device))
                top = logits.topk(top_k, dim=1).indices.cpu().tolist()
                for row, cats in zip(rows, top, strict=True):
                    results[row] = cats
                if cache_file is not None:
                    cache_file.write(
                        "".join(f"{keys[r]},{' '.join(map(str, c))}\n" for r, c in zip(rows, top))
                    )
                    cache_file.flush()
            bar.update(len(rows) + len(failed))
    finally:
        if cache_file is not None:
            cache_file.close()
        bar.close()
    return results


def outdoor_votes(
    top_categories: Sequence[Sequence[int] | None], outdoor: np.ndarray
) -> np.ndarray:
    """Count the outdoor categories among each image's top categories (-1 for a missing image).

    Example:
        >>> outdoor_votes([[0, 1, 2]], np.array([True, False, True]))
        array([2])
    """
    outdoor = np.asarray(outdoor, dtype=bool)
    return np.array(
        [-1 if cats is None else int(outdoor[list(cats)].sum()) for cats in top_categories],
        dtype=np.int64,
    )


def outdoor_filter(
    ids: Sequence[Any],
    top_categories: Sequence[Sequence[int] | None],
    outdoor: np.ndarray,
    *,
    min_votes: int = 3,
    labels: Sequence[Any] | None = None,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Keep images with at least ``min_votes`` outdoor categories among their top categories.

    Args:
        ids: image ids, one per row.
        top_categories: from :func:`places365_top_categories` (None = unreadable: removed).
        outdoor: from :func:`read_places365_io`.
        min_votes: votes needed (3 of the top 5 in the reproduced pipeline).
        labels: optional class labels, copied into the removed rows.

    Returns:
        ``(keep, removed)``: a bool mask over the rows, and one ``{"id", "label", "reason"}`` per
        removed row.

    Example:
        >>> outdoor = np.array([1, 0, 1], bool)
        >>> keep, removed = outdoor_filter(["a"], [[0, 1, 2]], outdoor, min_votes=3)
        >>> keep.tolist(), removed[0]["reason"]
        ([False], 'indoor: 2 of top-3 Places365 categories outdoor, 3 needed')
    """
    if len(ids) != len(top_categories):
        raise ValueError(f"got {len(ids)} ids for {len(top_categories)} predictions")
    votes = outdoor_votes(top_categories, outdoor)
    keep = votes >= min_votes
    removed = []
    for i in np.flatnonzero(~keep):
        cats = top_categories[i]
        if cats is None:
            reason = "unreadable image (no Places365 prediction)"
        else:
            reason = (
                f"indoor: {votes[i]} of top-{len(cats)} Places365 categories outdoor, "
                f"{min_votes} needed"
            )
        removed.append(
            {"id": ids[i], "label": None if labels is None else labels[i], "reason": reason}
        )
    return keep, removed


def min_images_filter(
    ids: Sequence[Any], labels: Sequence[Any], *, min_images: int = 10
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Keep the images of classes that have at least ``min_images`` images.

    Returns:
        ``(keep, removed)`` as :func:`outdoor_filter`.

    Example:
        >>> keep, removed = min_images_filter(["a", "b", "c"], [1, 1, 2], min_images=2)
        >>> keep.tolist(), removed[0]["reason"]
        ([True, True, False], 'class 2 has 1 images, fewer than 2')
    """
    if len(ids) != len(labels):
        raise ValueError(f"got {len(ids)} ids for {len(labels)} labels")
    counts = Counter(labels)
    keep = np.array([counts[lab] >= min_images for lab in labels], dtype=bool)
    removed = [
        {
            "id": ids[i],
            "label": labels[i],
            "reason": f"class {labels[i]} has {counts[labels[i]]} images, fewer than {min_images}",
        }
        for i in np.flatnonzero(~keep)
    ]
    return keep, removed


def write_removed_csv(path: str | os.PathLike, removed: Sequence[dict[str, Any]]) -> None:
    """Write removed rows as a CSV ``id,label,reason`` (atomically).

    Example:
        >>> write_removed_csv("removed.csv", removed)  # doctest: +SKIP
    """
    with atomic_write(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", "reason"])
        for r in removed:
            writer.writerow([r["id"], "" if r.get("label") is None else r["label"], r["reason"]])
