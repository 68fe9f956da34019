"""The embedded procedural "shapes" dataset: no download, every image deterministic by seed.

The core is :func:`render_scene`, which draws any list of :class:`ShapeSpec` (later shapes occlude
earlier ones) anti-aliased on a textured background with Gaussian pixel noise and returns the image plus
one boolean *visible* mask per shape. Classification (one shape per image) is built on it here;
detection scenes (boxes via :func:`mask_to_box`), instance/semantic masks and moving-object sequences
(fixed ``background``, shapes moved between calls) reuse the same function.

Conventions: coordinates are in output pixels with the origin at the top-left corner of the image
(pixel ``(i, j)`` covers ``[j, j+1) x [i, i+1)``), ``size`` is the circumradius in pixels and
``rotation`` is in degrees, counter-clockwise on screen.
"""
from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "hexagon")

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_SIZES = {"train": 5000, "val": 1000, "test": 1000}


@dataclass
class ShapesParams:
    """`data.params` of the classification shapes data set."""

    image_size: Optional[int] = None  # rendered side in px; None: data.input_size
    num_samples: Optional[int] = None  # images per split; None: 5000 train, 1000 val / test
    seed: int = 0  # of every image (splits never share one)

# Radius range as a fraction of the image side; how far (as a fraction of the radius) a shape may
# stick out of the frame; inner/outer radius ratio of the star.
DEFAULT_SIZE_RANGE = (0.15, 0.42)
DEFAULT_OVERHANG = 0.15
STAR_INNER_RATIO = 0.45
# Minimum RGB distance (0..441) between a shape's colour and most of the pixels around its outline.
DEFAULT_MIN_CONTRAST = 90.0
DEFAULT_NOISE_RANGE = (0.0, 12.0)  # Gaussian noise std (0..255 scale) drawn per image when not given
DEFAULT_SUPERSAMPLE = 4

BACKGROUND_KINDS = ("flat", "gradient", "stripes", "checkerboard", "blobs")


@dataclass
class ShapeSpec:
    """One shape: ``kind`` in SHAPE_CLASSES, centre ``(cx, cy)`` and circumradius ``size`` in pixels,
    ``rotation`` in degrees, ``color`` as an RGB triple of 0..255 ints."""

    kind: str
    cx: float
    cy: float
    size: float
    rotation: float
    color: tuple[int, int, int]


def random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A random colour spread over hue, saturation (greys included) and brightness."""
    h, s, v = rng.random(), rng.uniform(0.0, 1.0), rng.uniform(0.1, 1.0)
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (round(r * 255), round(g * 255), round(b * 255))


def sample_shape(
    rng: np.random.Generator,
    image_size: int,
    kind: str | None = None,
    *,
    kinds: Sequence[str] = SHAPE_CLASSES,
    size_range: tuple[float, float] = DEFAULT_SIZE_RANGE,
    overhang: float = DEFAULT_OVERHANG,
    color: tuple[int, int, int] | None = None,
) -> ShapeSpec:
    """Draw a random shape for an ``image_size`` square image.

    ``kind`` None picks one of ``kinds`` uniformly. The radius is uniform in ``size_range`` times the
    image side; the centre is placed so that at most ``overhang`` of the radius leaves the frame.
    The number of random draws is the same whatever ``kind``/``color`` are, so streams stay aligned.
    """
    k = int(rng.integers(len(kinds)))
    kind = kinds[k] if kind is None else kind
    if kind not in SHAPE_CLASSES:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {', '.join(SHAPE_CLASSES)}")
    lo, hi = size_range
    size = float(rng.uniform(lo, hi)) * image_size
    margin = min(size * (1.0 - overhang), image_size / 2)
    cx = float(rng.uniform(margin, image_size - margin))
    cy = float(rng.uniform(margin, image_size - margin))
    rotation = float(rng.uniform(0.0, 360.0))
    c = random_color(rng)
    return ShapeSpec(kind, cx, cy, size, rotation, tuple(color) if color is not None else c)


def shape_polygon(spec: ShapeSpec, scale: float = 1.0) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape in pixel coordinates multiplied by ``scale`` (circles: a 64-gon)."""
    n, inner = {"square": (4, None), "triangle": (3, None), "hexagon": (6, None),
                "star": (5, STAR_INNER_RATIO), "circle": (64, None)}[spec.kind]
    # Start at the top so rotation 0 gives an upright triangle/star and a flat-topped square.
    start = -math.pi / 2 - math.radians(spec.rotation) + (math.pi / 4 if spec.kind == "square" else 0.0)
    cx, cy, r = spec.cx * scale, spec.cy * scale, spec.size * scale
    pts = []
    if inner is None:
        for i in range(n):
            a = start + 2 * math.pi * i / n
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    else:
        for i in range(2 * n):
            a = start + math.pi * i / n
            rr = r if i % 2 == 0 else r * inner
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    return pts


