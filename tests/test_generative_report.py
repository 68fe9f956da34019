"""The generative report: the per-epoch progress grid and the HTML report of each kind of model (denoising
autoencoder, VAE, conditional VAE, DCGAN, conditional DCGAN), from small untrained models and the shapes data."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from visionzoo.config import load_config
from visionzoo.tasks import task_for
from visionzoo.tasks.generative.report import build_generative_report, progress_grid, slerp

ROOT = Path(__file__).resolve().parent.parent
SMALL = {
    "dae_conv": ["model.kwargs.width=8", "model.kwargs.latent_dim=16"],
    "vae_conv": ["model.kwargs.width=8", "model.kwargs.latent_dim=8"],
    "cvae_conv": ["model.kwargs.width=8", "model.kwargs.latent_dim=8"],
    "dcgan": ["model.kwargs.g_width=8", "model.kwargs.d_width=8", "model.kwargs.latent_dim=16"],
    "cdcgan": ["model.kwargs.g_width=8", "model.kwargs.d_width=8", "model.kwargs.latent_dim=16"],
}
RESNET = "resnet18.shapes (visionzoo classifier, weights resnet18.shapes.safetensors, 512-d pooled penultimate features)"
INCEPTION = ("inception_v3 pool3 2048-d (pytorch-fid FID-Inception, TF inception-2015-12-05 port; file "
             "pt_inception-2015-12-05-6726825d.pth, sha256 6726825d)")
COLLAPSE = "generated samples look collapsed: their mean pairwise feature distance is 0.050 of the real images'"
METRICS = {
    "dae_conv": {"num_images": 40, "mse": 0.01, "psnr": 20.0, "mse_corrupted": 0.04, "psnr_corrupted": 14.0,
                 "psnr_gain": 6.0},
    "vae_conv": {"num_images": 40, "elbo": -1234.5, "recon_nll": 1200.0, "kl": 34.5, "elbo_bits_per_dim": 4.2,
                 "iwae_k": 100, "iwae_images": 40, "iwae_bound": -1220.1, "nll": 1220.1, "bits_per_dim": 4.1,
                 "data": "8-bit images dequantised to [0, 1]"},
    "dcgan": {"fid": 12.3, "kid": 0.01, "kid_std": 0.002, "diversity_ratio": 0.05, "num_real": 40,
              "num_generated": 40, "feature_extractor": RESNET, "warnings": [COLLAPSE]},
}
METRICS["cvae_conv"] = METRICS["vae_conv"]
METRICS["cdcgan"] = {**METRICS["dcgan"], "diversity_ratio": 0.8, "feature_extractor": INCEPTION}
del METRICS["cdcgan"]["warnings"]
VAL_KEY = {"dae_conv": "psnr", "vae_conv": "nll", "cvae_conv": "nll", "dcgan": "fid", "cdcgan": "fid"}

COMMON = ["Summary", "Latent interpolation", "Latent traversals", "Training curves", "Progress across epochs",
          "Run information"]
SECTIONS = {  # in report order
    "autoencoder": ["Summary", "Reconstructions", "Latent interpolation", "Latent traversals",
                    "Latent space (2-D projection)", "Training curves", "Progress across epochs", "Run information"],
    "vae": ["Summary", "Reconstructions", "Samples", "Latent interpolation", "Latent traversals",
            "Latent space (2-D projection)", "Training curves", "Progress across epochs", "Run information"],
    "gan": ["Summary", "Samples", "Latent interpolation", "Latent traversals", "Training curves",
            "Progress across epochs", "Run information"],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def _setup(name: str, *overrides: str):
    # GAN evaluation sets must outnumber the FID features' 512 dimensions (checked when the set is built)
    samples = 520 if name.endswith("gan") else 40
    cfg = load_config(ROOT / "configs" / "generative" / f"{name}_shapes.yaml",
                      [f"data.params.eval_samples={samples}", *SMALL[name], *overrides])
    task = task_for(cfg)
    dataset = task.build_dataset("val", train=False)
    torch.manual_seed(0)
    model = task.build_model(dataset).eval()
    return cfg, dataset, model


def _cell(image, row: int, col: int, side: int = 32) -> np.ndarray:
    """Grid cell (row, col) of an 8-column grid with 2-px gaps, as floats in [0, 1]."""
    x, y = 2 + col * (side + 2), 2 + row * (side + 2)
    return np.asarray(image, dtype=np.float64)[y:y + side, x:x + side] / 255


@pytest.mark.parametrize("name", list(SMALL))
def test_progress_grid(name):
    cfg, dataset, model = _setup(name)
    model.train()
    rng = torch.get_rng_state()
    grid = progress_grid(model, dataset, cfg)
    assert model.training  # the caller's mode is restored
    model.eval()
    assert torch.equal(rng, torch.get_rng_state())  # the global random state is left alone
    assert grid.mode == "RGB"
    if model.kind == "autoencoder":
        assert grid.size == (274, 206)  # 16 images in bands of 8: input, corrupted, output rows
        assert np.abs(_cell(grid, 0, 0) - dataset.image(0).permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
        corrupted = model.corrupt(dataset[0][0][None], generator=torch.Generator().manual_seed(cfg.eval.seed))
        assert np.abs(_cell(grid, 1, 0) - corrupted[0].permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    else:
        assert grid.size == (274, 274)  # eval.grid_samples = 64 in 8 columns
        y = torch.arange(64) % model.num_classes if model.num_classes else None
        with torch.no_grad():
            first = model.sample(64, y, generator=torch.Generator().manual_seed(cfg.eval.seed))[0]
        if model.kind == "gan":
            first = first * 0.5 + 0.5
        assert np.abs(_cell(grid, 0, 0) - first.permute(1, 2, 0).numpy()).max() <= 1 / 255 + 1e-6
    assert np.array_equal(np.asarray(grid), np.asarray(progress_grid(model, dataset, cfg)))  # fixed noise


def test_progress_grid_size_and_seed():
    cfg, dataset, model = _setup("dcgan", "eval.grid_samples=16")
    grid = progress_grid(model, dataset, cfg)
    assert grid.size == (274, 70)
    cfg.eval.seed = 1
    assert not np.array_equal(np.asarray(grid), np.asarray(progress_grid(model, dataset, cfg)))


def test_slerp():
    a, b = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0], a) and torch.allclose(path[-1], b)
    assert torch.allclose(path.norm(dim=1), torch.full((5,), 3.0))  # stays on the sphere
    assert torch.allclose(slerp(a, 2 * a, torch.tensor([0.5]))[0], 1.5 * a)  # parallel: linear


@pytest.mark.parametrize("name, epochs", [("dae_conv", 3), ("vae_conv", 3), ("cvae_conv", 1), ("dcgan", 11),
                                          ("cdcgan", 2)])
def test_report(tmp_path, name, epochs):
    cfg, dataset, model = _setup(name)
    progress = tmp_path / "progress"
    progress.mkdir()
    grid = progress_grid(model, dataset, cfg)
    for epoch in range(1, epochs + 1):
        grid.save(progress / f"epoch_{epoch:03d}.png")
    key = VAL_KEY[name]
    log = []
    for epoch in (1, 2):
        log.append({"type": "train", "epoch": epoch, "step": 10 * epoch, "loss": 1.0 / epoch, "lr": 1e-3})
        log.append({"type": "val", "epoch": epoch, "step": 10 * epoch, key: 50.0 / epoch,
                    **({"kid": 0.05 / epoch} if key == "fid" else {})})
    metrics = METRICS[name]
    rng = torch.get_rng_state()
    path = build_generative_report(
        tmp_path / "report" / "report.html", title=f"{name} on shapes", metrics=metrics, dataset=dataset,
        model=model, cfg=cfg, log_records=log, run_info={"command": ["train.py", "x.yaml"], "run_dir": str(tmp_path)},
        model_summary={"name": name, "parameters": 1234}, progress_images=sorted(progress.glob("epoch_*.png")))
    assert torch.equal(rng, torch.get_rng_state())
    html = path.read_text(encoding="utf-8")
    assert path.is_file() and html.startswith("<!DOCTYPE html>")
    assert 'src="http' not in html and "<script" not in html and "<link" not in html  # self-contained
    assert html.count('src="data:image/png;base64,') >= 6

    titles = re.findall(r'<h2>([^<]*)<a class="anchor"', html)
    assert titles == SECTIONS[model.kind]
    assert set(COMMON) <= set(titles)

    shown = min(epochs, 8)
    assert html.count('alt="epoch ') == shown
    assert f'alt="epoch {epochs}"' in html  # the last epoch always
    assert f"{shown} of {epochs} epochs" in html

    if model.kind == "gan":
        assert "FID \u00b7 " + RESNET.split(" (")[0] in html or "FID \u00b7 inception_v3 pool3 2048-d" in html
        assert metrics["feature_extractor"] in html  # the full extractor name next to the scores
        assert "FID during training" in html
        assert "\u00b1" in html  # KID with its std
        not_comparable = "not comparable to published Inception FIDs" in html
        assert not_comparable == (metrics["feature_extractor"] == RESNET)
        if "warnings" in metrics:
            assert 'role="alert"' in html and COLLAPSE.replace("'", "&#x27;") in html
            assert "\u26a0 1 warning" in html
        else:
            assert 'role="alert"' not in html
        assert "fid</th>" not in html  # the all-metrics table names the extractor with every FID/KID
    else:
        assert 'role="alert"' not in html and "FID during training" not in html
    if model.kind == "vae":
        assert "bits/dim" in html and "8-bit images dequantised to [0, 1]" in html
    if name == "dae_conv":
        assert "PSNR gain (dB)" in html and "+6.000" in html and "gaussian" in html
    if model.num_classes:
        assert "conditional on 5 classes" in html


def test_report_without_log_or_progress(tmp_path):
    cfg, dataset, model = _setup("vae_conv")
    html = build_generative_report(tmp_path / "r.html", title="t", metrics={"elbo": -1.0}, dataset=dataset,
                                   model=model, cfg=cfg, log_records=None, run_info=None, model_summary=None,
                                   progress_images=[]).read_text()
    assert "No training log available" in html and "No per-epoch grids were saved" in html
    assert "importance-weighted bound was not computed" in html
