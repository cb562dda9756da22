"""GLDv2 CSV readers and the folder layout: right answers; errors name file, line, value."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from retrieval_kit.data import (
    gldv2_image_path,
    gldv2_image_paths,
    load_image,
    read_folder_dataset,
    read_ids_csv,
    read_retrieval_solution_csv,
    read_solution_csv,
    read_train_clean_csv,
    read_train_csv,
    solution_dict,
    validate_image_id,
)

A, B, C = "0a1b2c3d4e5f6789", "fedcba9876543210", "1111222233334444"


def _csv(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_read_train_csv(tmp_path):
    p = _csv(tmp_path, "train.csv", f"id,url,landmark_id\n{A},http://x/1,7\n{B},,3\n")
    assert read_train_csv(p) == {"id": [A, B], "url": ["http://x/1", ""], "landmark_id": [7, 3]}
    p2 = _csv(tmp_path, "t2.csv", f"landmark_id,id\n5,{C}\n")  # column order and no url
    assert read_train_csv(p2) == {"id": [C], "url": [""], "landmark_id": [5]}


@pytest.mark.parametrize(
    "text, match",
    [
        (f"id,url\n{A},u\n", r"missing column\(s\) \['landmark_id'\]"),
        (
            f"id,landmark_id\n{A},1\n{B},2\n{A},3\n",
            f"line 4: duplicate id '{A}' \\(first on line 2\\)",
        ),
        (
            f"id,landmark_id\n{A},1\n{B},seven\n",
            "line 3: landmark_id must be an integer, got 'seven'",
        ),
        (f"id,landmark_id\n{A},1.5\n", "line 2: landmark_id must be an integer, got '1.5'"),
        ("id,landmark_id\n../../etc/passwd,1\n", r"line 2: unsafe or malformed image id '\.\./"),
        (f"id,landmark_id\n{A},1,extra\n", "line 2: more fields than the header"),
        (f"id,landmark_id\n{A}\n", "line 2: fewer fields than the header"),
    ],
)
def test_read_train_csv_errors(tmp_path, text, match):
    p = _csv(tmp_path, "train.csv", text)
    with pytest.raises(ValueError, match=match) as info:
        read_train_csv(p)
    assert str(p) in str(info.value)


def test_missing_csv_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="none.csv"):
        read_ids_csv(tmp_path / "none.csv")


def test_read_train_clean_csv(tmp_path):
    p = _csv(tmp_path, "train_clean.csv", f"landmark_id,images\n7,{A} {B}\n3,{C}\n")
    assert read_train_clean_csv(p) == {7: [A, B], 3: [C]}


@pytest.mark.parametrize(
    "text, match",
    [
        ("landmark_id,images\n7,\n", "line 2: landmark_id 7 has an empty image list"),
        (
            f"landmark_id,images\n7,{A}\n7,{B}\n",
            "line 3: duplicate landmark_id 7 \\(first on line 2",
        ),
        (f"landmark_id,images\n7,{A}\n8,{B} {A}\n", f"line 3: duplicate id '{A}'"),
        (f"landmark_id,images\nx,{A}\n", "line 2: landmark_id must be an integer, got 'x'"),
        (f"images\n{A}\n", "missing column"),
    ],
)
def test_read_train_clean_errors(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_train_clean_csv(_csv(tmp_path, "train_clean.csv", text))


def test_read_ids_csv(tmp_path):
    assert read_ids_csv(_csv(tmp_path, "index.csv", f"id\n{A}\n{B}\n")) == [A, B]
    with pytest.raises(ValueError, match=r"index.csv: line 3: unsafe .*'a/b'"):
        read_ids_csv(_csv(tmp_path, "index.csv", f"id\n{A}\na/b\n"))


def test_read_solution_csv(tmp_path):
    text = f"id,landmarks,Usage\n{A},7 9,Public\n{B},,Private\n{C},3,Private\n"
    p = _csv(tmp_path, "sol.csv", text)
    sol = read_solution_csv(p)
    assert sol == {
        "id": [A, B, C],
        "landmarks": [[7, 9], [], [3]],
        "usage": ["Public", "Private", "Private"],
    }
    assert solution_dict(read_solution_csv(p, usage="Private")) == {B: [], C: [3]}
    assert solution_dict(read_solution_csv(p, usage=["Public", "Private"])) == solution_dict(sol)
    with pytest.raises(ValueError, match=f"line 3: id '{B}' has an empty landmarks list"):
        read_solution_csv(p, allow_empty=False)
    bad = _csv(tmp_path, "bad.csv", f"id,landmarks,Usage\n{A},7 x,Public\n")
    with pytest.raises(ValueError, match="line 2: landmarks must be an integer, got 'x'"):
        read_solution_csv(bad)


@pytest.mark.parametrize(
    "bad", ["..", "../x", "ab/cd", "ab\\cd", "/etc", "a b c", "", "ab", ".abc"]
)
def test_path_traversal_and_malformed_ids_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="image id"):
        gldv2_image_path(tmp_path, bad)
    with pytest.raises(ValueError, match=r"image_ids\[1\]"):
        gldv2_image_paths(tmp_path, [A, bad])


def test_gldv2_image_path(tmp_path):
    assert gldv2_image_path(tmp_path, A) == tmp_path / "0" / "a" / "1" / f"{A}.jpg"
    assert validate_image_id("abc_-9") == "abc_-9"
    with pytest.raises(ValueError, match="must be a string"):
        validate_image_id(123)


def test_read_folder_dataset_sorted(tmp_path):
    for cls, names in {
        "zebra": ["b.jpg", "a.PNG"],
        "arch": ["x.jpg"],
        "bridge": ["sub/y.jpg"],
    }.items():
        for name in names:
            p = tmp_path / cls / name
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (2, 2)).save(p, format="PNG")
    (tmp_path / "arch" / "notes.txt").write_text("ignore me")
    data = read_folder_dataset(tmp_path)
    assert data["classes"] == ["arch", "bridge", "zebra"]
    rel = [Path(p).relative_to(tmp_path).as_posix() for p in data["paths"]]
    assert rel == ["arch/x.jpg", "bridge/sub/y.jpg", "zebra/a.PNG", "zebra/b.jpg"]
    assert data["labels"] == [0, 1, 2, 2]


def test_read_folder_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        read_folder_dataset(tmp_path / "missing")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_class"):
        read_folder_dataset(tmp_path)


def test_read_retrieval_solution_csv(tmp_path):
    p = _csv(tmp_path, "r.csv", f"id,images,Usage\n{A},{B} {C},Public\n{B},,Private\n")
    sol = read_retrieval_solution_csv(p)
    assert solution_dict(sol) == {A: [B, C], B: []}
    assert read_retrieval_solution_csv(p, usage="Private")["id"] == [B]
    bad = _csv(tmp_path, "bad.csv", f"id,images,Usage\n{A},{B} {B},Public\n")
    with pytest.raises(ValueError, match=f"line 2: duplicate id '{B}'"):
        read_retrieval_solution_csv(bad)


def test_reads_synthetic_landmarks(tmp_path):
    synthetic = pytest.importorskip("retrieval_kit.data.synthetic")
    ds = synthetic.synthetic_landmarks(
        tmp_path / "syn",
        num_landmarks=3,
        train_images_per_landmark=2,
        index_images_per_landmark=1,
        num_index_non_landmark=1,
        num_test_landmark_queries=2,
        num_test_non_landmark=2,
        image_size=32,
    )
    train = read_train_csv(ds.train_csv)
    clean = read_train_clean_csv(ds.train_clean_csv)
    assert len(train["id"]) == ds.num_train == sum(len(v) for v in clean.values())
    assert sorted(clean) == sorted(set(train["landmark_id"]))
    assert len(read_ids_csv(ds.index_csv)) == ds.num_index
    sol = solution_dict(read_solution_csv(ds.solution_csv))
    assert read_ids_csv(ds.test_csv) == list(sol)
    assert sum(1 for v in sol.values() if not v) == ds.num_test_non_landmark
    for image_id in train["id"]:
        path = gldv2_image_path(ds.root / "train", image_id)
        assert path == ds.image_path("train", image_id)
        assert load_image(path).size == (32, 32)
