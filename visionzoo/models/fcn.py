"""Fully convolutional networks for semantic segmentation (Long, Shelhamer & Darrell, CVPR 2015).

* `fcn32s_vgg16`, `fcn16s_vgg16`, `fcn8s_vgg16`: the paper's networks as in its reference Caffe nets
  (voc-fcn32s/16s/8s). VGG16 with fc6/fc7 recast as 7x7 and 1x1 convolutions, a 1x1 score layer,
  transposed convolutions initialised to bilinear upsampling, pool4 (16s) and pool3 (8s) skips.
  conv1_1 pads by 100 pixels so that any input size survives the 7x7 fc6, and every upsampled map is
  cropped back by the Caffe nets' offsets (19 / 27 / 31 px at the output, 5 and 9 px for the skips).
  Max pooling rounds up (Caffe's ceil mode). Score layers start at zero, the intermediate upsamplings
  are learned and the final one stays fixed bilinear, all as in the paper. `backbone_weights` starts
  conv1-fc7 from a VGG16 classifier of this zoo: fc6/fc7's fully connected weights are reshaped into
  the 7x7 / 1x1 convolutions.
* `fcn_resnet50`, `fcn_resnet101`: torchvision's FCN-ResNet (dilated layer3/layer4, output stride 8,
  FCNHead, optional auxiliary head on layer3). torchvision's class, so the official files load strict.
* Small variants for CPU work: `fcn8s_resnet18` (the FCN-8s skip architecture on ResNet-18: scores
  from layer4, layer3 and layer2 at strides 32, 16 and 8), `fcn4s_resnet18` (one more skip, from
  layer1 at stride 4, for small objects) and `fcn_resnet18` (torchvision's FCN head
  on an undilated ResNet-18, output stride 32).

Every model returns a dict with "out": logits at the input resolution (and "aux" when the
torchvision models have an auxiliary head), the convention of torchvision's segmentation models.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.fcn import FCN, FCNHead
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers

from visionzoo.models.backbones import (
    classifier_state_dict,
    freeze_resnet_stages,
    load_backbone_weights,
    norm_layer,
)
from visionzoo.registry import register_model
from visionzoo.weights import WeightsError

# VGG16's `features` indices of the pooling layers whose outputs feed the skips (pool3, pool4) and fc6.
_POOL3, _POOL4, _POOL5 = 16, 23, 30


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """Weights (channels, channels, k, k) of a transposed convolution that upsamples each channel
    bilinearly and mixes none (the FCN reference code's `upsample_filt`)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = (filt1d[:, None] * filt1d[None, :]).float()
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


def _upsample(channels: int, factor: int, padding: int = 0, trainable: bool = True) -> nn.ConvTranspose2d:
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=padding, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 2 * factor))
    layer.weight.requires_grad_(trainable)
    return layer


def _score(in_channels: int, num_classes: int) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, num_classes, 1)
    nn.init.zeros_(layer.weight)  # the paper zero-initialises the class scoring layers
    nn.init.zeros_(layer.bias)
    return layer


def _crop(x: torch.Tensor, offset: int, like_h: int, like_w: int) -> torch.Tensor:
    return x[:, :, offset:offset + like_h, offset:offset + like_w]


def _vgg16_features() -> nn.Sequential:
    """torchvision's vgg16.features (same indices, so VGG16 weights map 1:1) with the FCN changes:
    100-px padding on conv1_1 and ceil-mode pooling."""
    features = make_layers(vgg_cfgs["D"])  # vgg16's conv layers, without building its 120M-parameter head
    for m in features.modules():  # torchvision VGG's initialisation of its convolutions
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    features[0].padding = (100, 100)
    for i in (4, 9, _POOL3, _POOL4, _POOL5):
        features[i].ceil_mode = True
    return features


