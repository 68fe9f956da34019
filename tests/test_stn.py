"""Spatial transformer networks (visionzoo/models/stn.py): the transform itself, the wrapped classifier,
building from configs, weights round trips, the distorted shapes writer and the report section."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

import visionzoo
from tests.helpers import ROOT, run_script
from visionzoo.models.stn import (
    IDENTITY_THETA,
    SpatialTransformer,
    SpatialTransformerClassifier,
    build_stn,
    stn_options,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _run_module(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def _smooth_images(n=2, size=16, seed=0):
    """Random but asymmetric images (so a rotation is visible), channel-distinct."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def _set_theta(stn: SpatialTransformer, theta) -> None:
    with torch.no_grad():
        stn.localisation.theta.weight.zero_()
        stn.localisation.theta.bias.copy_(torch.tensor(theta, dtype=torch.float32))


def test_identity_at_init_returns_the_input():
    stn = SpatialTransformer(channels=[8, 8], hidden=16).eval()
    x = _smooth_images(3, 20)
    out, theta = stn.forward_with_theta(x)
    torch.testing.assert_close(theta, torch.tensor(IDENTITY_THETA).view(1, 2, 3).expand(3, 2, 3))
    # align_corners=False puts the identity grid exactly on the pixel centres: interpolation error only
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_rotation_by_90_degrees_matches_rot90():
    stn = SpatialTransformer(channels=[8], hidden=8).eval()
    # theta maps output (x, y) to input (-y, x): out[i, j] = in[j, n-1-i], i.e. torch.rot90 with k=1
    _set_theta(stn, [0.0, -1.0, 0.0, 1.0, 0.0, 0.0])
    x = _smooth_images(2, 12)
    torch.testing.assert_close(stn(x), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    # and a 180 degree rotation, written as cos/sin of pi
    c, s = math.cos(math.pi), math.sin(math.pi)
    _set_theta(stn, [c, -s, 0.0, s, c, 0.0])
    torch.testing.assert_close(stn(x), torch.rot90(x, 2, dims=(2, 3)), atol=1e-5, rtol=0)


def test_zoom_and_output_size():
    # zooming in 2x on the centre and sampling half as many pixels gives back the centre crop exactly
    stn = SpatialTransformer(channels=[8], hidden=8, output_size=8).eval()
    _set_theta(stn, [0.5, 0.0, 0.0, 0.0, 0.5, 0.0])
    x = _smooth_images(2, 16)
    out = stn(x)
    assert out.shape == (2, 3, 8, 8)
    torch.testing.assert_close(out, x[:, :, 4:12, 4:12], atol=1e-5, rtol=0)
    # a shift by a whole pixel (2/16 of the normalised width) moves the content one pixel left
    stn_same = SpatialTransformer(channels=[8], hidden=8).eval()
    _set_theta(stn_same, [1.0, 0.0, 2 / 16, 0.0, 1.0, 0.0])
    torch.testing.assert_close(stn_same(x)[..., :-1], x[..., 1:], atol=1e-5, rtol=0)


def test_gradients_reach_the_localisation_net():
    torch.manual_seed(0)
    model = visionzoo.create_model("resnet18", num_classes=5, stn={"channels": [8, 8], "hidden": 16})
    assert isinstance(model, SpatialTransformerClassifier)
    loc = model.stn.localisation
    # at init theta's weights are zero, so only they and theta's bias get gradients; nudge them so the
    # conv layers below are reached too
    with torch.no_grad():
        loc.theta.weight.normal_(0, 0.01)
    x, y = _smooth_images(4, 32), torch.tensor([0, 1, 2, 3])
    F.cross_entropy(model(x), y).backward()
    for name, p in model.stn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.classifier.fc.weight.grad.abs().sum() > 0


def test_wrapped_classifier_output_and_config_options():
    model = visionzoo.create_model("resnet18", num_classes=7, stn={"enabled": True, "output_size": 24}).eval()
    with torch.no_grad():
        assert model(_smooth_images(2, 40)).shape == (2, 7)
        assert model.stn(_smooth_images(2, 40)).shape == (2, 3, 24, 24)
    # the classifier's first conv comes first in modules(): it is what the report shows as first-layer filters
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv is model.classifier.conv1
    plain = visionzoo.create_model("resnet18", num_classes=7, stn={"enabled": False})
    assert not isinstance(plain, SpatialTransformerClassifier)
    assert build_stn(None) is None and build_stn(False) is None and isinstance(build_stn(True), SpatialTransformer)
    assert stn_options({"hidden": 8})["hidden"] == 8


@pytest.mark.parametrize("config, message", [
    ({"chanels": [8]}, "'chanels' (did you mean 'channels'?)"),
    ({"channels": []}, "channels must be a non-empty list"),
    ({"enabled": "yes"}, "enabled must be true or false"),
    ({"padding_mode": "wrap"}, "padding_mode must be one of"),
    ({"output_size": 0}, "output_size must be a positive integer"),
    ("on", "must be a mapping"),
])
def test_bad_stn_config_is_a_clear_error(config, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        visionzoo.create_model("resnet18", num_classes=5, stn=config)


def test_stn_is_refused_for_models_that_are_not_classifiers():
    with pytest.raises(ValueError, match="ae_mlp is a generative model"):
        visionzoo.create_model("ae_mlp", stn={"enabled": True})


def _perturbed_stn_model(num_classes=5):
    torch.manual_seed(1)
    model = visionzoo.create_model("resnet18", num_classes=num_classes, stn={"channels": [8], "hidden": 8})
    with torch.no_grad():
        model.stn.localisation.theta.weight.normal_(0, 0.05)
        model.stn.localisation.theta.bias.add_(torch.tensor([-0.3, 0.2, 0.1, -0.1, -0.2, 0.05]))
    return model.eval()


def test_weights_round_trip_through_safetensors_and_model_card(tmp_path):
    model = _perturbed_stn_model()
    path = tmp_path / "resnet18.stn.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    # the model card's config carries the STN keywords, as visionzoo.publish writes it
    card = {"model": "resnet18", "num_classes": 5,
            "config": {"model": {"name": "resnet18", "kwargs": {"stn": {"channels": [8], "hidden": 8}}}}}
    path.with_suffix(".json").write_text(json.dumps(card))
    loaded = visionzoo.create_model("resnet18", weights=path).eval()
    assert isinstance(loaded, SpatialTransformerClassifier)
    x = _smooth_images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
        torch.testing.assert_close(loaded.stn(x), model.stn(x))
    # a file with STN keys and no card saying how to build the STN is an error naming the keys
    path.with_suffix(".json").unlink()
    with pytest.raises(ValueError, match="unexpected in the file: stn.localisation"):
        visionzoo.create_model("resnet18", weights=path)
    # ...unless the caller says
    again = visionzoo.create_model("resnet18", weights=path, stn={"channels": [8], "hidden": 8}).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))


