"""Image features from any classifier or backbone of the zoo, for image search and other downstream uses.

    feats = visionzoo.extract_features("resnet18", images, weights="shapes")      # (N, 512), L2-normalised
    feats = visionzoo.extract_features(model, images, layer="layer3", pool="gem")  # (N, 256)
    visionzoo.features.layer_names(model)                                          # the valid `layer` values

Layers are node names of torchvision's FX feature extraction (`get_graph_node_names` /
`create_feature_extractor`), e.g. "layer3" (the last node of that block), "layer4.1.relu_1", "flatten",
"features.28", "classifier.4". The default is the model's pooled penultimate features: the input of the
final Linear layer of a classifier, or the deepest output of a backbone.

Models whose full forward cannot be traced or that take more than images (detectors, segmenters,
trackers) are read through their backbone: the first of `model.backbone.body`, `model.trunk`,
`model.backbone` that traces; their layer names then start with that path (e.g. "backbone.body.layer3").

Preprocessing comes from the weights' model card (`model.pretrained_cfg`): the classification task's
evaluation transform (resize to input_size / crop_pct, centre crop, scale to [0, 1], normalise by the
card's mean/std; visionzoo.inference.preprocess). It is applied to paths, PIL images, numpy arrays, lists
of those and uint8 tensors. Float tensors (and float batches from a DataLoader or Dataset) are taken as
model input, already preprocessed, as the datasets of this package yield them.
"""
from __future__ import annotations

import difflib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models.feature_extraction import (
    NodePathTracer,
    _set_default_tracer_kwargs,
    create_feature_extractor,
)
from tqdm.auto import tqdm

from visionzoo.factory import create_model
from visionzoo.inference.preprocess import preprocess_transform
from visionzoo.predict import load_image

__all__ = ["POOLING", "LayerFeatures", "extract_features", "layer_names", "preprocess_transform"]

POOLING = ("avg", "max", "gem", None)
# Sub-modules read for models that cannot be traced whole or take more than images, in order of preference.
BACKBONE_PATHS = ("backbone.body", "trunk", "backbone")

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]


# ---------------------------------------------------------------------------------------------- tracing
def _trace(module: nn.Module):
    """(ordered node names, default layer) of `module` in eval mode.

    The node names are exactly `get_graph_node_names(module)[1]`; the tracer is torchvision's own
    (NodePathTracer with its default leaf modules), used here because the default layer needs the graph
    itself: the node feeding the final Linear layer, which the list of names alone does not tell."""
    was_training = module.training
    try:
        tracer = NodePathTracer(**_set_default_tracer_kwargs(None))
        graph = tracer.trace(module.eval())
    finally:
        module.train(was_training)
    qualname = tracer.node_to_qualname
    names = list(qualname.values())
    output = next(n for n in graph.nodes if n.op == "output")
    produced: list = []

    def collect(arg):
        if isinstance(arg, torch.fx.Node):
            produced.append(arg)
        elif isinstance(arg, (tuple, list)):
            for a in arg:
                collect(a)
        elif isinstance(arg, dict):
            for a in arg.values():
                collect(a)

    collect(output.args[0])
    order = {node: i for i, node in enumerate(graph.nodes)}
    produced = [n for n in produced if n in qualname]
    if not produced:
        raise ValueError(f"{type(module).__name__}: its traced output holds no computed node")
    last = max(produced, key=order.__getitem__)  # a backbone returning several maps: the deepest
    if last.op == "call_module" and isinstance(module.get_submodule(last.target), nn.Linear):
        inputs = [a for a in last.args if isinstance(a, torch.fx.Node) and a in qualname]
        if inputs:
            last = inputs[0]  # a classifier: the input of its final Linear layer (the penultimate features)
    return names, qualname[last]


def _feature_module(model: nn.Module) -> tuple[nn.Module, str, list[str], str]:
    """(module to trace, its path in `model` ("" for the model itself), node names, default layer)."""
    task = (getattr(model, "pretrained_cfg", None) or {}).get("task")
    error = None
    if task in (None, "classification"):
        try:
            return (model, "", *_trace(model))
        except Exception as e:  # FX raises many types; the backbone paths below are the fallback
            error = e
    for path in BACKBONE_PATHS:
        try:
            sub = model.get_submodule(path)
        except AttributeError:
            continue
        try:
            names, default = _trace(sub)
        except Exception as e:
            error = error or e
            continue
        return sub, path, names, default
    why = f" (tracing failed: {type(error).__name__}: {str(error).splitlines()[0][:200]})" if error else ""
    raise ValueError(f"cannot extract features from {type(model).__name__}: it cannot be traced with torch.fx "
                     f"and has none of the sub-modules {', '.join(BACKBONE_PATHS)}{why}; pass a traceable "
                     "sub-module that takes an image batch (e.g. model.backbone)")


