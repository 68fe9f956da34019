"""Autoencoders: `ae_mlp`, `ae_conv`, and the denoising `dae_conv` (REFERENCE.md, "Autoencoders").

Every autoencoder maps images in [0, 1] to a latent vector and back: `encode(x) -> z`, `decode(z) -> x_hat`
(a sigmoid output in [0, 1]) and `reconstruct(x)` (= `forward`). The denoising autoencoder adds
`corrupt(x)`: Gaussian noise or masking, chosen by its `corruption` keyword; it is trained to map the
corrupted image back to the clean one, and evaluated the same way.
"""
from __future__ import annotations

import torch
from torch import nn

from visionzoo.models.generative_blocks import ConvDecoder, ConvEncoder, check_images
from visionzoo.registry import Capabilities, register_model


class _AutoencoderBase(nn.Module):
    kind = "autoencoder"
    data_range = "unit"  # images in [0, 1]
    num_classes = None

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    # corruption: only the denoising autoencoder corrupts; the others reconstruct what they are given
    corruption: str | None = None

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


class MLPAutoencoder(_AutoencoderBase):
    """Fully connected: D -> hidden -> hidden/2 -> latent -> hidden/2 -> hidden -> D."""

    def __init__(self, image_size: int = 28, channels: int = 1, latent_dim: int = 32, hidden: int = 512):
        super().__init__()
        self.image_shape = (channels, image_size, image_size)
        self.latent_dim = latent_dim
        d = channels * image_size * image_size
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, hidden // 2), nn.ReLU(inplace=True),
                                     nn.Linear(hidden // 2, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden // 2), nn.ReLU(inplace=True),
                                     nn.Linear(hidden // 2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.image_shape, type(self).__name__)
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z)).reshape(z.shape[0], *self.image_shape)


class ConvAutoencoder(_AutoencoderBase):
    """DCGAN-style conv encoder (BatchNorm) -> linear latent -> linear -> transposed-conv decoder."""

    def __init__(self, image_size: int = 32, channels: int = 3, latent_dim: int = 64, width: int = 32):
        super().__init__()
        self.image_shape = (channels, image_size, image_size)
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(channels, image_size, width)
        flat = self.encoder.out_channels * self.encoder.base ** 2
        self.to_latent = nn.Linear(flat, latent_dim)
        self.decoder = ConvDecoder(latent_dim, channels, image_size, width)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.image_shape, type(self).__name__)
        return self.to_latent(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))


class DenoisingAutoencoder(ConvAutoencoder):
    """A conv autoencoder trained to undo a corruption q(x~ | x): additive Gaussian noise of std `noise_std`
    (clipped to [0, 1]) or masking, which zeroes a `mask_fraction` of the pixels (all channels of a pixel)."""

    CORRUPTIONS = ("gaussian", "masking")

    def __init__(self, image_size: int = 32, channels: int = 3, latent_dim: int = 64, width: int = 32,
                 corruption: str = "gaussian", noise_std: float = 0.2, mask_fraction: float = 0.3):
        super().__init__(image_size, channels, latent_dim, width)
        if corruption not in self.CORRUPTIONS:
            raise ValueError(f"corruption = {corruption!r}; expected one of {self.CORRUPTIONS}")
        if not 0 <= mask_fraction < 1:
            raise ValueError(f"mask_fraction = {mask_fraction}; expected a value in [0, 1)")
        if noise_std < 0:
            raise ValueError(f"noise_std = {noise_std}; expected >= 0")
        self.corruption, self.noise_std, self.mask_fraction = corruption, float(noise_std), float(mask_fraction)

    def corrupt(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        amount = self.noise_std if self.corruption == "gaussian" else self.mask_fraction
        return corrupt_images(x, self.corruption, amount, generator)


def parse_corruption(spec: str) -> tuple[str, float]:
    """"gaussian:0.5" (noise std) or "masking:0.25" (fraction of pixels zeroed) -> (kind, amount)."""
    kind, sep, amount = str(spec).partition(":")
    try:
        value = float(amount)
    except ValueError:
        value = None
    if not sep or kind not in DenoisingAutoencoder.CORRUPTIONS or value is None or value < 0 or \
            (kind == "masking" and value >= 1):
        raise ValueError(f"corruption {spec!r}: expected 'gaussian:<noise std >= 0>' or 'masking:<fraction in "
                         "[0, 1)>', e.g. 'gaussian:0.5' or 'masking:0.25'")
    return kind, value


def corrupt_images(x: torch.Tensor, corruption: str, amount: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Images in [0, 1] corrupted by additive Gaussian noise of std `amount`, clamped to [0, 1], or by masking,
    which zeroes a fraction `amount` of the pixels (all channels of a pixel)."""
    if corruption == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + amount * noise).clamp(0, 1)
    if corruption == "masking":
        keep = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=x.device) >= amount
        return x * keep.to(x.dtype)
    raise ValueError(f"corruption = {corruption!r}; expected one of {DenoisingAutoencoder.CORRUPTIONS}")


@register_model(task="generative", family="autoencoder", input_size=(1, 28, 28), num_classes=None,
                capabilities=Capabilities(generative_kind="autoencoder"))
def ae_mlp(image_size: int = 28, channels: int = 1, latent_dim: int = 32, hidden: int = 512) -> MLPAutoencoder:
    """Fully connected autoencoder (28 px grayscale by default)."""
    return MLPAutoencoder(image_size, channels, latent_dim, hidden)


@register_model(task="generative", family="autoencoder", input_size=(3, 32, 32), num_classes=None,
                capabilities=Capabilities(generative_kind="autoencoder"))
def ae_conv(image_size: int = 32, channels: int = 3, latent_dim: int = 64, width: int = 32) -> ConvAutoencoder:
    """Convolutional autoencoder (DCGAN-style stacks, 28/32/64 px)."""
    return ConvAutoencoder(image_size, channels, latent_dim, width)


@register_model(task="generative", family="autoencoder", input_size=(3, 32, 32), num_classes=None,
                capabilities=Capabilities(generative_kind="autoencoder", denoising=True))
def dae_conv(image_size: int = 32, channels: int = 3, latent_dim: int = 64, width: int = 32,
             corruption: str = "gaussian", noise_std: float = 0.2, mask_fraction: float = 0.3) -> DenoisingAutoencoder:
    """Denoising convolutional autoencoder (Gaussian-noise or masking corruption)."""
    return DenoisingAutoencoder(image_size, channels, latent_dim, width, corruption, noise_std, mask_fraction)