def test_plain_classifier_weights_load_behind_an_identity_stn(tmp_path):
    torch.manual_seed(2)
    plain = visionzoo.create_model("resnet18", num_classes=5).eval()
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in plain.state_dict().items()}, str(path))
    wrapped = visionzoo.create_model("resnet18", weights=path, stn={"channels": [8], "hidden": 8}).eval()
    x = _smooth_images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), plain(x), atol=1e-4, rtol=1e-4)


def test_distorted_shapes_writer_is_deterministic_and_distorts(tmp_path):
    from visionzoo.datasets.shapes import make_classification_sample
    from visionzoo.datasets.shapes_distorted import check_distortion, make_distorted_sample

    a, label_a = make_distorted_sample(123, 32)
    b, label_b = make_distorted_sample(123, 32)
    clean, label_clean = make_classification_sample(123, 32)
    assert label_a == label_b == label_clean
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(clean))
    with pytest.raises(ValueError, match="scale_range"):
        check_distortion({"scale_range": [0.9, 0.5]})
    with pytest.raises(ValueError, match="unknown distortion parameter"):
        check_distortion({"rotation": 10})

    from visionzoo.datasets.shapes import sample_seed
    from visionzoo.datasets.write_shapes import write_image_folder

    out = tmp_path / "distorted"
    counts = {"train": 6, "val": 2, "test": 2}
    distortion = {"max_rotation": 45, "scale_range": [0.6, 0.9]}
    assert write_image_folder(out, image_size=32, counts=counts, distortion=distortion, progress=False) == counts
    meta = json.loads((out / "shapes_meta.json").read_text())
    assert meta["distortion"] == {"max_rotation": 45.0, "scale_range": [0.6, 0.9]}
    files = sorted(out.glob("train/*/*.png"))
    assert len(files) == 6
    index = int(files[0].stem.split("_")[1])
    expected, _ = make_distorted_sample(sample_seed(0, "train", index), 32, meta["distortion"])
    assert np.array_equal(np.asarray(Image.open(files[0]).convert("RGB")), np.asarray(expected))
    # the same folder with other distortion parameters (or none) is refused, naming the difference
    with pytest.raises(ValueError, match="distortion"):
        write_image_folder(out, image_size=32, counts=counts, distortion={}, progress=False)
    with pytest.raises(ValueError, match="distortion"):
        write_image_folder(out, image_size=32, counts=counts, progress=False)
    assert write_image_folder(out, image_size=32, counts=counts, distortion=distortion, progress=False) == counts


