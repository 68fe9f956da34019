"""Variational autoencoders: `vae_mlp`, `vae_conv`, `beta_vae_conv` and the class-conditional `cvae_conv`.

The standard interface of every VAE here (REFERENCE.md, "VAE"):

    mu, logvar = vae.encode(x, y=None)        # diagonal Gaussian posterior q(z | x)
    x_mean = vae.decode(z, y=None)            # the decoder's mean image in [0, 1]
    images = vae.sample(n, y=None)            # z ~ N(0, I), decoded
    x_hat = vae.reconstruct(x, y=None)        # decode(mu)
    terms = vae.loss_terms(x, y=None)         # per image, in nats: recon_nll, kl, elbo; and "loss" (mean)
    bound = vae.iwae_bound(x, y=None, k=5000) # importance-weighted bound L_k on log p(x), per image

`forward(x, y)` is `loss_terms` (one call, so DistributedDataParallel sees the whole computation).

Likelihoods are true log-densities, never an arbitrarily weighted MSE:
- "bernoulli": log p(x | z) = sum of Bernoulli log-probabilities of *binary* pixels; `prepare_data` binarises
  the images (pixel > 0.5), because the Bernoulli likelihood of grey values is not a probability.
- "gaussian": log N(x; mean(z), sigma^2) with sigma per channel, learned ("learned") or fixed ("fixed",
  `sigma`); `prepare_data` dequantises 8-bit images uniformly, x = (k + u) / 256, so the density bounds
  the probability of the discrete image: bits/dim = (NLL + D ln 256) / (D ln 2) (REFERENCE.md).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from visionzoo.models.generative_blocks import (
    ConvDecoder,
    ConvEncoder,
    check_images,
    check_labels,
    label_maps,
)
from visionzoo.registry import Capabilities, register_model

LIKELIHOODS = ("bernoulli", "gaussian")
VARIANCES = ("learned", "fixed")
OBJECTIVES = ("elbo", "iwae")
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
_LOG_2PI = math.log(2 * math.pi)


class VAE(nn.Module):
    kind = "vae"
    data_range = "unit"

    def __init__(self, encoder: nn.Module, encoder_features: int, decoder: nn.Module, *, image_shape, latent_dim: int,
                 likelihood: str, variance: str, sigma: float, beta: float, num_classes: int | None,
                 conv_input: bool, objective: str = "elbo", k: int = 1):
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective = {objective!r}; expected one of {OBJECTIVES}")
        if int(k) != k or k < 1:
            raise ValueError(f"k = {k!r}; the number of training samples per image must be an integer >= 1")
        if objective == "iwae" and beta != 1:
            raise ValueError(f"objective = 'iwae' has no KL weight; got beta = {beta}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood = {likelihood!r}; expected one of {LIKELIHOODS}")
        if variance not in VARIANCES:
            raise ValueError(f"variance = {variance!r}; expected one of {VARIANCES}")
        if sigma <= 0 or beta <= 0:
            raise ValueError(f"sigma and beta must be positive, got sigma = {sigma}, beta = {beta}")
        self.image_shape = tuple(image_shape)
        self.latent_dim, self.likelihood, self.variance = latent_dim, likelihood, variance
        self.beta, self.num_classes, self.conv_input = float(beta), num_classes, conv_input
        self.objective, self.k = objective, int(k)
        self.encoder, self.decoder = encoder, decoder
        self.to_posterior = nn.Linear(encoder_features, 2 * latent_dim)
        log_sigma = torch.full((image_shape[0],), math.log(sigma))
        if likelihood == "gaussian" and variance == "learned":
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None

    @property
    def dims(self) -> int:
        return math.prod(self.image_shape)

    # ---- the interface ------------------------------------------------------------------------------
    def prepare_data(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [0, 1] as this likelihood models them: binarised (Bernoulli) or dequantised (Gaussian)."""
        if self.likelihood == "bernoulli":
            return (x > 0.5).to(x.dtype)
        levels = (x * 255).round()
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (levels + u) / 256

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_images(x, self.image_shape, type(self).__name__)
        check_labels(y, self.num_classes, x.shape[0], type(self).__name__)
        if self.conditional:
            maps = label_maps(y, self.num_classes, x.shape[-1]).to(x.dtype)
            x = torch.cat([x, maps], 1) if self.conv_input else torch.cat([x.flatten(1), maps[:, :, 0, 0]], 1)
        h = self.encoder(x).flatten(1)
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)  # exp(logvar) stays finite in fp32

    def _decoder_output(self, z: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        check_labels(y, self.num_classes, z.shape[0], type(self).__name__)
        if self.conditional:
            z = torch.cat([z, F.one_hot(y.long(), self.num_classes).to(z.dtype)], 1)
        return self.decoder(z).reshape(z.shape[0], *self.image_shape)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean image in [0, 1] (pixel probabilities for the Bernoulli decoder)."""
        return torch.sigmoid(self._decoder_output(z, y))

    def log_px_given_z(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x | z) per image, in nats (x as `prepare_data` returns it)."""
        out = self._decoder_output(z, y)
        if self.likelihood == "bernoulli":
            return bernoulli_log_prob(out, x).flatten(1).sum(1)
        mean = torch.sigmoid(out)
        log_sigma = self.log_sigma.clamp(min=-7).view(1, -1, 1, 1)
        log_p = -0.5 * ((x - mean) * torch.exp(-log_sigma)) ** 2 - log_sigma - 0.5 * _LOG_2PI
        return log_p.flatten(1).sum(1)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per image (nats): recon_nll = -log p(x | z) averaged over z ~ q(z | x), kl = KL(q(z | x) || N(0, I)),
        elbo = -(recon_nll + kl); "loss" (a scalar) is the training objective:
        - objective "elbo": mean of recon_nll + beta * kl over `k` samples per image (beta = 1: the negative
          ELBO; k > 1 is the paper's "VAE with k samples", a lower-variance estimate of the same bound);
        - objective "iwae": the negative importance-weighted bound -L_k with the model's k samples (Burda et al.
          2015), also returned per image as "iwae_bound".
        `noise` (B, latent_dim) fixes one reparameterisation sample (reproducible evaluation; k = 1 then)."""
        mu, logvar = self.encode(x, y)
        std = torch.exp(0.5 * logvar)
        if noise is not None:
            eps = noise.to(mu.dtype).unsqueeze(0)
        else:
            eps = torch.randn((self.k, *mu.shape), device=mu.device, dtype=mu.dtype)
        k, b = eps.shape[0], x.shape[0]
        z = mu + std * eps  # (k, B, latent)
        xs = x if k == 1 else x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
        ys = y if (y is None or k == 1) else y.unsqueeze(0).expand(k, b).reshape(-1)
        log_px = self.log_px_given_z(xs, z.reshape(k * b, -1), ys).reshape(k, b)
        recon_nll = -log_px.mean(0)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        terms = {"recon_nll": recon_nll, "kl": kl, "elbo": -(recon_nll + kl)}
        if self.objective == "iwae" and noise is None:
            log_w = log_px + _log_prior_over_posterior(z, eps, logvar)
            terms["iwae_bound"] = torch.logsumexp(log_w, 0) - math.log(k)
            terms["loss"] = -terms["iwae_bound"].mean()
        else:
            terms["loss"] = (recon_nll + self.beta * kl).mean()
        return terms

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.loss_terms(x, y, noise)

    @torch.no_grad()
    def iwae_bound(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 5000,
                   max_decodes: int = 1024, generator: torch.Generator | None = None) -> torch.Tensor:
        """L_k = log (1/k) sum_i p(x, z_i) / q(z_i | x), z_i ~ q(z | x), per image (nats); L_1 is the ELBO and
        L_k rises towards log p(x) with k. Decodes at most `max_decodes` latents at once (1024: the tensors stay in
        cache, twice as fast on CPU as 8192)."""
        if k < 1:
            raise ValueError(f"k = {k}; the importance-weighted bound needs k >= 1 samples")
        mu, logvar = self.encode(x, y)
        std = torch.exp(0.5 * logvar)
        b = x.shape[0]
        chunk = max(1, max_decodes // b)
        log_w = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps
            xs = x.unsqueeze(0).expand(n, *x.shape).reshape(n * b, *x.shape[1:])
            ys = None if y is None else y.unsqueeze(0).expand(n, b).reshape(-1)
            log_px = self.log_px_given_z(xs, z.reshape(n * b, -1), ys).reshape(n, b)
            log_w.append(log_px + _log_prior_over_posterior(z, eps, logvar))
        return torch.logsumexp(torch.cat(log_w), 0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        device = self.to_posterior.weight.device
        z = torch.randn((n, self.latent_dim), generator=generator, device=device)
        return self.decode(z, y)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, y)[0], y)


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Elementwise log Bernoulli(x; sigmoid(logits)) = x * l - softplus(l), with softplus(l) written as
    max(l, 0) + log(1 + exp(-|l|)): the same value as F.binary_cross_entropy_with_logits (to float32 rounding,
    under 1e-7 nats a pixel) but about 4x faster on CPU, where log1p and softplus are not vectorised; this is
    most of the cost of the k = 5000 bound."""
    return x * logits - logits.clamp(min=0) - torch.log(1 + torch.exp(-logits.abs()))


def _log_prior_over_posterior(z: torch.Tensor, eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log p(z) - log q(z | x) summed over latent dimensions, for z = mu + exp(logvar / 2) * eps (the
    2 pi terms cancel)."""
    return (-0.5 * z.pow(2) + 0.5 * eps.pow(2) + 0.5 * logvar).sum(-1)


def _mlp_vae(image_size, channels, latent_dim, hidden, num_classes=None, activation="relu", **kw) -> VAE:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation = {activation!r}; expected one of {tuple(ACTIVATIONS)}")
    act = ACTIVATIONS[activation]
    d, k = channels * image_size * image_size, num_classes or 0
    encoder = nn.Sequential(nn.Linear(d + k, hidden), act(), nn.Linear(hidden, hidden), act())
    decoder = nn.Sequential(nn.Linear(latent_dim + k, hidden), act(), nn.Linear(hidden, hidden), act(),
                            nn.Linear(hidden, d))
    encoder = nn.Sequential(nn.Flatten(), encoder)
    return VAE(encoder, hidden, decoder, image_shape=(channels, image_size, image_size), latent_dim=latent_dim,
               num_classes=num_classes, conv_input=False, **kw)


def _conv_vae(image_size, channels, latent_dim, width, num_classes=None, **kw) -> VAE:
    k = num_classes or 0
    encoder = ConvEncoder(channels + k, image_size, width)
    decoder = ConvDecoder(latent_dim + k, channels, image_size, width)
    return VAE(encoder, encoder.out_channels * encoder.base ** 2, decoder,
               image_shape=(channels, image_size, image_size), latent_dim=latent_dim, num_classes=num_classes,
               conv_input=True, **kw)


@register_model(task="generative", family="vae", input_size=(1, 28, 28), num_classes=None,
                capabilities=Capabilities(generative_kind="vae"))
def vae_mlp(image_size: int = 28, channels: int = 1, latent_dim: int = 16, hidden: int = 512,
            likelihood: str = "bernoulli", variance: str = "learned", sigma: float = 0.1, activation: str = "relu",
            objective: str = "elbo", k: int = 1) -> VAE:
    """Fully connected VAE (Kingma & Welling's MNIST setting: 28 px, Bernoulli decoder): two hidden layers of
    `hidden` units in the encoder and in the decoder. The IWAE paper's one-stochastic-layer model (Burda et al.
    2015) is `hidden=200, latent_dim=50, activation="tanh"`, trained with `objective="elbo"` (VAE) or
    `objective="iwae"` and `k` samples per image."""
    return _mlp_vae(image_size, channels, latent_dim, hidden, likelihood=likelihood, variance=variance,
                    sigma=sigma, beta=1.0, activation=activation, objective=objective, k=k)


@register_model(task="generative", family="vae", input_size=(3, 32, 32), num_classes=None,
                capabilities=Capabilities(generative_kind="vae"))
def vae_conv(image_size: int = 32, channels: int = 3, latent_dim: int = 32, width: int = 32,
             likelihood: str = "gaussian", variance: str = "learned", sigma: float = 0.1) -> VAE:
    """Convolutional VAE (DCGAN-style stacks), Gaussian decoder with a learned per-channel variance."""
    return _conv_vae(image_size, channels, latent_dim, width, likelihood=likelihood, variance=variance,
                     sigma=sigma, beta=1.0)


@register_model(task="generative", family="vae", input_size=(3, 32, 32), num_classes=None,
                capabilities=Capabilities(generative_kind="vae"))
def beta_vae_conv(image_size: int = 32, channels: int = 3, latent_dim: int = 32, width: int = 32,
                  likelihood: str = "gaussian", variance: str = "learned", sigma: float = 0.1,
                  beta: float = 4.0) -> VAE:
    """beta-VAE (Higgins et al. 2017): the KL term weighted by beta > 1 during training; its ELBO is still
    reported with beta = 1."""
    return _conv_vae(image_size, channels, latent_dim, width, likelihood=likelihood, variance=variance,
                     sigma=sigma, beta=beta)


@register_model(task="generative", family="vae", input_size=(3, 32, 32), num_classes=5,
                capabilities=Capabilities(generative_kind="vae", conditional=True))
def cvae_conv(num_classes: int = 5, image_size: int = 32, channels: int = 3, latent_dim: int = 32, width: int = 32,
              likelihood: str = "gaussian", variance: str = "learned", sigma: float = 0.1) -> VAE:
    """Class-conditional VAE: one-hot labels as extra input planes of the encoder and extra latent inputs
    of the decoder; sample(n, y) draws images of classes y."""
    return _conv_vae(image_size, channels, latent_dim, width, num_classes=num_classes, likelihood=likelihood,
                     variance=variance, sigma=sigma, beta=1.0)
