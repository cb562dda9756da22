"""Prediction grids: each row a query, then its top-k neighbours, framed green/red, captioned."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from retrieval_kit._checks import positive_int
from retrieval_kit.data.image_io import load_image
from retrieval_kit.io import atomic_write
from retrieval_kit.viz._grid_layout import _GridLayout

__all__ = [
    "CORRECT_COLOR",
    "INCORRECT_COLOR",
    "QUERY_COLOR",
    "UNKNOWN_COLOR",
    "render_prediction_grid",
    "save_prediction_grid",
]

logger = logging.getLogger(__name__)

ImageLike = str | os.PathLike | Image.Image | np.ndarray

CORRECT_COLOR = (0, 160, 0)
INCORRECT_COLOR = (214, 39, 40)
UNKNOWN_COLOR = (150, 150, 150)  # no ground truth given for the grid
QUERY_COLOR = (31, 119, 180)
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


def render_prediction_grid(
    queries: Sequence[ImageLike],
    neighbours: Sequence[Sequence[tuple[ImageLike, Hashable, float]]],
    true_labels: Sequence[Any] | None = None,
    *,
    title: str | None = None,
    k: int | None = None,
    thumb_size: int = 128,
    query_captions: Sequence[str] | None = None,
) -> Image.Image:
    """Draw the grid of :func:`save_prediction_grid` and return it as an RGB PIL image.

    Example:
        >>> from PIL import Image
        >>> red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 40), "blue")
        >>> rows = [[(red, 1, 0.9), (blue, 2, 0.4)]]
        >>> grid = render_prediction_grid([red], rows, [1], thumb_size=64)
        >>> grid.size
        (266, 122)
    """
    if len(queries) == 0:
        raise ValueError("a prediction grid needs at least one query")
    if len(neighbours) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(neighbours)} neighbour lists")
    if true_labels is not None and len(true_labels) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(true_labels)} true labels")
    if query_captions is not None and len(query_captions) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(query_captions)} query captions")
    if not isinstance(thumb_size, int) or thumb_size < 16:
        raise ValueError(f"thumb_size must be an int >= 16, got {thumb_size!r}")
    if k is None:
        k = max(1, max(len(row) for row in neighbours))
    k = positive_int(k, "k")

    layout = _GridLayout(rows=len(queries), k=k, thumb=thumb_size, has_title=bool(title))
    canvas = Image.new("RGB", layout.size, _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(layout.font_size)
    if title:
        draw.text(
            (layout.margin, layout.margin), _fit(draw, title, _font(layout.title_font_size),
            layout.size[0] - 2 * layout.margin), fill=_TEXT, font=_font(layout.title_font_size),
        )  # fmt: skip

    for r, query in enumerate(queries):
        truth = None if true_labels is None else _as_label_set(true_labels[r])
        caption = query_captions[r] if query_captions is not None else "query"
        if truth is None:
            second = ""
        elif truth:
            second = "gt: " + " ".join(map(str, truth))
        else:
            second = "no landmark"
        _draw_cell(canvas, draw, layout, font, r, 0, query, QUERY_COLOR, (caption, second))
        row = neighbours[r]
        for c, entry in enumerate(row[:k], start=1):
            if not isinstance(entry, Sequence) or isinstance(entry, str) or len(entry) != 3:
                raise ValueError(
                    f"neighbours[{r}][{c - 1}] must be an (image, label, score) triple, got "
                    f"{entry!r:.60}"
                )
            image, label, score = entry
            if truth is None:
                color = UNKNOWN_COLOR
            else:
                color = CORRECT_COLOR if label in truth else INCORRECT_COLOR
            _draw_cell(
                canvas, draw, layout, font, r, c, image, color, (str(label), f"{float(score):.3f}")
            )
    return canvas


def save_prediction_grid(
    path: str | os.PathLike,
    queries: Sequence[ImageLike],
    neighbours: Sequence[Sequence[tuple[ImageLike, Hashable, float]]],
    true_labels: Sequence[Any] | None = None,
    *,
    title: str | None = None,
    k: int | None = None,
    thumb_size: int = 128,
    query_captions: Sequence[str] | None = None,
) -> Path:
    """Write a PNG grid: one row per query, the query then its top-k neighbours.

    Each neighbour is captioned with its label and score and framed green when its label is one
    of the query's true labels, red when not (grey when no ``true_labels`` are given). The query
    is framed blue and captioned with ``query_captions[i]`` (default "query") and its true
    label(s). Rows with fewer than ``k`` neighbours leave the rest blank. Pillow only, so no
    optional dependency is needed.

    Args:
        path: destination, must end in ``.png``; written atomically.
        queries: per query an image path, a PIL image or an (H, W, 3) uint8 array.
        neighbours: per query a list of ``(image, label, score)``, nearest first.
        true_labels: per query a label, a collection of labels (multi-label; empty = a
            non-landmark query, so every neighbour is wrong) or None (also no landmark). Leave
            the whole argument None when the truth is unknown.
        title: a line of text above the grid.
        k: neighbours shown per row (default: the longest list).
        thumb_size: thumbnail side in pixels; images keep their aspect ratio inside it.
        query_captions: first caption line of each query (for example its id).

    Returns:
        The written path.

    Example:
        >>> save_prediction_grid("grid.png", ["q.jpg"], [[("db1.jpg", 7, 0.91)]], [7],
        ...                      title="most confident correct")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"prediction grids are written as PNG; give a .png path, got {path}")
    grid = render_prediction_grid(
        queries,
        neighbours,
        true_labels,
        title=title,
        k=k,
        thumb_size=thumb_size,
        query_captions=query_captions,
    )
    with atomic_write(path, "wb") as f:
        grid.save(f, format="PNG")
    logger.info("wrote prediction grid %s (%d x %d)", path, *grid.size)
    return path


def _as_label_set(value: Any) -> list:
    """A query's true labels as a list: a single label, a collection, or None/empty for none."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.ravel().tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Collection):
        return [value]
    return list(value)


def _load(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    # The library's loader: EXIF rotation, alpha on white, bombs refused, errors naming the file.
    return load_image(image)


def _draw_cell(canvas, draw, layout, font, row, col, image, color, captions) -> None:
    x, y = layout.thumb_origin(row, col)
    t, f = layout.thumb, layout.frame
    draw.rectangle((x - f, y - f, x + t + f - 1, y + t + f - 1), fill=color)
    draw.rectangle((x, y, x + t - 1, y + t - 1), fill=_BACKGROUND)
    thumb = ImageOps.contain(_load(image), (t, t))
    canvas.paste(thumb, (x + (t - thumb.width) // 2, y + (t - thumb.height) // 2))
    text_y = y + t + f + 2
    width = layout.cell_width - 2
    for line in captions:
        draw.text((x - f, text_y), _fit(draw, line, font, width), fill=_TEXT, font=font)
        text_y += layout.line_height


def _fit(draw, text: str, font, width: int) -> str:
    """Shorten ``text`` with '..' until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def _font(size: int):
    try:  # Pillow >= 10.1 ships a scalable default font
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()
