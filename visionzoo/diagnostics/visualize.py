"""What a trained network looks at: first-layer filters, the feature maps of a chosen layer for one image,
the dataset images that most excite one channel, and saliency maps (Simonyan et al. 2014: the gradient of the
class score with respect to the input pixels, |d score / d x| maxed over colour channels).

Layer outputs are read with forward hooks on named modules (not torch.fx feature extraction): hooks work on
every model of the zoo, including those fx cannot trace (detectors' data-dependent control flow)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from visionzoo.diagnostics.common import find_module
from visionzoo.reports.figures import filter_grid


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise ValueError(f"{type(model).__name__} has no Conv2d layer: no first-layer filters to show")


def first_layer_filters(model: nn.Module) -> tuple[str, np.ndarray, Image.Image]:
    """(layer name, weights (out, in, kh, kw), the filters as one image grid)."""
    name, conv = first_conv(model)
    w = conv.weight.detach().float().cpu()
    return name, w.numpy(), filter_grid(w)


class LayerOutput:
    """Context manager capturing the output of `model`'s sub-module `layer` on each forward pass."""

    def __init__(self, model: nn.Module, layer: str):
        self.module = find_module(model, layer)
        self.layer = layer
        self.output: torch.Tensor | None = None

    def _hook(self, module, inputs, output):
        if isinstance(output, dict):  # e.g. a backbone returning several maps: take the last
            output = list(output.values())[-1]
        if isinstance(output, (tuple, list)):
            output = output[0]
        self.output = output

    def __enter__(self):
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@torch.no_grad()
def feature_maps(model: nn.Module, layer: str, image: torch.Tensor) -> np.ndarray:
    """The (C, H, W) output of `layer` for one preprocessed image (C, H, W) or (1, C, H, W)."""
    x = image if image.ndim == 4 else image[None]
    model.eval()
    with LayerOutput(model, layer) as cap:
        model(x)
    if cap.output is None:
        raise ValueError(f"layer {layer!r} was not called in the forward pass")
    out = cap.output.detach().float().cpu()
    if out.ndim != 4:
        raise ValueError(f"layer {layer!r} outputs shape {tuple(out.shape)}, not (N, C, H, W) feature maps")
    return out[0].numpy()


def _tile(arrays: list[np.ndarray], columns: int, cell: int, pad: int = 2) -> Image.Image:
    """Grey (H, W) arrays in [0, 1] as a grid of `cell`-pixel tiles (nearest-neighbour enlarged)."""
    n = len(arrays)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (cell + pad) + pad, columns * (cell + pad) + pad), 255, np.uint8)
    for i, a in enumerate(arrays):
        img = Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8)).resize((cell, cell), Image.NEAREST)
        r, c = divmod(i, columns)
        canvas[pad + r * (cell + pad):pad + r * (cell + pad) + cell,
               pad + c * (cell + pad):pad + c * (cell + pad) + cell] = np.asarray(img)
    return Image.fromarray(canvas).convert("RGB")


def feature_map_grid(maps: np.ndarray, max_maps: int = 64, cell: int = 48) -> Image.Image:
    """Channels of a (C, H, W) array as a grid, all on one scale (0 = the smallest value of the layer, white =
    its largest), so that strong and weak channels can be compared."""
    maps = maps[:max_maps]
    lo, hi = float(maps.min()), float(maps.max())
    scaled = (maps - lo) / (hi - lo) if hi > lo else np.zeros_like(maps)
    return _tile(list(scaled), columns=int(math.ceil(math.sqrt(len(maps)))), cell=cell)


@dataclass
class TopActivations:
    layer: str
    channel: int
    indices: list[int]  # dataset indices, highest first
    values: list[float]  # the channel's spatial mean activation on each
    images_seen: int


@torch.no_grad()
def top_activating(model: nn.Module, layer: str, channel: int, dataset, *, k: int = 9, max_images: int | None = 500,
                   batch_size: int = 64, device: str | torch.device = "cpu", progress: bool = True) -> TopActivations:
    """The `k` images of `dataset` (items (image tensor, ...)) whose spatial-mean activation of `channel` in
    `layer` is highest, over the first `max_images` images."""
    model.eval()
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    if n == 0:
        raise ValueError("the dataset is empty")
    scores = []
    with LayerOutput(model, layer) as cap:
        for start in tqdm(range(0, n, batch_size), desc=f"top images for {layer}[{channel}]", unit="batch",
                          disable=not progress):
            x = torch.stack([dataset[i][0] for i in range(start, min(n, start + batch_size))]).to(device)
            model(x)
            out = cap.output
            if out is None or out.ndim < 2:
                raise ValueError(f"layer {layer!r} gave no (N, C, ...) output")
            if not 0 <= channel < out.shape[1]:
                raise ValueError(f"channel {channel} is out of range: layer {layer!r} has {out.shape[1]} channels")
            scores.append(out[:, channel].float().flatten(1).mean(1).cpu())
    scores = torch.cat(scores)
    values, order = scores.topk(min(k, n))
    return TopActivations(layer, channel, order.tolist(), values.tolist(), n)


def saliency(model: nn.Module, image: torch.Tensor, target: int | None = None) -> tuple[np.ndarray, int, float]:
    """(|d score / d image| maxed over channels (H, W), the class used, its score) for a classifier and one
    preprocessed image. `target` None: the predicted class."""
    model.eval()
    x = (image if image.ndim == 4 else image[None]).detach().clone().requires_grad_(True)
    logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise ValueError("saliency needs a classifier returning (N, classes) scores; this model returns "
                         f"{type(logits).__name__ if not isinstance(logits, torch.Tensor) else tuple(logits.shape)}")
    cls = int(logits[0].argmax()) if target is None else int(target)
    if not 0 <= cls < logits.shape[1]:
        raise ValueError(f"class {cls} is out of range: the model has {logits.shape[1]} classes")
    logits[0, cls].backward()
    sal = x.grad[0].abs().amax(0).cpu().numpy()
    return sal, cls, float(logits[0, cls].detach())


def heatmap_overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """`heat` (H, W, any scale) as an inferno-coloured overlay on `image` (resized to the heat map), opaque
    in proportion to the heat."""
    h = heat / heat.max() if heat.max() > 0 else heat
    colour = (colormaps["inferno"](h)[..., :3] * 255).astype(np.uint8)
    base = np.asarray(image.convert("RGB").resize(h.shape[::-1], Image.BILINEAR)).astype(np.float32)
    weight = alpha * h[..., None]  # the image shows through where the map is weak
    mixed = (1 - weight) * base + weight * colour
    return Image.fromarray(mixed.clip(0, 255).astype(np.uint8))


def heat_image(heat: np.ndarray) -> Image.Image:
    h = heat / heat.max() if heat.max() > 0 else heat
    return Image.fromarray((colormaps["inferno"](h)[..., :3] * 255).astype(np.uint8))
