from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval_kit.data import synthetic
from retrieval_kit.data.synthetic import SyntheticLandmarks, synthetic_landmarks

SMALL = dict(
    num_landmarks=6,
    train_images_per_landmark=6,
    train_clutter_per_landmark=1,
    index_images_per_landmark=1,
    num_index_non_landmark=3,
    num_test_landmark_queries=8,
    num_test_non_landmark=14,
    image_size=64,
)
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SyntheticLandmarks:
    return synthetic_landmarks(tmp_path_factory.mktemp("syn") / "data", seed=3, **SMALL)


def test_same_seed_gives_byte_identical_files(small, tmp_path):
    again = synthetic_landmarks(tmp_path / "again", seed=3, **SMALL)
    assert all_files(again.root) == all_files(small.root)


def test_other_seed_gives_other_ids_and_pixels(small, tmp_path):
    other = synthetic_landmarks(tmp_path / "other", seed=4, **SMALL)
    _, a = read_csv(small.train_csv)
    _, b = read_csv(other.train_csv)
    assert not {r["id"] for r in a} & {r["id"] for r in b}
    first_a = np.asarray(Image.open(small.image_path("train", a[0]["id"])), dtype=float)
    first_b = np.asarray(Image.open(other.image_path("train", b[0]["id"])), dtype=float)
    assert np.abs(first_a - first_b).mean() > 5


def test_csv_columns_counts_and_layout(small):
    cols, train = read_csv(small.train_csv)
    assert cols == ["id", "url", "landmark_id"]
    assert len(train) == small.num_train == 6 * 6
    labels = [int(r["landmark_id"]) for r in train]
    assert sorted(set(labels)) == list(range(6))
    assert all(labels.count(k) == 6 for k in range(6))

    cols, clutter = read_csv(small.train_clutter_csv)
    assert cols == ["id"]
    label_of = {r["id"]: int(r["landmark_id"]) for r in train}
    assert sorted(label_of[r["id"]] for r in clutter) == list(range(6))  # one per landmark
    assert all(r["url"] == f"synthetic://train/{r['id']}" for r in train)

    cols, clean = read_csv(small.train_clean_csv)
    assert cols == ["landmark_id", "images"]
    from_clean = {int(r["landmark_id"]): sorted(r["images"].split(" ")) for r in clean}
    from_train: dict[int, list[str]] = {}
    for r in train:
        from_train.setdefault(int(r["landmark_id"]), []).append(r["id"])
    assert from_clean == {k: sorted(v) for k, v in from_train.items()}

    cols, index = read_csv(small.index_csv)
    assert cols == ["id"]
    assert len(index) == small.num_index == 6 * 1 + 3

    cols, test = read_csv(small.test_csv)
    assert cols == ["id"]
    assert len(test) == small.num_test == 8 + 14

    cols, sol = read_csv(small.solution_csv)
    assert cols == ["id", "landmarks", "Usage"]
    assert [r["id"] for r in sol] == [r["id"] for r in test]
    assert sum(1 for r in sol if r["landmarks"]) == small.num_test_landmark == 8
    assert sum(1 for r in sol if not r["landmarks"]) == small.num_test_non_landmark == 14
    assert {int(r["landmarks"]) for r in sol if r["landmarks"]} <= set(range(6))
    assert {r["Usage"] for r in sol} == {"Public", "Private"}

    cols, ret = read_csv(small.retrieval_solution_csv)
    assert cols == ["id", "images", "Usage"]
    index_ids = {r["id"] for r in index}
    for r, s in zip(ret, sol):
        assert r["id"] == s["id"] and r["Usage"] == s["Usage"]
        assert bool(r["images"]) == bool(s["landmarks"])  # 1 index view per landmark
        assert set(r["images"].split()) <= index_ids

    ids = {"train": [r["id"] for r in train], "index": [r["id"] for r in index]}
    ids["test"] = [r["id"] for r in test]
    every = [i for v in ids.values() for i in v]
    assert len(set(every)) == len(every)  # no id in two roles
    for split, split_ids in ids.items():
        assert split_ids == sorted(split_ids)
        for i in split_ids:
            assert HEX16.match(i), i
            path = small.root / split / i[0] / i[1] / i[2] / f"{i}.jpg"
            assert path == small.image_path(split, i) and path.is_file()
            with Image.open(path) as im:
                assert im.format == "JPEG" and im.size == (64, 64) and im.mode == "RGB"
    n_jpg = sum(1 for _ in small.root.rglob("*.jpg"))
    assert n_jpg == len(every)  # and no stray images