def _prefixed(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def layer_names(model: nn.Module | str, **create_kwargs) -> list[str]:
    """The valid `layer` values of `model` (a module or a registered name), in execution order."""
    module, path, names, _ = _feature_module(_as_module(model, create_kwargs))
    return [_prefixed(path, n) for n in names]


def _check_layer(layer: str, path: str, names: list[str], model_name: str) -> str:
    """`layer` relative to the traced module; a bad name is a ValueError listing the closest valid ones."""
    relative = layer[len(path) + 1:] if path and layer.startswith(path + ".") else layer
    if relative in names or any(n.startswith(relative + ".") for n in names):
        return relative  # a node, or a module prefix (torchvision then takes the module's last node)
    full = [_prefixed(path, n) for n in names]
    blocks = sorted({_prefixed(path, n.split(".")[0]) for n in names if "." in n})
    candidates = full + [b for b in blocks if b not in full]
    close = difflib.get_close_matches(layer, candidates, n=6, cutoff=0.4)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise ValueError(f"layer {layer!r} is not a node of {model_name}.{hint} Module blocks: {', '.join(blocks)}; "
                     f"{len(full)} nodes from {full[0]!r} to {full[-1]!r} "
                     "(visionzoo.features.layer_names(model) lists them all).")


# ---------------------------------------------------------------------------------------- the extractor
class LayerFeatures(nn.Module):
    """One layer of `model` as (B, D) feature vectors: the layer's output pooled over its spatial
    positions (`pool`), flattened, and L2-normalised (`normalize`).

    pool: "avg" (global average), "max" (global max), "gem" (generalised mean, (mean x^p)^(1/p) with
    p = `gem_p` over values clamped to >= 1e-6, Radenovic et al. 2018), or None (no pooling: the whole
    map flattened, C*H*W values). Outputs that already are vectors (B, D), like the default penultimate
    features, are left as they are with "avg" or None; "max" and "gem" need a feature map and refuse them.
    The input is a model-ready float batch (B, 3, H, W); see `preprocess` for raw images."""

    def __init__(self, model: nn.Module, layer: str | None = None, pool: str | None = "avg",
                 normalize: bool = True, gem_p: float = 3.0):
        super().__init__()
        if pool not in POOLING:
            raise ValueError(f"pool must be one of {', '.join(map(repr, POOLING))}, got {pool!r}")
        if pool == "gem" and not float(gem_p) > 0:
            raise ValueError(f"gem_p must be > 0, got {gem_p!r}")
        cfg = getattr(model, "pretrained_cfg", None) or {}
        model_name = cfg.get("model") or type(model).__name__
        module, path, names, default = _feature_module(model)
        relative = default if layer is None else _check_layer(str(layer), path, names, model_name)
        self.extractor = create_feature_extractor(module, return_nodes={relative: "features"},
                                                  suppress_diff_warning=True).eval()
        self.layer = _prefixed(path, relative)
        self.module_path = path
        self.model_name = model_name
        self.pool = pool
        self.gem_p = float(gem_p)
        self.normalize = bool(normalize)
        self.meta = dict(cfg)
        self.preprocess = preprocess_transform(cfg)

    def train(self, mode: bool = True):
        # BatchNorm statistics and dropout stay in inference mode while extracting features.
        return super().train(False)

    def describe(self) -> dict:
        """What the features are, for reports and metrics files."""
        return {"model": self.model_name, "layer": self.layer, "pool": self.pool,
                "gem_p": self.gem_p if self.pool == "gem" else None, "normalize": self.normalize,
                "weights": self.meta.get("file")}

    def pool_map(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim <= 2:
            if self.pool in ("max", "gem"):  # would silently be a no-op: the model has pooled already
                raise ValueError(f"layer {self.layer!r} of {self.model_name} gives vectors {tuple(x.shape)}; "
                                 f"pool={self.pool!r} needs a feature map: choose a convolutional layer "
                                 "(e.g. the last block, 'layer4' for a ResNet)")
            return x.reshape(x.shape[0], -1)
        if self.pool is None:
            return x.flatten(1)
        x = x.flatten(2)  # (B, C, positions)
        if self.pool == "avg":
            return x.mean(2)
        if self.pool == "max":
            return x.amax(2)
        return x.clamp(min=1e-6).pow(self.gem_p).mean(2).pow(1.0 / self.gem_p)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.extractor(images)["features"]
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer {self.layer!r} of {self.model_name} gives a {type(out).__name__}, not a "
                             "tensor; choose a node inside it (visionzoo.features.layer_names lists them)")
        features = self.pool_map(out).float()
        return F.normalize(features, dim=1) if self.normalize else features


# ---------------------------------------------------------------------------------------- inputs
def _as_module(model, create_kwargs: dict) -> nn.Module:
    if isinstance(model, str):
        return create_model(model, **create_kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module or a registered model name, got {type(model).__name__}")
    if create_kwargs.get("weights") is not None:
        raise ValueError("weights= is only for a model name; load the weights into the module yourself")
    return model


class _Preprocessed(Dataset):
    """Dataset items as model-ready tensors: (image, label, ...) tuples give their image; raw images are
    preprocessed, float tensors pass through."""

    def __init__(self, items, transform: Callable):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return _to_model_input(self.items[index], self.transform)


def _to_model_input(item, transform: Callable) -> torch.Tensor:
    if isinstance(item, (tuple, list)):
        item = item[0]  # (image, label) from a dataset
    if isinstance(item, torch.Tensor) and item.is_floating_point():
        if item.ndim != 3:
            raise ValueError(f"expected a (C, H, W) image tensor, got shape {tuple(item.shape)}")
        return item
    if isinstance(item, torch.Tensor) and item.dtype == torch.uint8:
        return transform(item if item.ndim == 3 else item[None])
    return transform(load_image(item))


def _loader_images(batch):
    """The images of one DataLoader batch: the batch itself, the first entry of (images, labels), or of this
    package's engine loaders' ((images, labels), skipped, indices); None when every sample was skipped."""
    while isinstance(batch, (tuple, list)) and batch and (
            batch[0] is None or isinstance(batch[0], (tuple, list))
            or (isinstance(batch[0], torch.Tensor) and batch[0].ndim == 4)):
        batch = batch[0]
    return batch


def _batches(images, transform: Callable, batch_size: int, num_workers: int) -> tuple[Iterable, int | None]:
    """(iterable of model-ready batches, number of batches when known)."""
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray)):
        images = [images]
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"expected an image batch (B, C, H, W), got a tensor of shape {tuple(images.shape)}")
        if images.is_floating_point():
            return images.split(batch_size), -(-images.shape[0] // batch_size)
        if images.dtype != torch.uint8:
            raise TypeError(f"image tensors must be float (preprocessed) or uint8 (raw), got {images.dtype}")
        images = list(images)
    if isinstance(images, DataLoader):
        def loader_batches():
            for batch in images:
                batch = _loader_images(batch)
                if batch is None:
                    continue
                if isinstance(batch, torch.Tensor) and batch.is_floating_point():
                    yield batch
                else:  # uint8 batches, or raw images collated into a list
                    yield torch.stack([_to_model_input(b, transform) for b in batch])
        return loader_batches(), len(images)
    if isinstance(images, (list, tuple, Dataset)):
        loader = DataLoader(_Preprocessed(images, transform), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers)
        return loader, len(loader)
    raise TypeError("images must be a path, PIL image, numpy array, tensor batch, a list of those, a Dataset or a "
                    f"DataLoader; got {type(images).__name__}")


def extract_features(
    model: nn.Module | str,
    images: ImageLike | list | Dataset | DataLoader,
    layer: str | None = None,
    pool: str | None = "avg",
    normalize: bool = True,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    *,
    weights: str | Path | None = None,
    transform: Callable | None = None,
    gem_p: float = 3.0,
    num_workers: int = 0,
    progress: bool = True,
) -> torch.Tensor:
    """(N, D) float32 CPU features of `images`, one row per image, L2-normalised unless `normalize` is False.

    model: an nn.Module, or a registered name built with `create_model(model, weights=weights)`.
    images: a path, PIL image, HWC uint8 array, or a list of those; a (B, C, H, W) tensor (float: already
        preprocessed; uint8: raw); a Dataset (items: images or (image, label) tuples); or a DataLoader.
    layer: a node name (see `layer_names`); None for the pooled penultimate features.
    pool: "avg", "max", "gem" or None (see `LayerFeatures`).
    transform: replaces the model card's preprocessing for raw images (PIL image -> model-ready tensor).
    device: where the model runs (default: where its parameters are; the model is moved there). The model
        is left in the train/eval mode it came in."""
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    module = _as_module(model, {"weights": weights})
    was_training = module.training
    if device is None:
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
    device = torch.device(device)
    try:
        features_of = LayerFeatures(module.to(device), layer=layer, pool=pool, normalize=normalize, gem_p=gem_p)
        batches, total = _batches(images, transform or features_of.preprocess, int(batch_size), num_workers)
        out = [features_of(batch.to(device)).cpu()
               for batch in tqdm(batches, total=total, desc=f"features {features_of.layer}", leave=False,
                                 dynamic_ncols=True, disable=not progress)]
    finally:
        module.train(was_training)
    if not out:
        raise ValueError("extract_features: no images were given")
    return torch.cat(out)
