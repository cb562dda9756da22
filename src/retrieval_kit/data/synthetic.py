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
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval_kit._io import atomic_write_json, atomic_write_text

__all__ = ["SyntheticLandmarks", "synthetic_landmarks"]

logger = logging.getLogger(__name__)

# Bumped whenever the drawing changes, so a manifest from an older generator is not mistaken for
# the current output.
GENERATOR_VERSION = 1
MANIFEST_NAME = "synthetic_manifest.json"


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
        image_size: side of the square images, in pixels.
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

    def image_path(self, split: str, image_id: str) -> Path:
        """Path of image ``image_id`` of ``split`` ("train", "index" or "test")."""
        return self.root / split / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


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
        image_size: side of the square JPEG images.
        seed: everything (ids, drawings, views, splits) follows from it.
        progress: show a tqdm bar.

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
    root = Path(root)
    manifest = {"generator_version": GENERATOR_VERSION, "params": params}

    existing = _existing_manifest(root)
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
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        if root.exists():
            root.rmdir()  # empty (checked above); os.replace cannot replace a directory elsewhere
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote synthetic dataset to %s: %s", root, counts)
    return _result(root, manifest)


# ----------------------------------------------------------------------------------------------
# Bookkeeping


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


def _existing_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FileExistsError(f"{path} is not a readable synthetic-dataset manifest: {e}") from e


def _result(root: Path, manifest: dict[str, Any]) -> SyntheticLandmarks:
    c = manifest["counts"]
    p = manifest["params"]
    return SyntheticLandmarks(
        root=root,
        train_csv=root / "train.csv",
        train_clean_csv=root / "train_clean.csv",
        index_csv=root / "index.csv",
        test_csv=root / "test.csv",
        solution_csv=root / "recognition_solution_v2.1.csv",
        retrieval_solution_csv=root / "retrieval_solution_v2.1.csv",
        train_clutter_csv=root / "train_clutter.csv",
        num_landmarks=p["num_landmarks"],
        num_train=c["train"],
        num_index=c["index"],
        num_test=c["test"],
        num_test_landmark=c["test_landmark"],
        num_test_non_landmark=c["test_non_landmark"],
        seed=p["seed"],
        image_size=p["image_size"],
    )


def _rng(seed: int, *keys: int) -> np.random.Generator:
    # Independent streams per (purpose, landmark, view): changing one count does not reshuffle
    # the drawings of unrelated landmarks.
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _image_id(seed: int, split: str, number: int) -> str:
    return hashlib.sha256(f"rk-synthetic/{seed}/{split}/{number}".encode()).hexdigest()[:16]


def _rel_path(split: str, image_id: str) -> str:
    return f"{split}/{image_id[0]}/{image_id[1]}/{image_id[2]}/{image_id}.jpg"


# Stream keys (first element after the seed) so that every purpose draws from its own stream.
_K_LANDMARK, _K_FAMILY, _K_VIEW, _K_NONLM, _K_SPLIT = 1, 2, 3, 4, 5
_SPLIT_KEY = {"train": 0, "index": 1, "test": 2}


