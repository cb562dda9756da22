"""Eval transform resize modes: shapes worked out by hand; square images equal under all modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from retrieval_kit.data import build_eval_transform, long_side_shape

CFG = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "image_size": 32, "resize_size": 40}


def _noise(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    "w, h, size, expected",
    [
        (640, 480, 512, (384, 512)),
        (480, 640, 512, (512, 384)),
        (100, 100, 64, (64, 64)),
        (1000, 10, 50, (1, 50)),
        (33, 18, 16, (9, 16)),
    ],
)
def test_long_side_shape_by_hand(w, h, size, expected):
    assert long_side_shape(w, h, size) == expected


def test_step_quantises_short_side_within_half_a_step():
    for w in range(20, 400, 7):
        for size, step in ((224, 7), (512, 16), (100, 32)):
            h_out, w_out = long_side_shape(w, 300, size, step)
            short, long = min(h_out, w_out), max(h_out, w_out)
            exact = min(w, 300) * size / max(w, 300)
            assert long == size and (size - short) % step == 0 or short == max(1, round(exact))
            assert abs(short - exact) <= step / 2 + 1e-9 or short == max(1, round(exact))
    assert long_side_shape(300, 300, 100, step=32) == (100, 100)  # squares stay squares


def test_modes_shapes_and_square_equality():
    wide = _noise(50, 20)
    assert build_eval_transform(CFG, resize="long_side")(wide).shape == (3, 13, 32)
    assert build_eval_transform(CFG, resize="squash")(wide).shape == (3, 32, 32)
    assert build_eval_transform(CFG, resize="center_crop")(wide).shape == (3, 32, 32)
    for side in (17, 32, 70):
        sq = _noise(side, side, seed=side)
        for size in (16, 32, 45):
            a = build_eval_transform(CFG, size, resize="long_side", step=8)(sq)
            b = build_eval_transform(CFG, size, resize="squash")(sq)
            assert torch.equal(a, b)


def test_center_crop_is_the_middle_of_the_short_side_resize():
    img = _noise(80, 40)
    out = build_eval_transform(CFG, resize="center_crop")(img)
    # short side 40 -> resize_size 40 (no resize), then the central 32x32
    full = (torch.from_numpy(np.asarray(img)).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    assert out.shape == (3, 32, 32)
    torch.testing.assert_close(out, full[:, 4:36, 24:56])


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="resize must be one of"):
        build_eval_transform(CFG, resize="crop")