def test_csv_files_are_plain_gldv2_csv(small):
    # "\n" line ends, no quoting, the header's number of columns on every line.
    for path in sorted(small.root.glob("*.csv")):
        data = path.read_bytes()
        assert data.endswith(b"\n") and b"\r" not in data and b'"' not in data, path.name
        lines = data.decode().splitlines()
        assert {line.count(",") for line in lines} == {lines[0].count(",")}, path.name


def test_image_path_rejects_unsafe_ids(small):
    for bad in ("../../../etc/passwd", "ab/cd", ""):
        with pytest.raises(ValueError, match="id"):
            small.image_path("train", bad)


def test_library_readers_parse_it(small):
    from retrieval_kit.data import gldv2

    train = gldv2.read_train_csv(small.train_csv)
    assert len(train["id"]) == small.num_train
    clean = gldv2.read_train_clean_csv(small.train_clean_csv)
    assert sorted(i for v in clean.values() for i in v) == sorted(train["id"])
    assert len(gldv2.read_ids_csv(small.index_csv)) == small.num_index
    sol = gldv2.read_solution_csv(small.solution_csv)
    assert sum(1 for x in sol["landmarks"] if x) == small.num_test_landmark
    assert len(gldv2.read_ids_csv(small.test_csv)) == small.num_test
    for path in gldv2.gldv2_image_paths(small.root / "test", sol["id"]):
        assert path.is_file()


def test_usage_halves_each_hold_landmark_and_non_landmark_queries(small):
    _, sol = read_csv(small.solution_csv)
    for usage in ("Public", "Private"):
        part = [r for r in sol if r["Usage"] == usage]
        assert sum(1 for r in part if r["landmarks"]) == 4
        assert sum(1 for r in part if not r["landmarks"]) == 7


def test_default_test_set_is_mostly_non_landmark():
    sig = synthetic_landmarks.__kwdefaults__
    n_lm, n_non = sig["num_test_landmark_queries"], sig["num_test_non_landmark"]
    assert 0.6 <= n_non / (n_lm + n_non) <= 0.75


def _thumb(path: Path) -> np.ndarray:
    # Cheap pixel statistic: a colour histogram of the central region (where the building is),
    # after dividing out the view's colour cast and brightness (grey-world normalisation).
    a = np.asarray(Image.open(path).convert("RGB"), dtype=float)[16:48, 12:52]
    a = np.clip(a / a.reshape(-1, 3).mean(0) * 128, 0, 255).astype(int) // 64
    codes = a[..., 0] * 16 + a[..., 1] * 4 + a[..., 2]
    h = np.bincount(codes.ravel(), minlength=64).astype(float)
    return h / np.linalg.norm(h)


def test_views_of_a_landmark_are_closer_to_each_other_than_to_other_landmarks(small):
    _, train = read_csv(small.train_csv)
    _, clutter = read_csv(small.train_clutter_csv)
    is_clutter = np.array([r["id"] in {c["id"] for c in clutter} for r in train])
    feats = np.stack([_thumb(small.image_path("train", r["id"])) for r in train])
    labels = np.array([int(r["landmark_id"]) for r in train])
    # Off-topic pictures are less like their landmark's views than the views are to each other.
    views = feats[~is_clutter]
    view_sim = [
        (views[labels[~is_clutter] == k] @ views[labels[~is_clutter] == k].T).mean()
        for k in range(6)
    ]
    clutter_sim = [
        (feats[is_clutter & (labels == k)] @ views[labels[~is_clutter] == k].T).mean()
        for k in range(6)
    ]
    assert np.mean(clutter_sim) < np.mean(view_sim)
    feats, labels = views, labels[~is_clutter]
    sim = feats @ feats.T
    same = labels[:, None] == labels[None, :]
    off_diag = ~np.eye(len(labels), dtype=bool)
    assert sim[same & off_diag].mean() > sim[~same].mean() + 0.04
    np.fill_diagonal(sim, -np.inf)
    nn_acc = (labels[sim.argmax(1)] == labels).mean()
    assert nn_acc > 2.0 / 6  # chance is 1/6