def _generate(out: Path, p: dict[str, Any], progress: bool) -> dict[str, int]:
    seed, n_lm, size = p["seed"], p["num_landmarks"], p["image_size"]
    split_rng = _rng(seed, _K_SPLIT)

    # Jobs: (split, number, kind, label). kind "lm" draws a view of landmark `label`, "non" a
    # non-landmark picture (labelled `label` when it is train clutter).
    jobs: list[tuple[str, int, str, int]] = []
    n = 0
    n_clutter = p["train_clutter_per_landmark"]
    for label in range(n_lm):
        for k in range(p["train_images_per_landmark"]):
            jobs.append(("train", n, "non" if k < n_clutter else "lm", label))
            n += 1
    n = 0
    index_items: list[tuple[str, int, str, int]] = []
    for label in range(n_lm):
        for _ in range(p["index_images_per_landmark"]):
            index_items.append(("index", n, "lm", label))
            n += 1
    for _ in range(p["num_index_non_landmark"]):
        index_items.append(("index", n, "non", -1))
        n += 1
    jobs += index_items
    # Test landmarks cycle through a shuffled order of all landmarks, so every landmark is queried
    # about equally often.
    test_labels: list[int] = []
    while len(test_labels) < p["num_test_landmark_queries"]:
        test_labels += split_rng.permutation(n_lm).tolist()
    test_items = [("test", 0, "lm", lab) for lab in test_labels[: p["num_test_landmark_queries"]]]
    test_items += [("test", 0, "non", -1)] * p["num_test_non_landmark"]
    order = split_rng.permutation(len(test_items))
    test_items = [(s, i, k, lab) for i, (s, _, k, lab) in enumerate(test_items[j] for j in order)]
    jobs += test_items

    ids = {(s, i): _image_id(seed, s, i) for s, i, _, _ in jobs}
    if len(set(ids.values())) != len(ids):  # 64-bit ids: practically never, but never silently
        raise RuntimeError("synthetic image id collision; use another seed")

    lm_specs = [_landmark_spec(seed, label, p["family_size"]) for label in range(n_lm)]
    layers: dict[int, Image.Image] = {}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc="synthetic images", unit="img")
    try:
        for split, number, kind, label in jobs:
            rng = _rng(seed, _K_VIEW, _SPLIT_KEY[split], number)
            if kind == "lm":
                if label not in layers:
                    layers[label] = _draw_building(lm_specs[label], _canvas(size))
                img = _render_view(layers[label], lm_specs[label], rng, size, hard=split == "test")
            else:
                img = _render_non_landmark(rng, size)
            _save_jpeg(img, out / _rel_path(split, ids[(split, number)]), rng)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    # CSVs, GLDv2 column order; rows in id order within each file so the files do not leak labels.
    train = sorted((ids[(s, i)], lab) for s, i, _, lab in jobs if s == "train")
    lines = ["id,url,landmark_id"]
    lines += [f"{i},synthetic://train/{i},{lab}" for i, lab in train]
    atomic_write_text(out / "train.csv", "\n".join(lines) + "\n")

    clutter = sorted(ids[(s, i)] for s, i, k, _ in jobs if s == "train" and k == "non")
    atomic_write_text(out / "train_clutter.csv", "id\n" + "".join(f"{i}\n" for i in clutter))

    by_label: dict[int, list[str]] = {}
    for i, lab in train:
        by_label.setdefault(lab, []).append(i)
    lines = ["landmark_id,images"]
    lines += [f"{lab},{' '.join(by_label[lab])}" for lab in sorted(by_label)]
    atomic_write_text(out / "train_clean.csv", "\n".join(lines) + "\n")

    index = sorted((ids[(s, i)], lab) for s, i, _, lab in index_items)
    atomic_write_text(out / "index.csv", "id\n" + "".join(f"{i}\n" for i, _ in index))

    test = sorted((ids[(s, i)], lab) for s, i, _, lab in test_items)
    atomic_write_text(out / "test.csv", "id\n" + "".join(f"{i}\n" for i, _ in test))

    # Public / Private halves, each with its share of landmark and non-landmark queries.
    usage: dict[str, str] = {}
    for want_lm in (True, False):
        group = [i for i, lab in test if (lab >= 0) == want_lm]
        flags = split_rng.permutation(len(group)) % 2
        usage.update({i: ("Public" if f == 0 else "Private") for i, f in zip(group, flags)})
    lines = ["id,landmarks,Usage"]
    lines += [f"{i},{lab if lab >= 0 else ''},{usage[i]}" for i, lab in test]
    atomic_write_text(out / "recognition_solution_v2.1.csv", "\n".join(lines) + "\n")

    index_by_label: dict[int, list[str]] = {}
    for i, lab in index:
        if lab >= 0:
            index_by_label.setdefault(lab, []).append(i)
    lines = ["id,images,Usage"]
    lines += [
        f"{i},{' '.join(index_by_label.get(lab, [])) if lab >= 0 else ''},{usage[i]}"
        for i, lab in test
    ]
    atomic_write_text(out / "retrieval_solution_v2.1.csv", "\n".join(lines) + "\n")

    n_test_lm = sum(1 for _, lab in test if lab >= 0)
    return {
        "train": len(train),
        "index": len(index),
        "test": len(test),
        "test_landmark": n_test_lm,
        "test_non_landmark": len(test) - n_test_lm,
    }


