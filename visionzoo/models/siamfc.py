"""SiamFC: fully-convolutional Siamese networks for object tracking (Bertinetto et al., ECCVW 2016).

`siamfc_alexnet` is the paper's network: an AlexNet-like embedding without padding (total stride 8)
applied to a 127-px exemplar (-> 6x6x256) and a 255-px search image (-> 22x22x256), and a head that
cross-correlates the exemplar's features over the search features (-> 17x17 response), scaled by 1e-3
with a learned bias (the paper's "adjust" layer: the 1e-3 keeps the initial logits in the logistic
loss's linear range).

The model is a plain `nn.Module`: `model(exemplar, search)` gives the response map; `model.embed`
and `model.correlate` are the two halves the tracker calls separately (the exemplar is embedded once
at init). Inputs are normalised RGB tensors (the mean/std of the weights' model card). The tracker
itself (crops, scale search, cosine window) lives in `visionzoo.tracking.siamfc`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visionzoo.registry import register_model

EXEMPLAR_SIZE, SEARCH_SIZE, TOTAL_STRIDE = 127, 255, 8


def _conv_bn_relu(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, groups=groups), nn.BatchNorm2d(cout, eps=1e-6, momentum=0.05)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class AlexNetEmbedding(nn.Sequential):
    """SiamFC's AlexNet-like embedding (REFERENCE.md): no padding, so features are translation-equivariant
    up to the stride; conv2/4/5 keep AlexNet's two groups. conv5 has no BatchNorm or ReLU (its output is
    correlated directly, as in the authors' network)."""

    total_stride = TOTAL_STRIDE

    def __init__(self, width: float = 1.0):
        c = [max(8, int(round(n * width / 2)) * 2) for n in (96, 256, 384, 384, 256)]  # even: two groups
        super().__init__(
            *_conv_bn_relu(3, c[0], 11, stride=2), nn.MaxPool2d(3, 2),
            *_conv_bn_relu(c[0], c[1], 5, groups=2), nn.MaxPool2d(3, 2),
            *_conv_bn_relu(c[1], c[2], 3),
            *_conv_bn_relu(c[2], c[3], 3, groups=2),
            nn.Conv2d(c[3], c[4], 3, groups=2),
        )
        self.out_channels = c[4]


def cross_correlate(exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
    """Each exemplar feature map (B, C, h, w) slid over its own search map (B, C, H, W) -> (B, 1, H-h+1, W-w+1).
    One grouped convolution over the batch (the usual trick): no Python loop. A single exemplar (1, C, h, w)
    is shared by every search map (the tracker's scale pyramid)."""
    b, c, hh, ww = search.shape
    if exemplar.shape[0] == 1 and b > 1:
        return F.conv2d(search, exemplar)
    if exemplar.shape[0] != b:
        raise ValueError(f"cross_correlate: {exemplar.shape[0]} exemplars for {b} search images")
    out = F.conv2d(search.reshape(1, b * c, hh, ww), exemplar, groups=b)
    return out.reshape(b, 1, *out.shape[-2:])


class SiamFC(nn.Module):
    """Siamese embedding + cross-correlation head: response = out_scale * (phi(z) * phi(x)) + bias."""

    def __init__(self, backbone: nn.Module, out_scale: float = 1e-3):
        super().__init__()
        self.backbone = backbone
        self.out_scale = out_scale
        self.bias = nn.Parameter(torch.zeros(1))
        self.total_stride = backbone.total_stride
        _init_weights(self)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def correlate(self, exemplar_features: torch.Tensor, search_features: torch.Tensor) -> torch.Tensor:
        return cross_correlate(exemplar_features, search_features) * self.out_scale + self.bias

    def forward(self, exemplar: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        return self.correlate(self.embed(exemplar), self.embed(search))


def _init_weights(model: nn.Module) -> None:
    # Kaiming (fan-out) convolutions and unit BatchNorm, as the public SiamFC training code does.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_model(task="tracking", family="siamfc", input_size=(3, SEARCH_SIZE, SEARCH_SIZE), num_classes=None,
                exemplar_size=EXEMPLAR_SIZE, search_size=SEARCH_SIZE, response_size=17)
def siamfc_alexnet(width: float = 1.0, out_scale: float = 1e-3):
    """SiamFC with the paper's AlexNet-like embedding: 127/255 crops, 17x17 response (2.33M parameters).
    `width` scales every layer's channels (1.0 = the paper; smaller for quick tests)."""
    return SiamFC(AlexNetEmbedding(width), out_scale)
