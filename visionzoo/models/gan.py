"""GANs: `dcgan` (Radford et al. 2016, the pytorch/examples recipe), `wgan_gp` (Gulrajani et al. 2017) and the
class-conditional `cdcgan`.

A GAN here is one `nn.Module` holding `generator` and `discriminator` (the critic, for WGAN-GP) so one weight
file carries both; the trainer gives each its own optimizer (config `optimizers.<name>.params`).

    images = gan.sample(n, y=None)   # in [-1, 1] (Tanh), like the data it was trained on
    images = gan(z, y=None)          # the generator on given latents (B, latent_dim)
    logits = gan.discriminator(x, y) # real/fake logits (B,)

DCGAN (REFERENCE.md): transposed convs 4x4 stride 2 with BatchNorm + ReLU and a Tanh output; discriminator
convs 4x4 stride 2 with LeakyReLU 0.2 and BatchNorm except on the first layer; weights N(0, 0.02), BatchNorm
weights N(1, 0.02). The discriminator returns logits (the sigmoid lives in the loss, which is the same
function and numerically safer). WGAN-GP's critic has no BatchNorm (the gradient penalty is per sample, which
batch statistics break); it uses layer normalisation as the paper recommends.
"""
from __future__ import annotations

import torch
from torch import nn

from visionzoo.models.generative_blocks import ConvDecoder, ConvEncoder, check_labels, label_maps, stack_plan
from visionzoo.registry import Capabilities, register_model


def dcgan_init(module: nn.Module) -> None:
    """pytorch/examples' weights_init: convs N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, latent_dim: int, channels: int, image_size: int, width: int, num_classes: int | None):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.body = ConvDecoder(latent_dim + (num_classes or 0), channels, image_size, width, norm="batch",
                                out_bias=False)  # as pytorch/examples

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        z = z.reshape(z.shape[0], -1)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"generator: expected latents of size {self.latent_dim}, got {tuple(z.shape)}")
        check_labels(y, self.num_classes, z.shape[0], "generator")
        if self.num_classes is not None:
            z = torch.cat([z, nn.functional.one_hot(y.long(), self.num_classes).to(z.dtype)], 1)
        return torch.tanh(self.body(z))


class Discriminator(nn.Module):
    def __init__(self, channels: int, image_size: int, width: int, num_classes: int | None, norm: str):
        super().__init__()
        self.num_classes, self.image_size = num_classes, image_size
        self.body = ConvEncoder(channels + (num_classes or 0), image_size, width, norm=norm)
        base, _ = stack_plan(image_size)
        self.head = nn.Conv2d(self.body.out_channels, 1, base, 1, 0, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(y, self.num_classes, x.shape[0], "discriminator")
        if self.num_classes is not None:
            x = torch.cat([x, label_maps(y, self.num_classes, x.shape[-1]).to(x.dtype)], 1)
        return self.head(self.body(x)).flatten()


class GAN(nn.Module):
    kind = "gan"
    data_range = "symmetric"  # images in [-1, 1]

    def __init__(self, *, image_size: int, channels: int, latent_dim: int, g_width: int, d_width: int,
                 num_classes: int | None, loss: str, critic_norm: str):
        super().__init__()
        self.image_shape = (channels, image_size, image_size)
        self.latent_dim, self.num_classes, self.loss = latent_dim, num_classes, loss
        self.generator = Generator(latent_dim, channels, image_size, g_width, num_classes)
        self.discriminator = Discriminator(channels, image_size, d_width, num_classes, critic_norm)
        dcgan_init(self)

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.generator(z, y)

    def latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.generator.parameters()).device
        return torch.randn((n, self.latent_dim), generator=generator, device=device)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generator(self.latents(n, generator), y)


@register_model(task="generative", family="gan", input_size=(3, 64, 64), num_classes=None, gan_loss="nonsaturating",
                critic_steps=1, capabilities=Capabilities(generative_kind="gan"))
def dcgan(image_size: int = 64, channels: int = 3, latent_dim: int = 100, g_width: int = 64,
          d_width: int = 64) -> GAN:
    """DCGAN, the pytorch/examples recipe (z 100, 64 feature maps at 64 px)."""
    return GAN(image_size=image_size, channels=channels, latent_dim=latent_dim, g_width=g_width, d_width=d_width,
               num_classes=None, loss="nonsaturating", critic_norm="batch")


@register_model(task="generative", family="gan", input_size=(3, 64, 64), num_classes=None, gan_loss="wgan-gp",
                critic_steps=5, capabilities=Capabilities(generative_kind="gan"))
def wgan_gp(image_size: int = 64, channels: int = 3, latent_dim: int = 100, g_width: int = 64,
            d_width: int = 64) -> GAN:
    """WGAN-GP: DCGAN generator, layer-normalised critic, gradient penalty 10, 5 critic steps per generator step."""
    return GAN(image_size=image_size, channels=channels, latent_dim=latent_dim, g_width=g_width, d_width=d_width,
               num_classes=None, loss="wgan-gp", critic_norm="layer")


@register_model(task="generative", family="gan", input_size=(3, 64, 64), num_classes=5, gan_loss="nonsaturating",
                critic_steps=1, capabilities=Capabilities(generative_kind="gan", conditional=True))
def cdcgan(num_classes: int = 5, image_size: int = 64, channels: int = 3, latent_dim: int = 100, g_width: int = 64,
           d_width: int = 64) -> GAN:
    """Conditional DCGAN: one-hot labels appended to z and as input planes of the discriminator."""
    return GAN(image_size=image_size, channels=channels, latent_dim=latent_dim, g_width=g_width, d_width=d_width,
               num_classes=num_classes, loss="nonsaturating", critic_norm="batch")
