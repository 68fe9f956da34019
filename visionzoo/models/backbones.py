"""Detector backbones that start from a classifier of this zoo.

`backbone_weights` is anything `create_model(classifier, weights=...)` accepts for the backbone's
classifier (a shipped tag such as "shapes", a file path, or "torchvision:IMAGENET1K_V1"); the
classifier's head (fc / classifier layers) is dropped and every other tensor must fit.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from visionzoo.registry import get_entry
from visionzoo.weights import WeightsError, read_state_dict, resolve_weights, strip_prefixes, verify_sha256

NORMS = ("frozen_bn", "bn", "gn")


def group_norm(num_channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with 32 groups (Wu and He 2018), or the most groups up to 32 that divide `num_channels`."""
    groups = next(g for g in range(min(max_groups, num_channels), 0, -1) if num_channels % g == 0)
    return nn.GroupNorm(groups, num_channels)


def norm_layer(norm: str):
    """The normalisation layer for `norm` as a callable of the channel count: "frozen_bn" (FrozenBatchNorm2d: the
    statistics and affine terms of a pretrained backbone, fixed), "bn" (BatchNorm2d, trained; needs sizeable
    batches) or "gn" (GroupNorm(32): independent of the batch, so it trains from random initialisation with the
    small batches of detection, as in "Rethinking ImageNet Pre-training", He, Girshick and Dollar 2019)."""
    layers = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d, "gn": group_norm}
    if norm not in layers:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return layers[norm]


def classifier_state_dict(classifier: str, weights: str) -> dict[str, torch.Tensor]:
    """The state dict of the registered classifier `classifier` for `weights`, found by the usual lookup."""
    entry = get_entry(classifier)
    resolved = resolve_weights(classifier, weights, entry.torchvision_name)
    verify_sha256(resolved)
    return strip_prefixes(read_state_dict(resolved.path))


def load_backbone_weights(body: nn.Module, classifier: str, weights: str, drop_prefixes: tuple[str, ...]) -> None:
    """Load a classifier's weights into `body` (the classifier's module tree without its head).

    Keys starting with `drop_prefixes` (the head) are ignored; every tensor of `body` must be present with
    the same shape, else a WeightsError lists what does not fit."""
    state = {k: v for k, v in classifier_state_dict(classifier, weights).items()
             if not k.startswith(drop_prefixes) and not k.endswith("num_batches_tracked")}
    own = {k: v for k, v in body.state_dict().items()
           if not k.startswith(drop_prefixes) and not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    if missing or mismatched or unexpected:
        lines = [f"backbone weights {classifier}:{weights} do not fit the detector's backbone:"]
        lines += [f"  missing from the file: {k}" for k in missing[:10]]
        lines += [f"  shape mismatch: {k}: file {tuple(state[k].shape)} vs backbone {tuple(own[k].shape)}"
                  for k in mismatched[:10]]
        lines += [f"  unexpected in the file: {k}" for k in unexpected[:10]]
        raise WeightsError("\n".join(lines))
    body.load_state_dict(state, strict=False)  # not strict: the head and BN's num_batches_tracked are left out


def freeze_resnet_stages(body: nn.Module, trainable_layers: int) -> None:
    """Train only the last `trainable_layers` of (layer4, layer3, layer2, layer1, conv1) of a ResNet body
    (torchvision's `trainable_backbone_layers`); 5 also trains the stem's BatchNorm."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    trained = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trained.append("bn1")
    for name, parameter in body.named_parameters():
        if not name.startswith(tuple(trained)):
            parameter.requires_grad_(False)
