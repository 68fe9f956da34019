"""Drawing predictions on images: detections (boxes, captions placed so that none covers another,
translucent masks), segmentation class colours, and top-k captions. Shared by the notebook predictors
and the task reports, so a report shows predictions exactly as a user's drawing does."""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from visionzoo.datasets.segmentation import voc_palette

__all__ = ["GT_COLOR", "PRED_COLOR", "class_palette", "colorize", "draw_detections", "draw_top_k", "label_color",
           "mask_array", "overlay", "place_label", "to_numpy"]

GT_COLOR = "#00c853"      # ground truth: green, dashed
PRED_COLOR = "#ff1f8f"    # predictions: magenta, solid
PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000",
           "#ffd8b1", "#000075", "#a9a9a9", "#ffe119"]
IGNORE_INDEX = 255  # segmentation masks: pixels without a label


# ---- detections ----------------------------------------------------------------------------------
def _rgb(color: str | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(color, str):
        c = color.lstrip("#")
        return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)
    return tuple(int(v) for v in color[:3])  # type: ignore[return-value]


def label_color(label: Any) -> tuple[int, int, int]:
    """A stable colour for a label (name or id), the same in every image and run."""
    return _rgb(PALETTE[zlib.crc32(str(label).encode("utf-8")) % len(PALETTE)])


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def to_numpy(x: Any, dtype=None) -> np.ndarray:
    """A tensor (float16 widened to float32) or array-like as a numpy array of `dtype`."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def mask_array(masks: Any, n: int, size: tuple[int, int], threshold: float = 0.5) -> np.ndarray | None:
    """(N, H, W) bool at the image size from (N, 1, H, W) / (N, H, W) probabilities or bools."""
    if masks is None:
        return None
    m = to_numpy(masks)
    if m.ndim == 4:
        m = m[:, 0]
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[0] != n:
        raise ValueError(f"expected {n} masks of shape (H, W), got masks of shape {m.shape}")
    m = m if m.dtype == np.bool_ else m > threshold
    w, h = size
    if m.shape[1:] != (h, w):
        m = np.stack([np.asarray(Image.fromarray(x.astype(np.uint8) * 255).resize((w, h), Image.Resampling.NEAREST))
                      > 127 for x in m]) if n else np.zeros((0, h, w), dtype=bool)
    return m


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], color, width: int, dash: int) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay, bx, by) in ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1)):
        length = math.hypot(bx - ax, by - ay)
        if length == 0:
            continue
        steps = max(1, int(length // (2 * dash)) + 1)
        for i in range(steps):
            s = min(1.0, (2 * i * dash) / length)
            e = min(1.0, (2 * i * dash + dash) / length)
            if e <= s:
                break
            draw.line([(ax + (bx - ax) * s, ay + (by - ay) * s), (ax + (bx - ax) * e, ay + (by - ay) * e)],
                      fill=color, width=width)


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection area of two (x1, y1, x2, y2) rectangles."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def place_label(box: Sequence[float], size: tuple[float, float], image_size: tuple[int, int],
                occupied: Sequence[Sequence[float]] = (), prefer: str = "top") -> tuple[float, float, float, float]:
    """Where a label of `size` (w, h) for `box` (XYXY) goes: the first spot around the box's corners
    (above / inside, left / right; `prefer` "bottom" starts below the box) that stays in the image and
    overlaps none of the `occupied` rectangles; failing that, the first free spot in a column stacked
    away from the box; failing that, the spot overlapping the least. Returns (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    tw, th = size
    w, h = image_size
    corners = [(x1, y1 - th), (x1, y1), (x2 - tw, y1 - th), (x2 - tw, y1)]
    bottoms = [(x1, y2), (x1, y2 - th), (x2 - tw, y2), (x2 - tw, y2 - th)]
    candidates = corners + bottoms if prefer == "top" else bottoms + corners
    # stacked columns above and below the box, for crowds where every corner is taken
    rows = max(1, int(h // max(th, 1.0)))
    for k in range(1, rows + 1):
        for x in (x1, x2 - tw):
            candidates += [(x, y1 - th - k * th), (x, y2 + k * th)] if prefer == "top" else \
                          [(x, y2 + k * th), (x, y1 - th - k * th)]
    best, best_cost = None, math.inf
    seen = set()
    for cx, cy in candidates:
        tx = min(max(0.0, cx), max(0.0, w - tw))
        ty = min(max(0.0, cy), max(0.0, h - th))
        if (tx, ty) in seen:
            continue
        seen.add((tx, ty))
        rect = (tx, ty, tx + tw, ty + th)
        cost = sum(_overlap(rect, o) for o in occupied)
        if cost == 0:
            return rect
        if cost < best_cost:
            best, best_cost = rect, cost
    return best  # type: ignore[return-value]


def draw_detections(image: Image.Image, boxes, labels, scores=None, masks=None, color_by_label: bool = True, *,
                    color: str | Sequence[int] = PRED_COLOR, dashed: bool = False, line_width: int | None = None,
                    font_size: int | None = None, mask_alpha: float = 0.45, show_text: bool = True,
                    text_position: str = "top", occupied: list | None = None) -> Image.Image:
    """A copy of `image` (RGB) with the boxes (N, 4 XYXY in image coordinates) outlined and captioned
    with their label (name or id) and score (when given); masks ((N, 1, H, W) probabilities or
    (N, H, W) bools, thresholded at 0.5; resized when not at the image size) are overlaid
    translucently. Colours are per label (stable across images) with `color_by_label`, else `color`.
    Captions sit above the box's top-left corner (`text_position` "top") or below its bottom-left
    corner ("bottom") where that spot is free; in crowded scenes they move to another corner or are
    stacked beside the box (joined to it by a thin line), so that no caption covers another. Boxes are
    drawn before captions, and earlier boxes (the highest scores, when sorted) get the first spots.
    `occupied`, a list of (x1, y1, x2, y2), holds rectangles to keep clear (e.g. the captions of an
    earlier call on the same image); the captions placed here are appended to it."""
    if text_position not in ("top", "bottom"):
        raise ValueError(f"text_position must be 'top' or 'bottom', got {text_position!r}")
    out = image.convert("RGB")
    w, h = out.size
    boxes = to_numpy(boxes, np.float64).reshape(-1, 4)
    n = boxes.shape[0]
    labels = list(labels.tolist() if hasattr(labels, "tolist") else labels)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} boxes")
    score_list = None if scores is None else [float(s) for s in to_numpy(scores, np.float64).reshape(-1)]
    if score_list is not None and len(score_list) != n:
        raise ValueError(f"{len(score_list)} scores for {n} boxes")
    colors = [label_color(lab) if color_by_label else _rgb(color) for lab in labels]
    mask_arr = mask_array(masks, n, (w, h))
    if mask_arr is not None and n:
        base = np.asarray(out, dtype=np.float32)
        for m, c in zip(mask_arr, colors):
            base[m] = base[m] * (1 - mask_alpha) + np.asarray(c, dtype=np.float32) * mask_alpha
        out = Image.fromarray(base.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    lw = line_width or max(1, round(max(w, h) / 220))
    fs = font_size or max(10, round(max(w, h) / 36))
    font = _font(fs)
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        if dashed:
            _dashed_rectangle(draw, (x1, y1, x2, y2), colors[i], lw, dash=max(3, 3 * lw))
        else:
            draw.rectangle((x1, y1, max(x1, x2), max(y1, y2)), outline=colors[i], width=lw)
    if not show_text:
        return out
    placed = occupied if occupied is not None else []
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        c = colors[i]
        text = str(labels[i]) + (f" {score_list[i]:.2f}" if score_list is not None else "")
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 4, bottom - top + 3
        tx, ty, tx2, ty2 = place_label((x1, y1, max(x1, x2), max(y1, y2)), (tw, th), (w, h), placed,
                                       prefer=text_position)
        placed.append((tx, ty, tx2, ty2))
        if _overlap((tx - 1, ty - 1, tx2 + 1, ty2 + 1), (x1, y1, max(x1, x2) + 1, max(y1, y2) + 1)) == 0:
            # a caption moved away from its box: a leader line from its nearest corner to the box
            lx = tx if abs(tx - x1) <= abs(tx2 - x1) else tx2
            ly = ty2 if ty2 <= y1 else ty
            draw.line([(lx, ly), (min(max(lx, x1), x2), min(max(ly, y1), y2))], fill=c, width=1)
        draw.rectangle((tx, ty, tx2, ty2), fill=c)
        light = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] > 150
        draw.text((tx + 2 - left, ty + 1 - top), text, fill=(0, 0, 0) if light else (255, 255, 255), font=font)
    return out


# ---- segmentation ---------------------------------------------------------------------------------
def class_palette() -> np.ndarray:
    """The Pascal VOC colours of the class indices 0..255 as a (256, 3) uint8 array."""
    return np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


def colorize(mask: np.ndarray) -> Image.Image:
    """A class-index mask as an RGB image in the Pascal VOC colours (255 = ignore in cream)."""
    return Image.fromarray(class_palette()[np.asarray(mask, dtype=np.uint8)], "RGB")


def overlay(image: Image.Image, mask: np.ndarray, alpha: float = 0.55) -> Image.Image:
    """`mask`'s class colours blended over `image` (resized to the mask with nearest-neighbour if their sizes
    differ); background (0) and ignore (255) pixels show the image, ignore slightly whitened."""
    mask = np.asarray(mask, dtype=np.uint8)
    h, w = mask.shape
    if image.size != (w, h):
        image = image.resize((w, h), Image.Resampling.BILINEAR)
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    colors = class_palette()[mask].astype(np.float32)
    blend = np.where((mask > 0)[..., None] & (mask != IGNORE_INDEX)[..., None],
                     (1 - alpha) * base + alpha * colors, base)
    blend = np.where((mask == IGNORE_INDEX)[..., None], 0.5 * base + 0.5 * 255, blend)
    return Image.fromarray(np.clip(blend, 0, 255).astype(np.uint8), "RGB")


# ---- classification -------------------------------------------------------------------------------
def draw_top_k(image: Image.Image, labels: Sequence[str], scores: Sequence[float],
               min_side: int = 256) -> Image.Image:
    """`image` (enlarged to at least `min_side` px, so the caption is legible) with one caption line per
    (label, score), the first in yellow."""
    pil = image.convert("RGB")
    scale = max(1.0, min_side / max(1, min(pil.size)))
    if scale > 1:
        pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.NEAREST)
    draw = ImageDraw.Draw(pil)
    lines = [f"{name} {score:.2f}" for name, score in zip(labels, scores)]
    height = 12 * len(lines) + 4
    draw.rectangle([0, 0, pil.width, height], fill=(0, 0, 0))
    for i, line in enumerate(lines):
        draw.text((3, 2 + 12 * i), line, fill=(255, 255, 0) if i == 0 else (255, 255, 255))
    return pil
