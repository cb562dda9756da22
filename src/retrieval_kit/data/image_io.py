"""Robust image loading: one function that either returns an RGB picture or names the bad file.

Everything goes through PIL. We never set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` (it is global and
would silently turn broken files into half-grey pictures), and the pixel-count limit is checked from
the header before any pixel is decoded, so a decompression bomb costs only a header read.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from retrieval_kit.data.image_load_error import ImageLoadError, ImageNotFoundError

__all__ = ["DEFAULT_MAX_PIXELS", "load_image"]

logger = logging.getLogger(__name__)

#: Default pixel-count limit, PIL's own default (about 89.5 megapixels, a 9459 x 9459 image).
DEFAULT_MAX_PIXELS: int = 89_478_485

_WHITE = (255, 255, 255)
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def load_image(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Load an image file as an 8-bit RGB ``PIL.Image``, or raise an error naming the file.

    Conversions: grayscale, 1-bit, palette, CMYK and YCbCr go through PIL's ``convert("RGB")``
    (CMYK without colour management, ICC profiles are not applied); 16-bit grayscale (``I;16``,
    ``I``) is scaled by 1/257 so 65535 maps to 255; transparency (RGBA, LA, PA, palette with a
    transparent colour) is composited onto white. The EXIF orientation tag is applied
    (``ImageOps.exif_transpose``), so the result is upright as a photo viewer shows it.

    Args:
        path: the image file.
        max_pixels: refuse images with more than this many pixels (width x height) before decoding
            them; ``None`` disables the check. PIL also keeps its own global limit
            (``Image.MAX_IMAGE_PIXELS``, warning above it, error above twice it): to load larger
            images raise both.
        draft_size: for JPEGs, let libjpeg decode at a reduced scale (1/2, 1/4, 1/8) that is still
            at least this ``(width, height)``: several times faster for large photos that will be
            resized down anyway. Pixels differ slightly from a full decode. Other formats ignore it.

    Returns:
        The decoded image, mode ``"RGB"``, fully loaded (the file is closed).

    Raises:
        ImageNotFoundError: the file does not exist (also a ``FileNotFoundError``).
        ImageLoadError: the file is empty, unreadable, not an image, truncated or corrupt, too large
            (decompression bomb), or in a mode that cannot be converted to RGB. ``err.path`` and
            ``err.reason`` say which and why.

    Example:
        >>> img = load_image("photo.jpg")  # doctest: +SKIP
        >>> img.mode  # doctest: +SKIP
        'RGB'
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageNotFoundError(path, "no such file") from None
    except OSError as exc:
        raise ImageLoadError(path, f"cannot stat file ({exc.strerror or exc})") from exc
    if path.is_dir():
        raise ImageLoadError(path, "is a directory, not an image file")
    if size == 0:
        raise ImageLoadError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            image = _open_checked(f, path, max_pixels, draft_size)
    except ImageLoadError:
        raise
    except OSError as exc:  # permission denied, I/O error while reading
        raise ImageLoadError(path, f"cannot read file ({exc.strerror or exc})") from exc
    image = _apply_exif_orientation(image, path)
    return _to_rgb(image, path)


def _open_checked(
    f, path: Path, max_pixels: int | None, draft_size: tuple[int, int] | None
) -> Image.Image:
    try:
        # PIL turns its own limit into a warning; we want an error, never a decoded bomb.
        # (catch_warnings touches process-wide state; DataLoader workers are processes.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(f)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(path, f"decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL raises all three on bad headers
        raise ImageLoadError(path, f"corrupt image header ({exc})") from exc
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise ImageLoadError(
            path,
            f"decompression bomb refused: {width}x{height} = {width * height} pixels "
            f"exceeds max_pixels={max_pixels}",
        )
    if draft_size is not None and image.format == "JPEG":
        image.draft(None, tuple(draft_size))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = f"truncated file ({reason})"
        else:
            reason = f"corrupt image data ({reason})"
        raise ImageLoadError(path, reason) from exc
    return image


def _apply_exif_orientation(image: Image.Image, path: Path) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # a broken EXIF block should not lose an otherwise good picture
        logger.warning("ignoring unreadable EXIF orientation in %s: %s", path, exc)
        return image


def _to_rgb(image: Image.Image, path: Path) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    try:
        if mode in _SIXTEEN_BIT_MODES:
            # PIL's convert() clips 16-bit values at 255 (nearly all white); scale instead.
            array = np.asarray(image, dtype=np.float64) / 257.0
            gray = np.clip(np.rint(array), 0, 255).astype(np.uint8)
            return Image.fromarray(gray, mode="L").convert("RGB")
        if mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
            mode = "RGBA"
        if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, _WHITE + (255,))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageLoadError(path, f"cannot convert mode {mode!r} to RGB ({exc})") from exc
