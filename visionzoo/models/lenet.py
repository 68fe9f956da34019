"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied to document recognition", 1998).

The paper's layers, C1-S2-C3-S4-C5-F6-output, on a 32x32 input (28x28 MNIST digits are zero-padded by 2 pixels
on each side, as the paper centres them in a 32x32 field). Simplifications, as in most modern re-implementations:
- C3 connects every S2 map to every C3 map (the paper's Table I keeps 60 of the 96 connections);
- S2 and S4 are max pooling (the paper's subsampling layers have a trainable coefficient and bias);
- ReLU by default (``activation="tanh"`` gives the paper's squashing function, without its 1.7159 scale);
- the output is a linear layer with cross-entropy (the paper uses Euclidean RBF units and an MAP-style loss).

The 84-d F6 activations (``model.features(x)``) are the feature space the generative family uses for FID/KID
on MNIST.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visionzoo.registry import register_model

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"lenet5: activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        act = ACTIVATIONS[activation]
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), act(), nn.MaxPool2d(2),  # C1 (28x28x6), S2 (14x14x6)
            nn.Conv2d(6, 16, 5), act(), nn.MaxPool2d(2),  # C3 (10x10x16), S4 (5x5x16)
            nn.Conv2d(16, 120, 5), act(), nn.Flatten(),  # C5 (1x1x120)
            nn.Linear(120, 84), act(),  # F6
        )
        self.fc = nn.Linear(84, num_classes)

    @staticmethod
    def pad_to_32(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] == (28, 28):
            return F.pad(x, (2, 2, 2, 2))
        if x.shape[-2:] != (32, 32):
            raise ValueError(f"lenet5 takes 28x28 or 32x32 images, got {tuple(x.shape[-2:])}")
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 84-d F6 activations."""
        return self.backbone(self.pad_to_32(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register_model(task="classification", family="lenet", input_size=(1, 28, 28), num_classes=10, head=("fc.",))
def lenet5(num_classes: int = 10, in_channels: int = 1, activation: str = "relu"):
    """LeNet-5 (1998): C1-S2-C3-S4-C5-F6-output, 61.7k parameters at 10 classes."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels, activation=activation)


class MnistCNN(nn.Module):
    """The plain CNN of the distorted-MNIST experiments (Jaderberg et al. 2015, §4.1: two convolutional layers,
    each followed by max pooling, then fully connected layers). Any input size: the second pooling's maps are
    average-pooled to 5x5 before the classifier, so R (28 px), RTS (42 px) and TC (60 px) share one builder."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (16, 32),
                 hidden: int = 128):
        super().__init__()
        c1, c2 = widths
        self.backbone = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(5), nn.Flatten(),
            nn.Linear(c2 * 25, hidden), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))


@register_model(task="classification", family="lenet", input_size=(1, 42, 42), num_classes=10, head=("fc.",))
def mnist_cnn(num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (16, 32), hidden: int = 128):
    """Two conv + max-pool layers and two fc layers: the CNN baseline of the spatial-transformer paper."""
    return MnistCNN(num_classes=num_classes, in_channels=in_channels, widths=tuple(widths), hidden=hidden)
