"""The SINT tracker (Tao, Gavves & Smeulders 2016): embed the target once from the first frame; in each
new frame embed candidate boxes sampled around the previous position (radial and angular steps at a few
scales) and return the candidate whose embedding has the largest inner product with the target's.
No model update, no occlusion handling, as in the paper. The paper's optional box-regression refinement
is left out.

Each frame's trunk runs once, on a square search crop around the previous position (the SiamFC crop
geometry: the target appears at the same pixel size in the exemplar and search crops), and all
candidates are RoI-pooled from that one feature map."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from visionzoo.datasets.common import load_rgb
from visionzoo.datasets.crops import box_in_crop, context_side, crop_and_resize
from visionzoo.tracking.base import Tracker


@dataclass
class SINTParams:
    exemplar_size: int = 127
    search_size: int = 255
    context: float = 0.5
    radii: int = 10  # radial steps out to `search_radius` x the target size
    angles: int = 10  # angular steps per radius
    search_radius: float = 1.0
    scales: list[float] = field(default_factory=lambda: [0.9576, 1.0, 1.0443])  # 1.045^{-1,0,1}
    scale_lr: float = 1.0  # 1 = take the best candidate's size as is (the paper)
    min_scale: float = 0.2
    max_scale: float = 5.0


def polar_candidates(center, size, params: SINTParams) -> np.ndarray:
    """(K, 4) x1, y1, x2, y2 boxes: the centre itself plus `radii` x `angles` positions around it, each at
    every scale in `params.scales`."""
    w, h = size
    reach = params.search_radius * np.sqrt(w * h)
    radii = np.linspace(reach / params.radii, reach, params.radii)
    angles = np.linspace(0, 2 * np.pi, params.angles, endpoint=False)
    offsets = np.concatenate([[[0.0, 0.0]],
                              np.stack([np.outer(radii, np.cos(angles)).ravel(),
                                        np.outer(radii, np.sin(angles)).ravel()], 1)])
    boxes = []
    for s in params.scales:
        cx, cy = center[0] + offsets[:, 0], center[1] + offsets[:, 1]
        bw, bh = w * s, h * s
        boxes.append(np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1))
    return np.concatenate(boxes)


class SINTTracker(Tracker):
    name = "sint"

    def __init__(self, model, params: SINTParams | None = None, **kwargs):
        super().__init__(model, **kwargs)
        self.params = params or SINTParams()

    @torch.no_grad()
    def init(self, image, box) -> None:
        image = self.start(image, box)
        p = self.params
        x, y, w, h = self.box
        z_side = context_side(w, h, p.context)
        crop = crop_and_resize(image, tuple(self.center), z_side, p.exemplar_size, self.avg_color)
        bx, by, bw, bh = box_in_crop((x, y, w, h), tuple(self.center), z_side, p.exemplar_size)
        roi = torch.tensor([[0, bx, by, bx + bw, by + bh]], dtype=torch.float32, device=self.device)
        self.query = self.model(self.to_input(crop[None]), roi)[0]

    @torch.no_grad()
    def update(self, image) -> tuple[np.ndarray, float]:
        if self.box is None:
            raise RuntimeError("SINTTracker.update called before init")
        image = load_rgb(image)
        p = self.params
        w, h = self.target
        x_side = context_side(w, h, p.context) * p.search_size / p.exemplar_size
        crop = crop_and_resize(image, tuple(self.center), x_side, p.search_size, self.avg_color)
        a = p.search_size / x_side  # image px -> crop px
        c = p.search_size / 2
        boxes = polar_candidates((c, c), (w * a, h * a), p)
        rois = torch.from_numpy(np.concatenate([np.zeros((len(boxes), 1)), boxes], 1)).float().to(self.device)
        embeddings = self.model(self.to_input(crop[None]), rois)
        scores = (embeddings @ self.query).float().cpu().numpy()
        best = int(scores.argmax())
        x1, y1, x2, y2 = boxes[best]
        displacement = (np.array([(x1 + x2) / 2, (y1 + y2) / 2]) - c) / a
        scale = (1 - p.scale_lr) + p.scale_lr * (x2 - x1) / a / w
        self.move(image.shape, displacement, scale, p.min_scale, p.max_scale)
        return self.box.copy(), float(scores[best])