def draw_shape(draw: ImageDraw.ImageDraw, spec: ShapeSpec, scale: float, fill) -> None:
    """Draw ``spec`` filled with ``fill`` on a PIL canvas ``scale`` times the output resolution (PIL fills
    the sub-pixels whose centres lie inside the polygon, so no half-pixel shift is needed)."""
    draw.polygon(shape_polygon(spec, scale), fill=fill)


# ----------------------------------------------------------------------------------------- background
def _soft_square_wave(t: np.ndarray, sharpness: float) -> np.ndarray:
    """A 0/1 square wave of period 1 with edges softened over about 1/sharpness of a period."""
    return np.clip(0.5 + sharpness * np.sin(2 * np.pi * t), 0.0, 1.0)


def _two_colors(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A base colour and a second one part of the way towards another random colour, so textures have
    visible but (usually) moderate contrast and the shapes stand out."""
    c1 = np.array(random_color(rng), np.float32)
    c2 = np.array(random_color(rng), np.float32)
    c2 = c1 + (c2 - c1) * rng.uniform(0.3, 0.9)
    return c1, c2


@functools.lru_cache(maxsize=8)
def _pixel_centres(n: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    ys.flags.writeable = xs.flags.writeable = False
    return ys, xs


def render_background(rng: np.random.Generator, image_size: int, kind: str | None = None) -> np.ndarray:
    """A random textured background, (H, W, 3) uint8: flat, linear gradient, stripes, checkerboard or
    smooth noise blobs (``kind`` None picks one uniformly)."""
    k = int(rng.integers(len(BACKGROUND_KINDS)))
    kind = BACKGROUND_KINDS[k] if kind is None else kind
    n = image_size
    c1, c2 = _two_colors(rng)
    if kind == "flat":
        out = np.broadcast_to(c1, (n, n, 3))
    elif kind == "blobs":
        # smooth random fields (bicubic upsampling of a coarse grid): one mixes the two colours,
        # another tints towards a third colour
        cells = int(rng.integers(2, 6))
        grid = (rng.random((cells + 1, cells + 1, 3)) * 255).astype(np.uint8)
        field = np.asarray(Image.fromarray(grid, "RGB").resize((n, n), Image.BICUBIC), np.float32) / 255.0
        c3 = np.array(random_color(rng), np.float32)
        w, t = field[..., :1], field[..., 1:2] * rng.uniform(0.0, 0.5)
        out = (c1 * (1 - w) + c2 * w) * (1 - t) + c3 * t
    else:
        ys, xs = _pixel_centres(n)
        theta = rng.uniform(0, 2 * np.pi)
        u = xs * math.cos(theta) + ys * math.sin(theta)
        v = -xs * math.sin(theta) + ys * math.cos(theta)
        if kind == "gradient":
            w = (u - u.min()) / max(float(u.max() - u.min()), 1e-6)
        elif kind == "stripes":
            period = n * rng.uniform(0.08, 0.3)
            w = _soft_square_wave(u / period + rng.random(), sharpness=rng.uniform(1.0, 4.0))
        elif kind == "checkerboard":
            cell = n * rng.uniform(0.06, 0.2)
            a = np.sin(np.pi * (u / cell + rng.random()))
            b = np.sin(np.pi * (v / cell + rng.random()))
            w = np.clip(0.5 + 4.0 * a * b, 0.0, 1.0)
        else:
            raise ValueError(f"unknown background kind {kind!r}; expected one of {', '.join(BACKGROUND_KINDS)}")
        out = c1 * (1 - w[..., None]) + c2 * w[..., None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- scene
def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation of a boolean (H, W) mask with a (2r+1)^2 square (separable shifted ORs)."""
    rows = mask.copy()
    for d in range(1, r + 1):
        rows[d:] |= mask[:-d]
        rows[:-d] |= mask[d:]
    out = rows.copy()
    for d in range(1, r + 1):
        out[:, d:] |= rows[:, :-d]
        out[:, :-d] |= rows[:, d:]
    return out


def _contrast_score(color, pixels: np.ndarray) -> float:
    """10th percentile of the RGB distances from ``color`` to ``pixels`` (N, 3): high when the colour
    differs from (nearly) all of them, not only from their mean."""
    d2 = ((pixels - np.asarray(color, np.float32)) ** 2).sum(axis=1)
    k = (d2.size - 1) // 10
    return float(np.sqrt(np.partition(d2, k)[k]))


def ensure_contrast(
    spec: ShapeSpec,
    canvas: np.ndarray,
    coverage: np.ndarray,
    rng: np.random.Generator,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    max_tries: int = 64,
) -> tuple[int, int, int]:
    """A colour for ``spec`` that stands out from ``canvas`` (H, W, 3 float) in a ring around the shape's
    footprint ``coverage`` (H, W in 0..1): ``spec.color`` if it already does, else the first of up to
    ``max_tries`` random colours that does (the best one found if none does)."""
    inside = coverage > 0.5
    ring = _dilate(inside, max(1, round(canvas.shape[0] / 32))) & ~inside
    if not ring.any():
        ring = inside  # the shape covers the whole frame: contrast with what it hides
    if not ring.any():
        return spec.color
    pixels = canvas[ring]
    best, best_score = spec.color, _contrast_score(spec.color, pixels)
    for _ in range(max_tries):
        if best_score >= min_contrast:
            break
        c = random_color(rng)
        s = _contrast_score(c, pixels)
        if s > best_score:
            best, best_score = c, s
    return best


def render_scene(
    shapes: Sequence[ShapeSpec],
    image_size: int,
    rng: np.random.Generator,
    noise_std: float | None = None,
    background=None,
    *,
    min_contrast: float | None = DEFAULT_MIN_CONTRAST,
    supersample: int = DEFAULT_SUPERSAMPLE,
) -> tuple[Image.Image, list[np.ndarray]]:
    """Render ``shapes`` in order (later ones occlude earlier ones) on a background.

    Args:
        shapes: the shapes, back to front.
        image_size: output side in pixels (square images).
        rng: the source of the background, colour fixes and noise.
        noise_std: Gaussian pixel-noise std on the 0..255 scale; None draws one uniformly from
            DEFAULT_NOISE_RANGE; 0 adds none.
        background: None for :func:`render_background`, else an (H, W, 3) uint8 array or an RGB PIL image
            of ``image_size`` (e.g. the same one for every frame of a sequence).
        min_contrast: a shape whose colour is closer than this (RGB distance) to most pixels around its
            outline gets a new random colour; ``shapes[i].color`` is updated IN PLACE so callers see the
            colour actually drawn. None keeps the given colours.
        supersample: shapes are rasterised at this multiple of the resolution and box-downsampled.

    Returns:
        (RGB image, visible masks): one boolean (H, W) mask per shape, True where at least half the
        pixel shows that shape after occlusion (a fully covered shape has an all-False mask). Masks never
        overlap: a pixel split exactly half/half between two shapes goes to the front one.
    """
    n, ss = int(image_size), int(supersample)
    if len(shapes) > 254:
        raise ValueError(f"render_scene draws at most 254 shapes per image, got {len(shapes)}")
    if background is None:
        bg = render_background(rng, n)
    else:
        bg = np.asarray(background.convert("RGB") if isinstance(background, Image.Image) else background)
        if bg.shape != (n, n, 3):
            raise ValueError(f"background must be {n}x{n}x3, got shape {bg.shape}")
    canvas = bg.astype(np.float32)

    if not 1 <= ss <= 15:
        raise ValueError(f"supersample must be in 1..15, got {supersample}")
    big = n * ss
    last_cover = None
    for spec in shapes:
        single = Image.new("L", (big, big), 0)
        draw_shape(ImageDraw.Draw(single), spec, ss, 255)
        # box-downsampled coverage of the whole shape (ignoring later occluders): 255 * fraction covered
        last_cover = np.asarray(single.reduce(ss))
        alpha = last_cover.astype(np.float32)[..., None] * (1.0 / 255.0)
        if min_contrast is not None:
            spec.color = tuple(int(c) for c in ensure_contrast(spec, canvas, alpha[..., 0], rng, min_contrast))
        canvas = canvas * (1.0 - alpha) + np.asarray(spec.color, np.float32) * alpha

    # Visible masks: where at least half the sub-pixels show the shape. A coverage 255 * c / ss^2 rounds
    # to >= 128 exactly when c >= ss^2 / 2 (for ss <= 15). The front shape is its own coverage; the
    # others come from a label map (index + 1 of the front-most shape at each sub-pixel).
    masks = []
    if len(shapes) > 1:
        labels = Image.new("L", (big, big), 0)
        label_draw = ImageDraw.Draw(labels)
        for i, spec in enumerate(shapes):
            draw_shape(label_draw, spec, ss, i + 1)
        lab = np.asarray(labels)
        for i in range(len(shapes) - 1):
            hit = Image.fromarray((lab == i + 1).view(np.uint8) * np.uint8(255), "L")
            masks.append(np.asarray(hit.reduce(ss)) >= 128)
    if shapes:
        masks.append(last_cover >= 128)
    # an exact half/half pixel between two shapes goes to the front one, so masks never overlap
    claimed = masks[-1].copy() if masks else None
    for m in masks[-2::-1]:
        m &= ~claimed
        claimed |= m

    std = float(rng.uniform(*DEFAULT_NOISE_RANGE)) if noise_std is None else float(noise_std)
    if std > 0:
        canvas = canvas + rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(std)
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
    return image, masks


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box of a boolean (H, W) mask as ``(x0, y0, x1, y1)`` in pixel-edge coordinates (x1, y1
    exclusive: a single pixel at (row 3, col 5) gives (5, 3, 6, 4)); None for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# ------------------------------------------------------------------------------------- classification
CLASSIFICATION_SIZE_RANGE = (0.25, 0.45)


def make_classification_sample(seed: int, image_size: int = 64) -> tuple[Image.Image, int]:
    """One shape of a uniformly chosen class on a random background; fully deterministic from ``seed``.
    Returns (RGB image, class index into SHAPE_CLASSES)."""
    rng = np.random.default_rng(seed)
    label = int(rng.integers(len(SHAPE_CLASSES)))
    # Single-object images use larger shapes than multi-object scenes: at 64 px a radius under a
    # quarter of the side leaves too few pixels to tell a star from a hexagon through the noise.
    spec = sample_shape(rng, image_size, SHAPE_CLASSES[label], size_range=CLASSIFICATION_SIZE_RANGE)
    image, _ = render_scene([spec], image_size, rng)
    return image, label


def _label_of(seed: int) -> int:
    """The class make_classification_sample(seed) draws, without rendering."""
    return int(np.random.default_rng(seed).integers(len(SHAPE_CLASSES)))


def sample_seed(seed: int, split: str, index: int) -> int:
    """The per-sample seed: disjoint streams for each (dataset seed, split, index)."""
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)]).generate_state(1)[0])


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


