"""The tracker API every tracker of the zoo follows, and a helper that runs one over a whole sequence.

    tracker = visionzoo.create_tracker("siamfc_alexnet", weights="shapes")
    tracker.init(first_frame, (x, y, w, h))
    box, score = tracker.update(next_frame)      # box: (x, y, w, h) in pixels
    result = visionzoo.track_sequence(tracker, frames, init_box)   # result.boxes, result.fps

Frames are paths, PIL images, HxWx3 uint8 RGB arrays or CHW tensors (anything the data layer's one image
loader, `visionzoo.datasets.common.load_rgb`, takes; a CHW array is transposed, 4 channels or an empty frame
are refused).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from visionzoo.datasets.common import load_rgb

# A target box may be larger than the frame (a close-up), but not by more than this factor per side: beyond
# it the box is almost surely in other units (e.g. a normalised or a (x1, y1, x2, y2) box from another frame).
MAX_BOX_TO_FRAME = 2.0


def check_box(box, image_shape=None) -> np.ndarray:
    """The initial box as float64 (x, y, w, h); with the frame's shape, it must overlap the frame and be at
    most MAX_BOX_TO_FRAME times its size per side."""
    try:
        b = np.asarray(box, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        b = np.zeros(0)
    if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= 0 or b[3] <= 0:
        raise ValueError(f"the initial box must be 4 finite numbers (x, y, w, h) in pixels with w, h > 0, got {box!r}")
    if image_shape is not None:
        h_img, w_img = image_shape[:2]
        x, y, w, h = b
        if x >= w_img or y >= h_img or x + w <= 0 or y + h <= 0:
            raise ValueError(f"the initial box (x, y, w, h) = {tuple(float(v) for v in b)} lies outside the "
                             f"{w_img}x{h_img} frame: expected pixels of this frame, 0 <= x < {w_img}, 0 <= y < {h_img}")
        if w > MAX_BOX_TO_FRAME * w_img or h > MAX_BOX_TO_FRAME * h_img:
            raise ValueError(f"the initial box (x, y, w, h) = {tuple(float(v) for v in b)} is far larger than the "
                             f"{w_img}x{h_img} frame (at most {MAX_BOX_TO_FRAME:g}x its width and height): expected "
                             "(x, y, width, height) in this frame's pixels, not (x1, y1, x2, y2) or another scale")
    return b


class Tracker:
    """Single-object tracker: `init` on the first frame with the target's box, then `update` per frame."""

    name = "tracker"

    def __init__(self, model: torch.nn.Module, *, device="cpu", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1) * 255
        self.box: np.ndarray | None = None

    def to_input(self, crops: np.ndarray) -> torch.Tensor:
        """(N, S, S, 3) uint8 crops -> normalised (N, 3, S, S) float tensor on the device."""
        t = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float()
        return (t - self.mean) / self.std

    def start(self, image, box) -> np.ndarray:
        """Shared part of `init`: the target's centre and size (and the first size, which bounds later
        scale changes), the frame's mean colour for padding crops. Returns the frame as an RGB array."""
        image = load_rgb(image)
        x, y, w, h = check_box(box, image.shape)
        self.center = np.array([x + w / 2, y + h / 2])
        self.target = np.array([w, h])
        self.base_target = self.target.copy()
        self.avg_color = image.reshape(-1, 3).mean(0)
        self.box = np.array([x, y, w, h])
        return image

    def move(self, image_shape, displacement, scale: float, min_scale: float, max_scale: float) -> float:
        """Shared end of `update`: shift the centre by `displacement` (image px, kept on the image), rescale
        the target by `scale` kept within [min_scale, max_scale] of its first size; returns the scale applied."""
        bounded = np.clip(scale * self.target[0] / self.base_target[0], min_scale, max_scale)
        scale = float(bounded * self.base_target[0] / self.target[0])
        self.target = self.target * scale
        h_img, w_img = image_shape[:2]
        self.center = np.clip(self.center + displacement, 0, [w_img, h_img])
        w, h = self.target
        self.box = np.array([self.center[0] - w / 2, self.center[1] - h / 2, w, h])
        return scale

    def init(self, image, box) -> None:
        raise NotImplementedError

    def update(self, image) -> tuple[np.ndarray, float]:
        raise NotImplementedError


@dataclass
class TrackResult:
    boxes: np.ndarray  # (N, 4) x, y, w, h; row 0 is the initial box
    scores: np.ndarray  # (N,) the tracker's confidence; NaN for frame 0
    times: np.ndarray  # (N,) seconds: times[0] for init, then per update

    @property
    def fps(self) -> float:
        """Frames per second of `update` (frame 0's init excluded, as the benchmarks count it)."""
        t = float(self.times[1:].sum())
        return (len(self.times) - 1) / t if t > 0 else float("nan")


def track_sequence(tracker: Tracker, frames, init_box, *, progress: bool = False, desc: str = "tracking") -> TrackResult:
    """Track a whole sequence: `frames` is a list of frames or anything with `len()` and `load_frame(i)`
    (a `visionzoo.datasets.sequences.Sequence`). Frame loading is not timed."""
    load = frames.load_frame if hasattr(frames, "load_frame") else (lambda i: frames[i])
    n = len(frames)
    if n == 0:
        raise ValueError("track_sequence: the sequence has no frames")
    boxes = np.zeros((n, 4))
    scores = np.full(n, np.nan)
    times = np.zeros(n)
    for i in tqdm(range(n), desc=desc, disable=not progress, leave=False, unit="frame"):
        image = load_rgb(load(i))
        start = time.perf_counter()
        if i == 0:
            tracker.init(image, init_box)
            boxes[0] = check_box(init_box)
        else:
            box, score = tracker.update(image)
            boxes[i], scores[i] = box, score
        times[i] = time.perf_counter() - start
    return TrackResult(boxes, scores, times)
