"""The CIFAR-10 ResNets of He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition" (2016), §4.2.

A 3x3 convolution with 16 filters, then three stages of n basic blocks on 32x32, 16x16 and 8x8 maps with 16, 32
and 64 filters (6n + 2 weighted layers), global average pooling and a 10-way fully connected layer. Shortcuts are
identities everywhere; where a stage halves the resolution and doubles the width, the shortcut subsamples by 2
and pads the new channels with zeros (the paper's option A, which adds no parameters). torchvision's ResNets
use the ImageNet stem and projection shortcuts, hence this file.

Parameter counts (Table 6 of the paper: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M): 272,474 / 466,906 / 661,338 /
855,770 / 1,730,714 for ResNet-20/32/44/56/110, BatchNorm's affine parameters included.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visionzoo.registry import register_model


class ZeroPadShortcut(nn.Module):
    """Option A: take every second pixel and append zero channels."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::2, ::2]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = ZeroPadShortcut(channels - in_channels) if stride != 1 or in_channels != channels \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, zero_init_residual: bool = False):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, width = [], 16
        for i, channels in enumerate((16, 32, 64)):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(width, channels, stride=2 if (i > 0 and b == 0) else 1))
                width = channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # He initialisation, as in the paper (its reference [13])
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register(depth: int, table6: str):
    def builder(num_classes: int = 10, zero_init_residual: bool = False):
        return CifarResNet(depth, num_classes=num_classes, zero_init_residual=zero_init_residual)

    builder.__name__ = builder.__qualname__ = f"resnet{depth}_cifar"
    builder.__doc__ = (f"ResNet-{depth} for CIFAR (He et al. 2016, §4.2): {depth} layers, option-A shortcuts, "
                       f"{table6} parameters.")
    return register_model(task="classification", family="resnet_cifar", input_size=(3, 32, 32), num_classes=10,
                          head=("fc.",))(builder)


resnet20_cifar = _register(20, "0.27M")
resnet32_cifar = _register(32, "0.46M")
resnet44_cifar = _register(44, "0.66M")
resnet56_cifar = _register(56, "0.85M")
resnet110_cifar = _register(110, "1.7M")
