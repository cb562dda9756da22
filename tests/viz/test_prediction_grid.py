"""Prediction grids: file, size, frame colours; row selection helpers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from retrieval_kit.data import ImageLoadError
from retrieval_kit.viz import (
    CORRECT_COLOR,
    INCORRECT_COLOR,
    QUERY_COLOR,
    UNKNOWN_COLOR,
    is_correct,
    render_prediction_grid,
    save_prediction_grid,
    select_predictions,
)


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, colour in enumerate(["red", "blue", "yellow", "black"]):
        path = tmp_path / f"img{i}.jpg"
        Image.new("RGB", (60 + 10 * i, 40), colour).save(path)
        paths.append(path)
    return paths


def expected_size(rows, k, thumb, title):
    # documented layout: margin 8, pad 4, frame max(3, thumb // 32), gap max(4, thumb // 4),
    # two caption lines of max(10, thumb // 9) + 4 px, title max(10, thumb // 9) * 1.4 + 12 px
    frame, font = max(3, thumb // 32), max(10, thumb // 9)
    cell_w = thumb + 2 * frame + 8
    cell_h = cell_w + 2 * (font + 4)
    title_h = round(font * 1.4) + 12 if title else 0
    return 16 + (k + 1) * cell_w + max(4, thumb // 4), 16 + title_h + rows * cell_h


def test_file_is_a_png_of_the_expected_size(tmp_path, images):
    out = save_prediction_grid(
        tmp_path / "sub" / "grid.png",
        queries=images[:2],
        neighbours=[[(images[2], 1, 0.9), (images[3], 2, 0.5)], [(images[0], 3, 0.7)]],
        true_labels=[1, 3],
        title="a title",
        thumb_size=64,
    )
    assert out == tmp_path / "sub" / "grid.png"
    with Image.open(out) as img:
        assert img.format == "PNG"
        assert img.size == expected_size(rows=2, k=2, thumb=64, title=True)
    assert [p.name for p in out.parent.iterdir()] == ["grid.png"]  # no temporary file left


def frame_pixel(img, row, col, thumb, title):
    """A pixel in the middle of the left frame edge of cell (row, col)."""
    frame, font = max(3, thumb // 32), max(10, thumb // 9)
    cell_w = thumb + 2 * frame + 8
    cell_h = cell_w + 2 * (font + 4)
    title_h = round(font * 1.4) + 12 if title else 0
    x = 8 + col * cell_w + (max(4, thumb // 4) if col else 0) + 4 + frame // 2
    y = 8 + title_h + row * cell_h + 4 + frame + thumb // 2
    return img.getpixel((x, y))


def test_frames_are_green_when_correct_red_when_not(images):
    neighbours = [
        [(images[1], 7, 0.9), (images[2], 8, 0.8), (images[3], 9, 0.1)],
        [(images[1], "x", 0.9), (images[2], "y", 0.8)],
    ]
    img = render_prediction_grid(images[:2], neighbours, [[7, 9], "y"], thumb_size=64, title=None)
    assert frame_pixel(img, 0, 0, 64, False) == QUERY_COLOR
    assert frame_pixel(img, 0, 1, 64, False) == CORRECT_COLOR  # 7 in {7, 9}
    assert frame_pixel(img, 0, 2, 64, False) == INCORRECT_COLOR  # 8
    assert frame_pixel(img, 0, 3, 64, False) == CORRECT_COLOR  # 9
    assert frame_pixel(img, 1, 1, 64, False) == INCORRECT_COLOR  # "x" != "y"
    assert frame_pixel(img, 1, 2, 64, False) == CORRECT_COLOR
    assert frame_pixel(img, 1, 3, 64, False) == (255, 255, 255)  # only 2 neighbours: blank
    # the thumbnail itself is inside the frame: the centre of cell (0, 1) is the blue image
    # (margin 8, query cell 64 + 2 * 3 + 8 = 78, gap 16, pad 4, frame 3, half thumbnail 32)
    x = 8 + 78 + 16 + 4 + 3 + 32
    y = 8 + 4 + 3 + 32
    assert np.abs(np.subtract(img.getpixel((x, y)), (0, 0, 255))).max() <= 3  # JPEG rounding


def test_unknown_truth_gives_grey_and_no_landmark_gives_red(images):
    neighbours = [[(images[1], 1, 0.5)]]
    grey = render_prediction_grid(images[:1], neighbours, None, thumb_size=32)
    assert frame_pixel(grey, 0, 1, 32, False) == UNKNOWN_COLOR
    red = render_prediction_grid(images[:1], neighbours, [[]], thumb_size=32)
    assert frame_pixel(red, 0, 1, 32, False) == INCORRECT_COLOR


def test_k_limits_the_columns_and_arrays_work():
    arr = np.zeros((20, 30, 3), dtype=np.uint8)
    img = render_prediction_grid([arr], [[(arr, 1, 0.1)] * 5], [1], k=2, thumb_size=32, title="t")
    assert img.size == expected_size(rows=1, k=2, thumb=32, title=True)


def test_bad_input_errors(tmp_path, images):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        render_prediction_grid([tmp_path / "nope.jpg"], [[]], thumb_size=32)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageLoadError, match="bad.jpg"):
        render_prediction_grid([bad], [[]], thumb_size=32)
    with pytest.raises(ValueError, match="triple"):
        render_prediction_grid(images[:1], [[(images[0], 1)]], thumb_size=32)
    with pytest.raises(ValueError, match="neighbour lists"):
        render_prediction_grid(images[:2], [[]], thumb_size=32)
    with pytest.raises(ValueError, match=r"\.png"):
        save_prediction_grid(tmp_path / "grid.jpg", images[:1], [[]])
    assert not (tmp_path / "grid.jpg").exists()


def test_is_correct_handles_single_multi_and_no_landmark():
    got = is_correct([1, 2, 3, "a", 5], [1, {2, 4}, None, "a", np.array([5, 6])])
    assert got.tolist() == [True, True, False, True, True]
    assert is_correct([1], [[]]).tolist() == [False]


def test_select_predictions_on_hand_made_arrays():
    pred = np.array([1, 2, 3, 4, 5, 6])
    true = np.array([1, 0, 3, 0, 5, 6])  # rows 1 and 3 are wrong
    conf = np.array([0.5, 0.9, 0.7, 0.2, 0.5, 0.1])
    assert select_predictions(pred, conf, true, "most_confident_correct", n=3).tolist() == [2, 0, 4]
    assert select_predictions(pred, conf, true, "least_confident_correct", n=2).tolist() == [5, 0]
    assert select_predictions(pred, conf, true, "most_confident_incorrect", n=5).tolist() == [1, 3]
    assert select_predictions(pred, conf, true, "least_confident_incorrect", n=1).tolist() == [3]
    random = select_predictions(pred, conf, true, "random", n=4, seed=1)
    assert len(set(random.tolist())) == 4 and set(random.tolist()) <= set(range(6))
    assert random.tolist() == select_predictions(pred, conf, true, "random", n=4, seed=1).tolist()
    assert len(select_predictions(pred, conf, true, "random", n=50)) == 6


def test_select_predictions_errors():
    with pytest.raises(ValueError, match="kind"):
        select_predictions([1], [0.5], [1], "best")
    with pytest.raises(ValueError, match=r"confidences\[1\] is NaN"):
        select_predictions([1, 2], [0.5, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="one value per prediction"):
        select_predictions([1, 2], [0.5], [1, 2])
