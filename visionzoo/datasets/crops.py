"""Square crops around a target, resized and padded with the mean colour: the input of every Siamese
tracker here, at training (pairs) and at tracking time. They live in the data layer because both the
training pairs reader and the trackers need them. One affine warp (OpenCV) does crop, resize and
padding at once, so a crop that leaves the image costs no more than one inside it."""
from __future__ import annotations

import math

import cv2
import numpy as np


def context_side(w: float, h: float, context: float = 0.5) -> float:
    """SiamFC's exemplar side: sqrt((w + p)(h + p)) with p = context * (w + h)."""
    p = context * (w + h)
    return math.sqrt(max(w + p, 1e-6) * max(h + p, 1e-6))


def crop_and_resize(image: np.ndarray, center: tuple[float, float], side: float, out_size: int,
                    pad_color=None, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """The square of `side` image pixels centred on `center` (x, y; continuous coordinates, pixel i covers
    [i, i + 1)) as an `out_size` x `out_size` image; outside the image is `pad_color` (default: the
    image's mean colour, as SiamFC pads)."""
    if side <= 0 or not math.isfinite(side):
        raise ValueError(f"crop side must be a positive number, got {side}")
    if pad_color is None:
        pad_color = image.reshape(-1, image.shape[-1]).mean(0)
    a = out_size / side
    cx, cy = center
    m = np.array([[a, 0.0, a * (0.5 - cx) + out_size / 2 - 0.5],
                  [0.0, a, a * (0.5 - cy) + out_size / 2 - 0.5]])
    border = tuple(float(c) for c in np.broadcast_to(pad_color, (image.shape[-1],)))
    return cv2.warpAffine(image, m, (out_size, out_size), flags=interpolation, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=border)


def box_in_crop(box_xywh, center: tuple[float, float], side: float, out_size: int) -> np.ndarray:
    """Where the image box (x, y, w, h) lands in a crop made by `crop_and_resize` (same arguments)."""
    a = out_size / side
    x, y, w, h = (float(v) for v in box_xywh)
    return np.array([(x - center[0]) * a + out_size / 2, (y - center[1]) * a + out_size / 2, w * a, h * a])
