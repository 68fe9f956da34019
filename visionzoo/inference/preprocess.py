"""The evaluation transform of classifiers: resize the shorter side to input_size / crop_pct, centre crop
input_size, scale to [0, 1], normalise. One definition, so the Classifier, extract_features and the
classification task's evaluation feed a model identical tensors."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATION", "eval_transform", "preprocess_transform"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = {"nearest": v2.InterpolationMode.NEAREST, "bilinear": v2.InterpolationMode.BILINEAR,
                 "bicubic": v2.InterpolationMode.BICUBIC}


def eval_transform(input_size: int, crop_pct: float, mean: Sequence[float], std: Sequence[float],
                   interpolation: str = "bilinear") -> v2.Compose:
    """PIL image or uint8 tensor -> normalised float (C, input_size, input_size) tensor."""
    interp = INTERPOLATION[interpolation]
    return v2.Compose([v2.ToImage(), v2.Resize(int(round(input_size / crop_pct)), interpolation=interp, antialias=True),
                       v2.CenterCrop(input_size), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def preprocess_transform(meta: dict | None) -> v2.Compose:
    """The evaluation transform for the model card `meta` (a model's `pretrained_cfg`): the same
    transform the classification task evaluates with. Missing entries fall back to the config defaults
    (ImageNet mean/std, bilinear, crop_pct 0.875 without a card; 1.0 only when the card says so)."""
    meta = meta or {}
    size = meta.get("input_size") or (3, 224, 224)
    height, width = int(size[-2]), int(size[-1])
    if height != width:
        raise ValueError(f"preprocess_transform: input_size {list(size)} is not square; pass transform=")
    return eval_transform(height, float(meta.get("crop_pct") or 0.875), list(meta.get("mean") or IMAGENET_MEAN),
                          list(meta.get("std") or IMAGENET_STD), meta.get("interpolation") or "bilinear")
