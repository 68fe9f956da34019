"""Training losses of the generative family. The VAE's loss terms live on the model (`loss_terms`): they are
part of its standard interface. Here: autoencoder reconstruction and the two GAN objectives."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean squared error or binary cross-entropy per pixel (images in [0, 1]), in float32.

    CUDA autocast refuses `binary_cross_entropy` on probabilities (bf16/fp16 logs lose too much), so the
    loss runs outside autocast on float32 copies; CPU autocast would allow it, which hides the error."""
    if kind not in ("mse", "bce"):
        raise ValueError(f"loss.recon = {kind!r}; expected 'mse' or 'bce'")
    with torch.autocast(device_type=x_hat.device.type, enabled=False):
        x_hat, x = x_hat.float(), x.float()
        if kind == "mse":
            return F.mse_loss(x_hat, x)
        return F.binary_cross_entropy(x_hat.clamp(1e-6, 1 - 1e-6), x)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The DCGAN discriminator's log loss: -log D(x) - log(1 - D(G(z)))."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def nonsaturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)) rather than log(1 - D(G(z))): strong gradients while D still wins (Goodfellow et al. 2014)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP's E[(||grad_x^ D(x^)||_2 - 1)^2] on random interpolates x^ = e x + (1 - e) x~, e ~ U(0, 1)."""
    eps = torch.rand((real.shape[0], 1, 1, 1), device=real.device, dtype=real.dtype)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(mixed, y)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()
