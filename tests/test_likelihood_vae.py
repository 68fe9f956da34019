"""The VAE likelihood code against independent computations: log p(x) of a tiny VAE with a 1-D latent by
numerical integration over z, the decoder's Bernoulli log-likelihood and the training objectives against
torch.distributions, and the IWAE bound's ordering L_1 <= L_k <= log p(x) (Burda et al. 2015, Theorem 1)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from visionzoo.factory import create_model

pytestmark = pytest.mark.usefixtures("one_thread")  # shared, busy cores: two OpenMP threads run 100x slower


def tiny_vae(seed: int = 0, decoder_scale: float = 1.0, **kw):
    """16 binary pixels, 1-D latent, float64 so that the numerical integral is exact to ~1e-10. A decoder
    scaled up makes p(x | z) depend strongly on z: the true posterior is then far from the (untrained)
    encoder's q(z | x), so the bounds are visibly apart."""
    torch.manual_seed(seed)
    model = create_model("vae_mlp", image_size=4, channels=1, latent_dim=1, hidden=8, activation="tanh", **kw)
    with torch.no_grad():
        for layer in model.decoder:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(decoder_scale)
    return model.double().eval()


def binary_images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.4, dtype=torch.float64),
                           generator=torch.Generator().manual_seed(seed))


def log_px_by_integration(model, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log of the integral of p(x | z) N(z; 0, 1) over z, by the trapezoid rule on [-12, 12]
    (the prior mass outside is < 1e-32), with Bernoulli log-probabilities from torch.distributions."""
    z = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    with torch.no_grad():
        probs = model.decode(z[:, None]).flatten(1)  # (G, 16)
    out = []
    for image in x.flatten(1):
        log_joint = Bernoulli(probs=probs.clamp(1e-15, 1 - 1e-15)).log_prob(image).sum(1) + Normal(0.0, 1.0).log_prob(z)
        peak = log_joint.max()
        out.append(peak + torch.log(torch.trapezoid(torch.exp(log_joint - peak), z)))
    return torch.stack(out)


def test_log_px_given_z_equals_torch_distributions():
    model = tiny_vae()
    x, z = binary_images(5), torch.randn(5, 1, dtype=torch.float64)
    with torch.no_grad():
        expected = Bernoulli(probs=model.decode(z).flatten(1)).log_prob(x.flatten(1)).sum(1)
        got = model.log_px_given_z(x, z)
    assert torch.allclose(got, expected, atol=1e-9)


def test_importance_sampled_bound_converges_to_the_integral():
    model = tiny_vae(decoder_scale=3.0)
    x = binary_images(4)
    log_px = log_px_by_integration(model, x)
    gaps = {}
    for k in (1, 10, 100, 20000):
        g = torch.Generator().manual_seed(k)
        # the mean of 8 independent L_k per image: E[L_k] rises with k towards log p(x)
        bounds = torch.stack([model.iwae_bound(x, k=k, generator=g) for _ in range(8)]).mean(0)
        gaps[k] = (log_px - bounds).mean().item()
    assert gaps[1] > gaps[10] > gaps[100] > -2e-3  # L_1 <= L_10 <= L_100 <= log p(x) (up to sampling noise)
    assert gaps[1] > 1.0 and gaps[10] > 0.05  # q is not the posterior: the ELBO is well below log p(x) ...
    assert abs(gaps[20000]) < 2e-3  # ... and L_k reaches log p(x) as k grows
    with torch.no_grad():
        elbo = model.loss_terms(x)["elbo"]
    assert (elbo <= log_px + 1e-9).all()


def test_the_analytic_kl_and_the_elbo_equal_their_monte_carlo_definition():
    model = tiny_vae()
    x = binary_images(3)
    with torch.no_grad():
        terms = model.loss_terms(x)
        mu, logvar = model.encode(x)
        q = Normal(mu[:, 0], torch.exp(0.5 * logvar[:, 0]))
        z = q.sample((200000,))
        kl_mc = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).mean(0)
    assert torch.allclose(terms["kl"], kl_mc, atol=5e-3)
    assert torch.allclose(terms["elbo"], -(terms["recon_nll"] + terms["kl"]))


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_training_objective_with_k_samples(objective):
    """The k-sample objectives from the same noise, written out with torch.distributions."""
    k = 7
    model = tiny_vae(objective=objective, k=k)
    x = binary_images(3)
    torch.manual_seed(123)
    terms = model.loss_terms(x)
    torch.manual_seed(123)
    eps = torch.randn((k, 3, 1), dtype=torch.float64)  # the draw loss_terms makes after the (noise-free) encoder
    with torch.no_grad():
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * eps
        log_px = torch.stack([Bernoulli(probs=model.decode(z[i]).flatten(1)).log_prob(x.flatten(1)).sum(1)
                              for i in range(k)])
        log_w = log_px + Normal(0.0, 1.0).log_prob(z).sum(-1) - Normal(mu, std).log_prob(z).sum(-1)
    if objective == "iwae":
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        assert torch.allclose(terms["iwae_bound"], bound, atol=1e-8)
        assert terms["loss"].item() == pytest.approx(-bound.mean().item(), abs=1e-8)
    else:
        assert "iwae_bound" not in terms
        assert torch.allclose(terms["recon_nll"], -log_px.mean(0), atol=1e-8)
        assert terms["loss"].item() == pytest.approx((terms["recon_nll"] + terms["kl"]).mean().item(), abs=1e-8)
    terms["loss"].backward()  # both objectives train the encoder and the decoder
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_bad_objective_settings_are_refused():
    with pytest.raises(ValueError, match="objective"):
        create_model("vae_mlp", objective="wake-sleep")
    with pytest.raises(ValueError, match="k = 0"):
        create_model("vae_mlp", objective="iwae", k=0)
    with pytest.raises(ValueError, match="activation"):
        create_model("vae_mlp", activation="gelu")


def test_iwae_paper_architecture():
    """784-200-200-50 with tanh, as Burda et al.'s one-stochastic-layer model."""
    model = create_model("vae_mlp", hidden=200, latent_dim=50, activation="tanh", objective="iwae", k=5)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [(784, 200), (200, 200), (50, 200), (200, 200), (200, 784), (200, 100)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in model.modules()) == 4
    assert (model.objective, model.k) == ("iwae", 5)