@pytest.mark.slow
def test_write_shapes_distort_command(tmp_path, capsys):
    from visionzoo.datasets.write_shapes import main

    out = tmp_path / "distorted"
    proc = _run_module("visionzoo.datasets.write_shapes", out, "--distort", "--size", 32, "--train", 5,
                       "--val", 0, "--test", 0, "--max-rotation", 30, "--scale", 0.7, 0.8, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 5 of 5" in proc.stdout
    meta = json.loads((out / "shapes_meta.json").read_text())
    assert meta["distortion"] == {"max_rotation": 30.0, "scale_range": [0.7, 0.8]}
    assert len(list(out.glob("train/*/*.png"))) == 5
    # the clean writer on the distorted folder: exit code 1 and an error naming the difference
    assert main([str(out), "--size", "32", "--train", "5", "--val", "0", "--test", "0", "--no-progress"]) == 1
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow
def test_train_evaluate_report_and_publish_with_stn(tmp_path, isolated_caches):
    from visionzoo.datasets.write_shapes import write_image_folder

    data = tmp_path / "data"
    write_image_folder(data, image_size=32, counts={"train": 32, "val": 16, "test": 16}, progress=False,
                       distortion={})
    run_dir = tmp_path / "run"
    proc = run_script("train.py", ROOT / "configs/classification/resnet18_stn_shapes_distorted.yaml",
                      f"data.root={data}", "data.input_size=32", "data.batch_size=16", "data.num_workers=0",
                      "train.epochs=1", "train.max_steps_per_epoch=2", "model.kwargs.stn.channels=[8]",
                      "model.kwargs.stn.hidden=8", "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    ckpt = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("stn.localisation.") for k in ckpt["model"])
    assert any(k.startswith("classifier.fc.") for k in ckpt["model"])

    report = tmp_path / "report"
    proc = run_script("evaluate.py", run_dir, "--report", report, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    html = (report / "report.html").read_text()
    assert "Spatial transformer" in html and html.count("<figcaption>transformed: zoom") == 16

    # published to the user cache, found by its tag, rebuilt from its model card
    weights_dir = isolated_caches / "vz_home" / "weights"
    from visionzoo.publish import main as publish_main

    assert publish_main([str(run_dir), "--tag", "stntest", "--out", str(weights_dir), "--dtype", "float32"]) == 0
    assert (weights_dir / "resnet18.stntest.safetensors").is_file()
    from_card = visionzoo.create_model("resnet18", weights="stntest").eval()
    from_ckpt = visionzoo.create_model("resnet18", weights=run_dir / "best.pt").eval()
    assert isinstance(from_card, SpatialTransformerClassifier) and isinstance(from_ckpt, SpatialTransformerClassifier)
    x = _smooth_images(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(from_card(x), from_ckpt(x))


def test_report_without_stn_has_no_stn_section(tmp_path):
    from visionzoo.tasks.classification.report import build_classification_report, stn_examples

    plain = visionzoo.create_model("resnet18", num_classes=5)
    dataset = [(torch.zeros(3, 16, 16), 0)] * 4
    assert stn_examples(plain, dataset, [0.5] * 3, [0.25] * 3) is None
    wrapped = _perturbed_stn_model()
    examples = stn_examples(wrapped, dataset, [0.5] * 3, [0.25] * 3, count=3)
    assert len(examples) == 3 and examples[0][0].size == (16, 16) and "zoom" in examples[0][2]
    metrics = {"top1": 0.5, "confusion_matrix": [[1, 1], [0, 2]], "num_samples": 4}
    with_stn = build_classification_report(tmp_path / "a.html", title="t", metrics=metrics, class_names=["a", "b"],
                                           stn_examples=examples).read_text()
    without = build_classification_report(tmp_path / "b.html", title="t", metrics=metrics,
                                          class_names=["a", "b"]).read_text()
    assert "Spatial transformer" in with_stn and with_stn.count("<figcaption>transformed: zoom") == 3
    assert "Spatial transformer" not in without
