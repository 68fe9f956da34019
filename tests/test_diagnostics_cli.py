"""`python -m visionzoo.diagnose` end to end: real subprocess runs on tiny configs and the shipped classifier."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import read_jsonl, write_in_memory_shapes_config

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights" / "resnet18.shapes.safetensors"

def diagnose(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "visionzoo.diagnose", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    return write_in_memory_shapes_config(tmp_path / "tiny.yaml", samples=48, batch=8)


@pytest.mark.slow
def test_lr_find_and_stats_write_their_outputs(tiny_config, tmp_path, capsys):
    r = diagnose("lr-find", tiny_config, "--steps", 8, "--start-lr", 1e-5, "--end-lr", 1, "--no-progress")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "runs" / "diagnose" / "tiny" / "lr_find"  # the default place: output.dir/diagnose/name
    data = json.loads((out / "lr_find.json").read_text())
    assert len(data["lrs"]) <= 8 and data["lrs"][0] == pytest.approx(1e-5)
    assert (out / "lr_find.png").stat().st_size > 1000
    printed = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("{")))
    assert printed["steps_run"] == len(data["lrs"]) and printed["suggested_lr"] == data["suggested_lr"]

    # stats through main() in process: a second subprocess would mostly time the import of torch
    from visionzoo.diagnose import main

    out = tmp_path / "stats"
    assert main(["stats", str(tiny_config), "--steps", "4", "--interval", "2", "--out", str(out), "--no-progress",
                 "optim.lr=5.0"]) == 0  # an lr far too high: update/weight ratios cross the threshold
    stdout = capsys.readouterr().out
    records = read_jsonl(out / "stats.jsonl")
    steps = [rec["step"] for rec in records if rec["type"] == "stats"]
    assert steps == [0, 2]
    first = next(rec for rec in records if rec["type"] == "stats")
    assert 0 <= first["activations"]["relu"]["dead_fraction"] <= 1
    assert first["params"]["conv1.weight"]["grad_norm"] > 0
    warnings = [rec for rec in records if rec["type"] == "warning"]
    assert any(w["kind"] == "update_high" for w in warnings)
    assert "warning: step" in stdout
    html = (out / "report.html").read_text()
    for title in ("Warnings", "Dead ReLU units per layer", "Mean |correlation| between channels",
                  "Gradient norm per parameter", "update_high"):
        assert title in html


@pytest.mark.slow
def test_overfit_command_failure_verdict(tiny_config):
    r = diagnose("overfit", tiny_config, "optim.lr=1.0e-9", "--samples", 8, "--steps", 10, "--eval-every", 5,
                 "--no-progress")
    assert r.returncode == 2, r.stderr
    assert "failed: loss not falling" in r.stdout
    assert "augmentation off: data.augment.enabled = false" in r.stdout


def test_gradcheck_command_in_process(tmp_path, monkeypatch, capsys):
    """The gradcheck command's argument handling and exit codes (main() in process: its work is small, a
    subprocess would mostly measure the import of torch)."""
    from visionzoo.diagnose import main

    assert main(["gradcheck", "visionzoo.models.siamfc:cross_correlate", "--input-shape", "2,3,3,3",
                 "--input-shape", "2,3,7,7", "--json", str(tmp_path / "ok.json")]) == 0
    assert "2 of 2 checks passed" in capsys.readouterr().out
    assert [c["passed"] for c in json.loads((tmp_path / "ok.json").read_text())] == [True, True]

    (tmp_path / "badgrad.py").write_text(
        "import torch\n\n"
        "class WrongSquare(torch.autograd.Function):\n"
        "    @staticmethod\n"
        "    def forward(ctx, x):\n"
        "        ctx.save_for_backward(x)\n"
        "        return x * x\n\n"
        "    @staticmethod\n"
        "    def backward(ctx, grad):\n"
        "        (x,) = ctx.saved_tensors\n"
        "        return 3 * x * grad\n\n"
        "def wrong_square(x):\n"
        "    return WrongSquare.apply(x)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["gradcheck", "badgrad:wrong_square", "--input-shape", "5"]) == 2
    out = capsys.readouterr().out
    assert "FAIL" in out and "0 of 1 checks passed" in out

    assert main(["gradcheck", "resnet1"]) == 1
    err = capsys.readouterr().err
    assert "unknown model 'resnet1'" in err and "resnet18" in err
    assert main(["gradcheck", "badgrad:wrong_squar", "--input-shape", "5"]) == 1
    assert "did you mean wrong_square" in capsys.readouterr().err
    assert main(["gradcheck", "badgrad:wrong_square"]) == 1
    assert "--input-shape" in capsys.readouterr().err


@pytest.mark.slow
def test_visualize_command_on_the_shipped_classifier(tmp_path, capsys):
    from visionzoo.datasets.write_shapes import write_image_folder

    write_image_folder(tmp_path / "shapes", image_size=64, counts={"train": 0, "val": 24, "test": 0}, seed=0,
                       progress=False)
    image = sorted((tmp_path / "shapes/val/star").glob("*.png"))[0]
    out = tmp_path / "vis"
    r = diagnose("visualize", WEIGHTS, "--image", image, "--layer", "layer2", "--channel", 5, "--top-k", 4,
                 "--max-images", 24, "--data", tmp_path / "shapes", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    for name in ("filters.png", f"features_0_{image.stem}.png", f"saliency_0_{image.stem}.png",
                 f"saliency_overlay_0_{image.stem}.png", "visualize.html"):
        assert (out / name).stat().st_size > 100, name
    summary = json.loads((out / "visualize.json").read_text())
    assert len(summary["top_activating"]["indices"]) == 4
    assert len(list(out.glob("top_*.png"))) == 4
    html = (out / "visualize.html").read_text()
    assert "Saliency" in html and "Top-activating images for layer2 channel 5" in html


    from visionzoo.diagnose import main

    assert main(["visualize", str(WEIGHTS), "--layer", "layer2.0.conv3", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "no layer 'layer2.0.conv3'" in err and "layer2.0.conv1" in err


def test_gan_classes_balanced_indices_and_bad_targets(capsys):
    import torch

    from visionzoo.diagnose import main
    from visionzoo.diagnostics.gan_classes import balanced_indices
    from visionzoo.weights import REPO_WEIGHTS_DIR

    labels = torch.tensor([2, 0, 1, 0, 2, 1, 0, 2])
    assert balanced_indices(labels, 3, 2).tolist() == [1, 3, 2, 5, 0, 4]
    keep = torch.tensor([True, True, True, False, True, True, True, True])
    assert balanced_indices(labels, 3, 2, keep=keep).tolist() == [1, 6, 2, 5, 0, 4]
    with pytest.raises(ValueError, match="class 1 has 2 samples, fewer than the 3"):
        balanced_indices(labels, 3, 3, keep=None)

    assert main(["gan-classes", "any", "--samples", "0"]) == 1
    assert "samples (0) and per_class (1000) must be >= 1" in capsys.readouterr().err
    weights = REPO_WEIGHTS_DIR / "lenet5.mnist.safetensors"
    if not weights.is_file():
        pytest.skip(f"{weights} is not shipped")
    assert main(["gan-classes", str(weights), "--no-progress"]) == 1
    assert "gan-classes needs a GAN, this is a classification model (lenet5)" in capsys.readouterr().err
