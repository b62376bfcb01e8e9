"""Procedural product photos: silhouettes by category and variant, fill colour, pattern
texture, material shading and a small brand mark (DESIGN section 4).

``render_product`` draws one item on a transparent canvas; ``catalog_photo`` puts it on a
studio background, ``user_photo`` re-photographs it as a user would (other background,
crop, rotation, light, colour cast, noise, blur). Every draw is seeded by the caller's
``numpy.random.Generator`` so the same item always renders the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# (name, RGB) -- the names are what titles say.
COLORS: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("red", (200, 30, 35)),
    ("orange", (240, 130, 20)),
    ("yellow", (240, 210, 40)),
    ("green", (40, 150, 60)),
    ("teal", (20, 150, 150)),
    ("blue", (40, 90, 210)),
    ("navy", (25, 35, 95)),
    ("purple", (120, 50, 160)),
    ("pink", (240, 130, 180)),
    ("brown", (120, 75, 40)),
    ("black", (25, 25, 25)),
    ("white", (240, 240, 235)),
    ("grey", (130, 130, 130)),
    ("beige", (215, 195, 155)),
)
PATTERNS: tuple[str, ...] = (
    "solid", "stripes", "checks", "dots", "zigzag", "gradient", "diagonal", "grid",
)
MATERIALS: tuple[str, ...] = (
    "cotton", "leather", "metal", "plastic", "wool", "wood", "glass", "silk",
)
GLOSSY = {"leather", "metal", "plastic", "glass", "silk"}
MARK_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "bar")

Prim = tuple[str, tuple[float, ...]]  # ("poly", x0, y0, x1, y1, ...) | ("ellipse"|"rect", box)


def _mirror(half: list[tuple[float, float]]) -> tuple[float, ...]:
    """A left-right symmetric polygon from its left half (x <= 0.5), top to bottom."""
    right = [(1.0 - x, y) for x, y in reversed(half)]
    return tuple(c for p in half + right for c in p)


def _silhouette(category: str, variant: int, w: float, h: float) -> list[Prim]:
    """Primitives of one category's silhouette in unit coordinates (0..1), variant 0-3."""
    v = variant
    if category == "tshirt":
        sl = (0.30, 0.45, 0.62, 0.38)[v]
        return [("poly", _mirror([(0.38, 0.1), (0.12, 0.2), (0.02, sl), (0.2, sl + 0.05), (0.25, 0.32), (0.25, 0.92)]))]
    if category == "dress":
        hem = (0.02, 0.12, 0.22, 0.06)[v]
        return [("poly", _mirror([(0.38, 0.05), (0.3, 0.1), (0.32, 0.4), (hem, 0.95)]))]
    if category == "skirt":
        hem = (0.05, 0.15, 0.25, 0.0)[v]
        length = (0.85, 0.7, 0.95, 0.6)[v]
        return [("poly", _mirror([(0.3, 0.15), (hem, 0.15 + length)]))]
    if category == "pants":
        gap = (0.04, 0.08, 0.02, 0.1)[v]
        flare = (0.0, 0.05, -0.03, 0.08)[v]
        return [("poly", (0.22, 0.05, 0.78, 0.05, 0.85 + flare, 0.95, 0.55 + gap, 0.95, 0.5, 0.35,
                          0.45 - gap, 0.95, 0.15 - flare, 0.95))]
    if category == "hoodie":
        body = ("poly", _mirror([(0.36, 0.18), (0.1, 0.25), (0.0, 0.85), (0.15, 0.88), (0.22, 0.4), (0.22, 0.95)]))
        hood = ("ellipse", (0.33, 0.02 + 0.02 * v, 0.67, 0.3))
        return [body, hood]
    if category == "sneaker":
        top = (0.45, 0.4, 0.5, 0.35)[v]
        return [("poly", (0.05, 0.75, 0.08, 0.55, 0.35, top, 0.55, 0.55, 0.92, 0.62, 0.97, 0.75, 0.95, 0.85, 0.05, 0.85))]
    if category == "boot":
        top = (0.1, 0.2, 0.05, 0.3)[v]
        return [("poly", (0.25, top, 0.55, top, 0.58, 0.6, 0.92, 0.7, 0.95, 0.9, 0.22, 0.9))]
    if category == "heel":
        hh = (0.25, 0.2, 0.3, 0.15)[v]
        return [("poly", (0.08, 0.45, 0.4, 0.6, 0.9, 0.72, 0.95, 0.8, 0.3, 0.8, 0.25, 0.8 + hh * 0.3 - 0.05, 0.18, 0.95, 0.12, 0.95, 0.12, 0.65))]
    if category == "handbag":
        handle = (0.12, 0.2, 0.06, 0.25)[v]
        return [("ellipse", (0.28, 0.35 - handle - 0.1, 0.72, 0.35 + 0.1)), ("rect", (0.12, 0.35, 0.88, 0.88))]
    if category == "backpack":
        return [("ellipse", (0.2, 0.08, 0.8, 0.4)), ("rect", (0.2, 0.22, 0.8, 0.92)), ("rect", (0.28, 0.62, 0.72, 0.85 + 0.02 * v))]
    if category == "hat":
        brim = (0.0, 0.1, 0.05, 0.15)[v]
        return [("ellipse", (brim, 0.55, 1.0 - brim, 0.8)), ("ellipse", (0.25, 0.2 + 0.05 * v, 0.75, 0.7))]
    if category == "scarf":
        pts = []
        for i in range(9):
            x = i / 8
            pts.append((x, 0.35 + 0.08 * math.sin(i * (1.0 + 0.3 * v))))
        pts += [(x, y + 0.25) for x, y in reversed(pts)]
        return [("poly", tuple(c for p in pts for c in p))]
    if category == "phone":
        return [("rect", (0.28 - 0.03 * v, 0.05, 0.72 + 0.03 * v, 0.95))]
    if category == "laptop":
        return [("rect", (0.15, 0.1, 0.85, 0.6 - 0.03 * v)), ("poly", (0.15, 0.62, 0.85, 0.62, 0.98, 0.85, 0.02, 0.85))]
    if category == "headphones":
        return [("ellipse", (0.15, 0.1, 0.85, 0.75)), ("ellipse", (0.08, 0.5, 0.32, 0.9)), ("ellipse", (0.68, 0.5, 0.92, 0.9))]
    if category == "speaker":
        return [("rect", (0.25 - 0.04 * v, 0.08, 0.75 + 0.04 * v, 0.92))]
    if category == "mug":
        return [("ellipse", (0.55, 0.3, 0.92, 0.7)), ("rect", (0.15, 0.2, 0.7, 0.88))]
    if category == "lamp":
        return [("poly", _mirror([(0.35, 0.08), (0.15 - 0.03 * v, 0.45)])), ("rect", (0.47, 0.45, 0.53, 0.85)), ("rect", (0.3, 0.85, 0.7, 0.93))]
    if category == "chair":
        return [("rect", (0.25, 0.05, 0.35, 0.55)), ("rect", (0.25, 0.5, 0.8, 0.6)), ("rect", (0.27, 0.6, 0.33, 0.95)), ("rect", (0.72, 0.6, 0.78, 0.95))]
    if category == "vase":
        neck = (0.4, 0.35, 0.42, 0.3)[v]
        return [("poly", _mirror([(neck, 0.05), (neck, 0.25), (0.15, 0.55), (0.3, 0.95)]))]
    if category == "lipstick":
        return [("rect", (0.35, 0.45, 0.65, 0.95)), ("poly", (0.4, 0.45, 0.4, 0.15 + 0.03 * v, 0.6, 0.05, 0.6, 0.45))]
    if category == "perfume":
        return [("rect", (0.42, 0.05, 0.58, 0.25)), ("rect", (0.2 + 0.03 * v, 0.25, 0.8 - 0.03 * v, 0.92))]
    if category == "snackbox":
        return [("poly", (0.15, 0.3, 0.55, 0.2, 0.9, 0.3, 0.9, 0.85, 0.5, 0.95, 0.15, 0.85))]
    if category == "bottle":
        return [("poly", _mirror([(0.43, 0.03), (0.43, 0.25), (0.3 - 0.03 * v, 0.38), (0.3 - 0.03 * v, 0.95)]))]
    raise ValueError(f"unknown category silhouette {category!r}")