def _save_jpeg(img: Image.Image, path: Path, rng: np.random.Generator) -> None:
    # PIL's libjpeg encoder is deterministic for the same pixels and settings; optimize=False and
    # no EXIF/time stamps keep the bytes reproducible.
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=int(rng.integers(75, 96)), optimize=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Plain write: the whole dataset folder is renamed into place only once complete (atomic as a
    # whole), and one fsync per image would dominate the run time.
    path.write_bytes(buf.getvalue())


# ----------------------------------------------------------------------------------------------
# Landmarks: a spec per landmark, drawn once into an RGBA layer; views warp that layer.


def _canvas(size: int) -> int:
    # Drawn at >= twice the output size and downsampled, which anti-aliases edges; never below 320
    # px, the scale the drawing constants (line widths, object sizes in pixels) were tuned for.
    return max(320, 2 * size)


def _landmark_spec(seed: int, label: int, family_size: int) -> dict[str, Any]:
    family = label // family_size
    f = _rng(seed, _K_FAMILY, family)  # shared by the family: the look-alike style
    r = _rng(seed, _K_LANDMARK, label)  # this landmark's own details

    def jitter(value: float, amount: float) -> float:
        return float(value + r.uniform(-amount, amount))

    base = f.uniform(0, 1, 3)
    wall = np.clip(base * 180 + 50 + r.uniform(-25, 25, 3), 20, 235)
    trim = np.clip(255 - wall * f.uniform(0.3, 0.9) + r.uniform(-20, 20, 3), 0, 255)
    spec: dict[str, Any] = {
        "wall": tuple(int(c) for c in wall),
        "trim": tuple(int(c) for c in trim),
        "window": tuple(
            int(c) for c in np.clip(f.uniform(0, 120, 3) + r.uniform(-20, 20, 3), 0, 255)
        ),
        "roof_color": tuple(
            int(c) for c in np.clip(f.uniform(30, 200, 3) + r.uniform(-30, 30, 3), 0, 255)
        ),
        "width": float(np.clip(jitter(f.uniform(0.35, 0.8), 0.08), 0.25, 0.85)),
        "height": float(np.clip(jitter(f.uniform(0.25, 0.55), 0.07), 0.2, 0.6)),
        "roof": str(f.choice(["flat", "gable", "dome", "stepped", "spires"]))
        if r.uniform() < 0.8
        else str(r.choice(["flat", "gable", "dome", "stepped", "spires"])),
        "floors": int(np.clip(f.integers(2, 7) + r.integers(-1, 2), 1, 8)),
        "cols": int(np.clip(f.integers(3, 10) + r.integers(-2, 3), 2, 12)),
        "window_shape": str(f.choice(["rect", "arch", "round"])),
        "towers": int(r.integers(0, 3)),
        "tower_top": str(r.choice(["spire", "dome", "flat", "clock"])),
        "tower_width": float(r.uniform(0.08, 0.16)),
        "tower_height": float(r.uniform(0.15, 0.35)),
        "columns": int(f.integers(0, 2) * r.integers(4, 9)),
        "door": str(r.choice(["arch", "rect", "triple"])),
        "bands": int(r.integers(0, 4)),
        "texture": str(f.choice(["plain", "brick", "stone", "vertical"])),
        "texture_seed": int(r.integers(0, 2**31)),
        "side_objects": int(r.integers(0, 3)),
        "side_seed": int(r.integers(0, 2**31)),
        "emblem": int(r.integers(0, 4)),
        "emblem_color": tuple(int(c) for c in r.integers(0, 256, 3)),
    }
    return spec


def _draw_building(spec: dict[str, Any], canvas: int) -> Image.Image:
    W = H = canvas
    layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    ground = int(0.82 * H)
    bw, bh = spec["width"] * W, spec["height"] * H
    x0, x1 = (W - bw) / 2, (W + bw) / 2
    y1 = ground
    y0 = y1 - bh
    wall, trim, win = spec["wall"], spec["trim"], spec["window"]

    # Towers behind/beside the main block.
    tw, th = spec["tower_width"] * W, spec["tower_height"] * H
    tower_xs = []
    if spec["towers"] == 1:
        tower_xs = [W / 2 - tw / 2]
    elif spec["towers"] == 2:
        tower_xs = [x0 - tw * 0.3, x1 - tw * 0.7]
    for tx in tower_xs:
        ty0 = y0 - th
        d.rectangle([tx, ty0, tx + tw, y1], fill=_shade(wall, 0.85), outline=trim, width=2)
        for k in range(3):
            wy = ty0 + (k + 0.5) * th / 3.5
            d.rectangle([tx + tw * 0.35, wy, tx + tw * 0.65, wy + th / 8], fill=win)
        _draw_top(d, spec["tower_top"], tx, ty0, tw, trim, spec["roof_color"])

    # Main block with texture.
    d.rectangle([x0, y0, x1, y1], fill=wall, outline=trim, width=3)
    _texture(d, spec, x0, y0, x1, y1)
    for b in range(spec["bands"]):
        by = y0 + (b + 1) * bh / (spec["bands"] + 1)
        d.rectangle([x0, by - 2, x1, by + 2], fill=trim)

    # Window grid, leaving the ground floor centre for the door.
    floors, cols = spec["floors"], spec["cols"]
    cell_w, cell_h = bw / cols, (bh * 0.85) / floors
    for fl in range(floors):
        for c in range(cols):
            cx0 = x0 + c * cell_w + cell_w * 0.25
            cy0 = y0 + bh * 0.08 + fl * cell_h + cell_h * 0.2
            cx1, cy1 = cx0 + cell_w * 0.5, cy0 + cell_h * 0.6
            if fl == floors - 1 and abs((c + 0.5) - cols / 2) < 1.0:
                continue
            _window(d, spec["window_shape"], cx0, cy0, cx1, cy1, win, trim)

    # Door(s).
    dw, dh = bw * 0.12, bh * 0.3
    centres = [W / 2] if spec["door"] != "triple" else [W / 2 - 1.3 * dw, W / 2, W / 2 + 1.3 * dw]
    for cx in centres:
        if spec["door"] == "rect":
            d.rectangle(
                [cx - dw / 2, y1 - dh, cx + dw / 2, y1], fill=_shade(win, 0.6), outline=trim
            )
        else:
            d.rectangle([cx - dw / 2, y1 - dh + dw / 2, cx + dw / 2, y1], fill=_shade(win, 0.6))
            d.pieslice(
                [cx - dw / 2, y1 - dh, cx + dw / 2, y1 - dh + dw], 180, 360, fill=_shade(win, 0.6)
            )

    # Colonnade in front.
    if spec["columns"]:
        n = spec["columns"]
        for k in range(n):
            cx = x0 + bw * (k + 0.5) / n
            d.rectangle(
                [cx - bw * 0.015, y0 + bh * 0.35, cx + bw * 0.015, y1], fill=_shade(trim, 1.1)
            )
        d.rectangle([x0 - 4, y0 + bh * 0.3, x1 + 4, y0 + bh * 0.36], fill=trim)

    # Roof.
    _draw_roof(d, spec, x0, y0, x1, bw, bh)

    # Emblem (a rose window / clock / flag / plaque): a small, distinctive detail.
    e = spec["emblem"]
    ex, ey, er = W / 2, y0 + bh * 0.12, bw * 0.05
    if e == 1:
        d.ellipse(
            [ex - er, ey - er, ex + er, ey + er], fill=spec["emblem_color"], outline=trim, width=2
        )
        d.line([ex, ey, ex, ey - er * 0.8], fill=trim, width=2)
        d.line([ex, ey, ex + er * 0.6, ey], fill=trim, width=2)
    elif e == 2:
        d.line([x1 - 10, y0, x1 - 10, y0 - bh * 0.4], fill=(60, 60, 60), width=3)
        d.rectangle(
            [x1 - 10, y0 - bh * 0.4, x1 + bw * 0.12, y0 - bh * 0.3], fill=spec["emblem_color"]
        )
    elif e == 3:
        d.rectangle(
            [ex - er * 2, ey - er * 0.6, ex + er * 2, ey + er * 0.6], fill=spec["emblem_color"]
        )

    # Fixed surroundings (statue, fountain, lamp) belong to the landmark too.
    s = np.random.default_rng(spec["side_seed"])
    for _ in range(spec["side_objects"]):
        sx = float(s.uniform(0.05, 0.95)) * W
        if x0 < sx < x1:
            sx = x0 - 20 if sx < W / 2 else x1 + 20
        kind = int(s.integers(0, 3))
        col = tuple(int(c) for c in s.integers(40, 220, 3))
        if kind == 0:  # statue on plinth
            d.rectangle([sx - 12, ground - 30, sx + 12, ground], fill=(150, 150, 150))
            d.ellipse([sx - 8, ground - 70, sx + 8, ground - 30], fill=col)
        elif kind == 1:  # lamp post
            d.line([sx, ground, sx, ground - 90], fill=(40, 40, 40), width=4)
            d.ellipse([sx - 8, ground - 100, sx + 8, ground - 84], fill=(250, 240, 180))
        else:  # obelisk
            d.polygon([(sx - 10, ground), (sx + 10, ground), (sx, ground - 130)], fill=col)
    return layer


def _draw_top(d: ImageDraw.ImageDraw, kind: str, x: float, y: float, w: float, trim, roof) -> None:
    if kind == "spire":
        d.polygon([(x, y), (x + w, y), (x + w / 2, y - 1.6 * w)], fill=roof, outline=trim)
    elif kind == "dome":
        d.pieslice([x, y - w / 2, x + w, y + w / 2], 180, 360, fill=roof, outline=trim)
    elif kind == "clock":
        d.rectangle([x - 3, y - 6, x + w + 3, y], fill=trim)
        d.ellipse(
            [x + w * 0.2, y + w * 0.1, x + w * 0.8, y + w * 0.7], fill=(240, 240, 230), outline=trim
        )
    else:
        d.rectangle([x - 4, y - 8, x + w + 4, y], fill=trim)


def _draw_roof(
    d: ImageDraw.ImageDraw, spec, x0: float, y0: float, x1: float, bw: float, bh: float
) -> None:
    roof, trim = spec["roof_color"], spec["trim"]
    kind = spec["roof"]
    if kind == "gable":
        d.polygon(
            [(x0 - 8, y0), (x1 + 8, y0), ((x0 + x1) / 2, y0 - bh * 0.35)], fill=roof, outline=trim
        )
    elif kind == "dome":
        r = bw * 0.22
        cx = (x0 + x1) / 2
        d.rectangle([cx - r * 0.8, y0 - r * 0.4, cx + r * 0.8, y0], fill=_shade(spec["wall"], 0.9))
        d.pieslice([cx - r, y0 - r * 1.4, cx + r, y0 + r * 0.6], 180, 360, fill=roof, outline=trim)
        d.line([cx, y0 - r * 1.4, cx, y0 - r * 1.8], fill=trim, width=3)
    elif kind == "stepped":
        for k in range(3):
            inset = bw * 0.12 * (k + 1)
            d.rectangle(
                [x0 + inset, y0 - bh * 0.09 * (k + 1), x1 - inset, y0 - bh * 0.09 * k], fill=roof
            )
    elif kind == "spires":
        n = 5
        for k in range(n):
            sx = x0 + bw * k / (n - 1)
            d.polygon([(sx - 6, y0), (sx + 6, y0), (sx, y0 - bh * 0.25)], fill=roof)
    else:
        d.rectangle([x0 - 5, y0 - 8, x1 + 5, y0], fill=trim)


def _window(d: ImageDraw.ImageDraw, shape: str, x0, y0, x1, y1, fill, trim) -> None:
    if shape == "round":
        d.ellipse([x0, y0, x1, y1], fill=fill, outline=trim)
    elif shape == "arch":
        r = min(x1 - x0, y1 - y0) / 2
        d.rectangle([x0, y0 + r, x1, y1], fill=fill)
        d.pieslice([x0, y0, x1, y0 + 2 * r], 180, 360, fill=fill)
    else:
        d.rectangle([x0, y0, x1, y1], fill=fill, outline=trim)


def _texture(d: ImageDraw.ImageDraw, spec, x0: float, y0: float, x1: float, y1: float) -> None:
    kind = spec["texture"]
    t = np.random.default_rng(spec["texture_seed"])
    col = _shade(spec["wall"], 0.8)
    if kind == "brick":
        step = 8
        for k, y in enumerate(np.arange(y0 + step, y1, step)):
            d.line([x0, y, x1, y], fill=col)
            off = (k % 2) * step
            for x in np.arange(x0 + off, x1, 2 * step):
                d.line([x, y - step, x, y], fill=col)
    elif kind == "stone":
        for _ in range(60):
            x, y = t.uniform(x0, x1), t.uniform(y0, y1)
            d.rectangle([x, y, x + t.uniform(6, 20), y + t.uniform(4, 10)], outline=col)
    elif kind == "vertical":
        for x in np.arange(x0, x1, 10):
            d.line([x, y0, x, y1], fill=col, width=2)


def _shade(color, factor: float) -> tuple[int, int, int]:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color[:3])


