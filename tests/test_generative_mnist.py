"""The generative family on MNIST: binarised data (dynamic for training, one fixed seeded draw for evaluation),
the FID/KID floors and the conditional accuracy of the GAN evaluation, the denoising autoencoder's extra
corruptions, and the VAE/GAN configs end to end on a few real MNIST images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT, read_jsonl, run_script
from visionzoo.config import load_config
from visionzoo.engine.data import SeededDataset, sample_seed
from visionzoo.tasks import task_for

pytestmark = pytest.mark.usefixtures("one_thread")

MNIST_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "raw"
CONFIGS = ROOT / "configs" / "generative"


@pytest.fixture(scope="module")
def mnist_root():
    if not (MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"needs {MNIST_ROOT / 't10k-images-idx3-ubyte.gz'} (the shared data folder beside the repository)")
    return MNIST_ROOT


def vae_config(root, *overrides):
    return load_config(CONFIGS / "vae_elbo_mnist.yaml", [f"data.root={root}", *overrides])


def test_dynamic_binarisation_is_a_fresh_seeded_draw_per_sample_and_epoch(mnist_root):
    cfg = vae_config(mnist_root, "data.params.train_samples=64")
    train = task_for(cfg).build_dataset("train", train=True)
    seeded = SeededDataset(train)
    first = seeded[(3, sample_seed(0, 0, 3))][1][0]
    again = seeded[(3, sample_seed(0, 0, 3))][1][0]
    next_epoch = seeded[(3, sample_seed(0, 1, 3))][1][0]
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(first, again)  # the same (run seed, epoch, index): the same binary image
    assert not torch.equal(first, next_epoch)  # another epoch: another draw
    grey = train.base.images[3].float() / 255
    draws = torch.stack([seeded[(3, sample_seed(0, e, 3))][1][0] for e in range(300)])
    assert (draws.mean(0) - grey).abs().max() < 0.12  # Bernoulli(grey level): the mean draw is the grey image
    assert ((grey == 0) <= (draws.amax(0) == 0)).all()  # black pixels are never switched on


def test_evaluation_binarisation_is_one_fixed_seeded_draw(mnist_root):
    from visionzoo.datasets.binarize import binarize_fixed
    from visionzoo.datasets.digits import MNIST

    task = task_for(vae_config(mnist_root))
    test = task.build_dataset("test", train=False)
    again = task.build_dataset("test", train=False)
    other_seed = task_for(vae_config(mnist_root, "data.params.binarize_seed=1")).build_dataset("test", train=False)
    first_100 = task_for(vae_config(mnist_root, "data.params.eval_samples=100")).build_dataset("test", train=False)
    assert len(test) == 10_000 and len(first_100) == 100
    assert torch.equal(test.base.images, again.base.images)
    assert not torch.equal(test.base.images, other_seed.base.images)
    assert torch.equal(first_100.base.images, test.base.images[:100])  # a subset is a prefix of the same draw
    raw = MNIST(mnist_root, "test").images
    assert torch.equal(test.base.images, binarize_fixed(raw, 0))
    x = torch.stack([test[i][0] for i in range(5)])
    assert set(x.unique().tolist()) == {0.0, 1.0}
    # about as many pixels on as the grey levels' total
    assert abs(test.base.images.float().mean() / raw.float().mean() - 1) < 0.01
    assert "seed 0" in task.new_accumulator(test).binary_data


def test_bad_binarisation_settings_are_clear_errors(mnist_root):
    with pytest.raises(ValueError, match="binarize = 'threshold'"):
        task_for(vae_config(mnist_root, "data.params.binarize=threshold")).build_dataset("test", train=False)
    shapes = load_config(CONFIGS / "vae_mlp_shapes.yaml", ["data.params.binarize=bernoulli"])
    with pytest.raises(ValueError, match="data.params.binarize is not a parameter of the generative data set 'shapes'"):
        task_for(shapes).build_dataset("test", train=False)
    with pytest.raises(ValueError, match="data.root is required"):
        task_for(vae_config(mnist_root, "data.root=null")).build_dataset("test", train=False)
    task = task_for(vae_config(mnist_root))
    assert task.split_exists("test") and not task.split_exists("dev")


def test_gan_evaluation_floors_and_conditional_accuracy():
    """FID/KID of generated features beside the two floors (random halves of the real features, and a reference
    set against them), and the share of samples the extractor's head puts in the class they were drawn for."""
    from visionzoo.tasks.generative.fid import fid_from_features
    from visionzoo.tasks.generative.metrics import GANAccumulator

    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 4, generator=g, dtype=torch.float64)
    fake = torch.randn(400, 4, generator=g, dtype=torch.float64) * 1.5 + 1
    reference = torch.randn(800, 4, generator=g, dtype=torch.float64)
    acc = GANAccumulator("test features", kid_subsets=10, kid_subset_size=100, collapse_ratio=0.2, seed=0,
                         reference=lambda: reference)
    for start in range(0, 400, 100):  # batches in reverse dataset order: the floors order by index
        indices = torch.arange(300 - start, 400 - start)
        correct = torch.arange(100) < 90
        acc.update(None, (real[indices], fake[indices], correct), indices)
    out = acc.compute()
    split = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    assert out["fid_floor_halves"] == pytest.approx(fid_from_features(real[split[:200]], real[split[200:]]))
    assert out["fid_floor_train"] == pytest.approx(fid_from_features(reference, real))
    assert out["fid"] == pytest.approx(fid_from_features(real, fake))
    assert out["fid"] > 10 * out["fid_floor_halves"] and out["fid_over_floor_halves"] > 10
    assert out["conditional_accuracy"] == pytest.approx(0.9) and out["num_train_reference"] == 800


