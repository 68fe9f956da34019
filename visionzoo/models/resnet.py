"""ResNet (He et al. 2016): 18/34 with basic blocks, 50/101/152 with bottlenecks (torchvision's V1.5
placement of the stride in the 3x3 conv). torchvision's classes, so the official files load with
strict=True."""
from __future__ import annotations

import torchvision.models as tvm

from visionzoo.registry import register_model

_HEAD = ("fc.",)


def _resnet(tv_name: str, num_classes: int, zero_init_residual: bool):
    return getattr(tvm, tv_name)(weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)


@register_model(task="classification", family="resnet", head=_HEAD, torchvision_name="resnet18")
def resnet18(num_classes: int = 1000, zero_init_residual: bool = False):
    """ResNet-18: basic blocks [2, 2, 2, 2]."""
    return _resnet("resnet18", num_classes, zero_init_residual)


@register_model(task="classification", family="resnet", head=_HEAD, torchvision_name="resnet34")
def resnet34(num_classes: int = 1000, zero_init_residual: bool = False):
    """ResNet-34: basic blocks [3, 4, 6, 3]."""
    return _resnet("resnet34", num_classes, zero_init_residual)


@register_model(task="classification", family="resnet", head=_HEAD, torchvision_name="resnet50")
def resnet50(num_classes: int = 1000, zero_init_residual: bool = False):
    """ResNet-50: bottleneck blocks [3, 4, 6, 3]."""
    return _resnet("resnet50", num_classes, zero_init_residual)


@register_model(task="classification", family="resnet", head=_HEAD, torchvision_name="resnet101")
def resnet101(num_classes: int = 1000, zero_init_residual: bool = False):
    """ResNet-101: bottleneck blocks [3, 4, 23, 3]."""
    return _resnet("resnet101", num_classes, zero_init_residual)


@register_model(task="classification", family="resnet", head=_HEAD, torchvision_name="resnet152")
def resnet152(num_classes: int = 1000, zero_init_residual: bool = False):
    """ResNet-152: bottleneck blocks [3, 8, 36, 3]."""
    return _resnet("resnet152", num_classes, zero_init_residual)