@dataclass(frozen=True)
class ProductLook:
    """Everything that decides how one item looks.

    Args:
        category: silhouette name (e.g. "tshirt").
        variant: shape variant 0-3.
        color: index into COLORS; ``rgb_jitter`` shifts the exact shade per item.
        pattern: index into PATTERNS, with per-item ``pattern_scale`` and ``pattern_phase``.
        material: index into MATERIALS (glossy ones get a highlight).
        mark: (shape index, RGB, corner 0-3) of the brand mark.
        width / height: per-item silhouette proportions (around 1.0).
    """

    category: str
    variant: int
    color: int
    rgb_jitter: tuple[int, int, int]
    pattern: int
    pattern_scale: float
    pattern_phase: float
    material: int
    mark: tuple[int, tuple[int, int, int], int]
    width: float = 1.0
    height: float = 1.0


def _texture(look: ProductLook, size: int) -> np.ndarray:
    """(size, size, 3) float fill of the product: base colour with its pattern."""
    base = np.clip(np.array(COLORS[look.color][1], np.float32) + np.array(look.rgb_jitter), 0, 255)
    # The pattern's second colour: a strong contrast that stays readable at 64 px.
    lum = float(base @ np.array([0.299, 0.587, 0.114]))
    accent = base * 0.35 if lum > 110 else np.minimum(base + 140.0, 255.0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    period = look.pattern_scale  # in canvas fractions
    ph = look.pattern_phase
    name = PATTERNS[look.pattern]
    if name == "solid":
        m = np.zeros_like(x)
    elif name == "stripes":
        m = (np.floor((y + ph) / period) % 2).astype(np.float32)
    elif name == "checks":
        m = ((np.floor((x + ph) / period) + np.floor((y + ph) / period)) % 2).astype(np.float32)
    elif name == "dots":
        cx = ((x + ph) % period) / period - 0.5
        cy = ((y + ph) % period) / period - 0.5
        m = ((cx**2 + cy**2) < 0.09).astype(np.float32)
    elif name == "zigzag":
        m = (np.floor((y + 0.5 * np.abs(((x + ph) % period) / period - 0.5)) / (period * 0.8)) % 2).astype(np.float32)
    elif name == "gradient":
        m = np.clip((y - 0.1) / 0.8, 0, 1) * 0.9
    elif name == "diagonal":
        m = (np.floor((x + y + ph) / period) % 2).astype(np.float32)
    else:  # grid
        gx = ((x + ph) % period) / period
        gy = ((y + ph) % period) / period
        m = ((gx < 0.22) | (gy < 0.22)).astype(np.float32)
    tex = base[None, None, :] * (1 - m[..., None]) + accent[None, None, :] * m[..., None]
    if MATERIALS[look.material] in GLOSSY:  # a soft highlight top-left
        hl = np.exp(-(((x - 0.35) ** 2 + (y - 0.3) ** 2) / 0.02)) * 70.0
        tex = tex + hl[..., None]
    if MATERIALS[look.material] in ("wool", "cotton"):  # faint woven grain
        tex = tex * (1.0 - 0.06 * ((np.arange(size)[None, :] + np.arange(size)[:, None]) % 2))[..., None]
    return np.clip(tex, 0, 255)


def render_product(look: ProductLook, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw the product centred on a transparent canvas.

    Returns:
        rgb: (size, size, 3) float32 in 0..255; alpha: (size, size) float32 in 0..1.
    """
    ss = 2  # supersample the mask for clean edges
    big = size * ss
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    margin = 0.1
    bw = (1 - 2 * margin) * look.width
    bh = (1 - 2 * margin) * look.height
    ox = (1 - bw) / 2
    oy = (1 - bh) / 2

    def tx(px: float, py: float) -> tuple[float, float]:
        return ((ox + px * bw) * big, (oy + py * bh) * big)

    for kind, coords in _silhouette(look.category, look.variant, look.width, look.height):
        if kind == "poly":
            pts = [tx(coords[i], coords[i + 1]) for i in range(0, len(coords), 2)]
            draw.polygon(pts, fill=255)
        else:
            (x0, y0), (x1, y1) = tx(coords[0], coords[1]), tx(coords[2], coords[3])
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            if kind == "ellipse":
                draw.ellipse(box, fill=255)
            else:
                draw.rectangle(box, fill=255)
    alpha = np.asarray(mask.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255.0
    rgb = _texture(look, size)
    # dark outline so the silhouette reads on any background
    edge = np.asarray(
        mask.filter(ImageFilter.FIND_EDGES).resize((size, size), Image.Resampling.BILINEAR), np.float32
    ) / 255.0
    rgb = rgb * (1 - 0.5 * np.clip(edge * 2, 0, 1))[..., None]
    _draw_mark(rgb, alpha, look, size)
    return rgb.astype(np.float32), alpha


def _draw_mark(rgb: np.ndarray, alpha: np.ndarray, look: ProductLook, size: int) -> None:
    """Stamp the brand mark (about 1/8 of the canvas) inside the silhouette."""
    shape, color, corner = look.mark
    ys, xs = np.nonzero(alpha > 0.9)
    if ys.size == 0:
        return
    cy, cx = np.median(ys), np.median(xs)
    r = max(2.0, size / 16)
    offs = ((-1, -1), (1, -1), (-1, 1), (0, 0))[corner]
    cy, cx = cy + offs[1] * r * 0.9, cx + offs[0] * r * 0.9
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = (y - cy) / r, (x - cx) / r
    name = MARK_SHAPES[shape]
    if name == "circle":
        m = dx**2 + dy**2 <= 1
    elif name == "square":
        m = (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85)
    elif name == "triangle":
        m = (dy <= 0.8) & (dy >= -0.9 + 1.7 * np.abs(dx))
    elif name == "diamond":
        m = np.abs(dx) + np.abs(dy) <= 1.1
    else:
        m = (np.abs(dx) <= 1.2) & (np.abs(dy) <= 0.45)
    m &= alpha > 0.5
    rgb[m] = np.array(color, np.float32)


def catalog_photo(look: ProductLook, size: int, rng: np.random.Generator) -> np.ndarray:
    """The merchant's photo: the product centred on a light studio background."""
    rgb, alpha = render_product(look, size)
    shade = rng.uniform(235, 252)
    bg = np.full((size, size, 3), shade, np.float32)
    out = bg * (1 - alpha[..., None]) + rgb * alpha[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(0, 3)
    c0 = rng.uniform(20, 235, 3)
    if kind == 0:
        return np.broadcast_to(c0, (size, size, 3)).astype(np.float32).copy()
    c1 = rng.uniform(20, 235, 3)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == 1:  # gradient (a table, a wall)
        t = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) % 1.0
        return c0 * (1 - t[..., None]) + c1 * t[..., None]
    noise = rng.normal(0, 1, (size // 8 + 1, size // 8 + 1))  # blotchy clutter
    up = np.kron(noise, np.ones((8, 8)))[:size, :size]
    t = 1 / (1 + np.exp(-up))
    return (c0 * (1 - t[..., None]) + c1 * t[..., None]).astype(np.float32)


def user_photo(look: ProductLook, size: int, rng: np.random.Generator) -> np.ndarray:
    """A user's photo of the same product: other background, crop, rotation, light, noise."""
    rgb, alpha = render_product(look, size)
    rgba = np.concatenate([rgb, alpha[..., None] * 255.0], axis=2).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(rgba, mode="RGBA")
    angle = float(rng.uniform(-20, 20))
    scale = float(rng.uniform(0.8, 1.1))
    dx, dy = rng.uniform(-0.08, 0.08, 2) * size
    im = im.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False)
    new = max(8, round(size * scale))
    im = im.resize((new, new), Image.Resampling.BILINEAR)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(im, (int((size - new) / 2 + dx), int((size - new) / 2 + dy)))
    arr = np.asarray(canvas, np.float32)
    a = arr[..., 3:4] / 255.0
    out = _background(size, rng) * (1 - a) + arr[..., :3] * a
    # light and camera: brightness, contrast, colour cast, sensor noise, sometimes blur
    out = (out - 128) * rng.uniform(0.8, 1.15) + 128 + rng.uniform(-25, 25)
    out = out * rng.uniform(0.9, 1.1, 3)[None, None, :]
    out = out + rng.normal(0, rng.uniform(2, 8), out.shape)
    img = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        img = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(0.6)), np.uint8)
    return img
