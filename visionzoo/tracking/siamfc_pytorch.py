"""SiamFC tracking with the conventions of siamfc-pytorch (github.com/huanglianghua/siamfc-pytorch), so that
its public checkpoints (e.g. `siamfc_alexnet_e50.pth`) track here as they do there:

    tracker = visionzoo.create_tracker("siamfc_alexnet", weights="siamfc_alexnet_e50.pth", compat="siamfc-pytorch")

What differs from the zoo's own SiamFC tracker (visionzoo.tracking.siamfc), each as that project does it:

* Boxes are read and written with a 1-based origin: the target centre in 0-based pixel indices is
  (x - 1 + (w - 1) / 2, y - 1 + (h - 1) / 2), and a reported box is (cx + 1 - (w - 1) / 2, ...). Target
  centre and size are kept in float32.
* Crops are integer: the side is rounded (half to even), the top-left corner is round(centre - (side - 1) / 2),
  the image is padded on all four sides by the largest overhang with the frame's mean colour
  (cv2.copyMakeBorder, constant), the square is cut out and resized with cv2.resize (bilinear).
* The network sees raw 0-255 RGB floats (no mean / std) and its response is 0.001 x the cross-correlation,
  with no bias.
* The 17x17 responses are upsampled 16x with cv2.resize (bicubic); the non-central scales' whole maps are
  multiplied by the scale penalty before the best scale is picked; that map is shifted to a minimum of 0,
  divided by its sum (+ 1e-16) and mixed with a normalised Hann window.
* The centre moves by the peak's offset from the map centre x total stride / upsampling x search side /
  255, with no clamping to the image; the size is damped by the scale learning rate with no bounds.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from visionzoo.datasets.common import load_rgb
from visionzoo.tracking.base import Tracker, check_box
from visionzoo.tracking.siamfc import SiamFCParams


def center_and_size_from_one_based(box) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, w, h) with a 1-based origin -> float32 centre (row, col) in 0-based pixel indices and size (h, w)."""
    x, y, w, h = (float(v) for v in box)
    state = np.array([y - 1 + (h - 1) / 2, x - 1 + (w - 1) / 2, h, w], dtype=np.float32)
    return state[:2], state[2:]


def one_based_box(center: np.ndarray, size: np.ndarray) -> np.ndarray:
    """The inverse: (x, y, w, h) with a 1-based origin from a centre (row, col) and size (h, w)."""
    return np.array([center[1] + 1 - (size[1] - 1) / 2, center[0] + 1 - (size[0] - 1) / 2, size[1], size[0]],
                    dtype=np.float64)


def integer_crop(image: np.ndarray, center: np.ndarray, side, out_size: int, border_value) -> np.ndarray:
    """siamfc-pytorch's crop: the `side` x `side` square (side rounded to an integer, half to even) whose top-left
    pixel is round(center - (side - 1) / 2) (center = (row, col), 0-based), taken from the image padded by the
    largest overhang on every side with `border_value`, resized to `out_size` x `out_size` (cv2, bilinear)."""
    side = int(round(side))
    if side < 1:
        raise ValueError(f"crop side must round to at least 1 pixel, got {side}")
    top, left = (int(v) for v in np.round(center - (side - 1) / 2))
    bottom, right = top + side, left + side
    pad = max(0, -top, -left, bottom - image.shape[0], right - image.shape[1])
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT,
                                   value=tuple(float(c) for c in border_value))
    patch = image[top + pad:bottom + pad, left + pad:right + pad]
    return cv2.resize(patch, (out_size, out_size), interpolation=cv2.INTER_LINEAR)


class SiamFCPytorchTracker(Tracker):
    """SiamFC with siamfc-pytorch's conventions (module docstring); `params` are its inference parameters
    (the defaults are that project's: 3 scales of 1.0375, penalty 0.9745, scale lr 0.59, window influence
    0.176, 16x upsampling); `min_scale` / `max_scale` do not apply (that project does not bound the size)."""

    name = "siamfc-pytorch"

    def __init__(self, model, params: SiamFCParams | None = None, *, device="cpu"):
        super().__init__(model, device=device, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
        self.params = params or SiamFCParams()
        p = self.params
        if p.scale_num < 1 or p.scale_num % 2 == 0:
            raise ValueError(f"scale_num must be odd and >= 1, got {p.scale_num}")
        half = p.scale_num // 2
        self.scale_factors = p.scale_step ** np.linspace(-half, half, p.scale_num)

    def to_input(self, crops: np.ndarray) -> torch.Tensor:
        """Raw 0-255 RGB as float: that project's network was trained on unnormalised pixels."""
        return torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float()

    @torch.no_grad()
    def init(self, image, box) -> None:
        image = load_rgb(image)
        p = self.params
        self.center, self.size = center_and_size_from_one_based(check_box(box, image.shape))
        context = p.context * np.sum(self.size)
        self.z_side = np.sqrt(np.prod(self.size + context))
        self.x_side = self.z_side * p.search_size / p.exemplar_size
        self.avg_color = np.mean(image, axis=(0, 1))
        z = integer_crop(image, self.center, self.z_side, p.exemplar_size, self.avg_color)
        self.kernel = self.model.embed(self.to_input(z[None]))
        self.window = None
        self.box = one_based_box(self.center, self.size)

    def _hann(self, up: int) -> np.ndarray:
        if self.window is None or self.window.shape[0] != up:
            self.window = np.outer(np.hanning(up), np.hanning(up))
            self.window /= self.window.sum()
        return self.window

    @torch.no_grad()
    def update(self, image) -> tuple[np.ndarray, float]:
        if self.box is None:
            raise RuntimeError("SiamFCPytorchTracker.update called before init")
        image = load_rgb(image)
        p = self.params
        crops = np.stack([integer_crop(image, self.center, self.x_side * f, p.search_size, self.avg_color)
                          for f in self.scale_factors])
        responses = self.model.correlate(self.kernel, self.model.embed(self.to_input(crops)))
        responses = responses[:, 0].float().cpu().numpy()
        up = responses.shape[-1] * p.response_upsample
        responses = np.stack([cv2.resize(r, (up, up), interpolation=cv2.INTER_CUBIC) for r in responses])
        peak_logits = responses.max(axis=(1, 2))  # before the penalty: the score reported
        half = p.scale_num // 2
        responses[:half] *= p.scale_penalty
        responses[half + 1:] *= p.scale_penalty
        best = int(np.argmax(np.amax(responses, axis=(1, 2))))
        response = responses[best]
        response -= response.min()
        response /= response.sum() + 1e-16
        response = (1 - p.window_influence) * response + p.window_influence * self._hann(up)
        loc = np.unravel_index(response.argmax(), response.shape)  # (row, col)
        disp_response = np.array(loc) - (up - 1) / 2
        disp_crop = disp_response * self.model.total_stride / p.response_upsample
        disp_image = disp_crop * self.x_side * self.scale_factors[best] / p.search_size
        self.center += disp_image  # float32, in place, as there
        scale = (1 - p.scale_lr) * 1.0 + p.scale_lr * self.scale_factors[best]
        self.size *= scale
        self.z_side *= scale
        self.x_side *= scale
        self.box = one_based_box(self.center, self.size)
        return self.box.copy(), float(1 / (1 + np.exp(-float(peak_logits[best]))))  # that project reports none