def _render_view(
    layer: Image.Image, spec: dict[str, Any], rng: np.random.Generator, size: int, hard: bool
) -> Image.Image:
    C = layer.size[0]
    img = _sky(rng, C)
    d = ImageDraw.Draw(img)
    # Ground and a distant skyline: they change per view, so they carry no identity.
    horizon = int(C * rng.uniform(0.75, 0.9))
    gcol = tuple(int(c) for c in rng.integers(60, 170, 3))
    d.rectangle([0, horizon, C, C], fill=gcol)
    for _ in range(int(rng.integers(0, 6))):
        x = rng.uniform(0, C)
        w, h = rng.uniform(20, 80), rng.uniform(30, 160)
        d.rectangle(
            [x, horizon - h, x + w, horizon], fill=tuple(int(c) for c in rng.integers(90, 180, 3))
        )

    # Viewpoint: a camera turned sideways (yaw: the far side shrinks), tilted up (pitch: the top
    # narrows), slightly rolled, nearer or farther (scale) and aimed off-centre (shift).
    strength = 0.3 if hard else 0.22
    yaw = rng.uniform(-strength, strength)
    pitch = rng.uniform(0, strength * 0.8)
    roll = np.deg2rad(rng.uniform(-4, 4))
    scale = rng.uniform(0.65, 1.5) if hard else rng.uniform(0.75, 1.35)
    dx, dy = rng.uniform(-0.15, 0.15, 2) * C
    src = np.array([[0, 0], [C, 0], [C, C], [0, C]], dtype=np.float64)
    q = src / C * 2 - 1  # corners in [-1, 1]
    side = np.sign(q[:, 0])
    q[:, 1] *= 1 - yaw * side
    q[:, 0] = np.where(side * yaw > 0, q[:, 0] * (1 - abs(yaw) * 0.6), q[:, 0])
    q[:2, 0] *= 1 - pitch
    rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    q = q @ rot.T + rng.uniform(-0.03, 0.03, (4, 2))
    dst = q * scale * C / 2 + C / 2 + [dx, dy + (horizon - 0.82 * C)]
    coeffs = _perspective_coeffs(dst, src)
    warped = layer.transform((C, C), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    img.paste(warped, (0, 0), warped)

    _occluders(img, rng, C, hard)
    img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return _photometric(img, rng, hard)


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    # PIL maps each output pixel to an input pixel; solve the 8 homography unknowns from the four
    # corner correspondences (output dst -> input src).
    a = []
    b = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return tuple(np.linalg.solve(np.array(a), np.array(b)).tolist())


def _sky(rng: np.random.Generator, C: int) -> Image.Image:
    top = rng.uniform(0, 1, 3)
    mood = rng.uniform()
    if mood < 0.6:  # day
        top = np.array([80, 140, 230]) + rng.uniform(-40, 25, 3)
        bottom = np.array([190, 215, 245]) + rng.uniform(-30, 10, 3)
    elif mood < 0.8:  # overcast
        g = rng.uniform(140, 210)
        top = np.array([g, g, g + 5]) + rng.uniform(-10, 10, 3)
        bottom = top + 25
    else:  # dusk
        top = np.array([60, 60, 130]) + rng.uniform(-30, 30, 3)
        bottom = np.array([240, 150, 90]) + rng.uniform(-30, 15, 3)
    t = np.linspace(0, 1, C)[:, None]
    grad = np.clip(top[None] * (1 - t) + bottom[None] * t, 0, 255)
    arr = np.repeat(grad[:, None, :], C, axis=1).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 5))):  # clouds
        x, y = rng.uniform(0, C), rng.uniform(0, C * 0.4)
        w, h = rng.uniform(40, 160), rng.uniform(15, 40)
        g = int(rng.uniform(220, 255))
        d.ellipse([x, y, x + w, y + h], fill=(g, g, g))
    return img


