"""Segmentation inference at any input size: one forward pass, or overlapping sliding windows for
images larger than the window, with the logits brought back to the input resolution. Shared by the
Segmenter and the segmentation task's evaluation, so both score the same logits.

Neither function changes the model's mode or the autograd state: call them under ``torch.no_grad()``
(or ``torch.inference_mode()``) with the model in eval mode, as an evaluation loop does.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["predict_logits", "sliding_window_logits", "tile_boxes"]

Window = Union[int, tuple[int, int]]


def _window_size(window: Window) -> tuple[int, int]:
    if isinstance(window, (tuple, list)):
        if len(window) != 2:
            raise ValueError(f"window must be an int or an (height, width) pair, got {window!r}")
        wh, ww = window
    else:
        wh = ww = window
    for v in (wh, ww):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"window sizes must be integers > 0, got {window!r}")
    return int(wh), int(ww)


def _check_overlap(overlap: float) -> float:
    overlap = float(overlap)
    if not (0.0 <= overlap < 1.0):
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return overlap


def _stride(window: int, overlap: float) -> int:
    return max(1, int(math.floor(window * (1.0 - overlap) + 1e-9)))


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Tile starts along one axis: every `stride`, the last tile flush with the border; [0] when the
    axis fits in one window."""
    if size <= window:
        return [0]
    return list(range(0, size - window, stride)) + [size - window]


def tile_boxes(height: int, width: int, window: Window, overlap: float = 1 / 3) -> list[tuple[int, int, int, int]]:
    """The tiles :func:`sliding_window_logits` runs on an image of this size, as (y0, x0, y1, x1)
    boxes clipped to the image (a tile is smaller than the window only where the image is)."""
    wh, ww = _window_size(window)
    overlap = _check_overlap(overlap)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    return [(y0, x0, min(y0 + wh, height), min(x0 + ww, width))
            for y0 in _starts(height, wh, _stride(wh, overlap))
            for x0 in _starts(width, ww, _stride(ww, overlap))]


def _as_logits(output: Any) -> torch.Tensor:
    """A model's logits: the tensor itself, or ``output["out"]`` (torchvision's segmentation models)."""
    if isinstance(output, Mapping):
        if "out" not in output:
            raise ValueError(f"model returned a dict without an 'out' entry (keys: {sorted(map(str, output))})")
        output = output["out"]
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        raise ValueError("model must return (N, C, h, w) logits or a dict with them under 'out', got "
                         f"{tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}")
    return output


def _resize(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be a (N, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if images.shape[-1] < 1 or images.shape[-2] < 1:
        raise ValueError(f"images must have a positive size, got {tuple(images.shape)}")


def sliding_window_logits(model_fn: Callable[[torch.Tensor], Any], images: torch.Tensor,
                          num_classes: int | None, window: Window, overlap: float = 1 / 3) -> torch.Tensor:
    """Logits (N, C, H, W) of `images` (N, 3, H, W) from overlapping `window`-sized tiles.

    Tiles start every ``floor(window * (1 - overlap))`` pixels along each axis, the last one flush
    with the bottom / right border (see :func:`tile_boxes`). An image smaller than the window along an
    axis is zero-padded (bottom / right) to the window there, and the result cropped back. Each tile's
    logits (``model_fn(tile)``: a tensor (N, C, h, w) or a dict with it under "out"; resized
    bilinearly to the tile if h, w differ) are summed into the canvas, which is divided by the number
    of tiles covering each pixel. `num_classes` (None: taken from the first tile) is checked against
    C. Accumulates in float32 (float64 for float64 logits).
    """
    _check_images(images)
    wh, ww = _window_size(window)
    overlap = _check_overlap(overlap)
    if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    n, _, h, w = images.shape
    ph, pw = max(h, wh), max(w, ww)
    padded = images if (ph, pw) == (h, w) else F.pad(images, (0, pw - w, 0, ph - h))
    canvas: torch.Tensor | None = None
    count = torch.zeros(1, 1, ph, pw, dtype=torch.float32, device=images.device)
    for y0 in _starts(ph, wh, _stride(wh, overlap)):
        for x0 in _starts(pw, ww, _stride(ww, overlap)):
            tile = padded[:, :, y0:y0 + wh, x0:x0 + ww]
            out = _as_logits(model_fn(tile))
            if out.shape[0] != n or (num_classes is not None and out.shape[1] != int(num_classes)):
                raise ValueError(f"model returned logits of shape {tuple(out.shape)} for a tile of shape "
                                 f"{tuple(tile.shape)}; expected ({n}, {num_classes}, ...)")
            out = _resize(out, (wh, ww))
            if canvas is None:
                dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
                canvas = torch.zeros(n, out.shape[1], ph, pw, dtype=dtype, device=out.device)
                count = count.to(device=out.device, dtype=dtype)
            elif out.shape[1] != canvas.shape[1]:
                raise ValueError(f"tiles gave different class counts: {out.shape[1]} vs {canvas.shape[1]}")
            canvas[:, :, y0:y0 + wh, x0:x0 + ww] += out.to(canvas.dtype)
            count[:, :, y0:y0 + wh, x0:x0 + ww] += 1
    assert canvas is not None
    return (canvas / count)[:, :, :h, :w]


def predict_logits(model: nn.Module | Callable[[torch.Tensor], Any], images: torch.Tensor,
                   window: Window | None = None, overlap: float = 1 / 3) -> torch.Tensor:
    """Logits (N, C, H, W) at the resolution of `images` (N, 3, H, W), any size.

    `model`'s forward returns logits (N, C, h, w) or a dict with them under "out" (torchvision's
    FCN / DeepLabV3 convention; "aux" is ignored). With `window` None, or an image that fits in the
    window, this is one forward pass; otherwise :func:`sliding_window_logits` with `window` and
    `overlap`. Logits smaller (or larger) than the input are resized bilinearly
    (align_corners=False).
    """
    _check_images(images)
    overlap = _check_overlap(overlap)
    h, w = images.shape[-2:]
    if window is not None:
        wh, ww = _window_size(window)
        if h > wh or w > ww:
            return sliding_window_logits(model, images, None, (wh, ww), overlap)
    return _resize(_as_logits(model(images)), (h, w))
