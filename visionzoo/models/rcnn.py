"""Faster R-CNN and Mask R-CNN with ResNet-FPN backbones (Ren et al. 2015; He et al. 2017), built from
torchvision's detection classes so that torchvision's official COCO files load with strict=True.

As in the official weights, backbone BatchNorm is frozen (FrozenBatchNorm2d: statistics and affine
terms are buffers), which gives the published 41,755,286 / 44,401,393 parameters at 91 classes.
`min_size`/`max_size` (the short-side resize of GeneralizedRCNNTransform) must come from the config:
torchvision's default of 800 px costs about 7 s per image per training step on a 2-core CPU.
"""
from __future__ import annotations

import torch
import torchvision.models as tvm
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from visionzoo.models.backbones import freeze_resnet_stages, load_backbone_weights, norm_layer
from visionzoo.registry import Capabilities, register_model

_BOX_HEAD = ("roi_heads.box_predictor.",)
_MASK_HEAD = _BOX_HEAD + ("roi_heads.mask_predictor.mask_fcn_logits.",)


def resnet_fpn_backbone(depth: int, trainable_layers: int, backbone_weights: str | None = None,
                        out_channels: int = 256, norm: str = "frozen_bn") -> BackboneWithFPN:
    """ResNet-`depth` with frozen BatchNorm and an FPN (P2-P5 plus a max-pooled P6) of `out_channels`, laid out
    exactly as torchvision's (so its official files load). `backbone_weights` starts the ResNet from the zoo's
    `resnet<depth>` classifier weights (e.g. the shipped "shapes" tag, or "torchvision:IMAGENET1K_V1"); only
    the last `trainable_layers` of (layer4, layer3, layer2, layer1, conv1) are trained.
    `norm` "bn" trains BatchNorm in the ResNet instead; "gn" puts GroupNorm in the ResNet and the FPN's
    convolutions, for training from scratch (see `backbones.norm_layer`)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    body = getattr(tvm, f"resnet{depth}")(weights=None, norm_layer=norm_layer(norm))
    if backbone_weights is not None:
        load_backbone_weights(body, f"resnet{depth}", backbone_weights, drop_prefixes=("fc.",))
    freeze_resnet_stages(body, trainable_layers)
    stage2 = body.inplanes // 8  # channels out of layer1 (64 for ResNet-18, 256 for ResNet-50)
    return BackboneWithFPN(body, return_layers={f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)},
                           in_channels_list=[stage2 * 2 ** (k - 1) for k in (1, 2, 3, 4)],
                           out_channels=out_channels, extra_blocks=LastLevelMaxPool(),
                           norm_layer=norm_layer("gn") if norm == "gn" else None)


def anchor_generator(anchor_sizes):
    """One anchor size per FPN level (P2..P6) at aspect ratios 0.5, 1, 2; None keeps torchvision's
    (32, 64, 128, 256, 512), which suits 800-px images; small images want smaller anchors."""
    if anchor_sizes is None:
        return None
    sizes = tuple(int(s) for s in anchor_sizes)
    if len(sizes) != 5 or any(s <= 0 for s in sizes):
        raise ValueError(f"anchor_sizes must be 5 positive sizes (one per FPN level), got {list(anchor_sizes)}")
    return AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))


def float32_features(features: dict) -> tuple[dict, str]:
    """The feature maps as float32 (a no-op outside autocast) and their device type, for autocast(enabled=False)."""
    first = next(iter(features.values()), torch.empty(0))
    return {k: v.float() for k, v in features.items()}, first.device.type


class Float32RPN(RegionProposalNetwork):
    """The RPN in float32 under bf16/fp16 autocast. torchvision's anchor generator and box coder take the
    feature maps' dtype: in bfloat16, anchors and proposals beyond 512 px fall on a 4-px grid."""

    def forward(self, images, features, targets=None):
        features, device_type = float32_features(features)
        with torch.autocast(device_type=device_type, enabled=False):
            return super().forward(images, features, targets)


class Float32RoIHeads(RoIHeads):
    """The RoI heads (box decoding, NMS, masks) in float32 under autocast, for the same reason as Float32RPN."""

    def forward(self, features, proposals, image_shapes, targets=None):
        features, device_type = float32_features(features)
        with torch.autocast(device_type=device_type, enabled=False):
            return super().forward(features, [p.float() for p in proposals], image_shapes, targets)


def float32_heads(model):
    """Switch a torchvision Faster/Mask R-CNN's RPN and RoI heads to their float32 subclasses (same modules,
    same state-dict keys, so official files still load strict). The backbone keeps the autocast dtype."""
    if type(model.rpn) is RegionProposalNetwork:
        model.rpn.__class__ = Float32RPN
    if type(model.roi_heads) is RoIHeads:
        model.roi_heads.__class__ = Float32RoIHeads
    return model


def _detector(cls, depth, num_classes, min_size, max_size, trainable_layers, backbone_weights=None,
              anchor_sizes=None, **kwargs):
    return float32_heads(cls(resnet_fpn_backbone(depth, trainable_layers, backbone_weights), num_classes=num_classes,
                             min_size=min_size, max_size=max_size, rpn_anchor_generator=anchor_generator(anchor_sizes),
                             **kwargs))


@register_model(task="detection", family="faster_rcnn", input_size=(3, 800, 800), num_classes=91, head=_BOX_HEAD,
                torchvision_name="fasterrcnn_resnet50_fpn")
