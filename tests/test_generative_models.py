"""Generative models: architectures against the published recipes, likelihoods against torch.distributions,
the importance-weighted bound on a trained VAE, corruptions, the gradient penalty, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from visionzoo import create_model, list_models
from visionzoo.tasks.generative.losses import gradient_penalty
from visionzoo.tasks.generative.metrics import bits_per_dim, psnr

GENERATIVE = ["ae_mlp", "ae_conv", "dae_conv", "vae_mlp", "vae_conv", "beta_vae_conv", "cvae_conv", "dcgan",
              "wgan_gp", "cdcgan"]


def test_every_generative_model_is_registered():
    assert sorted(list_models(task="generative")) == sorted(GENERATIVE)


def test_dcgan_matches_the_pytorch_examples_recipe():
    torch.manual_seed(0)
    gan = create_model("dcgan")
    # pytorch/examples dcgan at 64 px, nz 100, ngf = ndf = 64: netG 3,576,704 and netD 2,765,568 parameters
    assert sum(p.numel() for p in gan.generator.parameters()) == 3_576_704
    assert sum(p.numel() for p in gan.discriminator.parameters()) == 2_765_568
    convs = [m.weight for m in gan.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    bns = [m.weight for m in gan.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert abs(torch.cat([w.flatten() for w in convs]).std().item() - 0.02) < 1e-3
    assert abs(torch.cat([w.flatten() for w in bns]).mean().item() - 1.0) < 0.01
    images = gan.sample(3)
    assert images.shape == (3, 3, 64, 64) and images.min() >= -1 and images.max() <= 1
    assert gan.discriminator(images).shape == (3,)
    # the critic of WGAN-GP has no batch normalisation (the penalty is per sample)
    critic = create_model("wgan_gp").discriminator
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in critic.modules())


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("name", GENERATIVE)
def test_every_model_at_every_size(name, size):
    kwargs = {"image_size": size}
    kwargs.update({"g_width": 8, "d_width": 8} if name.endswith("gan") or name == "wgan_gp" else
                  {"hidden": 32} if name.endswith("mlp") else {"width": 8})
    model = create_model(name, **kwargs).eval()
    c = model.image_shape[0]
    assert model.image_shape == (c, size, size)
    y = torch.tensor([0, 4]) if getattr(model, "num_classes", None) else None
    x = torch.rand(2, c, size, size)
    with torch.no_grad():
        if model.kind == "gan":
            out = model.sample(2, y)
            assert out.shape == x.shape and model.discriminator(out, y).shape == (2,)
        elif model.kind == "vae":
            assert model.sample(2, y).shape == x.shape and model.reconstruct(x, y).shape == x.shape
            terms = model.loss_terms(model.prepare_data(x), y)
            assert terms["elbo"].shape == (2,) and torch.isfinite(terms["loss"])
        else:
            out = model(x)
            assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1


def test_unsupported_size_and_bad_labels_are_clear_errors():
    with pytest.raises(ValueError, match="image_size = 48 is not supported"):
        create_model("vae_conv", image_size=48)
    vae = create_model("cvae_conv", width=8)
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="class-conditional: pass labels"):
        vae.encode(x)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
        vae.encode(x, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="is not class-conditional"):
        create_model("vae_conv", width=8).encode(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        create_model("ae_conv", width=8)(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="likelihood = 'poisson'"):
        create_model("vae_conv", likelihood="poisson")


def test_vae_terms_equal_torch_distributions():
    torch.manual_seed(0)
    for likelihood in ("gaussian", "bernoulli"):
        vae = create_model("vae_conv", width=8, latent_dim=6, likelihood=likelihood).eval()
        with torch.no_grad():
            vae.log_sigma.fill_(math.log(0.3))
        x = vae.prepare_data(torch.rand(3, 3, 32, 32))
        noise = torch.randn(3, 6)
        terms = vae.loss_terms(x, noise=noise)
        mu, logvar = vae.encode(x)
        std = torch.exp(0.5 * logvar)
        kl = D.kl_divergence(D.Normal(mu, std), D.Normal(0.0, 1.0)).sum(1)
        torch.testing.assert_close(terms["kl"], kl, rtol=1e-5, atol=1e-4)
        z = mu + std * noise
        out = vae._decoder_output(z, None)
        dist = (D.Normal(torch.sigmoid(out), 0.3) if likelihood == "gaussian" else D.Bernoulli(logits=out))
        log_px = dist.log_prob(x).flatten(1).sum(1)
        torch.testing.assert_close(terms["recon_nll"], -log_px, rtol=1e-5, atol=1e-2)
        torch.testing.assert_close(terms["elbo"], log_px - kl, rtol=1e-5, atol=1e-2)
        if likelihood == "bernoulli":
            assert set(x.unique().tolist()) <= {0.0, 1.0}
        else:  # dequantised: within the 8-bit level's bin [k/256, (k+1)/256)
            assert 0 <= x.min() and x.max() < 1


def test_the_learned_variance_is_a_parameter_and_the_fixed_one_is_not():
    learned = create_model("vae_conv", width=8)
    fixed = create_model("vae_conv", width=8, variance="fixed", sigma=0.05)
    assert "log_sigma" in dict(learned.named_parameters())
    assert "log_sigma" not in dict(fixed.named_parameters())
    assert torch.allclose(fixed.log_sigma.exp(), torch.tensor(0.05))


def test_iwae_bound_rises_with_k_above_the_elbo_on_a_trained_vae():
    """L_1 = ELBO <= L_k <= log p(x), rising with k (Burda et al.), on a VAE trained for a few hundred steps."""
    from visionzoo.datasets.shapes import make_classification_sample

    torch.manual_seed(0)
    images = torch.stack([torch.from_numpy(np.array(make_classification_sample(i, 28)[0].convert("L")))
                          .float().div(255)[None] for i in range(256)])
    vae = create_model("vae_mlp", hidden=128, latent_dim=8)
    opt = torch.optim.Adam(vae.parameters(), lr=2e-3)
    for _step in range(250):
        batch = vae.prepare_data(images[torch.randint(0, 256, (64,))])
        opt.zero_grad()
        vae.loss_terms(batch)["loss"].backward()
        opt.step()
    vae.eval()
    x = vae.prepare_data(images[:64])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        elbo = torch.stack([vae.loss_terms(x)["elbo"] for _ in range(20)]).mean(0).mean().item()
    bounds = {k: vae.iwae_bound(x, k=k, generator=g).mean().item() for k in (1, 10, 100, 1000)}
    assert abs(bounds[1] - elbo) < 0.02 * abs(elbo)  # L_1 is the ELBO (up to Monte-Carlo noise)
    assert elbo < bounds[10] < bounds[100] < bounds[1000]
    assert bits_per_dim(-bounds[1000], 28 * 28, dequantized=False) < 1.0  # it learned something


def test_iwae_bound_chunks_agree_and_k_must_be_positive():
    vae = create_model("vae_conv", width=8, latent_dim=4).eval()
    x = vae.prepare_data(torch.rand(2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    a = vae.iwae_bound(x, k=400, generator=torch.Generator().manual_seed(3))
    b = vae.iwae_bound(x, k=400, max_decodes=14, generator=torch.Generator().manual_seed(4))  # 7 per chunk
    assert a.shape == (2,) and torch.isfinite(a).all()
    assert torch.allclose(a, b, rtol=2e-3)  # the same estimator, computed in 58 chunks
    with pytest.raises(ValueError, match="k >= 1"):
        vae.iwae_bound(x, k=0)


def test_bits_per_dim_and_psnr_by_hand():
    d = 3 * 32 * 32
    assert bits_per_dim(d * math.log(2), d, dequantized=False) == pytest.approx(1.0)
    # a uniform density on [0, 1]^D (NLL 0) is exactly 8 bits per 8-bit dimension
    assert bits_per_dim(0.0, d, dequantized=True) == pytest.approx(8.0)
    x = torch.zeros(2, 1, 4, 4)
    x_hat = torch.full_like(x, 0.1)
    assert psnr(x_hat, x).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)


def test_denoising_corruptions():
    x = torch.rand(8, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    masking = create_model("dae_conv", width=8, corruption="masking", mask_fraction=0.4)
    out = masking.corrupt(x, generator=g)
    dropped = (out == 0).all(1).float().mean().item()
    assert 0.35 < dropped < 0.45
    assert torch.equal(out[out != 0], x[out != 0])
    noisy = create_model("dae_conv", width=8, corruption="gaussian", noise_std=0.1)
    mid = torch.full((4, 3, 32, 32), 0.5)
    assert (noisy.corrupt(mid, generator=g) - mid).std().item() == pytest.approx(0.1, rel=0.05)
    assert torch.equal(create_model("ae_conv", width=8).corrupt(x), x)  # a plain AE corrupts nothing
    with pytest.raises(ValueError, match="corruption = 'blur'"):
        create_model("dae_conv", corruption="blur")


def test_gradient_penalty_of_a_linear_critic():
    """For D(x) = w.x the gradient is w everywhere: the penalty is (||w|| - 1)^2 exactly."""
    w = torch.randn(3, 4, 4)

    def critic(x, y=None):
        return (x * w).flatten(1).sum(1)

    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    expected = (w.norm() - 1) ** 2
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(expected.item(), rel=1e-5)