def _occluders(img: Image.Image, rng: np.random.Generator, C: int, hard: bool) -> None:
    d = ImageDraw.Draw(img)
    n = int(rng.integers(0, 4 if hard else 3))
    for _ in range(n):
        kind = int(rng.integers(0, 4))
        x = rng.uniform(0, C)
        base = C * rng.uniform(0.9, 1.05)
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        if kind == 0:  # tree
            h = rng.uniform(0.25, 0.55) * C
            w = rng.uniform(0.1, 0.25) * C
            d.rectangle([x - 6, base - h * 0.4, x + 6, base], fill=(90, 60, 30))
            g = (int(rng.integers(20, 80)), int(rng.integers(90, 160)), int(rng.integers(20, 70)))
            d.ellipse([x - w / 2, base - h, x + w / 2, base - h * 0.3], fill=g)
        elif kind == 1:  # car
            w, h = rng.uniform(0.15, 0.3) * C, rng.uniform(0.06, 0.1) * C
            d.rounded_rectangle([x, base - h, x + w, base], radius=8, fill=col)
            d.rectangle(
                [x + w * 0.2, base - h * 1.6, x + w * 0.75, base - h], fill=_shade(col, 0.7)
            )
        elif kind == 2:  # person
            h = rng.uniform(0.15, 0.3) * C
            d.ellipse([x - h * 0.08, base - h, x + h * 0.08, base - h * 0.82], fill=(220, 180, 150))
            d.rectangle([x - h * 0.12, base - h * 0.82, x + h * 0.12, base - h * 0.3], fill=col)
            d.rectangle([x - h * 0.1, base - h * 0.3, x + h * 0.1, base], fill=_shade(col, 0.5))
        else:  # pole / sign
            d.line([x, base, x, base - C * 0.5], fill=(50, 50, 50), width=5)
            d.rectangle([x - 20, base - C * 0.5, x + 20, base - C * 0.42], fill=col)


