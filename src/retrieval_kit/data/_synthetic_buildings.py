"""Landmark buildings for the synthetic dataset: a spec per landmark, drawn once into an RGBA layer.

A spec holds a building's parameters (walls, windows, roof, towers, columns, door, texture, emblem,
fixed surroundings); :func:`draw_building` turns it into a transparent layer that the views of
:mod:`retrieval_kit.data._synthetic_views` warp and composite. Every draw comes from the generators
passed in, so the same streams give the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw


def canvas_size(size: int) -> int:
    """Side of the square canvas pictures of ``size`` pixels are drawn on."""
    # Drawn at >= twice the output size and downsampled, which anti-aliases edges; never below 320
    # px, the scale the drawing constants (line widths, object sizes in pixels) were tuned for.
    return max(320, 2 * size)


def landmark_spec(style: np.random.Generator, own: np.random.Generator) -> dict[str, Any]:
    """Draw one landmark's building parameters.

    Args:
        style: the family's stream, shared by look-alike landmarks (colours, shape, roof, ...).
        own: this landmark's stream (its jitter, towers, door, emblem, surroundings).
    """
    f, r = style, own

    def jitter(value: float, amount: float) -> float:
        return float(value + r.uniform(-amount, amount))

    base = f.uniform(0, 1, 3)
    wall = np.clip(base * 180 + 50 + r.uniform(-25, 25, 3), 20, 235)
    trim = np.clip(255 - wall * f.uniform(0.3, 0.9) + r.uniform(-20, 20, 3), 0, 255)
    spec: dict[str, Any] = {
        "wall": tuple(int(c) for c in wall),
        "trim": tuple(int(c) for c in trim),
        "window": tuple(
            int(c) for c in np.clip(f.uniform(0, 120, 3) + r.uniform(-20, 20, 3), 0, 255)
        ),
        "roof_color": tuple(
            int(c) for c in np.clip(f.uniform(30, 200, 3) + r.uniform(-30, 30, 3), 0, 255)
        ),
        "width": float(np.clip(jitter(f.uniform(0.35, 0.8), 0.08), 0.25, 0.85)),
        "height": float(np.clip(jitter(f.uniform(0.25, 0.55), 0.07), 0.2, 0.6)),
        "roof": str(f.choice(["flat", "gable", "dome", "stepped", "spires"]))
        if r.uniform() < 0.8
        else str(r.choice(["flat", "gable", "dome", "stepped", "spires"])),
        "floors": int(np.clip(f.integers(2, 7) + r.integers(-1, 2), 1, 8)),
        "cols": int(np.clip(f.integers(3, 10) + r.integers(-2, 3), 2, 12)),
        "window_shape": str(f.choice(["rect", "arch", "round"])),
        "towers": int(r.integers(0, 3)),
        "tower_top": str(r.choice(["spire", "dome", "flat", "clock"])),
        "tower_width": float(r.uniform(0.08, 0.16)),
        "tower_height": float(r.uniform(0.15, 0.35)),
        "columns": int(f.integers(0, 2) * r.integers(4, 9)),
        "door": str(r.choice(["arch", "rect", "triple"])),
        "bands": int(r.integers(0, 4)),
        "texture": str(f.choice(["plain", "brick", "stone", "vertical"])),
        "texture_seed": int(r.integers(0, 2**31)),
        "side_objects": int(r.integers(0, 3)),
        "side_seed": int(r.integers(0, 2**31)),
        "emblem": int(r.integers(0, 4)),
        "emblem_color": tuple(int(c) for c in r.integers(0, 256, 3)),
    }
    return spec


@dataclass(frozen=True)
class _Block:
    """Where the main block of a building stands on a square canvas (pixels)."""

    canvas: int
    ground: int
    x0: float
    y0: float
    x1: float
    y1: float
    bw: float  # width and height as drawn (x1 - x0 can differ in the last bit)
    bh: float


def draw_building(spec: dict[str, Any], canvas: int) -> Image.Image:
    """Draw the building of ``spec`` into a transparent ``canvas`` x ``canvas`` RGBA layer."""
    W = H = canvas
    layer = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    ground = int(0.82 * H)
    bw, bh = spec["width"] * W, spec["height"] * H
    x0, x1 = (W - bw) / 2, (W + bw) / 2
    y1 = ground
    y0 = y1 - bh
    block = _Block(canvas=W, ground=ground, x0=x0, y0=y0, x1=x1, y1=y1, bw=bw, bh=bh)
    # Back to front: later shapes cover earlier ones.
    _towers(d, spec, block)
    _facade(d, spec, block)
    _doors(d, spec, block)
    _colonnade(d, spec, block)
    _draw_roof(d, spec, block)
    _emblem(d, spec, block)
    _surroundings(d, spec, block)
    return layer


def _towers(d: ImageDraw.ImageDraw, spec: dict[str, Any], b: _Block) -> None:
    # Behind or beside the main block.
    W, trim, win = b.canvas, spec["trim"], spec["window"]
    tw, th = spec["tower_width"] * W, spec["tower_height"] * W
    tower_xs = []
    if spec["towers"] == 1:
        tower_xs = [W / 2 - tw / 2]
    elif spec["towers"] == 2:
        tower_xs = [b.x0 - tw * 0.3, b.x1 - tw * 0.7]
    for tx in tower_xs:
        ty0 = b.y0 - th
        d.rectangle([tx, ty0, tx + tw, b.y1], fill=shade(spec["wall"], 0.85), outline=trim, width=2)
        for k in range(3):
            wy = ty0 + (k + 0.5) * th / 3.5
            d.rectangle([tx + tw * 0.35, wy, tx + tw * 0.65, wy + th / 8], fill=win)
        _draw_top(d, spec["tower_top"], tx, ty0, tw, trim, spec["roof_color"])


def _facade(d: ImageDraw.ImageDraw, spec: dict[str, Any], b: _Block) -> None:
    # The main block with its texture and bands, then the window grid, leaving the ground floor
    # centre for the door.
    x0, y0, x1, y1, bw, bh = b.x0, b.y0, b.x1, b.y1, b.bw, b.bh
    trim = spec["trim"]
    d.rectangle([x0, y0, x1, y1], fill=spec["wall"], outline=trim, width=3)
    _texture(d, spec, x0, y0, x1, y1)
    for k in range(spec["bands"]):
        by = y0 + (k + 1) * bh / (spec["bands"] + 1)
        d.rectangle([x0, by - 2, x1, by + 2], fill=trim)
    floors, cols = spec["floors"], spec["cols"]
    cell_w, cell_h = bw / cols, (bh * 0.85) / floors
    for fl in range(floors):
        for c in range(cols):
            cx0 = x0 + c * cell_w + cell_w * 0.25
            cy0 = y0 + bh * 0.08 + fl * cell_h + cell_h * 0.2
            cx1, cy1 = cx0 + cell_w * 0.5, cy0 + cell_h * 0.6
            if fl == floors - 1 and abs((c + 0.5) - cols / 2) < 1.0:
                continue
            _window(d, spec["window_shape"], cx0, cy0, cx1, cy1, spec["window"], trim)


def _doors(d: ImageDraw.ImageDraw, spec: dict[str, Any], b: _Block) -> None:
    W, y1 = b.canvas, b.y1
    dw, dh = b.bw * 0.12, b.bh * 0.3
    fill = shade(spec["window"], 0.6)
    centres = [W / 2] if spec["door"] != "triple" else [W / 2 - 1.3 * dw, W / 2, W / 2 + 1.3 * dw]
    for cx in centres:
        if spec["door"] == "rect":
            d.rectangle([cx - dw / 2, y1 - dh, cx + dw / 2, y1], fill=fill, outline=spec["trim"])
        else:
            d.rectangle([cx - dw / 2, y1 - dh + dw / 2, cx + dw / 2, y1], fill=fill)
            d.pieslice([cx - dw / 2, y1 - dh, cx + dw / 2, y1 - dh + dw], 180, 360, fill=fill)


def _colonnade(d: ImageDraw.ImageDraw, spec: dict[str, Any], b: _Block) -> None:
    n = spec["columns"]
    if not n:
        return
    x0, y0, bw, bh = b.x0, b.y0, b.bw, b.bh
    for k in range(n):
        cx = x0 + bw * (k + 0.5) / n
        d.rectangle(
            [cx - bw * 0.015, y0 + bh * 0.35, cx + bw * 0.015, b.y1], fill=shade(spec["trim"], 1.1)
        )
    d.rectangle([x0 - 4, y0 + bh * 0.3, b.x1 + 4, y0 + bh * 0.36], fill=spec["trim"])


def _emblem(d: ImageDraw.ImageDraw, spec: dict[str, Any], b: _Block) -> None:
    # A rose window / clock, a flag or a plaque: a small, distinctive detail.
    e, trim, colour = spec["emblem"], spec["trim"], spec["emblem_color"]
    x1, y0, bw, bh = b.x1, b.y0, b.bw, b.bh
    ex, ey, er = b.canvas / 2, y0 + bh * 0.12, bw * 0.05
    if e == 1:
        d.ellipse([ex - er, ey - er, ex + er, ey + er], fill=colour, outline=trim, width=2)
        d.line([ex, ey, ex, ey - er * 0.8], fill=trim, width=2)
        d.line([ex, ey, ex + er * 0.6, ey], fill=trim, width=2)
    elif e == 2:
        d.line([x1 - 10, y0, x1 - 10, y0 - bh * 0.4], fill=(60, 60, 60), width=3)
        d.rectangle([x1 - 10, y0 - bh * 0.4, x1 + bw * 0.12, y0 - bh * 0.3], fill=colour)
    elif e == 3:
        d.rectangle([ex - er * 2, ey - er * 0.6, ex + er * 2, ey + er * 0.6], fill=colour)


def _surroundings(d: ImageDraw.ImageDraw, spec: dict[str, Any], b: _Block) -> None:
    # Fixed surroundings (statue, lamp post, obelisk) belong to the landmark too.
    W, ground = b.canvas, b.ground
    s = np.random.default_rng(spec["side_seed"])
    for _ in range(spec["side_objects"]):
        sx = float(s.uniform(0.05, 0.95)) * W
        if b.x0 < sx < b.x1:
            sx = b.x0 - 20 if sx < W / 2 else b.x1 + 20
        kind = int(s.integers(0, 3))
        col = tuple(int(c) for c in s.integers(40, 220, 3))
        if kind == 0:  # statue on plinth
            d.rectangle([sx - 12, ground - 30, sx + 12, ground], fill=(150, 150, 150))
            d.ellipse([sx - 8, ground - 70, sx + 8, ground - 30], fill=col)
        elif kind == 1:  # lamp post
            d.line([sx, ground, sx, ground - 90], fill=(40, 40, 40), width=4)
            d.ellipse([sx - 8, ground - 100, sx + 8, ground - 84], fill=(250, 240, 180))
        else:  # obelisk
            d.polygon([(sx - 10, ground), (sx + 10, ground), (sx, ground - 130)], fill=col)


def _draw_top(d: ImageDraw.ImageDraw, kind: str, x: float, y: float, w: float, trim, roof) -> None:
    if kind == "spire":
        d.polygon([(x, y), (x + w, y), (x + w / 2, y - 1.6 * w)], fill=roof, outline=trim)
    elif kind == "dome":
        d.pieslice([x, y - w / 2, x + w, y + w / 2], 180, 360, fill=roof, outline=trim)
    elif kind == "clock":
        d.rectangle([x - 3, y - 6, x + w + 3, y], fill=trim)
        d.ellipse(
            [x + w * 0.2, y + w * 0.1, x + w * 0.8, y + w * 0.7], fill=(240, 240, 230), outline=trim
        )
    else:
        d.rectangle([x - 4, y - 8, x + w + 4, y], fill=trim)


def _draw_roof(d: ImageDraw.ImageDraw, spec: dict[str, Any], b: _Block) -> None:
    x0, y0, x1, bw, bh = b.x0, b.y0, b.x1, b.bw, b.bh
    roof, trim = spec["roof_color"], spec["trim"]
    kind = spec["roof"]
    if kind == "gable":
        d.polygon(
            [(x0 - 8, y0), (x1 + 8, y0), ((x0 + x1) / 2, y0 - bh * 0.35)], fill=roof, outline=trim
        )
    elif kind == "dome":
        r = bw * 0.22
        cx = (x0 + x1) / 2
        d.rectangle([cx - r * 0.8, y0 - r * 0.4, cx + r * 0.8, y0], fill=shade(spec["wall"], 0.9))
        d.pieslice([cx - r, y0 - r * 1.4, cx + r, y0 + r * 0.6], 180, 360, fill=roof, outline=trim)
        d.line([cx, y0 - r * 1.4, cx, y0 - r * 1.8], fill=trim, width=3)
    elif kind == "stepped":
        for k in range(3):
            inset = bw * 0.12 * (k + 1)
            d.rectangle(
                [x0 + inset, y0 - bh * 0.09 * (k + 1), x1 - inset, y0 - bh * 0.09 * k], fill=roof
            )
    elif kind == "spires":
        n = 5
        for k in range(n):
            sx = x0 + bw * k / (n - 1)
            d.polygon([(sx - 6, y0), (sx + 6, y0), (sx, y0 - bh * 0.25)], fill=roof)
    else:
        d.rectangle([x0 - 5, y0 - 8, x1 + 5, y0], fill=trim)


def _window(d: ImageDraw.ImageDraw, shape: str, x0, y0, x1, y1, fill, trim) -> None:
    if shape == "round":
        d.ellipse([x0, y0, x1, y1], fill=fill, outline=trim)
    elif shape == "arch":
        r = min(x1 - x0, y1 - y0) / 2
        d.rectangle([x0, y0 + r, x1, y1], fill=fill)
        d.pieslice([x0, y0, x1, y0 + 2 * r], 180, 360, fill=fill)
    else:
        d.rectangle([x0, y0, x1, y1], fill=fill, outline=trim)


def _texture(d: ImageDraw.ImageDraw, spec, x0: float, y0: float, x1: float, y1: float) -> None:
    kind = spec["texture"]
    t = np.random.default_rng(spec["texture_seed"])
    col = shade(spec["wall"], 0.8)
    if kind == "brick":
        step = 8
        for k, y in enumerate(np.arange(y0 + step, y1, step)):
            d.line([x0, y, x1, y], fill=col)
            off = (k % 2) * step
            for x in np.arange(x0 + off, x1, 2 * step):
                d.line([x, y - step, x, y], fill=col)
    elif kind == "stone":
        for _ in range(60):
            x, y = t.uniform(x0, x1), t.uniform(y0, y1)
            d.rectangle([x, y, x + t.uniform(6, 20), y + t.uniform(4, 10)], outline=col)
    elif kind == "vertical":
        for x in np.arange(x0, x1, 10):
            d.line([x, y0, x, y1], fill=col, width=2)


def shade(color, factor: float) -> tuple[int, int, int]:
    """``color`` (RGB or RGBA) scaled by ``factor``, clipped to 0..255, as RGB."""
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color[:3])