def test_landmark_and_non_landmark_images_differ(small):
    _, sol = read_csv(small.solution_csv)
    lm = [_thumb(small.image_path("test", r["id"])) for r in sol if r["landmarks"]]
    non = [_thumb(small.image_path("test", r["id"])) for r in sol if not r["landmarks"]]
    # Non-landmark pictures are of several kinds, so they are less alike than landmark views.
    lm_sim = np.mean(np.stack(lm) @ np.stack(lm).T)
    non_sim = np.mean(np.stack(non) @ np.stack(non).T)
    assert non_sim < lm_sim


def test_regenerating_the_same_dataset_is_a_no_op(small):
    before = {p: p.stat().st_mtime_ns for p in small.root.rglob("*")}
    again = synthetic_landmarks(small.root, seed=3, **SMALL)
    assert again == small
    assert {p: p.stat().st_mtime_ns for p in small.root.rglob("*")} == before


def test_refuses_to_overwrite(small, tmp_path):
    with pytest.raises(FileExistsError, match="other arguments"):
        synthetic_landmarks(small.root, seed=4, **SMALL)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        synthetic_landmarks(foreign, **SMALL)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_empty_existing_folder_is_filled(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    ds = synthetic_landmarks(
        root,
        num_landmarks=1,
        train_images_per_landmark=1,
        train_clutter_per_landmark=0,
        index_images_per_landmark=0,
        num_index_non_landmark=0,
        num_test_landmark_queries=0,
        num_test_non_landmark=1,
        image_size=32,
    )
    assert ds.num_train == 1 and ds.num_test == 1 and ds.num_test_landmark == 0
    assert (root / "train.csv").is_file()


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic._save_jpeg

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_save_jpeg", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic_landmarks(tmp_path / "data", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_landmarks": 0}, ValueError, "num_landmarks"),
        ({"image_size": 16}, ValueError, "image_size"),
        ({"num_test_non_landmark": -1}, ValueError, "num_test_non_landmark"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"family_size": True}, TypeError, "family_size"),
        ({"train_clutter_per_landmark": 6}, ValueError, "train_clutter_per_landmark"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        synthetic_landmarks(tmp_path / "x", **{**SMALL, **kwargs})
    assert not (tmp_path / "x").exists()


def test_no_progress_bar_unless_asked(tmp_path, capsys):
    synthetic_landmarks(
        tmp_path / "quiet",
        num_landmarks=1,
        train_images_per_landmark=2,
        index_images_per_landmark=0,
        num_index_non_landmark=0,
        num_test_landmark_queries=0,
        num_test_non_landmark=1,
        image_size=32,
    )
    assert "synthetic images" not in capsys.readouterr().err


def test_progress_bar_and_speed(tmp_path, capsys):
    start = time.perf_counter()
    ds = synthetic_landmarks(tmp_path / "p", progress=True, **SMALL)
    elapsed = time.perf_counter() - start
    assert "synthetic images" in capsys.readouterr().err
    assert ds.num_train + ds.num_index + ds.num_test == 36 + 9 + 22
    assert elapsed < 10  # ~60 small images: well under a second on 2 cores


# Photo-like framing (aspect_ratios)

RATIOS = (4 / 3, 3 / 4, 16 / 9)


@pytest.fixture(scope="module")
def framed(tmp_path_factory) -> SyntheticLandmarks:
    return synthetic_landmarks(
        tmp_path_factory.mktemp("framed") / "data", seed=3, aspect_ratios=RATIOS, **SMALL
    )


def _image_files(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in all_files(root).items() if k.endswith(".jpg")}


def test_default_pixels_are_pinned(small):
    # Recorded when the framing option was added: the default (square) output must not move.
    # Mean intensity of a few images, and 8x8-pixel block means (grey) of one view, which also
    # catch a changed resampling filter. Tolerance: JPEG decoders differ by a grey level here and
    # there, never by half a level over a block.
    expected = {
        ("train", "1b06621a7ae89d9e"): 123.03,
        ("train", "1bd2e801de2f3cd0"): 190.4,
        ("train", "1ce9caf19e5a4d7b"): 91.58,
        ("test", "0c743dc0ff106353"): 99.91,
        ("test", "220a1f0968e8f102"): 116.7,
        ("test", "24704f89f59c1361"): 150.03,
    }
    for (split, image_id), mean in expected.items():
        img = Image.open(small.image_path(split, image_id))
        assert img.size == (64, 64)
        assert np.asarray(img, dtype=float).mean() == pytest.approx(mean, abs=0.5)
    blocks = [
        [125.6, 140.8, 155.0, 125.6, 125.6, 126.5, 125.6, 126.5],
        [131.8, 131.6, 131.6, 131.6, 131.6, 131.6, 111.5, 126.5],
        [137.6, 137.6, 135.6, 104.7, 102.5, 127.2, 137.7, 189.4],
        [143.6, 128.0, 95.0, 87.5, 90.5, 95.1, 114.5, 146.0],
        [149.6, 125.7, 112.3, 110.0, 104.0, 110.0, 112.2, 149.8],
        [155.6, 129.5, 113.0, 114.5, 110.0, 97.0, 118.2, 155.0],
        [140.8, 125.0, 113.0, 113.7, 109.2, 97.3, 115.3, 140.0],
        [94.0, 99.5, 113.8, 113.0, 82.3, 97.2, 116.7, 110.8],
    ]
    grey = np.asarray(Image.open(small.image_path("train", "1b06621a7ae89d9e")).convert("L"))
    got = grey.astype(float).reshape(8, 8, 8, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(got, blocks, atol=0.5)
    params = json_params(small.root)
    assert "aspect_ratios" not in params and small.aspect_ratios is None


def json_params(root: Path) -> dict:
    import json

    return json.loads((root / "synthetic_manifest.json").read_text())["params"]


def test_aspect_ratios_give_non_square_images_of_the_drawn_ratios(framed):
    sizes = {p.name: Image.open(p).size for p in framed.root.rglob("*.jpg")}
    assert set(sizes.values()) == {(64, 48), (48, 64), (64, 36)}  # long side 64, every ratio used
    assert framed.aspect_ratios == RATIOS
    assert json_params(framed.root)["aspect_ratios"] == list(RATIOS)
    # Regenerating with the same ratios is a no-op; other ratios are other arguments.
    assert synthetic_landmarks(framed.root, seed=3, aspect_ratios=RATIOS, **SMALL) == framed
    with pytest.raises(FileExistsError, match="other arguments"):
        synthetic_landmarks(framed.root, seed=3, aspect_ratios=(4 / 3,), **SMALL)


def test_framed_dataset_is_reproducible_and_keeps_the_square_scenes(framed, small, tmp_path):
    again = synthetic_landmarks(tmp_path / "again", seed=3, aspect_ratios=RATIOS, **SMALL)
    assert all_files(again.root) == all_files(framed.root)
    # Same ids, splits and labels as the square dataset: only the framing differs.
    for name in ("train.csv", "index.csv", "test.csv", "recognition_solution_v2.1.csv"):
        assert (framed.root / name).read_bytes() == (small.root / name).read_bytes()
    # The ratio comes from a stream of its own: a ratio of 1 frames the whole canvas, and the
    # pictures are exactly the square dataset's.
    square = synthetic_landmarks(tmp_path / "one", seed=3, aspect_ratios=(1,), **SMALL)
    assert _image_files(square.root) == _image_files(small.root)


def test_framing_follows_the_building():
    from retrieval_kit.data._synthetic_views import Frame

    # Landscape 16:9 on a 320 canvas: full width, 180 high, centred on the subject, clamped.
    assert Frame(16 / 9).output_size(160) == (160, 90)
    assert Frame(16 / 9).box(320, (160, 100)) == (0, 10, 320, 190)
    assert Frame(16 / 9, (0.0, 1.0)).box(320, (160, 100)) == (0, 45, 320, 225)  # + slack / 4
    assert Frame(16 / 9).box(320, (160, 310)) == (0, 140, 320, 320)  # kept inside
    assert Frame(3 / 4).box(320) == (40, 0, 280, 320)  # portrait, 240 wide, no subject: middle
    assert Frame(1.0).box(320, (10, 10)) == (0, 0, 320, 320)


@pytest.mark.parametrize(
    ("ratios", "error", "match"),
    [
        ([], ValueError, "non-empty"),
        ("4:3", ValueError, "non-empty"),
        ([4 / 3, 5.0], ValueError, r"5\.0"),
        ([float("nan")], ValueError, "nan"),
        ([True], TypeError, "True"),
    ],
)
def test_bad_aspect_ratios(tmp_path, ratios, error, match):
    with pytest.raises(error, match=match):
        synthetic_landmarks(tmp_path / "x", aspect_ratios=ratios, **SMALL)
    assert not (tmp_path / "x").exists()
