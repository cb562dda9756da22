"""Issue 6, bad input: prediction grids read images with the same rules as the rest of the library
(EXIF rotation respected, decompression bombs refused naming the file)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import retrieval_kit as rk


def test_grid_thumbnails_respect_exif_rotation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    src = Image.fromarray(arr)
    exif = src.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    src.save(tmp_path / "rot.png", exif=exif)
    rk.data.load_image(tmp_path / "rot.png").save(tmp_path / "upright.png")
    a = rk.viz.render_prediction_grid([str(tmp_path / "rot.png")], [[]], thumb_size=40)
    b = rk.viz.render_prediction_grid([str(tmp_path / "upright.png")], [[]], thumb_size=40)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_grid_refuses_a_bomb_naming_the_file(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    with pytest.raises((OSError, ValueError), match="bomb.png"):
        rk.viz.render_prediction_grid([str(path)], [[]], thumb_size=40)
