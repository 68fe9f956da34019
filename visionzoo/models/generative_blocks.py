"""Convolution stacks shared by the autoencoders, VAEs and GANs, sized for 28, 32 and 64 px images.

They follow the DCGAN layout (REFERENCE.md): 4x4 stride-2 (transposed) convolutions that halve or double
the side, starting from a small base grid (4x4 for 32 and 64 px, 7x7 for 28 px), with channel counts that
double on the way down. A 64-px stack has four stride-2 stages, 32 px three, 28 px two.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SUPPORTED_SIZES = (28, 32, 64)


def stack_plan(image_size: int) -> tuple[int, int]:
    """(base grid side, number of stride-2 stages) for `image_size`."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size = {image_size} is not supported; expected one of {SUPPORTED_SIZES}")
    base = 7 if image_size == 28 else 4
    return base, int(round(math.log2(image_size // base)))


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # LayerNorm over (C, H, W): no batch coupling, as a gradient penalty requires
        return nn.GroupNorm(1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm = {kind!r}; expected 'batch', 'layer' or 'none'")


class ConvEncoder(nn.Module):
    """(B, C, S, S) -> (B, width * 2^(n-1), base, base): n stride-2 convs, LeakyReLU 0.2, no norm on the
    first layer (DCGAN's discriminator body; also the autoencoders' and VAEs' encoder)."""

    def __init__(self, in_channels: int, image_size: int, width: int, norm: str = "batch"):
        super().__init__()
        self.base, stages = stack_plan(image_size)
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(stages):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none")]
            if i > 0:
                layers.append(_norm(norm, c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ConvDecoder(nn.Module):
    """(B, in_features) -> (B, out_channels, S, S) before any output non-linearity: a transposed conv from
    1x1 to the base grid, then n stride-2 transposed convs with BatchNorm + ReLU (DCGAN's generator)."""

    def __init__(self, in_features: int, out_channels: int, image_size: int, width: int, norm: str = "batch",
                 out_bias: bool = True):
        super().__init__()
        base, stages = stack_plan(image_size)
        c = width * 2 ** (stages - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(in_features, c, base, 1, 0, bias=norm == "none"),
                                   _norm(norm, c), nn.ReLU(inplace=True)]
        for _i in range(stages - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=norm == "none"), _norm(norm, c // 2),
                       nn.ReLU(inplace=True)]
            c //= 2
        layers.append(nn.ConvTranspose2d(c, out_channels, 4, 2, 1, bias=out_bias))
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z.reshape(z.shape[0], -1, 1, 1))


def label_maps(y: torch.Tensor, num_classes: int, size: int) -> torch.Tensor:
    """One-hot labels (B,) as constant (B, K, size, size) planes: how conditional models feed a class to convs."""
    onehot = nn.functional.one_hot(y.long(), num_classes).to(torch.get_default_dtype())
    return onehot[:, :, None, None].expand(-1, -1, size, size)


def check_images(x: torch.Tensor, shape: tuple[int, int, int], who: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"{who}: expected images of shape (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def check_labels(y: torch.Tensor | None, num_classes: int | None, batch: int, who: str) -> None:
    if num_classes is None:
        if y is not None:
            raise ValueError(f"{who} is not class-conditional: pass no labels")
        return
    if y is None:
        raise ValueError(f"{who} is class-conditional: pass labels y (B,) with values in [0, {num_classes})")
    if y.shape != (batch,):
        raise ValueError(f"{who}: labels must have shape ({batch},), got {tuple(y.shape)}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{who}: labels must be in [0, {num_classes}), got {int(y.min())}..{int(y.max())}")
