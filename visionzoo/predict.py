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


IMAGE_FORMS = ("a path, a PIL image, a uint8 array (H, W) or (H, W, 3) [or (3, H, W)], or a tensor (3, H, W) "
               "[or (1, H, W)] of uint8 or of floats in [0, 1]")


def _refuse(what: str, got: str, fix: str = "") -> ValueError:
    return ValueError(f"{what}: expected {IMAGE_FORMS}; got {got}" + (f". {fix}" if fix else ""))


def _channels_last(shape: tuple, prefer_channels_first: bool) -> bool | None:
    """Where the channel axis of a 3-D image is: True for (H, W, C), False for (C, H, W), None when neither
    end holds 1, 3 or 4 channels. When both could, the convention of the type decides (arrays HWC,
    tensors CHW)."""
    first, last = shape[0] in (1, 3, 4), shape[2] in (1, 3, 4)
    if first and last:
        return not prefer_channels_first
    return True if last else (False if first else None)


def _to_uint8_hwc(values: np.ndarray, shape_text: str, dtype_text: str, channels_first: bool) -> np.ndarray:
    """A 2-D or 3-D array (HWC, or CHW when `channels_first`) of uint8 or floats in [0, 1] as uint8 (H, W, 3)."""
    what = "image"
    got = f"{dtype_text} and shape {shape_text}"
    if values.ndim == 4:
        raise _refuse(what, got, "That is a batch: pass a list of images (list(batch)) instead")
    if values.ndim not in (2, 3):
        raise _refuse(what, got)
    if values.ndim == 3 and channels_first:
        values = np.moveaxis(values, 0, -1)
    if values.ndim == 3 and values.shape[2] not in (1, 3):
        fix = ("4 channels (RGBA or CMYK) are not taken as is: drop the alpha channel (image[..., :3]) or convert "
               "with PIL's image.convert('RGB')") if values.shape[2] == 4 else ""
        raise _refuse(what, got, fix)
    if values.shape[0] == 0 or values.shape[1] == 0:
        raise _refuse(what, f"an empty image ({got})")
    if values.dtype == np.uint8:
        out = values
    elif values.dtype.kind == "f":
        if not np.isfinite(values).all():
            raise _refuse(what, f"{got} holding NaN or infinite values")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0 or hi > 1:
            raise _refuse(what, f"{got} with values {lo:.3g}..{hi:.3g}",
                          "Float images must hold values in [0, 1]; pass uint8 for 0..255")
        out = np.round(values * 255).astype(np.uint8)
    else:
        raise _refuse(what, got, "Convert to uint8 (0..255) or to floats in [0, 1]")
    if out.ndim == 2:
        out = out[:, :, None]
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def load_image(image: ImageInput) -> Image.Image:
    """An image in any documented form as a PIL RGB image: a path, a PIL image, a uint8 array (H, W) or
    (H, W, 3) (a (3, H, W) array is transposed), or a tensor (3, H, W) or (1, H, W) of uint8 or of floats in
    [0, 1] (an (H, W, 3) tensor is transposed). Anything else (4 channels, an empty image, a batch, another
    dtype) is a ValueError naming the shape and dtype expected and given."""
    if isinstance(image, (str, os.PathLike)):
        from visionzoo.datasets.common import open_image_rgb

        path = Path(image)
        if path.is_dir():
            raise ValueError(f"{path} is a folder, not an image file: pass its files, e.g. "
                             f"sorted(Path({str(path)!r}).glob('*.jpg'))")
        pil = open_image_rgb(path)
        if pil.width == 0 or pil.height == 0:
            raise _refuse("image", f"an empty image ({path})")
        return pil
    if isinstance(image, Image.Image):
        if image.width == 0 or image.height == 0:
            raise _refuse("image", f"an empty PIL image of size {image.size}")
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        shape = tuple(t.shape)
        dtype_text = str(t.dtype).replace("torch.", "")
        if not (t.dtype == torch.uint8 or t.is_floating_point()):
            raise _refuse("image", f"a tensor of dtype {dtype_text} and shape {shape}",
                          "Convert to uint8 (0..255) or to floats in [0, 1]")
        channels_first = t.ndim == 3 and not _channels_last(shape, prefer_channels_first=True)
        values = t.numpy() if t.dtype in (torch.uint8, torch.float32, torch.float64) else t.float().numpy()
        return Image.fromarray(_to_uint8_hwc(values, str(shape), f"a tensor of dtype {dtype_text}", channels_first))
    if isinstance(image, np.ndarray):
        channels_first = image.ndim == 3 and _channels_last(image.shape, prefer_channels_first=False) is False
        return Image.fromarray(_to_uint8_hwc(image, str(image.shape), f"an array of dtype {image.dtype}",
                                             channels_first))
    raise TypeError(f"image: expected {IMAGE_FORMS}; got {type(image).__name__}")


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
        from visionzoo.factory import create_model

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
        from torchvision.transforms import v2

        interp = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR,
                  "bicubic": v2.InterpolationMode.BICUBIC}[self.interpolation]
        return v2.Compose([v2.ToImage(), v2.Resize(int(round(self.input_size / self.crop_pct)), interpolation=interp,
                                                   antialias=True),
                           v2.CenterCrop(self.input_size), v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(self.mean, self.std)])

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
        from PIL import ImageDraw

        pil = load_image(image)
        result = self.predict(pil) if result is None else result
        scale = max(1.0, min_side / max(1, min(pil.size)))
        if scale > 1:
            pil = pil.resize((round(pil.width * scale), round(pil.height * scale)), Image.NEAREST)
        draw = ImageDraw.Draw(pil)
        lines = [f"{name} {score:.2f}" for name, score in zip(result.labels, result.scores)]
        height = 12 * len(lines) + 4
        draw.rectangle([0, 0, pil.width, height], fill=(0, 0, 0))
        for i, line in enumerate(lines):
            draw.text((3, 2 + 12 * i), line, fill=(255, 255, 0) if i == 0 else (255, 255, 255))
        return pil
