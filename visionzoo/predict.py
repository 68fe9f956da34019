"""Detection and segmentation in a notebook: images in, boxes or class masks in the images' own pixels out.

    det = visionzoo.Detector("mask_rcnn_resnet18_fpn", weights="shapes")
    result = det("photo.png")                 # a path, PIL image, HWC uint8 array or CHW tensor
    result.boxes, result.names, result.scores, result.masks
    det.draw("photo.png", result)             # PIL image with boxes, captions and masks
    det.plot("photo.png", result)             # matplotlib figure

A list of images gives a list of results. Fast R-CNN models get their proposals from selective search
(the mode of the config they were trained with), computed on the fly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


@dataclass
class Detections:
    """One image's detections, in that image's pixel coordinates, best first."""

    boxes: np.ndarray  # (N, 4) float32 XYXY
    labels: np.ndarray  # (N,) int64, 1..K
    names: list[str]  # (N,) class names
    scores: np.ndarray  # (N,) float32
    masks: np.ndarray | None  # (N, H, W) bool, for mask models
    image_size: tuple[int, int]  # (H, W)

    def __len__(self) -> int:
        return len(self.scores)


def load_image(image: ImageInput) -> Image.Image:
    """A path, PIL image, HWC uint8 array or CHW tensor (uint8, or float in [0, 1]) as a PIL RGB image."""
    if isinstance(image, (str, os.PathLike)):
        from visionzoo.datasets.common import open_image_rgb

        return open_image_rgb(Path(image))
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise ValueError(f"image tensor must be (C, H, W) with C = 1 or 3, got shape {tuple(t.shape)}")
        if t.is_floating_point():
            if t.numel() and (t.min() < 0 or t.max() > 1):
                raise ValueError("float image tensors must hold values in [0, 1] (got "
                                 f"{float(t.min()):.3g}..{float(t.max()):.3g}); pass uint8 for 0..255")
            t = (t * 255).round().to(torch.uint8)
        return Image.fromarray(t.expand(3, -1, -1).permute(1, 2, 0).numpy())
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"image arrays must be uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
        return Image.fromarray(image).convert("RGB")
    raise TypeError(f"expected a path, PIL image, numpy array or tensor, got {type(image).__name__}")


class Detector:
    """Wraps a detector of the zoo for inference on ordinary images.

    `model` is a registered name (built with `create_model(model, weights=weights)`) or a detection
    nn.Module. Class names come from the weights' model card unless `class_names` (index 0 is the
    background) is given. Detections scoring below `score_threshold` are dropped."""

    def __init__(self, model: str | nn.Module, weights: str | None = None, *, class_names: list[str] | None = None,
                 score_threshold: float = 0.5, device: str | torch.device = "cpu", proposals: Any = None):
        from visionzoo.factory import create_model

        if isinstance(model, str):
            model = create_model(model, weights=weights)
        elif weights is not None:
            raise ValueError("weights= is only for a model name; load the weights into the module yourself")
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        names = class_names or cfg.get("class_names")
        if names is None:
            n = (cfg.get("num_classes") or 0)
            names = ["__background__"] + [f"class_{k}" for k in range(1, n)]
        self.class_names = list(names)
        if not 0 <= score_threshold <= 1:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        self.score_threshold = float(score_threshold)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.needs_proposals = bool(getattr(model, "needs_proposals", False))
        self.proposals = proposals
        self.proposal_top_k = 1000
        if self.needs_proposals and self.proposals is None:
            from visionzoo.proposals import SelectiveSearch

            params = ((cfg.get("config") or {}).get("data") or {}).get("params") or {}
            self.proposals = SelectiveSearch(**params.get("selective_search", {"mode": "fast"}))
            self.proposal_top_k = int(params.get("proposal_top_k_test", 1000))

    def _name(self, label: int) -> str:
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)

    @torch.no_grad()
    def predict(self, images: ImageInput | list[ImageInput]) -> Detections | list[Detections]:
        single = not isinstance(images, (list, tuple))
        pils = [load_image(im) for im in ([images] if single else images)]
        tensors = [torch.from_numpy(np.asarray(p, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
                   .to(self.device) for p in pils]
        if self.needs_proposals:
            props = [torch.as_tensor(np.asarray(self.proposals.get(-1, "", p), np.float32).reshape(-1, 4)
                                     [: self.proposal_top_k], device=self.device) for p in pils]
            outputs = self.model(tensors, proposals=props)
        else:
            outputs = self.model(tensors)
        results = []
        for pil, out in zip(pils, outputs):
            keep = out["scores"] >= self.score_threshold
            labels = out["labels"][keep].cpu().numpy().astype(np.int64)
            masks = None
            if "masks" in out:
                masks = (out["masks"][keep][:, 0] >= 0.5).cpu().numpy()
            results.append(Detections(
                boxes=out["boxes"][keep].float().cpu().numpy(), labels=labels,
                names=[self._name(int(k)) for k in labels], scores=out["scores"][keep].float().cpu().numpy(),
                masks=masks, image_size=(pil.height, pil.width)))
        return results[0] if single else results

    __call__ = predict

    def draw(self, image: ImageInput, result: Detections | None = None) -> Image.Image:
        """`image` with the detections drawn (computed when `result` is None)."""
        from visionzoo.tasks.detection.report import draw_detections

        pil = load_image(image)
        result = self.predict(pil) if result is None else result
        return draw_detections(pil, result.boxes, result.names, result.scores, result.masks)

    def plot(self, image: ImageInput, result: Detections | None = None, ax=None):
        """A matplotlib figure of `draw(image, result)` (on `ax` when given)."""
        import matplotlib.pyplot as plt

        drawn = self.draw(image, result)
        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 6 * drawn.height / max(drawn.width, 1)))
        else:
            fig = ax.figure
        ax.imshow(drawn)
        ax.set_axis_off()
        return fig


# ---------------------------------------------------------------------------------------- segmentation
@dataclass
class Segmentation:
    """One image's semantic segmentation, at that image's own size."""

    mask: np.ndarray  # (H, W) int64 class indices
    probabilities: np.ndarray  # (C, H, W) float32, after the CRF when it was applied
    class_names: list[str]

    def present(self) -> dict[str, int]:
        """Pixels per predicted class, for the classes that occur."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.class_names))
        return {self.class_names[k] if k < len(self.class_names) else str(k): int(c)
                for k, c in enumerate(counts) if c}