def faster_rcnn_resnet50_fpn(num_classes: int = 91, min_size: int = 800, max_size: int = 1333,
                             trainable_layers: int = 3, box_detections_per_img: int = 100,
                             backbone_weights: str | None = None, box_score_thresh: float = 0.05,
                             box_nms_thresh: float = 0.5):
    """Faster R-CNN, ResNet-50-FPN backbone (torchvision's layout; official COCO files load strict)."""
    return _detector(FasterRCNN, 50, num_classes, min_size, max_size, trainable_layers, backbone_weights,
                     box_detections_per_img=box_detections_per_img, box_score_thresh=box_score_thresh,
                     box_nms_thresh=box_nms_thresh)


@register_model(task="detection", family="mask_rcnn", input_size=(3, 800, 800), num_classes=91, head=_MASK_HEAD,
                torchvision_name="maskrcnn_resnet50_fpn", capabilities=Capabilities(predicts_masks=True))
def mask_rcnn_resnet50_fpn(num_classes: int = 91, min_size: int = 800, max_size: int = 1333,
                           trainable_layers: int = 3, box_detections_per_img: int = 100,
                           backbone_weights: str | None = None, box_score_thresh: float = 0.05,
                           box_nms_thresh: float = 0.5):
    """Mask R-CNN, ResNet-50-FPN backbone (torchvision's layout; official COCO files load strict)."""
    return _detector(MaskRCNN, 50, num_classes, min_size, max_size, trainable_layers, backbone_weights,
                     box_detections_per_img=box_detections_per_img, box_score_thresh=box_score_thresh,
                     box_nms_thresh=box_nms_thresh)


# The small variants' defaults are sized for CPU training on small images: fewer RPN proposals and 128
# sampled RoIs per image instead of torchvision's 2000 / 512 (RoIAlign's CPU backward dominates a step);
# `fpn_channels` narrows the FPN and every head behind it (the mask head's convolutions too).
# `box_score_thresh`/`box_nms_thresh` are the test-time filters (torchvision's 0.05 / 0.5 per class); COCO AP
# counts low-scoring detections too, so an evaluation may lower the threshold (model.kwargs.box_score_thresh).
# `norm` (frozen_bn | bn | gn) normalises the ResNet; "gn" also the FPN and the mask head, and the "4conv1fc" box
# head (four 3x3 convolutions, then one fully connected layer: the GN paper's head) when `box_head` picks it.
BOX_HEADS = ("2mlp", "4conv1fc")


def _small_detector(cls, num_classes, min_size, max_size, trainable_layers, backbone_weights, anchor_sizes,
                    image_mean, image_std, fpn_channels, representation_size, norm="frozen_bn", box_head="2mlp",
                    **kwargs):
    if box_head not in BOX_HEADS:
        raise ValueError(f"box_head must be one of {', '.join(BOX_HEADS)}, got {box_head!r}")
    backbone = resnet_fpn_backbone(18, trainable_layers, backbone_weights, out_channels=fpn_channels, norm=norm)
    head_norm = norm_layer("gn") if norm == "gn" else None
    box = (TwoMLPHead(fpn_channels * 7 * 7, representation_size) if box_head == "2mlp" else
           FastRCNNConvFCHead((fpn_channels, 7, 7), [fpn_channels] * 4, [representation_size], norm_layer=head_norm))
    heads = {"box_head": box, "box_predictor": FastRCNNPredictor(representation_size, num_classes)}
    if cls is MaskRCNN:
        heads["mask_head"] = MaskRCNNHeads(fpn_channels, (fpn_channels,) * 4, 1, norm_layer=head_norm)
        heads["mask_predictor"] = MaskRCNNPredictor(fpn_channels, fpn_channels, num_classes)
    return float32_heads(cls(backbone, min_size=min_size, max_size=max_size,
                             rpn_anchor_generator=anchor_generator(anchor_sizes), image_mean=image_mean,
                             image_std=image_std, **heads, **kwargs))


def _small_builder(cls, name: str, family: str, head: tuple[str, ...], doc: str, capabilities: Capabilities):
    def build(num_classes: int = 91, min_size: int = 256, max_size: int = 256, trainable_layers: int = 5,
              backbone_weights: str | None = None, anchor_sizes: tuple | None = None,
              image_mean: tuple | None = None, image_std: tuple | None = None, fpn_channels: int = 256,
              representation_size: int = 1024, box_detections_per_img: int = 100, box_batch_size_per_image: int = 128,
              rpn_pre_nms_top_n_train: int = 1000, rpn_post_nms_top_n_train: int = 500,
              rpn_pre_nms_top_n_test: int = 500, rpn_post_nms_top_n_test: int = 300,
              box_score_thresh: float = 0.05, box_nms_thresh: float = 0.5, norm: str = "frozen_bn",
              box_head: str = "2mlp"):
        return _small_detector(
            cls, num_classes, min_size, max_size, trainable_layers, backbone_weights, anchor_sizes, image_mean,
            image_std, fpn_channels, representation_size, norm, box_head, box_detections_per_img=box_detections_per_img,
            box_batch_size_per_image=box_batch_size_per_image, rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=rpn_post_nms_top_n_train, rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=rpn_post_nms_top_n_test, box_score_thresh=box_score_thresh,
            box_nms_thresh=box_nms_thresh)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = doc
    return register_model(task="detection", family=family, input_size=(3, 256, 256), num_classes=91, head=head,
                          capabilities=capabilities)(build)


faster_rcnn_resnet18_fpn = _small_builder(
    FasterRCNN, "faster_rcnn_resnet18_fpn", "faster_rcnn", _BOX_HEAD,
    "Faster R-CNN on a ResNet-18-FPN backbone: the small variant for CPU work.", Capabilities())
mask_rcnn_resnet18_fpn = _small_builder(
    MaskRCNN, "mask_rcnn_resnet18_fpn", "mask_rcnn", _MASK_HEAD,
    "Mask R-CNN on a ResNet-18-FPN backbone: the small variant for CPU work.", Capabilities(predicts_masks=True))
