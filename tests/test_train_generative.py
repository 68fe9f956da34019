"""Generative family end to end: train.py and evaluate.py as subprocesses for a denoising autoencoder (on an
ImageFolder of PNG files), a VAE and a DCGAN (shapes rendered on the fly); WGAN-GP's alternating updates
through the shared trainer; FID's sample-count guard."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, read_jsonl, run_script

SMALL = ["data.num_workers=0", "data.batch_size=16", "train.log_interval=2"]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from visionzoo.datasets.write_shapes import write_image_folder

    root = tmp_path_factory.mktemp("gen_folder")
    write_image_folder(root, image_size=40, counts={"train": 48, "val": 16, "test": 16}, progress=False)
    return root


def test_denoising_autoencoder_trains_and_evaluates_from_an_image_folder(image_folder, tmp_path):
    run = tmp_path / "dae"
    r = run_script("train.py", ROOT / "configs/generative/dae_conv_shapes.yaml", "--run-dir", run, "--no-progress",
                   "data.dataset=image_folder", f"data.root={image_folder}", "model.kwargs.width=8",
                   "model.kwargs.latent_dim=16", "train.epochs=2", "train.eval_interval=1", *SMALL)
    assert r.returncode == 0, r.stderr
    log = read_jsonl(run / "log.jsonl")
    vals = [rec for rec in log if rec["type"] == "val"]
    assert len(vals) == 2 and all("psnr" in v and "psnr_corrupted" in v for v in vals)
    # the fixed progress grid of every epoch, for the report
    assert sorted(p.name for p in (run / "progress").glob("*.png")) == ["epoch_001.png", "epoch_002.png"]
    best = torch.load(run / "last.pt", weights_only=True)["best"]
    assert best["metric"] == "psnr"
    assert best["value"] == max(v["psnr"] for v in vals)  # PSNR: higher is better

    out = tmp_path / "report"
    r = run_script("evaluate.py", run, "--report", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 16
    m = metrics["metrics"]
    assert m["psnr_gain"] == pytest.approx(m["psnr"] - m["psnr_corrupted"])
    # corruption noise is fixed per image: a second evaluation (another batch size) gives the same numbers
    r = run_script("evaluate.py", run, "--batch-size", "5", "--no-progress")
    again = json.loads(r.stdout.strip().splitlines()[0])
    assert again["psnr"] == pytest.approx(m["psnr"], abs=1e-4)
    assert again["psnr_corrupted"] == pytest.approx(m["psnr_corrupted"], abs=1e-6)
    assert (out / "report.html").stat().st_size > 10_000


def test_vae_reports_elbo_iwae_nll_and_bits_per_dim(tmp_path):
    run = tmp_path / "vae"
    r = run_script("train.py", ROOT / "configs/generative/vae_conv_shapes.yaml", "--run-dir", run, "--no-progress",
                   "model.kwargs.width=8", "model.kwargs.latent_dim=8", "train.epochs=1",
                   "data.params.train_samples=96", "data.params.eval_samples=24", "eval.iwae_k=20", *SMALL)
    assert r.returncode == 0, r.stderr
    r = run_script("evaluate.py", run, "--split", "test", "--no-progress", "eval.iwae_k=50", "eval.iwae_images=12")
    assert r.returncode == 0, r.stderr
    m = json.loads((run / "metrics_test.json").read_text())["metrics"]
    assert m["iwae_k"] == 50 and m["iwae_images"] == 12 and m["num_images"] == 24
    assert m["elbo"] == pytest.approx(-(m["recon_nll"] + m["kl"]))
    assert m["kl"] > 0 and m["nll"] == pytest.approx(-m["iwae_bound"])
    assert m["iwae_bound"] > m["elbo_on_iwae_images"]  # L_50 >= L_1 (Burda et al.) on the same 12 images
    dims = 3 * 32 * 32
    assert m["bits_per_dim"] == pytest.approx((m["nll"] + dims * 5.545177444479562) / (dims * 0.6931471805599453))
    assert "dequantised" in m["data"]


def test_dcgan_keeps_the_best_checkpoint_by_fid_and_warns_on_collapse(tmp_path):
    run = tmp_path / "dcgan"
    r = run_script("train.py", ROOT / "configs/generative/dcgan_shapes.yaml", "--run-dir", run, "--no-progress",
                   "model.kwargs.g_width=8", "model.kwargs.d_width=8", "train.epochs=2", "train.eval_interval=1",
                   "data.params.train_samples=64", "data.params.eval_samples=520", "data.batch_size=16",
                   "data.num_workers=0", "train.log_interval=2", "eval.collapse_ratio=1.01")
    assert r.returncode == 0, r.stderr
    log = read_jsonl(run / "log.jsonl")
    vals = [rec for rec in log if rec["type"] == "val"]
    assert len(vals) == 2 and all(v["fid"] > 0 and "kid" in v for v in vals)
    best = torch.load(run / "last.pt", weights_only=True)["best"]
    assert best["metric"] == "fid" and best["value"] == min(v["fid"] for v in vals)  # FID: lower is better
    assert torch.load(run / "best.pt", weights_only=True)["metrics"]["fid"] == best["value"]
    train = [rec for rec in log if rec["type"] == "train"]
    assert all("discriminator_loss" in t and "generator_loss" in t for t in train)
    # with the threshold above 1, any sample set counts as collapsed: the warning reaches the log and the console
    warnings = [rec for rec in log if rec["type"] == "warning"]
    assert len(warnings) == 2 and "collapsed" in warnings[0]["message"]
    assert "collapsed" in r.stdout + r.stderr

    r = run_script("evaluate.py", run, "--split", "val", "--no-progress")
    assert r.returncode == 0, r.stderr
    m = json.loads((run / "metrics_val.json").read_text())["metrics"]
    assert "resnet18.shapes" in m["feature_extractor"] and m["num_generated"] == m["num_real"] == 520
    # the same weights, split and seeds: the same FID as the best validation
    assert m["fid"] == pytest.approx(best["value"], rel=1e-6)

    # 100 images cannot estimate a 512-d covariance: a clear error, not a NaN
    r = run_script("evaluate.py", run, "--split", "val", "--no-progress", "data.params.eval_samples=100")
    assert r.returncode == 1
    assert "needs more samples than feature dimensions" in r.stderr and "512" in r.stderr


def test_wgan_gp_takes_five_critic_steps_per_generator_step(tmp_path):
    from visionzoo.config import load_config
    from visionzoo.training import build_trainer

    cfg = load_config(ROOT / "configs/generative/wgan_gp_shapes.yaml", [
        "model.kwargs.g_width=8", "model.kwargs.d_width=8", "train.epochs=1", "train.max_steps_per_epoch=10",
        "data.params.train_samples=160", "data.val_split=null", "data.num_workers=0", "data.batch_size=16"])
    trainer = build_trainer(cfg, tmp_path / "wgan", show_progress=False)
    assert [(p.name, p.every) for p in trainer.phases] == [("discriminator", 1), ("generator", 5)]
    trainer.fit()
    steps = {name: max(int(s["step"]) for s in opt.state_dict()["state"].values())
             for name, opt in trainer.optimizers.items()}
    assert steps == {"discriminator": 10, "generator": 2}
    assert trainer.optimizers["generator"].param_groups[0]["betas"] == (0.0, 0.9)
    train = [rec for rec in read_jsonl(tmp_path / "wgan" / "log.jsonl") if rec["type"] == "epoch"][0]
    assert train["train_discriminator_gp"] >= 0 and "train_generator_loss" in train


def test_a_model_that_does_not_fit_the_data_size_is_a_clear_error(tmp_path):
    r = run_script("train.py", ROOT / "configs/generative/vae_conv_shapes.yaml", "--run-dir", tmp_path / "bad",
                   "--no-progress", "data.input_size=64", *SMALL)
    assert r.returncode == 1
    assert "makes images of shape (3, 32, 32) but the data are (3, 64, 64)" in r.stderr


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs/generative").glob("[!_]*.yaml")))
def test_every_generative_config_trains(config, tmp_path):
    """Each shipped config builds its model and data and takes two optimisation steps through the trainer."""
    from visionzoo.config import load_config
    from visionzoo.training import build_trainer

    cfg = load_config(ROOT / "configs/generative" / config, [
        "train.epochs=1", "train.max_steps_per_epoch=2", "data.val_split=null", "data.num_workers=0",
        "data.batch_size=8", "data.params.train_samples=16"])
    if cfg.data.root and "shared" in Path(cfg.data.root).parts and not Path(cfg.data.root).exists():
        pytest.skip(f"needs {cfg.data.root} (the shared real-data folder beside the repository)")
    trainer = build_trainer(cfg, tmp_path / "run", show_progress=False)
    trainer.fit()
    epoch = [r for r in read_jsonl(tmp_path / "run" / "log.jsonl") if r["type"] == "epoch"][0]
    assert epoch["step"] == 2 and all(torch.isfinite(torch.tensor(v)) for k, v in epoch.items()
                                      if k.startswith("train_"))
    assert (tmp_path / "run" / "progress" / "epoch_001.png").is_file()
