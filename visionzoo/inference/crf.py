"""Dense-CRF refinement of segmentation logits, shared by the Segmenter and the segmentation task's
evaluation, in PyTorch, as DeepLab (Chen et al., "Semantic Image Segmentation with Deep Convolutional
Nets and Fully Connected CRFs", 2015) uses the fully connected CRF of Krähenbühl and Koltun (2011):

* unary potentials from the network, ``U_i(l) = -log P_i(l)`` with ``P = softmax(logits)``;
* Potts pairwise potentials ``mu(l, l') [k(i, j)]`` with ``mu(l, l') = [l != l']`` and the kernel::

      k(i, j) = w_bilateral exp(-|p_i - p_j|^2 / (2 theta_alpha^2) - |I_i - I_j|^2 / (2 theta_beta^2))
              + w_spatial   exp(-|p_i - p_j|^2 / (2 theta_gamma^2))

  (p: pixel position, I: RGB colour on the 0..255 scale);
* mean-field inference starting from ``Q = softmax(logits)``::

      Q_i(l) <- softmax_l(-U_i(l) - sum_{l'} mu(l, l') sum_{j != i} k(i, j) Q_j(l'))
              = softmax_l(logits_i(l) + sum_{j != i} k(i, j) Q_j(l))

  (with Potts, ``-sum_{l' != l} m(l') = m(l) - sum_{l'} m(l')`` and the last sum does not depend on
  l, so it cancels in the softmax).

**Local-window approximation.** Here j ranges over the (2r+1) x (2r+1) window around i
(r = `window_radius`), not over the whole image: the message is a sum over the window's offsets of
precomputed per-offset kernel weights (N, K, H, W) times the shifted Q, so memory is
O(N C H W + N K H W) with K = (2r+1)^2 - 1 and time O(iterations K N C H W). The result is exact
for the CRF whose kernel is truncated to the window. The fully connected CRF's bilateral kernel is
wide (DeepLab cross-validated theta_alpha around 50-80 px, the permutohedral lattice making the
whole-image sum affordable), so a small window truncates it heavily: with the default r = 5 the
bilateral term acts as a local edge-aware smoother and the long-range "same colour, same label"
effect of the fully connected model is lost. A window at least as large as the image
(r >= max(H, W) - 1) computes the fully connected CRF exactly, at O(H W) cost per pixel.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DenseCRF"]


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def _non_negative(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _whole(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class DenseCRF(nn.Module):
    """Mean-field inference of a Potts dense CRF over a local window (see the module docstring).

    Args:
        iterations: mean-field iterations (0 returns ``log_softmax(logits)``).
        window_radius: r; neighbours j lie within the (2r+1) x (2r+1) window around i.
        spatial_weight, spatial_sigma: w_spatial and theta_gamma (pixels) of the smoothness kernel.
        bilateral_weight, bilateral_sigma_xy, bilateral_sigma_rgb: w_bilateral, theta_alpha (pixels)
            and theta_beta (colour, on the 0..255 scale) of the appearance kernel.

    Weights may be 0 (that kernel is off); sigmas must be > 0. No learnable parameters: the module
    is differentiable with respect to logits (and images) but is meant for evaluation under
    ``torch.no_grad()``.
    """

    def __init__(self, iterations: int = 5, window_radius: int = 5, spatial_weight: float = 3.0,
                 spatial_sigma: float = 3.0, bilateral_weight: float = 5.0, bilateral_sigma_xy: float = 50.0,
                 bilateral_sigma_rgb: float = 13.0):
        super().__init__()
        self.iterations = _whole("iterations", iterations, 0)
        self.window_radius = _whole("window_radius", window_radius, 1)
        self.spatial_weight = _non_negative("spatial_weight", spatial_weight)
        self.spatial_sigma = _positive("spatial_sigma", spatial_sigma)
        self.bilateral_weight = _non_negative("bilateral_weight", bilateral_weight)
        self.bilateral_sigma_xy = _positive("bilateral_sigma_xy", bilateral_sigma_xy)
        self.bilateral_sigma_rgb = _positive("bilateral_sigma_rgb", bilateral_sigma_rgb)

    def extra_repr(self) -> str:
        return (f"iterations={self.iterations}, window_radius={self.window_radius}, "
                f"spatial_weight={self.spatial_weight}, spatial_sigma={self.spatial_sigma}, "
                f"bilateral_weight={self.bilateral_weight}, bilateral_sigma_xy={self.bilateral_sigma_xy}, "
                f"bilateral_sigma_rgb={self.bilateral_sigma_rgb}")

    def offsets(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (dy, dx) neighbour offsets used for an image of this size: the window without (0, 0),
        clipped to offsets that can land inside the image."""
        ry = min(self.window_radius, height - 1)
        rx = min(self.window_radius, width - 1)
        return [(dy, dx) for dy in range(-ry, ry + 1) for dx in range(-rx, rx + 1) if (dy, dx) != (0, 0)]

    def kernel_weights(self, images: torch.Tensor, valid: torch.Tensor | None = None,
                       dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """k(i, i + d) for every offset d of :meth:`offsets`: (N, K, H, W), zero where i or i + d is
        outside the image or not `valid`; and the offsets."""
        n, _, h, w = images.shape
        offsets = self.offsets(h, w)
        ry = max((abs(dy) for dy, _ in offsets), default=0)
        rx = max((abs(dx) for _, dx in offsets), default=0)
        feats = images.to(dtype)
        mask = torch.ones(n, 1, h, w, dtype=dtype, device=images.device) if valid is None \
            else valid[:, None].to(dtype)
        feats_p = F.pad(feats, (rx, rx, ry, ry))
        mask_p = F.pad(mask, (rx, rx, ry, ry))  # zero outside the image
        inv_rgb = 1.0 / (2.0 * self.bilateral_sigma_rgb ** 2)
        weights = torch.empty(n, len(offsets), h, w, dtype=dtype, device=images.device)
        for k, (dy, dx) in enumerate(offsets):
            ys, xs = ry + dy, rx + dx
            other = feats_p[:, :, ys:ys + h, xs:xs + w]
            d2 = float(dy * dy + dx * dx)
            colour = (feats - other).pow(2).sum(dim=1, keepdim=True)
            kern = self.bilateral_weight * torch.exp(-d2 / (2.0 * self.bilateral_sigma_xy ** 2) - colour * inv_rgb)
            kern = kern + self.spatial_weight * math.exp(-d2 / (2.0 * self.spatial_sigma ** 2))
            weights[:, k:k + 1] = kern * mask * mask_p[:, :, ys:ys + h, xs:xs + w]
        return weights, offsets

    def forward(self, logits: torch.Tensor, images: torch.Tensor,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        """Refine `logits` (N, C, H, W) with `images` (N, 3, H, W, RGB on the 0..255 scale, same size;
        other channel counts work as generic features). `valid` (N, H, W) bool marks real pixels
        (False e.g. on padding): invalid pixels neither send nor receive messages, so they do not
        influence the valid ones and keep ``log_softmax(logits)``.

        Returns the refined log-probabilities (N, C, H, W), ``log Q`` after the last iteration, in
        float32 (float64 if the logits are float64).
        """
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
            raise ValueError(f"logits must be a (N, C, H, W) tensor, got "
                             f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        if not logits.is_floating_point():
            raise ValueError(f"logits must be floating point, got {logits.dtype}")
        n, c, h, w = logits.shape
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] != n \
                or tuple(images.shape[2:]) != (h, w) or images.shape[1] < 1:
            raise ValueError(f"images must be (N, 3, H, W) = ({n}, 3, {h}, {w}) to match the logits, got "
                             f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
        if images.device != logits.device:
            raise ValueError(f"images on {images.device} but logits on {logits.device}")
        if valid is not None:
            if not isinstance(valid, torch.Tensor) or tuple(valid.shape) != (n, h, w):
                raise ValueError(f"valid must be a (N, H, W) = ({n}, {h}, {w}) mask, got "
                                 f"{tuple(valid.shape) if isinstance(valid, torch.Tensor) else type(valid).__name__}")
            if valid.dtype != torch.bool:
                raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}")
            if valid.device != logits.device:
                raise ValueError(f"valid on {valid.device} but logits on {logits.device}")

        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        unary = logits.to(dtype)
        if self.iterations == 0 or n == 0 or h * w <= 1:
            return F.log_softmax(unary, dim=1)
        weights, offsets = self.kernel_weights(images, valid, dtype)
        ry = max(abs(dy) for dy, _ in offsets)
        rx = max(abs(dx) for _, dx in offsets)
        q = F.softmax(unary, dim=1)
        for _ in range(self.iterations):
            q_p = F.pad(q, (rx, rx, ry, ry))
            message = torch.zeros_like(q)
            for k, (dy, dx) in enumerate(offsets):
                ys, xs = ry + dy, rx + dx
                message.addcmul_(weights[:, k:k + 1], q_p[:, :, ys:ys + h, xs:xs + w])
            q = F.softmax(unary + message, dim=1)
        return F.log_softmax(unary + message, dim=1)
