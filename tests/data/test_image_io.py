"""load_image: every kind of bad or odd image gives RGB or an error naming the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile

from retrieval_kit.data import ImageLoadError, ImageNotFoundError, load_image


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def _jpeg_bytes(size=(64, 48)) -> bytes:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_rgb_jpeg_loads(tmp_path):
    p = tmp_path / "ok.jpg"
    p.write_bytes(_jpeg_bytes())
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (64, 48)


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"this is not an image at all\n", "not an image"),
        ("half.jpg", None, "truncated"),
    ],
)
def test_bad_bytes_raise_naming_file(tmp_path, name, content, reason):
    p = tmp_path / name
    p.write_bytes(_jpeg_bytes()[: len(_jpeg_bytes()) // 2] if content is None else content)
    with pytest.raises(ImageLoadError) as info:
        load_image(p)
    assert str(p) in str(info.value)
    assert info.value.path == str(p)
    assert reason in info.value.reason
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_data_raises(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    start = data.index(b"IDAT") + 4
    data[start : start + 20] = b"\x00" * 20  # clobber the compressed stream
    p = tmp_path / "corrupt.png"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageLoadError, match="corrupt.png"):
        load_image(p)


def test_missing_file_is_file_not_found(tmp_path):
    p = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg") as info:
        load_image(p)
    assert isinstance(info.value, ImageNotFoundError)


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(ImageLoadError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    "mode, color, expected",
    [
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("RGB", (1, 2, 3), (1, 2, 3)),
    ],
)
def test_modes_convert_to_rgb(tmp_path, mode, color, expected):
    fmt = "TIFF" if mode == "CMYK" else "PNG"
    p = _save(Image.new(mode, (8, 6), color), tmp_path / f"m.{fmt.lower()}", format=fmt)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (8, 6)
    assert img.getpixel((3, 3)) == expected


def test_cmyk_jpeg(tmp_path):
    p = _save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg", quality=95)
    r, g, b = load_image(p).getpixel((8, 8))
    assert r > 240 and g < 15 and b < 15


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    src = Image.fromarray(arr)
    assert src.mode.startswith("I;16")
    p = _save(src, tmp_path / "g16.png")
    img = load_image(p)
    assert [img.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128, 128, 128), (255,) * 3]


def test_alpha_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 128))
    img = load_image(_save(rgba, tmp_path / "a.png"))
    assert img.getpixel((2, 2)) == (255, 255, 255)
    assert img.getpixel((0, 0)) == (255, 0, 0)
    r, g, b = img.getpixel((1, 0))
    assert (r, g, b) == (127, 127, 255)  # 50% blue over white
    la = Image.new("LA", (2, 2), (0, 0))
    assert load_image(_save(la, tmp_path / "la.png")).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 200, 10, 20] + [0] * 762)
    assert load_image(_save(pal, tmp_path / "p.png")).getpixel((0, 0)) == (200, 10, 20)
    pal.info["transparency"] = 1
    img = load_image(_save(pal, tmp_path / "pt.png", transparency=1))
    assert img.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("suffix", ["jpg", "png"])
def test_exif_orientation_is_applied(tmp_path, suffix):
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 = "rotate 90 CW to
    # display", so the displayed image is 20 wide x 40 high with red on top.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    src = Image.fromarray(arr)
    exif = src.getexif()
    exif[0x0112] = 6
    p = _save(src, tmp_path / f"rot.{suffix}", exif=exif)
    img = load_image(p)
    assert img.size == (20, 40)
    top, bottom = np.asarray(img)[5, 10].astype(int), np.asarray(img)[35, 10].astype(int)
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_bomb_refused_before_decoding(tmp_path, monkeypatch):
    p = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")

    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    with pytest.raises(ImageLoadError, match="decompression bomb") as info:
        load_image(p, max_pixels=5_000)
    assert "bomb.png" in str(info.value) and "10000" in str(info.value)


def test_pil_global_limit_warning_is_an_error(tmp_path, monkeypatch):
    p = _save(Image.new("RGB", (100, 100)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6_000)  # warning zone (between 1x and 2x)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(p, max_pixels=None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # PIL's own error zone (> 2x)
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(p, max_pixels=None)


def test_limit_allows_exact_size(tmp_path):
    p = _save(Image.new("RGB", (100, 100)), tmp_path / "ok.png")
    assert load_image(p, max_pixels=10_000).size == (100, 100)


def test_error_pickles_with_path_and_reason():
    import pickle

    err = pickle.loads(pickle.dumps(ImageNotFoundError("x.jpg", "no such file")))
    assert (
        isinstance(err, FileNotFoundError) and err.path == "x.jpg" and err.reason == "no such file"
    )
    assert str(ImageLoadError("whole message")) == "whole message"


def test_draft_size_decodes_jpeg_smaller(tmp_path):
    p = tmp_path / "big.jpg"
    p.write_bytes(_jpeg_bytes((400, 320)))
    assert load_image(p, draft_size=(90, 70)).size == (100, 80)  # 1/4 scale, both sides >= asked
    assert load_image(p, draft_size=(90, 90)).size == (200, 160)  # 1/4 would make 80 < 90 high
    assert load_image(p, draft_size=(90, 90)).mode == "RGB"
    png = _save(Image.new("RGB", (400, 320)), tmp_path / "big.png")
    assert load_image(png, draft_size=(90, 90)).size == (400, 320)  # not a JPEG: ignored
