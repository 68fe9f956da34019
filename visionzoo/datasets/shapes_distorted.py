"""The distorted shapes variant: each classification sample warped by a strong random affine transform.

The spatial transformer's test bed (Jaderberg et al. 2015 used rotated, translated and scaled MNIST): a
classification scene (one shape on a textured background) is rotated by up to ``max_rotation`` degrees,
shrunk to ``scale_range`` of its size and shifted anywhere it stays inside the frame, so a shape can be half
its usual size and off-centre. The background is rendered past the frame, so the warp leaves no tile edge
(a straight edge would be a false "square" cue). Deterministic by seed.

    python -m visionzoo.datasets.write_shapes data/shapes_distorted --distort
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

from visionzoo.datasets.shapes import (
    CLASSIFICATION_SIZE_RANGE,
    DEFAULT_NOISE_RANGE,
    SHAPE_CLASSES,
    render_scene,
    sample_shape,
)

DEFAULT_DISTORTION = {"max_rotation": 90.0, "scale_range": [0.5, 1.0]}


def check_distortion(distortion: dict | None) -> dict:
    """The distortion parameters with defaults filled in; unknown keys or bad values are a ValueError."""
    out = {**DEFAULT_DISTORTION, **(distortion or {})}
    unknown = sorted(set(out) - set(DEFAULT_DISTORTION))
    if unknown:
        raise ValueError(f"unknown distortion parameter(s) {', '.join(unknown)}; expected "
                         f"{', '.join(DEFAULT_DISTORTION)}")
    rot = float(out["max_rotation"])
    lo, hi = (float(v) for v in out["scale_range"])
    if not 0.0 <= rot <= 180.0:
        raise ValueError(f"max_rotation must be in [0, 180] degrees, got {rot}")
    if not 0.1 <= lo <= hi <= 1.0:
        raise ValueError(f"scale_range must be [lo, hi] with 0.1 <= lo <= hi <= 1, got {out['scale_range']}")
    return {"max_rotation": rot, "scale_range": [lo, hi]}


def _canvas_side(image_size: int, scale_lo: float) -> int:
    """Side of the canvas the scene is rendered on: large enough that every output pixel of the smallest,
    most shifted and rotated view still samples inside it (the frame's half-diagonal plus the largest shift,
    magnified by 1/scale), so the background continues past the original frame and no edge is visible."""
    reach = (math.sqrt(2) * image_size / 2) * (1.0 + (1.0 - scale_lo)) / scale_lo
    return 2 * math.ceil(reach) + 4


def make_distorted_sample(seed: int, image_size: int = 64, distortion: dict | None = None) -> tuple[Image.Image, int]:
    """One shape of a uniformly chosen class, seen through a strong random affine map; deterministic from
    ``seed``. Returns (RGB image, class index into SHAPE_CLASSES).

    The class and the shape are drawn as in :func:`make_classification_sample` (same class for the same
    seed, the same size range relative to the frame). The scene is rendered without noise on a larger canvas
    around that frame; the output is the frame rotated about its centre by U(-max_rotation, max_rotation)
    degrees, scaled by U(*scale_range) and shifted by up to the margin the scaling leaves, rendered at twice
    the resolution and box-downsampled (against aliasing of the textures), and then gets pixel noise.
    """
    params = check_distortion(distortion)
    n = int(image_size)
    rng = np.random.default_rng(seed)
    label = int(rng.integers(len(SHAPE_CLASSES)))  # the first draw, as _label_of(seed) expects
    spec = sample_shape(rng, n, SHAPE_CLASSES[label], size_range=CLASSIFICATION_SIZE_RANGE)
    side = _canvas_side(n, params["scale_range"][0])
    offset = (side - n) / 2
    spec.cx, spec.cy = spec.cx + offset, spec.cy + offset
    canvas, _ = render_scene([spec], side, rng, noise_std=0.0)

    angle = float(rng.uniform(-params["max_rotation"], params["max_rotation"]))
    scale = float(rng.uniform(*params["scale_range"]))
    margin = (1.0 - scale) * n / 2
    tx, ty = (float(v) for v in rng.uniform(-margin, margin, size=2))
    # PIL's AFFINE maps each output pixel back to a canvas pixel, so it takes the inverse map:
    # p_frame = c + R(-angle) (p_out - c - t) / scale (y points down: counter-clockwise on screen), and
    # p_canvas = p_frame + offset; the output is rendered at 2x, so p_out = q / 2.
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    c = n / 2
    ox, oy = c + tx, c + ty
    coeffs = (cos / 2, -sin / 2, c - cos * ox + sin * oy + offset,
              sin / 2, cos / 2, c - sin * ox - cos * oy + offset)
    warped = canvas.transform((2 * n, 2 * n), Image.AFFINE, coeffs, resample=Image.BILINEAR).reduce(2)
    pixels = np.asarray(warped, np.float32)
    std = float(rng.uniform(*DEFAULT_NOISE_RANGE))
    pixels = pixels + rng.standard_normal(pixels.shape, dtype=np.float32) * np.float32(std)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB"), label