class ShapesClassification(torch.utils.data.Dataset):
    """Shapes rendered on the fly: sample ``i`` of a split is ``make_classification_sample`` with the
    seed ``sample_seed(seed, split, i)``, so splits never share images and everything is reproducible."""

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        image_size: int = 64,
        seed: int = 0,
        transform: Callable | None = None,
    ):
        self.split = check_split(split)
        self.num_samples = DEFAULT_SPLIT_SIZES[split] if num_samples is None else int(num_samples)
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.transform = transform
        self.classes = list(SHAPE_CLASSES)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self._targets: list[int] | None = None

    def __len__(self) -> int:
        return self.num_samples

    def _seed(self, index: int) -> int:
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        return sample_seed(self.seed, self.split, index % self.num_samples)

    @property
    def targets(self) -> list[int]:
        """All labels (computed without rendering, once)."""
        if self._targets is None:
            self._targets = [_label_of(sample_seed(self.seed, self.split, i)) for i in range(self.num_samples)]
        return self._targets

    def load_image(self, index: int) -> Image.Image:
        return make_classification_sample(self._seed(index), self.image_size)[0]

    def __getitem__(self, index: int):
        image, label = make_classification_sample(self._seed(index), self.image_size)
        return (self.transform(image) if self.transform is not None else image), label

    def __repr__(self) -> str:
        return (f"ShapesClassification(split={self.split!r}, num_samples={self.num_samples}, "
                f"image_size={self.image_size}, seed={self.seed})")
