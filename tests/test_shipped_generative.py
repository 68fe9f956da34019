"""The generative models shipped in weights/ (a denoising autoencoder, a VAE and a DCGAN trained on shapes):
model cards, integrity, the notebook API, and evaluate.py on the weights file alone reproducing the card."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import visionzoo
from tests.helpers import run_script
from visionzoo.weights import REPO_WEIGHTS_DIR, sha256_file

SHIPPED = {
    "dae_conv": ("psnr", "psnr_corrupted", "psnr_gain", "mse"),
    "vae_conv": ("elbo", "recon_nll", "kl", "nll", "bits_per_dim", "iwae_bound"),
    "dcgan": ("fid", "kid", "kid_std", "diversity_ratio"),
}


def card_of(model: str) -> dict:
    return json.loads((REPO_WEIGHTS_DIR / f"{model}.shapes.json").read_text())


@pytest.mark.parametrize("model", SHIPPED)
def test_card_is_complete_and_matches_the_file(model):
    weights = REPO_WEIGHTS_DIR / f"{model}.shapes.safetensors"
    card = card_of(model)
    assert card["model"] == model and card["task"] == "generative" and card["dtype"] == "float16"
    assert card["sha256"] == sha256_file(weights) and weights.stat().st_size <= 40 * 2**20
    assert card["metrics"]["split"] == "test" and card["trained"]["seconds"] > 0
    assert all(key in card["metrics"] for key in SHIPPED[model])
    assert card["config"]["model"]["kwargs"]["image_size"] == 32


def test_every_score_names_its_extractor_and_the_vae_bound_uses_5000_samples():
    fid_card = card_of("dcgan")["metrics"]
    assert "resnet18.shapes" in fid_card["feature_extractor"]
    vae = card_of("vae_conv")["metrics"]
    assert vae["iwae_k"] == 5000 and vae["iwae_bound"] >= vae["elbo_on_iwae_images"]
    assert "dequantised" in vae["data"]


def test_notebook_api_samples_and_reconstructs():
    torch.manual_seed(0)
    gan = visionzoo.create_model("dcgan", weights="shapes").eval()
    images = gan.sample(16, generator=torch.Generator().manual_seed(0))
    assert images.shape == (16, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert images.flatten(1).std(0).mean() > 0.1  # sixteen different images, not one
    vae = visionzoo.create_model("vae_conv", weights="shapes").eval()
    assert vae.sample(4).shape == (4, 3, 32, 32)

    from visionzoo.datasets.shapes import make_classification_sample
    from visionzoo.tasks.generative.metrics import psnr

    clean = torch.stack([torch.from_numpy(np.array(make_classification_sample(10_000 + i, 32)[0]))
                         .permute(2, 0, 1).float().div(255) for i in range(32)])
    dae = visionzoo.create_model("dae_conv", weights="shapes").eval()
    noisy = dae.corrupt(clean, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        gain = (psnr(dae(noisy), clean) - psnr(noisy, clean)).mean().item()
    assert gain > 3.0  # dB: it denoises


@pytest.mark.slow
def test_evaluating_the_shipped_files_reproduces_their_cards(tmp_path):
    """evaluate.py on each weights file alone (config from the card): the same numbers, up to fp16 storage."""
    for model, keys in (("dae_conv", ("psnr", "psnr_corrupted")), ("dcgan", ("fid",))):
        card = card_of(model)["metrics"]
        weights = REPO_WEIGHTS_DIR / f"{model}.shapes.safetensors"
        r = run_script("evaluate.py", weights, "--split", "test", "--report", tmp_path / model, "--no-progress")
        assert r.returncode == 0, r.stderr
        got = json.loads((tmp_path / model / "metrics.json").read_text())["metrics"]
        for key in keys:
            assert got[key] == pytest.approx(card[key], rel=0.01), key
    # the VAE at a CPU-sized k: its ELBO over the whole test split matches; L_100 sits between it and -NLL_5000
    card = card_of("vae_conv")["metrics"]
    r = run_script("evaluate.py", REPO_WEIGHTS_DIR / "vae_conv.shapes.safetensors", "--split", "test",
                   "--report", tmp_path / "vae", "--no-progress", "eval.iwae_k=100", "eval.iwae_images=100")
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "vae" / "metrics.json").read_text())["metrics"]
    assert got["elbo"] == pytest.approx(card["elbo"], rel=0.01)
    assert got["iwae_bound"] > got["elbo_on_iwae_images"]
    assert (tmp_path / "vae" / "report.html").is_file()