class Segmenter:
    """Wraps a segmentation model of the zoo for inference on ordinary images of any size.

        seg = visionzoo.Segmenter("fcn4s_resnet18", weights="shapes", crf=True)
        result = seg("photo.png")        # result.mask (H, W), result.probabilities, result.present()
        seg.overlay("photo.png", result)  # PIL image with the class colours blended in

    Normalisation and class names come from the weights' model card. `window` runs sliding-window
    inference (tiles of that side, `overlap` between neighbours) on images larger than the window;
    `crf` refines with DenseCRF (True for its defaults, or a dict of its keyword arguments)."""

    def __init__(self, model: str | nn.Module, weights: str | None = None, *, class_names: list[str] | None = None,
                 device: str | torch.device = "cpu", crf: bool | dict = False, window: int | None = None,
                 overlap: float = 1 / 3, mean=None, std=None):
        from visionzoo.factory import create_model

        if isinstance(model, str):
            model = create_model(model, weights=weights)
        elif weights is not None:
            raise ValueError("weights= is only for a model name; load the weights into the module yourself")
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        n = cfg.get("num_classes") or 0
        self.class_names = list(class_names or cfg.get("class_names") or [f"class_{k}" for k in range(n)])
        self.mean = list(mean or cfg.get("mean") or (0.485, 0.456, 0.406))
        self.std = list(std or cfg.get("std") or (0.229, 0.224, 0.225))
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.window, self.overlap = window, overlap
        self.crf = None
        if crf:
            from visionzoo.tasks.segmentation.crf import DenseCRF

            self.crf = DenseCRF(**(crf if isinstance(crf, dict) else {}))

    @torch.no_grad()
    def predict(self, images: ImageInput | list[ImageInput]) -> Segmentation | list[Segmentation]:
        from visionzoo.tasks.segmentation.inference import predict_logits

        single = not isinstance(images, (list, tuple))
        results = []
        for pil in (load_image(im) for im in ([images] if single else images)):
            rgb = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1)[None].float().to(self.device)
            mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
            logits = predict_logits(self.model, (rgb / 255 - mean) / std, window=self.window,
                                    overlap=self.overlap).float()
            log_probs = self.crf(logits, rgb) if self.crf is not None else torch.log_softmax(logits, 1)
            probs = log_probs.exp()[0]
            results.append(Segmentation(mask=probs.argmax(0).cpu().numpy().astype(np.int64),
                                        probabilities=probs.cpu().numpy(), class_names=self.class_names))
        return results[0] if single else results

    __call__ = predict

    def overlay(self, image: ImageInput, result: Segmentation | None = None, alpha: float = 0.55) -> Image.Image:
        """`image` with the predicted classes' colours blended in (computed when `result` is None)."""
        from visionzoo.tasks.segmentation.report import overlay

        pil = load_image(image)
        result = self.predict(pil) if result is None else result
        return overlay(pil, result.mask.astype(np.uint8), alpha=alpha)
