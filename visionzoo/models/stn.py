"""Spatial transformer networks (Jaderberg et al., "Spatial Transformer Networks", NIPS 2015).

A spatial transformer is three parts: a localisation network that regresses the 6 parameters theta of an
affine map from the image, a grid generator that maps every output pixel to a sampling position in the input
(``F.affine_grid``), and a bilinear sampler (``F.grid_sample``); all of it is differentiable, so the
localisation net learns from the classifier's loss alone. The last layer of the localisation net starts at
zero weights and the identity's bias, so training starts from the untransformed image (the paper's recipe).

Any classifier of the zoo gets one in front through its config::

    model:
      name: resnet18
      kwargs:
        stn: {enabled: true, channels: [16, 32], hidden: 64}

which ``create_model`` turns into ``SpatialTransformerClassifier(classifier, SpatialTransformer(...))``
(see visionzoo/factory.py); the keywords travel in the model card, so weights rebuild the wrapped model.

Coordinates: ``affine_grid`` works in normalised coordinates, x and y in [-1, 1] across the image with
``align_corners=False`` (the corners of the border pixels); theta maps an OUTPUT position to the INPUT
position it samples, so theta = [[s, 0, tx], [0, s, ty]] with s < 1 zooms in.
"""
from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LocalisationNet", "SpatialTransformer", "SpatialTransformerClassifier", "build_stn",
           "stn_options", "IDENTITY_THETA"]

IDENTITY_THETA = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
PADDING_MODES = ("zeros", "border", "reflection")
STN_DEFAULTS = {
    "enabled": True,
    "in_channels": 3,
    "channels": [16, 32, 32],  # localisation conv widths; each block halves the resolution
    "hidden": 64,  # width of the hidden fully connected layer
    "pool_size": 4,  # the conv features are average-pooled to pool_size x pool_size before the fc layers
    "output_size": None,  # side of the transformed image; None keeps the input's size
    "padding_mode": "zeros",  # what is sampled outside the input: zeros (the normalised mean), border, ...
}


class LocalisationNet(nn.Module):
    """Small conv net + two fully connected layers regressing the 6 affine parameters.

    The paper's localisation nets for distorted MNIST are two conv + max-pool layers and fc layers; this
    one uses conv-BN-ReLU blocks of stride 2 and an adaptive average pool, so it takes any input size.
    """

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 32), hidden: int = 64,
                 pool_size: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(c_in * pool_size * pool_size, hidden), nn.ReLU(inplace=True))
        self.theta = nn.Linear(hidden, 6)
        self.reset_to_identity()

    def reset_to_identity(self) -> None:
        """Zero weights and the identity's bias: every image maps to the identity transform."""
        nn.init.zeros_(self.theta.weight)
        with torch.no_grad():
            self.theta.bias.copy_(torch.tensor(IDENTITY_THETA))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images -> (N, 2, 3) affine matrices."""
        return self.theta(self.fc(self.pool(self.features(x)))).view(-1, 2, 3)


class SpatialTransformer(nn.Module):
    """Images in, transformed images out: theta = localisation(x), grid = affine_grid(theta), sample x."""

    def __init__(self, in_channels: int = 3, channels: Sequence[int] = (16, 32, 32), hidden: int = 64,
                 pool_size: int = 4, output_size: int | None = None, padding_mode: str = "zeros"):
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"stn padding_mode must be one of {', '.join(PADDING_MODES)}, got {padding_mode!r}")
        if output_size is not None and (not isinstance(output_size, int) or output_size < 1):
            raise ValueError(f"stn output_size must be a positive integer or null, got {output_size!r}")
        self.localisation = LocalisationNet(in_channels, channels, hidden, pool_size)
        self.output_size = output_size
        self.padding_mode = padding_mode

    def transform(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """Sample ``x`` (N, C, H, W) through the affine maps ``theta`` (N, 2, 3)."""
        n, c, h, w = x.shape
        size = (n, c, h, w) if self.output_size is None else (n, c, self.output_size, self.output_size)
        # affine_grid/grid_sample need theta in the images' dtype (bf16/fp16 under autocast included).
        grid = F.affine_grid(theta.to(x.dtype), list(size), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False)

    def forward_with_theta(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.localisation(x)
        return self.transform(x, theta), theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_theta(x)[0]


class SpatialTransformerClassifier(nn.Module):
    """``classifier(stn(x))``: any image classifier with a spatial transformer in front.

    The classifier is registered before the transformer on purpose: ``modules()`` then meets the
    classifier's first convolution first, which is the one the classification report shows as the
    "first-layer filters". State-dict keys are ``classifier.*`` and ``stn.*``.
    """

    def __init__(self, classifier: nn.Module, stn: SpatialTransformer):
        super().__init__()
        self.classifier = classifier
        self.stn = stn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stn(x))


def stn_options(config) -> dict | None:
    """The STN keywords of a ``model.kwargs.stn`` value with defaults filled in, or None when it asks for
    no STN (None, false, or ``enabled: false``). Unknown keys are a ValueError naming the closest valid."""
    if config is None or config is False:
        return None
    if config is True:
        config = {}
    if not isinstance(config, dict):
        raise ValueError(f"model.kwargs.stn must be a mapping (e.g. {{enabled: true}}), true/false or null, "
                         f"got {config!r}")
    unknown = [k for k in config if k not in STN_DEFAULTS]
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {close[0]!r}?)"
                             if (close := difflib.get_close_matches(k, list(STN_DEFAULTS), n=1)) else "")
                 for k in unknown]
        raise ValueError(f"model.kwargs.stn: unknown key(s) {', '.join(hints)}; valid keys: "
                         f"{', '.join(STN_DEFAULTS)}")
    options = {**STN_DEFAULTS, **config}
    if not isinstance(options["enabled"], bool):
        raise ValueError(f"model.kwargs.stn.enabled must be true or false, got {options['enabled']!r}")
    if not options.pop("enabled"):
        return None
    channels = options["channels"]
    if (not isinstance(channels, (list, tuple)) or not channels
            or not all(isinstance(c, int) and c > 0 for c in channels)):
        raise ValueError(f"model.kwargs.stn.channels must be a non-empty list of positive integers, got {channels!r}")
    for key in ("in_channels", "hidden", "pool_size"):
        if not isinstance(options[key], int) or options[key] < 1:
            raise ValueError(f"model.kwargs.stn.{key} must be a positive integer, got {options[key]!r}")
    return options


def build_stn(config) -> SpatialTransformer | None:
    """A SpatialTransformer from a ``model.kwargs.stn`` value, or None when it asks for none."""
    options = stn_options(config)
    return None if options is None else SpatialTransformer(**options)


def attach_stn(classifier: nn.Module, config, *, model_name: str, task: str) -> nn.Module:
    """``classifier`` wrapped in a SpatialTransformerClassifier when ``config`` (a ``model.kwargs.stn``
    value) asks for an STN, else ``classifier`` itself. Only classifiers take one: the transformer warps the
    image, which would misalign detectors' boxes and segmenters' masks with their targets."""
    stn = build_stn(config)
    if stn is None:
        return classifier
    if task != "classification":
        raise ValueError(f"create_model({model_name!r}): model.kwargs.stn puts a spatial transformer in front of "
                         f"a classifier; {model_name} is a {task} model")
    return SpatialTransformerClassifier(classifier, stn)