def test_conditional_accuracy_uses_the_extractor_classifier_head():
    """eval_outputs marks a conditional sample right when the extractor's head gives the requested class."""
    from visionzoo.factory import create_model

    cfg = load_config(CONFIGS / "cdcgan_shapes.yaml", ["data.params.eval_samples=8"])
    task = task_for(cfg)
    torch.manual_seed(0)
    extractor = task.feature_extractor("cpu")
    assert extractor.head.out_features == 5
    model = create_model("cdcgan", num_classes=5, image_size=32, latent_dim=100, g_width=8, d_width=8).eval()
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    batch = (x, y, torch.arange(6), torch.arange(6))
    with torch.no_grad():
        real_f, fake_f, correct = task.eval_outputs(model, batch)
        gens = [torch.Generator().manual_seed(i) for i in range(6)]
        fake = model.generator(torch.stack([torch.randn(100, generator=gen) for gen in gens]), y)
        expected = extractor.head(extractor(fake * 0.5 + 0.5)).argmax(1) == y
    assert torch.equal(correct, expected) and real_f.shape == fake_f.shape == (6, extractor.dim)


def test_denoising_autoencoder_is_scored_on_extra_corruptions():
    from visionzoo.factory import create_model
    from visionzoo.models.autoencoder import parse_corruption
    from visionzoo.tasks.generative.metrics import psnr

    assert parse_corruption("masking:0.25") == ("masking", 0.25)
    for bad in ("masking", "masking:1.5", "blur:0.5", "gaussian:-1", "gaussian:x"):
        with pytest.raises(ValueError, match="expected 'gaussian:<noise std"):
            parse_corruption(bad)
    cfg = load_config(CONFIGS / "dae_conv_shapes.yaml",
                      ["model.kwargs.image_size=28", "data.input_size=28", "eval.extra_corruptions=[masking:0.25]"])
    task = task_for(cfg)
    model = create_model("dae_conv", image_size=28, latent_dim=8, width=8, corruption="gaussian",
                         noise_std=0.5).eval()
    x = torch.rand(4, 3, 28, 28)
    batch = (x, torch.zeros(4), torch.arange(4), torch.arange(4))
    accumulator = task.new_accumulator(None)
    with torch.no_grad():
        outputs = task.eval_outputs(model, batch)
    accumulator.update(batch, outputs, torch.arange(4))
    out = accumulator.compute()
    masked_hat, masked_in = outputs[2]["masking_0.25"]
    zeroed = (masked_in == 0).all(1).float().mean().item()
    assert 0.1 < zeroed < 0.4  # about a quarter of the pixels
    assert out["psnr_corrupted_masking_0.25"] == pytest.approx(psnr(masked_in, x).mean().item(), rel=1e-6)
    assert out["psnr_gain_masking_0.25"] == pytest.approx(out["psnr_masking_0.25"] - out["psnr_corrupted_masking_0.25"])
    ae = load_config(CONFIGS / "ae_conv_shapes.yaml", ["eval.extra_corruptions=[masking:0.25]"])
    with pytest.raises(ValueError, match="for denoising autoencoders"):
        task_for(ae).new_accumulator(None)


@pytest.mark.slow
def test_iwae_objective_trains_and_evaluates_on_mnist(mnist_root, tmp_path):
    """train.py with objective iwae on 200 binarised MNIST digits, then evaluate.py's L_k on the fixed test draw:
    the bound with its standard error, the data named in the metrics, and the report written."""
    run = tmp_path / "iwae"
    r = run_script("train.py", CONFIGS / "iwae_k5_mnist.yaml", "--run-dir", run, "--no-progress",
                   f"data.root={mnist_root}", "train.epochs=1", "data.params.train_samples=200",
                   "data.params.eval_samples=40", "eval.iwae_k=20", "eval.iwae_images=20", "data.batch_size=50")
    assert r.returncode == 0, r.stderr
    epoch = [rec for rec in read_jsonl(run / "log.jsonl") if rec["type"] == "epoch"][0]
    assert epoch["train_loss"] == pytest.approx(-epoch["train_iwae_bound"])
    assert epoch["train_iwae_bound"] >= epoch["train_elbo"] - 1.0  # the k = 5 bound sits above the ELBO
    r = run_script("evaluate.py", run, "--split", "test", "--report", tmp_path / "report", "--no-progress",
                   "data.params.eval_samples=30", "eval.iwae_k=50")
    assert r.returncode == 0, r.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())["metrics"]
    assert metrics["iwae_k"] == 50 and metrics["iwae_images"] == 20  # iwae_images from the run's config
    assert metrics["nll"] == pytest.approx(-metrics["iwae_bound"]) and 0 < metrics["nll_std_error"] < 20
    assert metrics["iwae_bound"] >= metrics["elbo_on_iwae_images"]
    assert "torch.bernoulli" in metrics["data"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "traversal" in html.lower() and "interpolation" in html.lower()
