"""VGG (Simonyan & Zisserman 2015): configurations A (11), B (13), D (16) and E (19), with and without
BatchNorm. torchvision's classes, so the official files load with strict=True."""
from __future__ import annotations

import torchvision.models as tvm

from visionzoo.registry import register_model

_HEAD = ("classifier.6.",)


def _vgg(tv_name: str, num_classes: int, dropout: float):
    return getattr(tvm, tv_name)(weights=None, num_classes=num_classes, dropout=dropout)


@register_model(task="classification", family="vgg", head=_HEAD, torchvision_name="vgg11")
def vgg11(num_classes: int = 1000, dropout: float = 0.5):
    """VGG-11 (configuration A)."""
    return _vgg("vgg11", num_classes, dropout)


@register_model(task="classification", family="vgg", head=_HEAD, torchvision_name="vgg11_bn")
def vgg11_bn(num_classes: int = 1000, dropout: float = 0.5):
    """VGG-11 with BatchNorm."""
    return _vgg("vgg11_bn", num_classes, dropout)


@register_model(task="classification", family="vgg", head=_HEAD, torchvision_name="vgg13")
def vgg13(num_classes: int = 1000, dropout: float = 0.5):
    """VGG-13 (configuration B)."""
    return _vgg("vgg13", num_classes, dropout)


@register_model(task="classification", family="vgg", head=_HEAD, torchvision_name="vgg13_bn")
def vgg13_bn(num_classes: int = 1000, dropout: float = 0.5):
    """VGG-13 with BatchNorm."""
    return _vgg("vgg13_bn", num_classes, dropout)


@register_model(task="classification", family="vgg", head=_HEAD, torchvision_name="vgg16")
def vgg16(num_classes: int = 1000, dropout: float = 0.5):
    """VGG-16 (configuration D)."""
    return _vgg("vgg16", num_classes, dropout)


@register_model(task="classification", family="vgg", head=_HEAD, torchvision_name="vgg16_bn")
def vgg16_bn(num_classes: int = 1000, dropout: float = 0.5):
    """VGG-16 with BatchNorm."""
    return _vgg("vgg16_bn", num_classes, dropout)


@register_model(task="classification", family="vgg", head=_HEAD, torchvision_name="vgg19")
def vgg19(num_classes: int = 1000, dropout: float = 0.5):
    """VGG-19 (configuration E)."""
    return _vgg("vgg19", num_classes, dropout)


@register_model(task="classification", family="vgg", head=_HEAD, torchvision_name="vgg19_bn")
def vgg19_bn(num_classes: int = 1000, dropout: float = 0.5):
    """VGG-19 with BatchNorm."""
    return _vgg("vgg19_bn", num_classes, dropout)
