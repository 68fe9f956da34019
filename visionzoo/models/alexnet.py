"""AlexNet (Krizhevsky et al. 2012), in torchvision's single-GPU variant (61.1M parameters).

The architecture is torchvision's class, so torchvision's official file loads with strict=True.
"""
from __future__ import annotations

from torchvision.models import alexnet as tv_alexnet

from visionzoo.registry import register_model


@register_model(task="classification", family="alexnet", head=("classifier.6.",), torchvision_name="alexnet")
def alexnet(num_classes: int = 1000, dropout: float = 0.5):
    """AlexNet: five conv layers and three fully connected layers with dropout."""
    return tv_alexnet(weights=None, num_classes=num_classes, dropout=dropout)
