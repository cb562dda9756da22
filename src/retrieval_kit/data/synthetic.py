"""A small, deterministic, GLDv2-format landmark dataset, drawn procedurally (the demo data).

Each landmark is a procedurally drawn building (facade, windows, roof, towers, arches, columns, ...)
whose parameters come from the seed. Landmarks come in look-alike families that share a style, so
telling two members apart needs more than colour and layout. Every image of a landmark is a *view*
of its building: a perspective warp, scale, shift and crop, with varying sky, lighting, haze, rain,
snow, blur, noise, JPEG quality and foreground occluders (trees, cars, people, poles). Non-landmark
images are other kinds of picture: rooms, textures, objects, faces, bare landscapes, documents.

The output follows the Google Landmarks v2 layout (see ``docs/synthetic_data.md``)::

    root/train.csv                       id,url,landmark_id
    root/train_clean.csv                 landmark_id,images (space separated ids)
    root/index.csv                       id
    root/test.csv                        id
    root/recognition_solution_v2.1.csv   id,landmarks,Usage (landmarks empty for non-landmarks)
    root/retrieval_solution_v2.1.csv     id,images,Usage (index images of the query's landmark)
    root/train_clutter.csv               id (train images that are off-topic pictures; not GLDv2)
    root/{train,index,test}/a/b/c/abc....jpg
    root/synthetic_manifest.json         the parameters, counts and generator version

Same arguments -> byte-identical files. The dataset is built in a hidden folder beside ``root`` and
renamed into place when complete, so an interrupted run leaves no half-written dataset.

This module plans the images and writes them; the drawing is in ``_synthetic_buildings`` (the
landmark buildings), ``_synthetic_views`` (views of a building, and the weather) and
``_synthetic_non_landmarks`` (the other pictures); the csv files and the manifest are written by
``_synthetic_files``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from retrieval_kit._progress import progress_bar
from retrieval_kit.data._synthetic_buildings import canvas_size, draw_building, landmark_spec
from retrieval_kit.data._synthetic_files import (
    GENERATOR_VERSION,
    INDEX_CSV,
    RETRIEVAL_SOLUTION_CSV,
    SOLUTION_CSV,
    TEST_CSV,
    TRAIN_CLEAN_CSV,
    TRAIN_CLUTTER_CSV,
    TRAIN_CSV,
    SyntheticImage,
    read_manifest,
    write_csvs,
    write_manifest,
)
from retrieval_kit.data._synthetic_non_landmarks import render_non_landmark
from retrieval_kit.data._synthetic_views import Frame, render_view
from retrieval_kit.data.gldv2 import gldv2_image_path

__all__ = ["SyntheticLandmarks", "synthetic_landmarks"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyntheticLandmarks:
    """What :func:`synthetic_landmarks` wrote.

    Attributes:
        root: the dataset folder.
        train_csv, train_clean_csv, index_csv, test_csv: the GLDv2 csv files.
        solution_csv: ``recognition_solution_v2.1.csv`` (test ground truth).
        retrieval_solution_csv: ``retrieval_solution_v2.1.csv`` (test -> relevant index images).
        train_clutter_csv: ``train_clutter.csv``, the ids of the off-topic train images (the
            answer key for a cleaning step; not part of GLDv2).
        num_landmarks: landmark classes (labels ``0 .. num_landmarks - 1``).
        num_train, num_index, num_test: images per split.
        num_test_landmark, num_test_non_landmark: test queries with / without a landmark.
        seed: the seed used.
        image_size: side of the square images (long side with ``aspect_ratios``), in pixels.
        aspect_ratios: the width / height ratios drawn from, or None (square images).
    """

    root: Path
    train_csv: Path
    train_clean_csv: Path
    index_csv: Path
    test_csv: Path
    solution_csv: Path
    retrieval_solution_csv: Path
    train_clutter_csv: Path
    num_landmarks: int
    num_train: int
    num_index: int
    num_test: int
    num_test_landmark: int
    num_test_non_landmark: int
    seed: int
    image_size: int
    aspect_ratios: tuple[float, ...] | None = None

    def image_path(self, split: str, image_id: str) -> Path:
        """Path of image ``image_id`` of ``split`` ("train", "index" or "test").

        Raises:
            ValueError: the id is not a plain alphanumeric GLDv2 id.
        """
        return gldv2_image_path(self.root / split, image_id)


def synthetic_landmarks(
    root: str | os.PathLike,
    *,
    num_landmarks: int = 48,
    train_images_per_landmark: int = 12,
    train_clutter_per_landmark: int = 1,
    index_images_per_landmark: int = 2,
    num_index_non_landmark: int = 40,
    num_test_landmark_queries: int = 80,
    num_test_non_landmark: int = 160,
    family_size: int = 2,
    image_size: int = 160,
    seed: int = 0,
    progress: bool = False,
    aspect_ratios: Sequence[float] | None = None,
) -> SyntheticLandmarks:
    """Write a small synthetic landmark-recognition dataset in the GLDv2 format.

    Args:
        root: output folder. It must not exist, be empty, or hold a dataset written by this
            function with the same arguments (then nothing is rewritten).
        num_landmarks: landmark classes.
        train_images_per_landmark: training images per landmark.
        train_clutter_per_landmark: how many of those are off-topic pictures (rooms, objects,
            faces...) labelled with the landmark, as in GLDv2's noisy classes (museum interiors,
            visitors). They are what makes non-landmark queries match train images confidently,
            which the distractor reranking then corrects.
        index_images_per_landmark: retrieval-database views per landmark (``index.csv``).
        num_index_non_landmark: non-landmark images in the index.
        num_test_landmark_queries: test images showing a landmark (spread over all landmarks).
        num_test_non_landmark: test images without a landmark.
        family_size: landmarks per look-alike family (they share a style); 1 = all independent.
        image_size: side of the square JPEG images; their long side with ``aspect_ratios``.
        seed: everything (ids, drawings, views, splits) follows from it.
        progress: show a tqdm bar.
        aspect_ratios: ``None`` (default): square images. Else photo-like framing: each image
            gets a width / height ratio drawn uniformly from this list (repeat a value to weight
            it; e.g. ``(4/3, 4/3, 3/2, 16/9, 3/4, 2/3)``, each between 1/4 and 4) and is cut
            from its square canvas at that ratio, around the building for a landmark view, long
            side ``image_size``. The ratios come from a stream of their own, so a view shows
            the same scene as without the option, only framed (a ratio of 1 gives the very same
            image).

    Returns:
        A :class:`SyntheticLandmarks` with the paths and counts.

    Raises:
        ValueError: a count or size out of range.
        FileExistsError: ``root`` holds something else.

    Example:
        >>> ds = synthetic_landmarks("demo_data", num_landmarks=4, seed=0)  # doctest: +SKIP
        >>> ds.num_train, ds.train_csv.name  # doctest: +SKIP
        (48, 'train.csv')
    """
    params = {
        "num_landmarks": num_landmarks,
        "train_images_per_landmark": train_images_per_landmark,
        "train_clutter_per_landmark": train_clutter_per_landmark,
        "index_images_per_landmark": index_images_per_landmark,
        "num_index_non_landmark": num_index_non_landmark,
        "num_test_landmark_queries": num_test_landmark_queries,
        "num_test_non_landmark": num_test_non_landmark,
        "family_size": family_size,
        "image_size": image_size,
        "seed": seed,
    }
    _check_params(params)
    if aspect_ratios is not None:
        # Only when given: the manifest of a square dataset stays what it always was.
        params["aspect_ratios"] = _check_aspect_ratios(aspect_ratios)
    root = Path(root)
    manifest = {"generator_version": GENERATOR_VERSION, "params": params}

    existing = read_manifest(root)
    if existing is not None:
        if (
            existing.get("generator_version") == GENERATOR_VERSION
            and existing.get("params") == params
        ):
            logger.info("synthetic dataset already in %s; nothing to do", root)
            return _result(root, existing)
        raise FileExistsError(
            f"{root} holds a synthetic dataset made with other arguments "
            f"({existing.get('params')}); choose another folder or delete it"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not empty; refusing to overwrite it")

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        counts = _generate(tmp, params, progress)
        manifest["counts"] = counts
        write_manifest(tmp, manifest)
        if root.exists():
            root.rmdir()  # empty (checked above); os.replace cannot replace a directory elsewhere
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote synthetic dataset to %s: %s", root, counts)
    return _result(root, manifest)


# ----------------------------------------------------------------------------------------------
# Arguments and result


def _check_aspect_ratios(ratios: Sequence[float]) -> list[float]:
    if isinstance(ratios, (str, bytes)) or not isinstance(ratios, Sequence) or not ratios:
        raise ValueError(f"aspect_ratios must be a non-empty list of numbers, got {ratios!r}")
    out = []
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, (int, float, np.integer, np.floating)):
            raise TypeError(f"aspect_ratios: {r!r} is not a number")
        if not (math.isfinite(r) and 0.25 <= r <= 4):
            raise ValueError(f"aspect_ratios: {r!r} is not a width / height ratio in [1/4, 4]")
        out.append(float(r))
    return out


def _check_params(p: dict[str, Any]) -> None:
    for key, value in p.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"{key} must be an int, got {value!r}")
    minimum = {
        "num_landmarks": 1,
        "train_images_per_landmark": 1,
        "train_clutter_per_landmark": 0,
        "index_images_per_landmark": 0,
        "num_index_non_landmark": 0,
        "num_test_landmark_queries": 0,
        "num_test_non_landmark": 0,
        "family_size": 1,
        "image_size": 32,
        "seed": 0,
    }
    for key, low in minimum.items():
        if p[key] < low:
            raise ValueError(f"{key} must be >= {low}, got {p[key]}")
    if p["train_clutter_per_landmark"] >= p["train_images_per_landmark"]:
        raise ValueError(
            f"train_clutter_per_landmark ({p['train_clutter_per_landmark']}) must be smaller than "
            f"train_images_per_landmark ({p['train_images_per_landmark']})"
        )


def _result(root: Path, manifest: dict[str, Any]) -> SyntheticLandmarks:
    c = manifest["counts"]
    p = manifest["params"]
    return SyntheticLandmarks(
        root=root,
        train_csv=root / TRAIN_CSV,
        train_clean_csv=root / TRAIN_CLEAN_CSV,
        index_csv=root / INDEX_CSV,
        test_csv=root / TEST_CSV,
        solution_csv=root / SOLUTION_CSV,
        retrieval_solution_csv=root / RETRIEVAL_SOLUTION_CSV,
        train_clutter_csv=root / TRAIN_CLUTTER_CSV,
        num_landmarks=p["num_landmarks"],
        num_train=c["train"],
        num_index=c["index"],
        num_test=c["test"],
        num_test_landmark=c["test_landmark"],
        num_test_non_landmark=c["test_non_landmark"],
        seed=p["seed"],
        image_size=p["image_size"],
        aspect_ratios=tuple(p["aspect_ratios"]) if "aspect_ratios" in p else None,
    )


# ----------------------------------------------------------------------------------------------
# Generation: which images, then their pixels, then the csv files


# Stream keys (first element after the seed) so that every purpose draws from its own stream. The
# values are part of the output: changing one changes the pictures (4 is unused).
_K_LANDMARK, _K_FAMILY, _K_VIEW, _K_SPLIT, _K_FRAME = 1, 2, 3, 5, 6
_SPLIT_KEY = {"train": 0, "index": 1, "test": 2}


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # Independent streams per (purpose, landmark, view): changing one count does not reshuffle
    # the drawings of unrelated landmarks.
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _image_id(seed: int, split: str, number: int) -> str:
    return hashlib.sha256(f"rk-synthetic/{seed}/{split}/{number}".encode()).hexdigest()[:16]


def _generate(out: Path, p: dict[str, Any], progress: bool) -> dict[str, int]:
    split_rng = _rng(p["seed"], _K_SPLIT)
    images = _plan_images(p, split_rng)
    _draw_images(out, images, p, progress)
    # The same stream, continued, splits the test queries into Public and Private.
    return write_csvs(out, images, usage_rng=split_rng)


def _plan_images(p: dict[str, Any], split_rng: np.random.Generator) -> list[SyntheticImage]:
    # (landmark_view, label) per image of each split, in generation order.
    n_lm, n_clutter = p["num_landmarks"], p["train_clutter_per_landmark"]
    train = [
        (k >= n_clutter, label)
        for label in range(n_lm)
        for k in range(p["train_images_per_landmark"])
    ]
    index = [(True, label) for label in range(n_lm) for _ in range(p["index_images_per_landmark"])]
    index += [(False, -1)] * p["num_index_non_landmark"]
    # Test landmarks cycle through a shuffled order of all landmarks, so every landmark is queried
    # about equally often.
    test_labels: list[int] = []
    while len(test_labels) < p["num_test_landmark_queries"]:
        test_labels += split_rng.permutation(n_lm).tolist()
    test = [(True, label) for label in test_labels[: p["num_test_landmark_queries"]]]
    test += [(False, -1)] * p["num_test_non_landmark"]
    test = [test[j] for j in split_rng.permutation(len(test))]

    images = [
        SyntheticImage(split, number, _image_id(p["seed"], split, number), view, label)
        for split, items in (("train", train), ("index", index), ("test", test))
        for number, (view, label) in enumerate(items)
    ]
    # 64-bit ids: a collision practically never happens, but must never pass silently.
    if len({im.id for im in images}) != len(images):
        raise RuntimeError("synthetic image id collision; use another seed")
    return images


def _landmark_spec(seed: int, label: int, family_size: int) -> dict[str, Any]:
    # Every member of a family starts the same family stream, so they draw the same style.
    style = _rng(seed, _K_FAMILY, label // family_size)
    return landmark_spec(style, _rng(seed, _K_LANDMARK, label))


def _draw_images(
    out: Path, images: list[SyntheticImage], p: dict[str, Any], progress: bool
) -> None:
    seed, size = p["seed"], p["image_size"]
    specs = [_landmark_spec(seed, label, p["family_size"]) for label in range(p["num_landmarks"])]
    layers: dict[int, Image.Image] = {}  # each building drawn once, on first use
    with progress_bar(
        enabled=progress, total=len(images), desc="synthetic images", unit="img"
    ) as bar:
        for im in images:
            rng = _rng(seed, _K_VIEW, _SPLIT_KEY[im.split], im.number)
            frame = _frame(p, im)
            if im.landmark_view:
                if im.label not in layers:
                    layers[im.label] = draw_building(specs[im.label], canvas_size(size))
                img = render_view(layers[im.label], rng, size, hard=im.split == "test", frame=frame)
            else:
                img = render_non_landmark(rng, size, frame=frame)
            _save_jpeg(img, gldv2_image_path(out / im.split, im.id), rng)
            bar.update(1)


def _frame(p: dict[str, Any], im: SyntheticImage) -> Frame | None:
    ratios = p.get("aspect_ratios")
    if ratios is None:
        return None
    # Its own stream: the view's stream, and so the scene, is the same as without framing.
    rng = _rng(p["seed"], _K_FRAME, _SPLIT_KEY[im.split], im.number)
    aspect = ratios[int(rng.integers(0, len(ratios)))]
    return Frame(aspect, tuple(float(v) for v in rng.uniform(-1, 1, 2)))


def _save_jpeg(img: Image.Image, path: Path, rng: np.random.Generator) -> None:
    # PIL's libjpeg encoder is deterministic for the same pixels and settings; optimize=False and
    # no EXIF/time stamps keep the bytes reproducible.
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(75, 96)), optimize=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Plain write: the whole dataset folder is renamed into place only once complete (atomic as a
    # whole), and one fsync per image would dominate the run time.
    path.write_bytes(buf.getvalue())