def _photometric(img: Image.Image, rng: np.random.Generator, hard: bool) -> Image.Image:
    a = np.asarray(img, dtype=np.float32)
    H, W = a.shape[:2]
    # Lighting: brightness, contrast, colour cast.
    a = (a - 128) * rng.uniform(0.7, 1.2) + 128 * rng.uniform(0.7, 1.25)
    a *= rng.uniform(0.85, 1.15, 3)[None, None]
    # Weather.
    w = rng.uniform()
    if w < (0.25 if hard else 0.15):  # haze / fog, denser towards the top
        fog = rng.uniform(0.2, 0.6)
        t = (1 - np.linspace(0.2, 1, H))[:, None, None] * fog + fog * 0.3
        a = a * (1 - t) + rng.uniform(180, 235) * t
    elif w < (0.4 if hard else 0.25):  # rain streaks
        rain = Image.new("L", (W, H), 0)
        dr = ImageDraw.Draw(rain)
        slant = rng.uniform(-0.3, 0.3)
        for _ in range(int(rng.integers(60, 200))):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            L = rng.uniform(5, 15)
            dr.line([x, y, x + slant * L, y + L], fill=int(rng.integers(80, 200)))
        a = a * 0.85 + np.asarray(rain, dtype=np.float32)[..., None] * 0.6
    elif w < (0.5 if hard else 0.33):  # snow
        flakes = rng.uniform(0, 1, (H, W)) < rng.uniform(0.005, 0.02)
        a[flakes] = 245
    a = np.clip(a + rng.normal(0, rng.uniform(0, 6), a.shape), 0, 255).astype(np.uint8)
    out = Image.fromarray(a, "RGB")
    if rng.uniform() < (0.5 if hard else 0.35):
        out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.6))))
    return out


