"""SINT: Siamese INstance search for Tracking (Tao, Gavves & Smeulders, CVPR 2016).

Two identical streams (one network, shared weights) embed image regions: a convolutional trunk runs once
over the whole image (or search crop), RoI max pooling cuts each candidate box out of several feature
maps, every pooled map is flattened and L2-normalised, and the normalised parts are concatenated (and
normalised again, so an inner product is a cosine in [-1, 1]). Matching is the inner product of the
query's embedding (from the first frame) with each candidate's; tracking picks the best candidate and
never updates the model.

* `sint`: the paper's VGG16 trunk with pool4 removed (so conv4_3 and conv5_3 keep stride 8, the
  higher-resolution maps the paper argues for), RoI pooling on conv4_3 and conv5_3, plus fc6 on the
  pooled conv5_3 as in the paper.
* `sint_resnet18`: the small variant for CPU work: ResNet-18's layer2 (stride 8) and layer3 (stride 16)
  RoI-pooled and normalised the same way; the trunk can start from a zoo classifier (the shipped
  shapes ResNet-18).

`model(images, boxes)` -> (K, D) embeddings, where `boxes` is a list (one (Ki, 4) x1,y1,x2,y2 tensor per
image) or a (K, 5) tensor with the batch index first (torchvision.ops' RoI format).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn
from torchvision.ops import roi_pool

from visionzoo.models.backbones import freeze_resnet_stages, load_backbone_weights
from visionzoo.registry import Capabilities, register_model


class SINT(nn.Module):
    """A trunk returning named feature maps, RoI max pooling on each (`scales`: their 1/stride), L2
    normalisation per part, concatenation, final L2 normalisation. `fc6` (optional) maps the last pooled
    map through a fully connected layer (the paper's fc6) as one more normalised part."""

    def __init__(self, trunk: nn.Module, layers: dict[str, float], pool_size: int = 7, fc6: nn.Module | None = None):
        super().__init__()
        self.trunk = trunk
        self.layers = dict(layers)  # feature name -> spatial scale (1 / stride)
        self.pool_size = pool_size
        self.fc6 = fc6

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.trunk(images)

    def pool(self, features: dict[str, torch.Tensor], boxes) -> torch.Tensor:
        """Embeddings (K, D) of `boxes` on already computed `features` (the tracker computes the frame's
        features once and pools hundreds of candidates from them)."""
        parts = []
        last = None
        for name, scale in self.layers.items():
            pooled = roi_pool(features[name], boxes, self.pool_size, spatial_scale=scale)
            last = pooled
            parts.append(F.normalize(pooled.flatten(1), dim=1))
        if self.fc6 is not None:
            parts.append(F.normalize(self.fc6(last.flatten(1)), dim=1))
        return F.normalize(torch.cat(parts, dim=1), dim=1)

    def forward(self, images: torch.Tensor, boxes) -> torch.Tensor:
        return self.pool(self.features(images), boxes)


class _VGGTrunk(nn.Module):
    """VGG16 conv layers without pool4 and pool5: conv4_3 and conv5_3 at stride 8."""

    def __init__(self):
        super().__init__()
        features = tvm.vgg16(weights=None).features
        keep = [m for i, m in enumerate(features) if i not in (23, 30)]  # 23 = pool4, 30 = pool5
        self.to_conv4 = nn.Sequential(*keep[:23])  # through conv4_3 + ReLU
        self.to_conv5 = nn.Sequential(*keep[23:])  # conv5_1 .. conv5_3 + ReLU

    def forward(self, x):
        c4 = self.to_conv4(x)
        return {"conv4_3": c4, "conv5_3": self.to_conv5(c4)}


class _ResNetTrunk(nn.Module):
    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1)
        self.layer2, self.layer3 = resnet.layer2, resnet.layer3

    def forward(self, x):
        c2 = self.layer2(self.stem(x))
        return {"layer2": c2, "layer3": self.layer3(c2)}


@register_model(task="tracking", family="sint", input_size=(3, 255, 255), num_classes=None,
                capabilities=Capabilities(tracker_kind="sint", embeds_candidate_boxes=True))
def sint(pool_size: int = 7, fc6_dim: int = 4096, backbone_weights: str | None = None):
    """SINT as in the paper: VGG16 without pool4/pool5, RoI pooling on conv4_3, conv5_3 and fc6."""
    trunk = _VGGTrunk()
    if backbone_weights is not None:
        vgg = tvm.vgg16(weights=None)
        load_backbone_weights(vgg, "vgg16", backbone_weights, drop_prefixes=("classifier.",))
        kept = [m for i, m in enumerate(vgg.features) if i not in (23, 30)]
        trunk.to_conv4.load_state_dict(nn.Sequential(*kept[:23]).state_dict())
        trunk.to_conv5.load_state_dict(nn.Sequential(*kept[23:]).state_dict())
    fc6 = nn.Sequential(nn.Linear(512 * pool_size * pool_size, fc6_dim), nn.ReLU(inplace=True))
    return SINT(trunk, {"conv4_3": 1 / 8, "conv5_3": 1 / 8}, pool_size, fc6)


@register_model(task="tracking", family="sint", input_size=(3, 255, 255), num_classes=None,
                capabilities=Capabilities(tracker_kind="sint", embeds_candidate_boxes=True))
def sint_resnet18(pool_size: int = 7, backbone_weights: str | None = None, trainable_layers: int = 3):
    """SINT, small: ResNet-18 layer2 (stride 8) and layer3 (stride 16) RoI-pooled and L2-normalised."""
    resnet = tvm.resnet18(weights=None)
    if backbone_weights is not None:
        load_backbone_weights(resnet, "resnet18", backbone_weights, drop_prefixes=("fc.",))
    freeze_resnet_stages(resnet, trainable_layers + 1)  # layer4 is unused: count it as "trainable"
    return SINT(_ResNetTrunk(resnet), {"layer2": 1 / 8, "layer3": 1 / 16}, pool_size)