class FCNVGG16(nn.Module):
    """FCN-32s, -16s or -8s on VGG16 (`output_stride` 32, 16 or 8)."""

    def __init__(self, num_classes: int = 21, output_stride: int = 32, dropout: float = 0.5):
        super().__init__()
        if output_stride not in (32, 16, 8):
            raise ValueError(f"output_stride must be 32, 16 or 8, got {output_stride}")
        self.output_stride = output_stride
        self.features = _vgg16_features()
        self.fc6 = nn.Conv2d(512, 4096, 7)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.drop = nn.Dropout2d(dropout)
        self.score_fr = _score(4096, num_classes)
        if output_stride == 32:
            self.upscore = _upsample(num_classes, 32, trainable=False)
        else:
            self.score_pool4 = _score(512, num_classes)
            self.upscore2 = _upsample(num_classes, 2)
            if output_stride == 16:
                self.upscore16 = _upsample(num_classes, 16, trainable=False)
            else:
                self.score_pool3 = _score(256, num_classes)
                self.upscore_pool4 = _upsample(num_classes, 2)
                self.upscore8 = _upsample(num_classes, 8, trainable=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = x.shape[-2:]
        skips = {}
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in (_POOL3, _POOL4):
                skips[i] = x
        x = self.drop(torch.relu(self.fc6(x)))
        x = self.drop(torch.relu(self.fc7(x)))
        score = self.score_fr(x)
        if self.output_stride == 32:
            return {"out": _crop(self.upscore(score), 19, height, width)}
        up = self.upscore2(score)
        score = up + _crop(self.score_pool4(skips[_POOL4]), 5, *up.shape[-2:])
        if self.output_stride == 16:
            return {"out": _crop(self.upscore16(score), 27, height, width)}
        up = self.upscore_pool4(score)
        score = up + _crop(self.score_pool3(skips[_POOL3]), 9, *up.shape[-2:])
        return {"out": _crop(self.upscore8(score), 31, height, width)}

    def load_vgg16_classifier(self, state: dict[str, torch.Tensor]) -> None:
        """conv1_1-conv5_3 and fc6/fc7 from a VGG16 classifier state dict (torchvision's key layout)."""
        own = {k: v for k, v in state.items() if k.startswith("features.")}
        own["fc6.weight"] = state["classifier.0.weight"].reshape(4096, 512, 7, 7)
        own["fc6.bias"] = state["classifier.0.bias"]
        own["fc7.weight"] = state["classifier.3.weight"].reshape(4096, 4096, 1, 1)
        own["fc7.bias"] = state["classifier.3.bias"]
        result = self.load_state_dict(own, strict=False)
        missing = [k for k in result.missing_keys if k.startswith(("features.", "fc6.", "fc7."))]
        if missing or result.unexpected_keys:
            raise WeightsError(f"VGG16 weights do not fit the FCN backbone: missing {missing}, "
                               f"unexpected {result.unexpected_keys}")


def _fcn_vgg16(output_stride: int, num_classes: int, dropout: float, backbone_weights: str | None) -> FCNVGG16:
    model = FCNVGG16(num_classes, output_stride, dropout)
    if backbone_weights is not None:
        model.load_vgg16_classifier(classifier_state_dict("vgg16", backbone_weights))
    return model


_VGG_HEAD = ("score_fr.", "score_pool4.", "score_pool3.", "upscore")


@register_model(task="segmentation", family="fcn", input_size=(3, 512, 512), num_classes=21, head=_VGG_HEAD)
def fcn32s_vgg16(num_classes: int = 21, dropout: float = 0.5, backbone_weights: str | None = None):
    """FCN-32s: VGG16, one stride-32 score map upsampled 32x (fixed bilinear)."""
    return _fcn_vgg16(32, num_classes, dropout, backbone_weights)


@register_model(task="segmentation", family="fcn", input_size=(3, 512, 512), num_classes=21, head=_VGG_HEAD)
def fcn16s_vgg16(num_classes: int = 21, dropout: float = 0.5, backbone_weights: str | None = None):
    """FCN-16s: FCN-32s plus a pool4 skip, fused at stride 16 and upsampled 16x."""
    return _fcn_vgg16(16, num_classes, dropout, backbone_weights)


@register_model(task="segmentation", family="fcn", input_size=(3, 512, 512), num_classes=21, head=_VGG_HEAD)
def fcn8s_vgg16(num_classes: int = 21, dropout: float = 0.5, backbone_weights: str | None = None):
    """FCN-8s: FCN-16s plus a pool3 skip, fused at stride 8 and upsampled 8x."""
    return _fcn_vgg16(8, num_classes, dropout, backbone_weights)


# ---------------------------------------------------------------------------------- ResNet backbones
def _torchvision_fcn(depth: int, num_classes: int, aux_loss: bool, dilated: bool, backbone_weights: str | None,
                     trainable_layers: int, norm: str = "bn") -> FCN:
    resnet = getattr(tvm, f"resnet{depth}")(weights=None, replace_stride_with_dilation=[False, dilated, dilated],
                                            norm_layer=norm_layer(norm))
    if backbone_weights is not None:
        load_backbone_weights(resnet, f"resnet{depth}", backbone_weights, drop_prefixes=("fc.",))
    freeze_resnet_stages(resnet, trainable_layers)
    channels = resnet.inplanes  # out of layer4: 2048 (bottleneck) or 512 (basic blocks)
    return_layers = {"layer4": "out", **({"layer3": "aux"} if aux_loss else {})}
    backbone = IntermediateLayerGetter(resnet, return_layers=return_layers)
    heads = [FCNHead(channels, num_classes), FCNHead(channels // 2, num_classes) if aux_loss else None]
    if norm != "bn":  # FCNHead's own BatchNorm (index 1) follows the backbone's choice
        for head in filter(None, heads):
            head[1] = norm_layer(norm)(head[1].num_features)
    return FCN(backbone, *heads)


_TV_HEAD = ("classifier.4.", "aux_classifier.4.")


@register_model(task="segmentation", family="fcn", input_size=(3, 520, 520), num_classes=21, head=_TV_HEAD,
                torchvision_name="fcn_resnet50")
def fcn_resnet50(num_classes: int = 21, aux_loss: bool = True, backbone_weights: str | None = None,
                 trainable_layers: int = 5):
    """FCN-ResNet50: dilated ResNet-50 (output stride 8), FCNHead, auxiliary head on layer3."""
    return _torchvision_fcn(50, num_classes, aux_loss, True, backbone_weights, trainable_layers)


@register_model(task="segmentation", family="fcn", input_size=(3, 520, 520), num_classes=21, head=_TV_HEAD,
                torchvision_name="fcn_resnet101")
def fcn_resnet101(num_classes: int = 21, aux_loss: bool = True, backbone_weights: str | None = None,
                  trainable_layers: int = 5):
    """FCN-ResNet101: dilated ResNet-101 (output stride 8), FCNHead, auxiliary head on layer3."""
    return _torchvision_fcn(101, num_classes, aux_loss, True, backbone_weights, trainable_layers)


@register_model(task="segmentation", family="fcn", input_size=(3, 256, 256), num_classes=21, head=_TV_HEAD)
def fcn_resnet18(num_classes: int = 21, aux_loss: bool = False, backbone_weights: str | None = None,
                 trainable_layers: int = 5, norm: str = "bn"):
    """FCN-ResNet18: torchvision's FCN head on ResNet-18 (basic blocks cannot dilate: output stride 32).
    `norm` normalises the ResNet: "bn" (default), "gn" (GroupNorm, for small batches from scratch) or "frozen_bn"."""
    return _torchvision_fcn(18, num_classes, aux_loss, False, backbone_weights, trainable_layers, norm)


class FCN8sResNet(nn.Module):
    """The FCN-8s skip architecture on a ResNet: class scores from layer4 (stride 32), layer3 (16) and
    layer2 (8), fused coarse to fine with learned 2x transposed convolutions (bilinear at start), then a
    fixed bilinear 8x upsampling cropped to the input. ResNet's "same" padding keeps the maps aligned,
    so the crops only trim the odd extra row/column (no 100-px padding needed).

    `finest_stride=4` takes the skip ladder one rung further (FCN-4s): a layer1 (pool2) skip fused at
    stride 4 and a fixed 4x upsampling. The paper stopped at 8s because VOC gained little more; small
    objects (shapes 9 px in radius at 128 px) lose their corners at stride 8 and do gain."""

    def __init__(self, resnet: nn.Module, num_classes: int, finest_stride: int = 8):
        super().__init__()
        if finest_stride not in (4, 8):
            raise ValueError(f"finest_stride must be 4 or 8, got {finest_stride!r}")
        layers = OrderedDict(layer2="pool3", layer3="pool4", layer4="pool5")
        if finest_stride == 4:
            layers = OrderedDict(layer1="pool2", **layers)
        self.backbone = IntermediateLayerGetter(resnet, layers)
        c5 = resnet.inplanes
        self.score_fr = _score(c5, num_classes)
        self.score_pool4 = _score(c5 // 2, num_classes)
        self.score_pool3 = _score(c5 // 4, num_classes)
        self.upscore2 = _upsample(num_classes, 2, padding=1)
        self.upscore_pool4 = _upsample(num_classes, 2, padding=1)
        if finest_stride == 4:
            self.score_pool2 = _score(c5 // 8, num_classes)
            self.upscore_pool3 = _upsample(num_classes, 2, padding=1)
        self.finest_stride = finest_stride
        # named by factor (upscore8 / upscore4), as in the Caffe nets, so saved FCN-8s files keep their keys
        self.add_module(f"upscore{finest_stride}",
                        _upsample(num_classes, finest_stride, padding=finest_stride // 2, trainable=False))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = x.shape[-2:]
        f = self.backbone(x)
        pool4, pool3 = self.score_pool4(f["pool4"]), self.score_pool3(f["pool3"])
        score = _crop(self.upscore2(self.score_fr(f["pool5"])), 0, *pool4.shape[-2:]) + pool4
        score = _crop(self.upscore_pool4(score), 0, *pool3.shape[-2:]) + pool3
        if self.finest_stride == 4:
            pool2 = self.score_pool2(f["pool2"])
            score = _crop(self.upscore_pool3(score), 0, *pool2.shape[-2:]) + pool2
        upscore_final = getattr(self, f"upscore{self.finest_stride}")
        return {"out": _crop(upscore_final(score), 0, height, width)}


def _skip_fcn_resnet18(finest_stride: int, num_classes: int, backbone_weights: str | None, trainable_layers: int,
                       norm: str = "bn"):
    resnet = tvm.resnet18(weights=None, norm_layer=norm_layer(norm))
    if backbone_weights is not None:
        load_backbone_weights(resnet, "resnet18", backbone_weights, drop_prefixes=("fc.",))
    freeze_resnet_stages(resnet, trainable_layers)
    return FCN8sResNet(resnet, num_classes, finest_stride)


@register_model(task="segmentation", family="fcn", input_size=(3, 256, 256), num_classes=21, head=_VGG_HEAD)
def fcn8s_resnet18(num_classes: int = 21, backbone_weights: str | None = None, trainable_layers: int = 5,
                   norm: str = "bn"):
    """FCN-8s skips (layer2/3/4) on ResNet-18: the small variant for CPU work. `norm`: "bn" (default), "gn"
    (GroupNorm, for small batches from scratch) or "frozen_bn"."""
    return _skip_fcn_resnet18(8, num_classes, backbone_weights, trainable_layers, norm)


@register_model(task="segmentation", family="fcn", input_size=(3, 256, 256), num_classes=21,
                head=(*_VGG_HEAD, "score_pool2."))
def fcn4s_resnet18(num_classes: int = 21, backbone_weights: str | None = None, trainable_layers: int = 5,
                   norm: str = "bn"):
    """FCN-8s on ResNet-18 plus a layer1 skip fused at stride 4: finer boundaries for small objects. `norm` as
    for fcn8s_resnet18."""
    return _skip_fcn_resnet18(4, num_classes, backbone_weights, trainable_layers, norm)
