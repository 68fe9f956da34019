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
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from visionzoo.datasets.common import load_rgb
from visionzoo.factory import create_model
from visionzoo.inference.crf import DenseCRF
from visionzoo.inference.draw import draw_detections, draw_top_k, overlay
from visionzoo.inference.preprocess import eval_transform
from visionzoo.inference.sliding_window import predict_logits
from visionzoo.proposals import SelectiveSearch

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
    """An image in any documented form as a PIL RGB image: a path, a PIL image, a uint8 array (H, W) or
    (H, W, 3) (a (3, H, W) array is transposed), or a tensor (3, H, W) or (1, H, W) of uint8 or of floats in
    [0, 1] (an (H, W, 3) tensor is transposed). Anything else (4 channels, an empty image, a batch, another
    dtype) is a ValueError naming the shape and dtype expected and given (see
    visionzoo.datasets.common.load_rgb, the loader the trackers and selective search share)."""
    return Image.fromarray(load_rgb(image))


class Detector:
    """Wraps a detector of the zoo for inference on ordinary images.

    `model` is a registered name (built with `create_model(model, weights=weights)`) or a detection
    nn.Module. Class names come from the weights' model card unless `class_names` (index 0 is the
    background) is given. Detections scoring below `score_threshold` are dropped."""

    def __init__(self, model: str | nn.Module, weights: str | None = None, *, class_names: list[str] | None = None,
                 score_threshold: float = 0.5, device: str | torch.device = "cpu", proposals: Any = None):
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
        pil = load_image(image)
        result = self.predict(pil) if result is None else result
        return draw_detections(pil, result.boxes, result.names, result.scores, result.masks)

    def plot(self, image: ImageInput, result: Detections | None = None, ax=None):
        """A matplotlib figure of `draw(image, result)` (on `ax` when given)."""
        import matplotlib.pyplot as plt  # heavy, and only for plotting: loaded on first use

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
            self.crf = DenseCRF(**(crf if isinstance(crf, dict) else {}))

    @torch.no_grad()
    def predict(self, images: ImageInput | list[ImageInput]) -> Segmentation | list[Segmentation]:
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
        pil = load_image(image)
        result = self.predict(pil) if result is None else result
        return overlay(pil, result.mask.astype(np.uint8), alpha=alpha)


# -------------------------------------------------------------------------------------- classification
@dataclass
class Classification:
    """One image's top-k classes, best first (ties keep the lower class index first, as argmax does)."""

    labels: list[str]  # (k,) class names
    indices: np.ndarray  # (k,) int64 class indices
    scores: np.ndarray  # (k,) float32 softmax probabilities

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def label(self) -> str:
        """The top-1 class name."""
        return self.labels[0]

    @property
    def score(self) -> float:
        """The top-1 probability."""
        return float(self.scores[0])


class Classifier:
    """Wraps a classifier of the zoo for inference on ordinary images: top-k class names and probabilities.

        clf = visionzoo.Classifier("resnet18", weights="shapes", top_k=3)
        r = clf("photo.png")               # a path, PIL image, HWC uint8 array or CHW tensor; a list gives a list
        r.labels, r.scores, r.label        # ['circle', 'star', 'square'], probabilities, 'circle'
        clf.draw("photo.png", r)           # PIL image with the top-k captions

    Preprocessing is the evaluation transform of the weights' model card (resize the shorter side to
    input_size / crop_pct, centre crop input_size, scale to [0, 1], normalise by mean/std), so the
    predictions equal `evaluate`'s; keyword arguments override the card."""

    def __init__(self, model: str | nn.Module, weights: str | None = None, *, class_names: list[str] | None = None,
                 top_k: int = 5, device: str | torch.device = "cpu", input_size: int | None = None,
                 crop_pct: float | None = None, mean=None, std=None, interpolation: str | None = None,
                 batch_size: int = 32):
        if isinstance(model, str):
            model = create_model(model, weights=weights)
        elif weights is not None:
            raise ValueError("weights= is only for a model name; load the weights into the module yourself")
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        if cfg.get("task") not in (None, "classification"):
            wrapper = {"detection": "Detector", "segmentation": "Segmenter", "tracking": "create_tracker"}.get(
                cfg["task"], "create_model")
            raise ValueError(f"{cfg.get('model')!r} is a {cfg['task']} model, not a classifier: use visionzoo.{wrapper}")
        n = cfg.get("num_classes") or 0
        self.class_names = list(class_names or cfg.get("class_names") or [f"class_{k}" for k in range(n)])
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.top_k, self.batch_size = top_k, batch_size
        card_size = cfg.get("input_size") or [3, 224, 224]
        self.input_size = int(input_size or card_size[-1])
        self.crop_pct = float(crop_pct or cfg.get("crop_pct") or (0.875 if cfg.get("source") == "torchvision" else 1.0))
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        self.mean = list(mean or cfg.get("mean") or (0.485, 0.456, 0.406))
        self.std = list(std or cfg.get("std") or (0.229, 0.224, 0.225))
        self.interpolation = interpolation or cfg.get("interpolation") or "bilinear"
        # grey models (digits) take one channel: the model's first convolution says how many it takes
        first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        self.channels = int(first_conv.in_channels) if first_conv is not None else len(self.mean)
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            if self.channels != 1 or mean is not None or std is not None:
                raise ValueError(f"mean {self.mean} and std {self.std} must have one value per input channel of "
                                 f"the model ({self.channels})")
            self.mean, self.std = [sum(self.mean) / len(self.mean)], [sum(self.std) / len(self.std)]
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    def _transform(self):
        return eval_transform(self.input_size, self.crop_pct, self.mean, self.std, self.interpolation)

    @torch.no_grad()
    def predict(self, images: ImageInput | list[ImageInput]) -> Classification | list[Classification]:
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        transform = self._transform()
        grey = self.channels == 1
        k = min(self.top_k, len(self.class_names)) if self.class_names else self.top_k
        results = []
        for start in range(0, len(items), self.batch_size):
            pils = [load_image(im) for im in items[start:start + self.batch_size]]
            batch = torch.stack([transform(p.convert("L") if grey else p) for p in pils]).to(self.device)
            logits = self.model(batch).float()
            probs = torch.softmax(logits, 1)
            order = torch.sort(probs, dim=1, descending=True, stable=True).indices[:, :k]
            for row, idx in zip(probs, order):
                idx = idx.cpu().numpy().astype(np.int64)
                results.append(Classification(
                    labels=[self.class_names[i] if i < len(self.class_names) else str(i) for i in idx],
                    indices=idx, scores=row[idx].cpu().numpy().astype(np.float32)))
        return results[0] if single else results

    __call__ = predict

    def draw(self, image: ImageInput, result: Classification | None = None, min_side: int = 256) -> Image.Image:
        """`image` (enlarged to at least `min_side` px, so the caption is legible) with the top-k captions."""
        pil = load_image(image)
        result = self.predict(pil) if result is None else result
        return draw_top_k(pil, result.labels, result.scores, min_side)
