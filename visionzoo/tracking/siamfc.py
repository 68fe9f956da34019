"""The SiamFC tracker (Bertinetto et al. 2016), with the paper's inference recipe (REFERENCE.md):
search at 3 scales (1.0375^{-1, 0, 1}; the 5-scale variant is a config), penalise the non-central
scales (0.9745), upsample the 17x17 responses 16x with bicubic interpolation, mix in a Hann (cosine)
window with influence 0.176, move to the peak, and damp the scale change (learning rate 0.59). The
exemplar is embedded once from the first frame; nothing is updated afterwards."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from visionzoo.datasets.common import load_rgb
from visionzoo.datasets.crops import context_side, crop_and_resize
from visionzoo.tracking.base import Tracker


@dataclass
class SiamFCParams:
    exemplar_size: int = 127
    search_size: int = 255
    context: float = 0.5
    scale_num: int = 3
    scale_step: float = 1.0375
    scale_penalty: float = 0.9745
    scale_lr: float = 0.59
    window_influence: float = 0.176
    response_upsample: int = 16
    min_scale: float = 0.2  # bounds on the target size relative to the first frame's
    max_scale: float = 5.0

    @classmethod
    def five_scale(cls, **overrides) -> SiamFCParams:
        """The paper's 5-scale variant."""
        return cls(**{"scale_num": 5, "scale_step": 1.0255, "scale_penalty": 0.962, "scale_lr": 0.34,
                      "window_influence": 0.168, **overrides})


class SiamFCTracker(Tracker):
    name = "siamfc"

    def __init__(self, model, params: SiamFCParams | None = None, **kwargs):
        super().__init__(model, **kwargs)
        self.params = params or SiamFCParams()
        p = self.params
        if p.scale_num < 1 or p.scale_num % 2 == 0:
            raise ValueError(f"scale_num must be odd and >= 1, got {p.scale_num}")
        self.scale_factors = p.scale_step ** (np.arange(p.scale_num) - (p.scale_num - 1) / 2)

    @torch.no_grad()
    def init(self, image, box) -> None:
        image = self.start(image, box)
        p = self.params
        w, h = self.target
        self.z_side = context_side(w, h, p.context)
        self.x_side = self.z_side * p.search_size / p.exemplar_size
        z = crop_and_resize(image, tuple(self.center), self.z_side, p.exemplar_size, self.avg_color)
        self.kernel = self.model.embed(self.to_input(z[None]))
        self.window = None  # sized from the first response map (17x17 for the paper's network) x upsampling

    def _cosine_window(self, up: int) -> np.ndarray:
        if self.window is None or self.window.shape[0] != up:
            hann = np.hanning(up)
            self.window = np.outer(hann, hann)
            self.window /= self.window.sum()
        return self.window

    @torch.no_grad()
    def update(self, image) -> tuple[np.ndarray, float]:
        if self.box is None:
            raise RuntimeError("SiamFCTracker.update called before init")
        image = load_rgb(image)
        p = self.params
        sides = self.x_side * self.scale_factors
        crops = np.stack([crop_and_resize(image, tuple(self.center), s, p.search_size, self.avg_color) for s in sides])
        responses = self.model.correlate(self.kernel, self.model.embed(self.to_input(crops)))
        up = responses.shape[-1] * p.response_upsample
        responses = F.interpolate(responses.float(), size=(up, up), mode="bicubic", align_corners=False)[:, 0]
        responses = responses.cpu().numpy()
        mid = p.scale_num // 2
        peaks = responses.reshape(p.scale_num, -1).max(1)
        peaks[:mid] *= p.scale_penalty
        peaks[mid + 1:] *= p.scale_penalty
        best = int(np.argmax(peaks))
        score = float(1 / (1 + np.exp(-responses[best].max())))  # the peak logit as a probability

        response = responses[best] - responses[best].min()
        response /= response.sum() + 1e-16
        response = (1 - p.window_influence) * response + p.window_influence * self._cosine_window(up)
        row, col = np.unravel_index(int(response.argmax()), response.shape)
        # peak offset from the map centre -> search-crop pixels -> image pixels
        disp_response = np.array([col, row]) - (up - 1) / 2
        disp_crop = disp_response * self.model.total_stride / p.response_upsample
        disp_image = disp_crop * sides[best] / p.search_size
        scale = (1 - p.scale_lr) + p.scale_lr * self.scale_factors[best]
        scale = self.move(image.shape, disp_image, scale, p.min_scale, p.max_scale)
        self.z_side *= scale
        self.x_side *= scale
        return self.box.copy(), score
