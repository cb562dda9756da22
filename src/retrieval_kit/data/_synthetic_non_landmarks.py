"""Non-landmark pictures for the synthetic dataset: rooms, textures, objects, faces, landscapes
and documents, none showing a landmark building.

They are the non-landmark index and test images and the off-topic train images (clutter).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from retrieval_kit.data._synthetic_buildings import canvas_size
from retrieval_kit.data._synthetic_views import Frame, photometric, sky


def render_non_landmark(
    rng: np.random.Generator, size: int, frame: Frame | None = None
) -> Image.Image:
    """A ``size`` x ``size`` picture of one kind, drawn and weathered like a view.

    ``frame``: a non-square picture cut from the middle of the canvas instead (long side ``size``).
    """
    kinds: list[Callable[[np.random.Generator, int], Image.Image]] = [
        _room,
        _texture_image,
        _object_image,
        _face,
        _landscape,
        _document,
    ]
    img = kinds[int(rng.integers(0, len(kinds)))](rng, canvas_size(size))
    if frame is None:
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    else:
        img = frame.apply(img, size)
    return photometric(img, rng, hard=False)


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
    img = sky(rng, C)
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
