"""Drawing one image of the shapes benchmark: a coloured shape with a fill pattern, rendered with
random position, scale, rotation, background, stroke width and render style.

Everything is drawn with PIL at twice the output size and downsampled (anti-aliasing), from a
``numpy.random.Generator`` the caller seeds, so the same seed gives the same pixels.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

# Saturated, well separated hues (sRGB); the render jitters each channel a little.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 39, 40),
    "orange": (247, 129, 21),
    "yellow": (240, 208, 22),
    "green": (44, 160, 60),
    "blue": (31, 90, 220),
    "purple": (128, 52, 180),
    "pink": (240, 110, 180),
    "brown": (125, 78, 40),
}
SHAPES = ("circle", "triangle", "square", "pentagon", "hexagon", "star", "cross", "heart")
FILLS = ("solid", "outlined", "striped", "dotted", "checkered", "crosshatched")
BACKGROUNDS = ("plain", "gradient", "noise", "grid")
RENDER_STYLES = ("flat", "shadow", "soft", "grain")


def _regular(n: int, phase: float = 0.0) -> list[tuple[float, float]]:
    return [
        (math.cos(phase + 2 * math.pi * i / n), math.sin(phase + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _star() -> list[tuple[float, float]]:
    out = []
    for i in range(10):
        r = 1.0 if i % 2 == 0 else 0.42
        a = -math.pi / 2 + math.pi * i / 5
        out.append((r * math.cos(a), r * math.sin(a)))
    return out


def _cross() -> list[tuple[float, float]]:
    a, b = 0.32, 1.0
    quarter = [(-a, -b), (a, -b), (a, -a)]  # the top arm; the other three are its rotations
    return [(x * c - y * s, x * s + y * c) for c, s in ((1, 0), (0, 1), (-1, 0), (0, -1))
            for x, y in quarter]


def _heart() -> list[tuple[float, float]]:
    pts = []
    for i in range(72):
        t = 2 * math.pi * i / 72
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 17.0, -(y + 2.5) / 17.0))
    return pts


# Unit outlines (y down), centred so that each spans roughly [-1, 1].
OUTLINES: dict[str, list[tuple[float, float]]] = {
    "circle": _regular(96),
    "triangle": [(x, y + 0.2) for x, y in _regular(3, -math.pi / 2)],
    "square": _regular(4, math.pi / 4),
    "pentagon": _regular(5, -math.pi / 2),
    "hexagon": _regular(6),
    "star": _star(),
    "cross": _cross(),
    "heart": _heart(),
}


def _background(size: int, rng: np.random.Generator, kind: str) -> Image.Image:
    """Light, low-saturation backgrounds: they vary the image without naming a colour."""
    base = rng.integers(225, 256, size=3)
    base = np.clip(base.mean() + (base - base.mean()) * 0.4, 0, 255)
    if kind == "plain":
        arr = np.broadcast_to(base, (size, size, 3)).astype(np.float64)
    elif kind == "gradient":
        other = np.clip(base - rng.integers(15, 45), 0, 255)
        t = np.linspace(0, 1, size)[:, None, None]
        arr = np.broadcast_to(base * (1 - t) + other * t, (size, size, 3)).astype(np.float64)
        if rng.random() < 0.5:
            arr = arr.transpose(1, 0, 2)
    elif kind == "noise":
        arr = base + rng.normal(0, 10, size=(size, size, 1))
    else:  # grid paper
        arr = np.broadcast_to(base, (size, size, 3)).astype(np.float64).copy()
        step = int(rng.integers(size // 12, size // 6))
        off = int(rng.integers(0, step))
        arr[off::step, :, :] -= 35
        arr[:, off::step, :] -= 35
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _pattern(size: int, rng: np.random.Generator, fill: str) -> Image.Image:
    """Mask ("L", 255 = ink) of the fill pattern over the whole canvas, at a random angle and
    period; the shape mask cuts it out."""
    if fill in ("solid", "outlined"):
        return Image.new("L", (size, size), 255 if fill == "solid" else 0)
    big = int(size * 1.5)
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    period = float(rng.uniform(0.075, 0.11) * size)
    off = float(rng.uniform(0, period))
    steps = np.arange(-period + off, big + period, period)
    if fill == "striped":
        for x in steps:
            draw.rectangle([x, 0, x + period * 0.45, big], fill=255)
    elif fill == "crosshatched":
        w = max(1.0, period * 0.16)
        for x in steps:
            draw.rectangle([x, 0, x + w, big], fill=255)
            draw.rectangle([0, x, big, x + w], fill=255)
    elif fill == "dotted":
        r = period * 0.27
        for x in steps:
            for y in steps:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=255)
    else:  # checkered
        cell = period * 0.75
        for i, x in enumerate(np.arange(off - cell, big + cell, cell)):
            for j, y in enumerate(np.arange(off - cell, big + cell, cell)):
                if (i + j) % 2 == 0:
                    draw.rectangle([x, y, x + cell, y + cell], fill=255)
    canvas = canvas.rotate(float(rng.uniform(0, 180)), resample=Image.Resampling.BILINEAR)
    lo = (big - size) // 2
    return canvas.crop((lo, lo, lo + size, lo + size))


def _shape_mask(size: int, rng: np.random.Generator, shape: str) -> Image.Image:
    scale = float(rng.uniform(0.26, 0.40)) * size
    angle = float(rng.uniform(0, 2 * math.pi))
    margin = scale * 1.05
    cx = float(rng.uniform(margin, size - margin))
    cy = float(rng.uniform(margin, size - margin))
    ca, sa = math.cos(angle), math.sin(angle)
    pts = [
        (cx + scale * (x * ca - y * sa), cy + scale * (x * sa + y * ca))
        for x, y in OUTLINES[shape]
    ]
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    return mask


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, ...]:
    c = np.asarray(rgb, dtype=np.float64) * rng.uniform(0.88, 1.08) + rng.integers(-12, 13, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def render(
    colour: str, shape: str, fill: str, rng: np.random.Generator, size: int = 128
) -> tuple[Image.Image, dict[str, str]]:
    """One RGB image of a ``colour`` ``fill`` ``shape`` and the nuisance draws it used
    (background, render style, stroke width in output pixels)."""
    big = 2 * size
    background, style = str(rng.choice(BACKGROUNDS)), str(rng.choice(RENDER_STYLES))
    canvas = _background(big, rng, background)
    mask = _shape_mask(big, rng, shape)
    colour_rgb = _jitter(COLOURS[colour], rng)
    stroke = int(rng.integers(3, 9)) if fill == "outlined" else int(rng.integers(1, 5))
    inner = mask.filter(ImageFilter.MinFilter(2 * stroke + 1))
    ring = ImageChops.subtract(mask, inner)
    ink = ImageChops.multiply(inner, _pattern(big, rng, fill))
    if style == "shadow":
        dx, dy = (int(v) for v in rng.integers(3, 9, 2))
        shadow = mask.transform(mask.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy))
        shadow = shadow.filter(ImageFilter.GaussianBlur(4)).point(lambda v: v * 0.45)
        shadow = ImageChops.subtract(shadow, mask)  # cast outside only: hollow shapes stay hollow
        canvas.paste((60, 60, 60), mask=shadow)
    if fill not in ("solid", "outlined") and rng.random() < 0.5:
        canvas.paste((255, 255, 255), mask=inner)  # pattern on white, else on the background
    canvas.paste(colour_rgb, mask=ink)
    # the outline: the shape's own colour when it is the only ink, else a darker shade of it
    dark = 0.55 if fill != "outlined" else 1.0
    canvas.paste(tuple(int(v * dark) for v in colour_rgb), mask=ring)
    out = canvas.resize((size, size), Image.Resampling.LANCZOS)
    if style == "soft":
        out = out.filter(ImageFilter.GaussianBlur(0.8))
    elif style == "grain":
        arr = np.asarray(out, dtype=np.float64) + rng.normal(0, 9, size=(size, size, 1))
        out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return out, {"background": background, "render_style": style, "stroke": str(stroke // 2)}
