"""Faster R-CNN and Mask R-CNN with ResNet-FPN backbones (Ren et al. 2015; He et al. 2017), built from
torchvision's detection classes so that torchvision's official COCO files load with strict=True.

As in the official weights, backbone BatchNorm is frozen (FrozenBatchNorm2d: statistics and affine
terms are buffers), which gives the published 41,755,286 / 44,401,393 parameters at 91 classes.
`min_size`/`max_size` (the short-side resize of GeneralizedRCNNTransform) must come from the config:
torchvision's default of 800 px costs about 7 s per image per training step on a 2-core CPU.
"""
from __future__ import annotations

import torchvision.models as tvm
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from visionzoo.registry import register_model

_BOX_HEAD = ("roi_heads.box_predictor.",)
_MASK_HEAD = _BOX_HEAD + ("roi_heads.mask_predictor.mask_fcn_logits.",)


def _fpn_backbone(depth: int, trainable_layers: int):
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5, got {trainable_layers}")
    body = getattr(tvm, f"resnet{depth}")(weights=None, norm_layer=FrozenBatchNorm2d)
    return _resnet_fpn_extractor(body, trainable_layers)


def _detector(cls, depth, num_classes, min_size, max_size, trainable_layers, **kwargs):
    return cls(_fpn_backbone(depth, trainable_layers), num_classes=num_classes, min_size=min_size,
               max_size=max_size, **kwargs)


@register_model(task="detection", family="faster_rcnn", input_size=(3, 800, 800), num_classes=91, head=_BOX_HEAD,
                torchvision_name="fasterrcnn_resnet50_fpn")
def faster_rcnn_resnet50_fpn(num_classes: int = 91, min_size: int = 800, max_size: int = 1333,
                             trainable_layers: int = 3, box_detections_per_img: int = 100):
    """Faster R-CNN, ResNet-50-FPN backbone (torchvision's layout; official COCO files load strict)."""
    return _detector(FasterRCNN, 50, num_classes, min_size, max_size, trainable_layers,
                     box_detections_per_img=box_detections_per_img)


@register_model(task="detection", family="mask_rcnn", input_size=(3, 800, 800), num_classes=91, head=_MASK_HEAD,
                torchvision_name="maskrcnn_resnet50_fpn")
def mask_rcnn_resnet50_fpn(num_classes: int = 91, min_size: int = 800, max_size: int = 1333,
                           trainable_layers: int = 3, box_detections_per_img: int = 100):
    """Mask R-CNN, ResNet-50-FPN backbone (torchvision's layout; official COCO files load strict)."""
    return _detector(MaskRCNN, 50, num_classes, min_size, max_size, trainable_layers,
                     box_detections_per_img=box_detections_per_img)


@register_model(task="detection", family="faster_rcnn", input_size=(3, 256, 256), num_classes=91, head=_BOX_HEAD)
def faster_rcnn_resnet18_fpn(num_classes: int = 91, min_size: int = 256, max_size: int = 256,
                             trainable_layers: int = 5, box_detections_per_img: int = 100):
    """Faster R-CNN on a ResNet-18-FPN backbone: the small variant for CPU work."""
    return _detector(FasterRCNN, 18, num_classes, min_size, max_size, trainable_layers,
                     box_detections_per_img=box_detections_per_img)


@register_model(task="detection", family="mask_rcnn", input_size=(3, 256, 256), num_classes=91, head=_MASK_HEAD)
def mask_rcnn_resnet18_fpn(num_classes: int = 91, min_size: int = 256, max_size: int = 256,
                           trainable_layers: int = 5, box_detections_per_img: int = 100):
    """Mask R-CNN on a ResNet-18-FPN backbone: the small variant for CPU work."""
    return _detector(MaskRCNN, 18, num_classes, min_size, max_size, trainable_layers,
                     box_detections_per_img=box_detections_per_img)