# ----------------------------------------------------------------------------------------------
# Non-landmark pictures: several kinds, none showing a landmark building.


def _render_non_landmark(rng: np.random.Generator, size: int) -> Image.Image:
    kinds: list[Callable[[np.random.Generator, int], Image.Image]] = [
        _room,
        _texture_image,
        _object_image,
        _face,
        _landscape,
        _document,
    ]
    img = kinds[int(rng.integers(0, len(kinds)))](rng, _canvas(size))
    img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return _photometric(img, rng, hard=False)


def _rand_color(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, 3))


def _room(rng: np.random.Generator, C: int) -> Image.Image:
    img = Image.new("RGB", (C, C), _rand_color(rng, 120, 240))
    d = ImageDraw.Draw(img)
    m = C * rng.uniform(0.2, 0.35)
    d.polygon([(0, C), (C, C), (C - m, C - m), (m, C - m)], fill=_rand_color(rng, 60, 180))  # floor
    d.polygon([(0, 0), (m, m), (m, C - m), (0, C)], fill=_rand_color(rng, 100, 220))  # left wall
    d.polygon([(C, 0), (C - m, m), (C - m, C - m), (C, C)], fill=_rand_color(rng, 100, 220))
    for _ in range(int(rng.integers(1, 5))):  # furniture, pictures
        x, y = rng.uniform(m, C - m - 40), rng.uniform(m, C - m - 40)
        d.rectangle(
            [x, y, x + rng.uniform(20, 120), y + rng.uniform(20, 100)], fill=_rand_color(rng)
        )
    return img


