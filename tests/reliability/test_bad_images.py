"""Issue 6, bad input: every kind of broken or odd image, end to end through ``extract_embeddings``.

The per-kind decoding rules are tested in ``tests/data/test_image_io.py``; here the guarantees are
checked where a user meets them: a mixed folder is embedded with ``on_error="skip"`` and every bad
file is reported (row, path, reason) and never silently dropped or reordered, odd-but-valid images
embed like their plain-RGB equivalent, and ``on_error="raise"`` names the first bad file.
Also: unreadable files (``PermissionError``; simulated, since the suite runs as root where
``chmod 000`` does not stop reads) and a real decompression-bomb file (a tiny PNG whose header
claims 60000 x 60000 pixels) refused from its header.
"""

from __future__ import annotations

import builtins
import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import retrieval_kit as rk
from retrieval_kit.data import ImageLoadError, load_image
from retrieval_kit.data import image_io as image_io_module

SIZE = 8


class FlatNet(nn.Module):
    """A linear map of the flattened 8x8 image: sensitive to every pixel's position (unlike a
    pooled CNN), so a wrong rotation or a swapped row shows up in the embedding."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.fc = nn.Linear(3 * SIZE * SIZE, 5)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=gen))
            self.fc.bias.zero_()
        self.data_config = {
            "mean": (0.5,) * 3,
            "std": (0.5,) * 3,
            "image_size": SIZE,
            "resize_size": SIZE,
            "fixed_input_size": True,  # flatten + linear: only SIZE x SIZE inputs
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_with_header_size(width: int, height: int) -> bytes:
    """A syntactically valid PNG whose IHDR claims ``width x height`` but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def folder(tmp_path):
    """(paths, kinds): good, odd-but-valid and bad files interleaved; kinds says which is which."""
    files: list[tuple[str, str, bytes | None]] = []

    def add(name, kind, image=None, data=None, **save):
        path = tmp_path / name
        if image is not None:
            image.save(path, **save)
        elif data is not None:
            path.write_bytes(data)
        files.append((str(path), kind, None))

    rgb = Image.fromarray(_pattern(12, 10, 0))
    add("good0.png", "good", rgb)
    add("zero.jpg", "bad:empty file", data=b"")
    add("gray.png", "odd", rgb.convert("L"))
    add("text.jpg", "bad:not an image", data=b"id,landmark_id\n")
    add("cmyk.tif", "odd", rgb.convert("CMYK"))
    buf = io.BytesIO()
    Image.fromarray(_pattern(40, 40, 1)).save(buf, format="JPEG")
    add("half.jpg", "bad:truncated", data=buf.getvalue()[: len(buf.getvalue()) // 2])
    g16 = Image.fromarray(np.arange(120, dtype=np.uint16).reshape(12, 10) * 500)
    add("gray16.png", "odd", g16)
    add("missing.jpg", "bad:no such file")
    add("palette.png", "odd", rgb.convert("P"))
    (tmp_path / "adir.jpg").mkdir()
    files.append((str(tmp_path / "adir.jpg"), "bad:directory", None))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    add("alpha.png", "odd", rgba)
    add("bomb.png", "bad:decompression bomb", data=_png_with_header_size(60_000, 60_000))
    add("locked.png", "bad:Permission denied", rgb)
    rotated = rgb.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says turn back
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    add("exif_rotated.png", "odd", rotated, exif=exif)
    add("good1.png", "good", Image.fromarray(_pattern(9, 15, 2)))
    return [f[0] for f in files], [f[1] for f in files], rgb


@pytest.fixture
def deny_locked(monkeypatch):
    """Make ``locked.png`` raise PermissionError on open, as chmod 000 would for a non-root user."""
    real_open = builtins.open

    def guarded_open(file, *args, **kwargs):
        if os.fspath(file).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    # load_image looks ``open`` up in its module globals first, then in builtins.
    monkeypatch.setattr(image_io_module, "open", guarded_open, raising=False)


def test_skip_reports_every_bad_file_in_place_and_keeps_order(folder, deny_locked):
    paths, kinds, _ = folder
    torch.set_num_threads(1)
    model = FlatNet()
    emb, failed = rk.embed.extract_embeddings(model, paths, batch_size=4, on_error="skip")
    assert emb.shape == (len(paths), 5)
    bad_rows = [i for i, k in enumerate(kinds) if k.startswith("bad:")]
    assert [row for row, _, _ in failed] == bad_rows  # every bad file, in row order, none dropped
    for row, path, reason in failed:
        assert path == paths[row]
        assert kinds[row].removeprefix("bad:") in reason, (path, reason)
        assert not emb[row].any()  # skipped rows are zero, never a neighbour's embedding
    # Each good or odd row is exactly what that file gives alone: nothing shifted or reordered.
    for row, kind in enumerate(kinds):
        if not kind.startswith("bad:"):
            alone, none = rk.embed.extract_embeddings(model, [paths[row]])
            assert none == []
            np.testing.assert_allclose(emb[row], alone[0], rtol=1e-5, atol=1e-6)
            assert np.abs(emb[row]).sum() > 0


def test_raise_names_the_first_bad_file(folder, deny_locked):
    paths, kinds, _ = folder
    first_bad = next(i for i, k in enumerate(kinds) if k.startswith("bad:"))
    with pytest.raises(ImageLoadError) as info:
        rk.embed.extract_embeddings(FlatNet(), paths, batch_size=4)
    assert info.value.path == paths[first_bad]
    assert paths[first_bad] in str(info.value)


def test_exif_rotation_is_respected_end_to_end(folder):
    paths, _, upright = folder
    model = FlatNet()
    rotated_path = next(p for p in paths if p.endswith("exif_rotated.png"))
    upright_path = os.path.join(os.path.dirname(rotated_path), "upright.png")
    upright.save(upright_path)
    emb, failed = rk.embed.extract_embeddings(model, [rotated_path, upright_path])
    assert failed == []
    np.testing.assert_allclose(emb[0], emb[1], rtol=1e-6, atol=1e-6)
    # Without the EXIF tag the same pixels embed differently (so the check above can fail).
    sideways = os.path.join(os.path.dirname(rotated_path), "sideways.png")
    upright.transpose(Image.Transpose.ROTATE_90).save(sideways)
    other, _ = rk.embed.extract_embeddings(model, [sideways])
    assert not np.allclose(other[0], emb[1], atol=1e-3)


def test_unreadable_file_names_file_and_cause(tmp_path, deny_locked):
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.path == str(path) and "Permission denied" in info.value.reason
    assert not isinstance(info.value, FileNotFoundError)  # unreadable is not "missing"


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files despite chmod 000"
)
def test_chmod_000_file_is_reported(tmp_path):
    path = tmp_path / "locked.png"
    Image.new("RGB", (4, 4)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(ImageLoadError, match="locked.png"):
            load_image(path)
    finally:
        path.chmod(0o644)


def test_real_bomb_file_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_with_header_size(60_000, 60_000))  # 3.6e9 pixels, 10.8 GB as RGB
    assert path.stat().st_size < 200
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="decompression bomb") as info:
        load_image(path)
    assert time.perf_counter() - start < 5.0  # a header read, not a 10.8 GB decode
    assert info.value.path == str(path)
    # The same header under the limit is decoded (and found to be short of data): the refusal
    # above came from the size, not from the broken data.
    small = tmp_path / "small.png"
    small.write_bytes(_png_with_header_size(300, 300))
    with pytest.raises(ImageLoadError) as info:
        load_image(small)
    assert "decompression bomb" not in info.value.reason
