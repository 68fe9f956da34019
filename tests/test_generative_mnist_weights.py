"""The generative models shipped for MNIST (weights/*.mnist*.safetensors): complete cards that match their files,
and evaluate.py on each weights file alone (config from its card) reproducing the card's figures. The VAE's
k = 5000 bound over 10,000 images is slow on shared cores, so here: its ELBO over the whole test set and L_5000 on the
first 40 images, against the card's NLL and standard error."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import run_script
from visionzoo.weights import REPO_WEIGHTS_DIR, sha256_file

MNIST_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist" / "raw"
VAES = {"vae_mlp.mnist": ("elbo", 1), "vae_mlp.mnist_iwae_k5": ("iwae", 5)}
SCORED = {  # weights -> the card figures evaluate.py must reproduce on the full test split
    "dcgan.mnist": ("fid", "kid", "fid_floor_halves"),
    "cdcgan.mnist": ("fid", "conditional_accuracy"),
    "wgan_gp.mnist": ("fid", "kid"),
    "dae_conv.mnist": ("psnr", "psnr_corrupted", "psnr_masking_0.25", "psnr_corrupted_masking_0.25"),
}


def shipped(name: str) -> tuple[Path, dict]:
    weights = REPO_WEIGHTS_DIR / f"{name}.safetensors"
    if not weights.is_file():
        pytest.skip(f"{weights} is not shipped")
    return weights, json.loads(weights.with_suffix(".json").read_text())


def printed_metrics(stdout: str) -> dict:
    """The scalars evaluate.py prints as one JSON line."""
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


@pytest.fixture(scope="module")
def mnist_root():
    if not (MNIST_ROOT / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"needs {MNIST_ROOT / 't10k-images-idx3-ubyte.gz'} (the shared data folder beside the repository)")
    return MNIST_ROOT


@pytest.mark.parametrize("name", [*VAES, *SCORED])
def test_card_is_complete_and_matches_the_file(name):
    weights, card = shipped(name)
    assert card["task"] == "generative" and card["dtype"] == "float16" and card["sha256"] == sha256_file(weights)
    assert weights.stat().st_size < 35 * 2**20 and card["metrics"]["split"] == "test"
    assert card["trained"]["epochs"] >= 1 and card["trained"]["seconds"] > 0 and card["reproduce"]
    assert card["config"]["data"]["dataset"] == "mnist" and "MNIST" in card["dataset"]
    if name in VAES:
        objective, k = VAES[name]
        kwargs = card["config"]["model"]["kwargs"]
        assert (kwargs["hidden"], kwargs["latent_dim"], kwargs["activation"]) == (200, 50, "tanh")
        assert (kwargs["objective"], kwargs["k"]) == (objective, k)
        m = card["metrics"]
        # L_5000 on the first 1,000 fixed-binarised test images at least (the card's notes say how many and why)
        assert m["iwae_k"] == 5000 and m["iwae_images"] >= 1000 and m["nll"] == -m["iwae_bound"]
        assert 0 < m["nll_std_error"] < 1 and m["nll"] < -m["elbo"]  # L_5000 above the ELBO
        assert "torch.bernoulli" in m["data"] and "seed 0" in m["data"] and "IWAE paper" in card["anchor"]
    else:
        assert all(key in card["metrics"] for key in SCORED[name])
    if "fid" in card["metrics"]:
        assert "lenet5.mnist" in card["metrics"]["feature_extractor"]
        # one sample per test image: all 10,000 (no eval_samples limit), and both floors in the same space
        assert card["config"]["data"]["params"]["eval_samples"] is None
        assert card["metrics"]["fid_floor_halves"] < card["metrics"]["fid"] and "fid_floor_train" in card["metrics"]


@pytest.mark.slow
@pytest.mark.parametrize("name", SCORED)
def test_evaluate_py_reproduces_the_card(name, mnist_root, tmp_path):
    weights, card = shipped(name)
    r = run_script("evaluate.py", weights, "--data", mnist_root, "--split", "test", "--report", tmp_path,
                   "--no-progress", "eval.fid_train_floor=false", timeout=1800)
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    for key in SCORED[name]:  # fp16 weights against the fp32 checkpoint the card was measured with
        assert got[key] == pytest.approx(card["metrics"][key], rel=0.02, abs=1e-3), key
    assert (tmp_path / "report.html").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", VAES)
def test_evaluate_py_reproduces_the_vae_card_on_a_subset(name, mnist_root, tmp_path):
    weights, card = shipped(name)
    images = 40
    r = run_script("evaluate.py", weights, "--data", mnist_root, "--split", "test", "--no-progress",
                   "eval.iwae_k=5000", f"eval.iwae_images={images}", timeout=1800)
    assert r.returncode == 0, r.stderr
    got = printed_metrics(r.stdout)
    m = card["metrics"]
    assert got["elbo"] == pytest.approx(m["elbo"], rel=0.002)  # the whole test set, one seeded sample per image
    # the mean of 40 images' L_5000 against the card's mean over 10,000: within 4 of the subset's standard errors
    spread = m["nll_std_error"] * math.sqrt(m["iwae_images"])
    assert abs(got["nll"] - m["nll"]) < 4 * spread / math.sqrt(images)
    assert got["iwae_bound"] > got["elbo_on_iwae_images"]


def test_gan_classes_separates_the_class_mix_from_the_images(mnist_root, tmp_path, capsys):
    """diagnose gan-classes on the shipped DCGAN: the classifier's histogram covers every sample, the three FIDs
    are on equal sample counts, and the DCGAN's lopsided mix costs FID (balancing lowers it)."""
    weights, _ = shipped("dcgan.mnist")
    from visionzoo.diagnose import main

    code = main(["gan-classes", str(weights), "--data", str(mnist_root), "--samples", "4000", "--per-class", "150",
                 "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    result = json.loads((tmp_path / "gan_classes.json").read_text())
    assert sum(result["class_counts"]) == 4000 and result["real_split"] == "test" and result["real_images"] == 10000
    assert all(s <= c for s, c in zip(result["sure_counts"], result["class_counts"]))
    assert result["sure_fraction"] == pytest.approx(sum(result["sure_counts"]) / 4000)
    assert 2 <= result["per_class"] <= 150 and result["fid_samples"] == 10 * result["per_class"]
    assert max(result["class_counts"]) > 2 * min(result["class_counts"])  # the mix the card describes
    assert result["fid_class_balanced_sure"] < result["fid_as_drawn"]
    assert "class-balanced" in out.out and "lenet5.mnist" in out.out