def _texture_image(rng: np.random.Generator, C: int) -> Image.Image:
    k = int(rng.integers(0, 3))
    if k == 0:  # smooth noise
        small = rng.uniform(0, 255, (int(rng.integers(3, 12)),) * 2 + (3,)).astype(np.uint8)
        return Image.fromarray(small, "RGB").resize((C, C), Image.Resampling.BICUBIC)
    img = Image.new("RGB", (C, C), _rand_color(rng))
    d = ImageDraw.Draw(img)
    step = int(rng.integers(8, 40))
    col = _rand_color(rng)
    if k == 1:  # stripes
        for x in range(-C, C, step * 2):
            d.polygon([(x, 0), (x + step, 0), (x + step + C, C), (x + C, C)], fill=col)
    else:  # checks / dots
        for y in range(0, C, step):
            for x in range((y // step) % 2 * step, C, 2 * step):
                d.ellipse([x, y, x + step, y + step], fill=col)
    return img


def _object_image(rng: np.random.Generator, C: int) -> Image.Image:
    img = Image.new("RGB", (C, C), _rand_color(rng, 150, 256))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.1, 0.35) * C
        x, y = rng.uniform(r, C - r, 2)
        col = _rand_color(rng)
        shape = int(rng.integers(0, 3))
        if shape == 0:
            d.ellipse([x - r, y - r, x + r, y + r], fill=col)
        elif shape == 1:
            d.rounded_rectangle(
                [x - r, y - r * 0.6, x + r, y + r * 0.6], radius=int(r / 4), fill=col
            )
        else:
            d.regular_polygon(
                (x, y, r), int(rng.integers(3, 8)), rotation=float(rng.uniform(0, 90)), fill=col
            )
    return img


def _face(rng: np.random.Generator, C: int) -> Image.Image:
    img = Image.new("RGB", (C, C), _rand_color(rng, 40, 220))
    d = ImageDraw.Draw(img)
    skin = (int(rng.integers(120, 240)), int(rng.integers(90, 200)), int(rng.integers(70, 170)))
    cx, cy = C / 2 + rng.uniform(-0.1, 0.1) * C, C * rng.uniform(0.4, 0.55)
    rx, ry = C * rng.uniform(0.18, 0.28), C * rng.uniform(0.25, 0.35)
    d.rectangle(
        [cx - rx * 1.4, cy + ry * 0.8, cx + rx * 1.4, C], fill=_rand_color(rng)
    )  # shoulders
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    d.chord(
        [cx - rx * 1.05, cy - ry * 1.1, cx + rx * 1.05, cy + ry * 0.3],
        180,
        360,
        fill=_rand_color(rng, 0, 120),
    )
    for sx in (-1, 1):
        ex, ey = cx + sx * rx * 0.4, cy - ry * 0.05
        d.ellipse(
            [ex - rx * 0.12, ey - ry * 0.06, ex + rx * 0.12, ey + ry * 0.06], fill=(250, 250, 250)
        )
        d.ellipse(
            [ex - rx * 0.05, ey - ry * 0.05, ex + rx * 0.05, ey + ry * 0.05], fill=(30, 30, 30)
        )
    d.arc(
        [cx - rx * 0.4, cy + ry * 0.2, cx + rx * 0.4, cy + ry * 0.6],
        20,
        160,
        fill=(120, 40, 40),
        width=4,
    )
    return img


def _landscape(rng: np.random.Generator, C: int) -> Image.Image:
    img = _sky(rng, C)
    d = ImageDraw.Draw(img)
    for layer in range(int(rng.integers(1, 4))):  # mountain ridges
        base = C * (0.5 + 0.12 * layer)
        xs = np.linspace(0, C, 9)
        ys = base - rng.uniform(0, 0.3, 9) * C
        col = _rand_color(rng, 40, 150)
        d.polygon([(0, C), *zip(xs.tolist(), ys.tolist()), (C, C)], fill=col)
    if rng.uniform() < 0.5:  # water
        d.rectangle(
            [0, C * 0.8, C, C], fill=(int(rng.integers(30, 90)), int(rng.integers(80, 140)), 200)
        )
    return img


def _document(rng: np.random.Generator, C: int) -> Image.Image:
    img = Image.new("RGB", (C, C), _rand_color(rng, 30, 120))
    d = ImageDraw.Draw(img)
    m = C * rng.uniform(0.05, 0.15)
    d.rectangle([m, m * 0.5, C - m, C - m * 0.5], fill=(245, 245, 235))
    y = m * 1.2
    while y < C - m:
        x = m * 1.3
        while x < C - m * 1.3:
            w = rng.uniform(8, 40)
            d.rectangle([x, y, min(x + w, C - m * 1.3), y + 5], fill=(40, 40, 40))
            x += w + 6
        y += rng.uniform(12, 20)
    return img
