"""Views for the synthetic dataset: a landmark's layer seen by a camera, in some weather.

:func:`render_view` composes one view: a sky (:func:`sky`), ground and a distant skyline that
change per view, the building layer warped by a perspective camera (yaw, pitch, roll, scale,
shift), foreground occluders (trees, cars, people, poles), then :func:`photometric`: lighting,
colour cast, haze, rain, snow, noise and blur. Every draw comes from the generator passed in. A
:class:`Frame` cuts a non-square picture (landscape or portrait) out of the square canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from retrieval_kit.data._synthetic_buildings import shade


def render_view(
    layer: Image.Image,
    rng: np.random.Generator,
    size: int,
    hard: bool,
    frame: Frame | None = None,
) -> Image.Image:
    """One RGB view of a building ``layer``; ``hard``: stronger changes.

    ``frame=None``: ``size`` x ``size``. Else the picture is cut from the square canvas at the
    frame's aspect ratio around the building (see :class:`Frame`), long side ``size``.
    """
    C = layer.size[0]
    img = sky(rng, C)
    d = ImageDraw.Draw(img)
    # Ground and a distant skyline: they change per view, so they carry no identity.
    horizon = int(C * rng.uniform(0.75, 0.9))
    gcol = tuple(int(c) for c in rng.integers(60, 170, 3))
    d.rectangle([0, horizon, C, C], fill=gcol)
    for _ in range(int(rng.integers(0, 6))):
        x = rng.uniform(0, C)
        w, h = rng.uniform(20, 80), rng.uniform(30, 160)
        d.rectangle(
            [x, horizon - h, x + w, horizon], fill=tuple(int(c) for c in rng.integers(90, 180, 3))
        )

    # Viewpoint: a camera turned sideways (yaw: the far side shrinks), tilted up (pitch: the top
    # narrows), slightly rolled, nearer or farther (scale) and aimed off-centre (shift).
    strength = 0.3 if hard else 0.22
    yaw = rng.uniform(-strength, strength)
    pitch = rng.uniform(0, strength * 0.8)
    roll = np.deg2rad(rng.uniform(-4, 4))
    scale = rng.uniform(0.65, 1.5) if hard else rng.uniform(0.75, 1.35)
    dx, dy = rng.uniform(-0.15, 0.15, 2) * C
    src = np.array([[0, 0], [C, 0], [C, C], [0, C]], dtype=np.float64)
    q = src / C * 2 - 1  # corners in [-1, 1]
    side = np.sign(q[:, 0])
    q[:, 1] *= 1 - yaw * side
    q[:, 0] = np.where(side * yaw > 0, q[:, 0] * (1 - abs(yaw) * 0.6), q[:, 0])
    q[:2, 0] *= 1 - pitch
    rot = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    q = q @ rot.T + rng.uniform(-0.03, 0.03, (4, 2))
    dst = q * scale * C / 2 + C / 2 + [dx, dy + (horizon - 0.82 * C)]
    coeffs = _perspective_coeffs(dst, src)
    warped = layer.transform((C, C), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    img.paste(warped, (0, 0), warped)

    _occluders(img, rng, C, hard)
    if frame is None:
        img = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    else:
        bbox = warped.getchannel("A").getbbox()
        centre = ((bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2) if bbox else None
        img = frame.apply(img, size, centre)
    return photometric(img, rng, hard)


@dataclass(frozen=True)
class Frame:
    """How a non-square picture is cut from a square canvas.

    The long side spans the whole canvas; along the short side the window is centred on the
    subject (``centre``; the canvas centre if none), moved by ``shift`` (-1 .. 1) times a
    quarter of the slack, and kept inside the canvas, as a photographer frames a building.

    Attributes:
        aspect: width / height of the picture (1: the whole canvas, no cut).
        shift: (x, y) offsets in -1 .. 1.
    """

    aspect: float
    shift: tuple[float, float] = (0.0, 0.0)

    def output_size(self, size: int) -> tuple[int, int]:
        """(width, height) of the picture with long side ``size``."""
        if self.aspect >= 1:
            return size, max(1, round(size / self.aspect))
        return max(1, round(size * self.aspect)), size

    def box(self, canvas: int, centre: tuple[float, float] | None = None) -> tuple[int, ...]:
        """The (left, top, right, bottom) window of a ``canvas`` x ``canvas`` square."""
        w, h = self.output_size(canvas)
        cx, cy = centre if centre is not None else (canvas / 2, canvas / 2)
        left = cx - w / 2 + self.shift[0] * (canvas - w) / 4
        top = cy - h / 2 + self.shift[1] * (canvas - h) / 4
        left = int(round(min(max(left, 0), canvas - w)))
        top = int(round(min(max(top, 0), canvas - h)))
        return left, top, left + w, top + h

    def apply(
        self, img: Image.Image, size: int, centre: tuple[float, float] | None = None
    ) -> Image.Image:
        """Cut the window from the square ``img`` and resize it to long side ``size``."""
        box = self.box(img.size[0], centre)
        if box != (0, 0, *img.size):
            img = img.crop(box)
        return img.resize(self.output_size(size), Image.Resampling.BILINEAR, reducing_gap=2.0)


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    # PIL maps each output pixel to an input pixel; solve the 8 homography unknowns from the four
    # corner correspondences (output dst -> input src).
    a = []
    b = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b += [u, v]
    return tuple(np.linalg.solve(np.array(a), np.array(b)).tolist())


def sky(rng: np.random.Generator, C: int) -> Image.Image:
    """A ``C`` x ``C`` sky: day, overcast or dusk gradient, with a few clouds."""
    # An unused draw, kept because it advances the stream: without it every later draw, and so
    # every picture, would change.
    rng.uniform(0, 1, 3)
    mood = rng.uniform()
    if mood < 0.6:  # day
        top = np.array([80, 140, 230]) + rng.uniform(-40, 25, 3)
        bottom = np.array([190, 215, 245]) + rng.uniform(-30, 10, 3)
    elif mood < 0.8:  # overcast
        g = rng.uniform(140, 210)
        top = np.array([g, g, g + 5]) + rng.uniform(-10, 10, 3)
        bottom = top + 25
    else:  # dusk
        top = np.array([60, 60, 130]) + rng.uniform(-30, 30, 3)
        bottom = np.array([240, 150, 90]) + rng.uniform(-30, 15, 3)
    t = np.linspace(0, 1, C)[:, None]
    grad = np.clip(top[None] * (1 - t) + bottom[None] * t, 0, 255)
    arr = np.repeat(grad[:, None, :], C, axis=1).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 5))):  # clouds
        x, y = rng.uniform(0, C), rng.uniform(0, C * 0.4)
        w, h = rng.uniform(40, 160), rng.uniform(15, 40)
        g = int(rng.uniform(220, 255))
        d.ellipse([x, y, x + w, y + h], fill=(g, g, g))
    return img


def _occluders(img: Image.Image, rng: np.random.Generator, C: int, hard: bool) -> None:
    d = ImageDraw.Draw(img)
    n = int(rng.integers(0, 4 if hard else 3))
    for _ in range(n):
        kind = int(rng.integers(0, 4))
        x = rng.uniform(0, C)
        base = C * rng.uniform(0.9, 1.05)
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        if kind == 0:  # tree
            h = rng.uniform(0.25, 0.55) * C
            w = rng.uniform(0.1, 0.25) * C
            d.rectangle([x - 6, base - h * 0.4, x + 6, base], fill=(90, 60, 30))
            g = (int(rng.integers(20, 80)), int(rng.integers(90, 160)), int(rng.integers(20, 70)))
            d.ellipse([x - w / 2, base - h, x + w / 2, base - h * 0.3], fill=g)
        elif kind == 1:  # car
            w, h = rng.uniform(0.15, 0.3) * C, rng.uniform(0.06, 0.1) * C
            d.rounded_rectangle([x, base - h, x + w, base], radius=8, fill=col)
            d.rectangle([x + w * 0.2, base - h * 1.6, x + w * 0.75, base - h], fill=shade(col, 0.7))
        elif kind == 2:  # person
            h = rng.uniform(0.15, 0.3) * C
            d.ellipse([x - h * 0.08, base - h, x + h * 0.08, base - h * 0.82], fill=(220, 180, 150))
            d.rectangle([x - h * 0.12, base - h * 0.82, x + h * 0.12, base - h * 0.3], fill=col)
            d.rectangle([x - h * 0.1, base - h * 0.3, x + h * 0.1, base], fill=shade(col, 0.5))
        else:  # pole / sign
            d.line([x, base, x, base - C * 0.5], fill=(50, 50, 50), width=5)
            d.rectangle([x - 20, base - C * 0.5, x + 20, base - C * 0.42], fill=col)


def photometric(img: Image.Image, rng: np.random.Generator, hard: bool) -> Image.Image:
    """Lighting, colour cast, weather (haze, rain or snow), noise and blur; ``hard``: more often."""
    a = np.asarray(img, dtype=np.float32)
    H, W = a.shape[:2]
    # Lighting: brightness, contrast, colour cast.
    a = (a - 128) * rng.uniform(0.7, 1.2) + 128 * rng.uniform(0.7, 1.25)
    a *= rng.uniform(0.85, 1.15, 3)[None, None]
    # Weather.
    w = rng.uniform()
    if w < (0.25 if hard else 0.15):  # haze / fog, denser towards the top
        fog = rng.uniform(0.2, 0.6)
        t = (1 - np.linspace(0.2, 1, H))[:, None, None] * fog + fog * 0.3
        a = a * (1 - t) + rng.uniform(180, 235) * t
    elif w < (0.4 if hard else 0.25):  # rain streaks
        rain = Image.new("L", (W, H), 0)
        dr = ImageDraw.Draw(rain)
        slant = rng.uniform(-0.3, 0.3)
        for _ in range(int(rng.integers(60, 200))):
            x, y = rng.uniform(0, W), rng.uniform(0, H)
            L = rng.uniform(5, 15)
            dr.line([x, y, x + slant * L, y + L], fill=int(rng.integers(80, 200)))
        a = a * 0.85 + np.asarray(rain, dtype=np.float32)[..., None] * 0.6
    elif w < (0.5 if hard else 0.33):  # snow
        flakes = rng.uniform(0, 1, (H, W)) < rng.uniform(0.005, 0.02)
        a[flakes] = 245
    a = np.clip(a + rng.normal(0, rng.uniform(0, 6), a.shape), 0, 255).astype(np.uint8)
    out = Image.fromarray(a, "RGB")
    if rng.uniform() < (0.5 if hard else 0.35):
        out = out.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.6))))
    return out
