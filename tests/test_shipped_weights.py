"""The weights shipped in weights/: model cards, integrity, and that they really classify shapes."""
import json

import pytest
import torch

import visionzoo
from tests.helpers import ROOT, run_script
from visionzoo.weights import REPO_WEIGHTS_DIR, sha256_file

WEIGHTS = REPO_WEIGHTS_DIR / "resnet18.shapes.safetensors"
CARD_KEYS = {"model", "tag", "task", "num_classes", "class_names", "input_size", "mean", "std", "metrics",
             "sha256", "command", "reproduce", "config"}


def test_weights_folder_stays_small():
    total = sum(p.stat().st_size for p in REPO_WEIGHTS_DIR.iterdir() if p.is_file())
    assert total < 250 * 10**6  # the repository keeps weights/ under 250 MB


def test_model_card_is_complete_and_matches_the_file():
    card = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert CARD_KEYS <= set(card)
    assert card["model"] == "resnet18" and card["tag"] == "shapes" and card["dtype"] == "float16"
    assert card["class_names"] == ["circle", "hexagon", "square", "star", "triangle"]
    assert card["sha256"] == sha256_file(WEIGHTS)
    assert card["metrics"]["top1"] >= 0.95 and card["metrics"]["split"] == "test"
    assert card["config"]["model"]["name"] == "resnet18"


def test_shipped_resnet18_classifies_fresh_shapes():
    from visionzoo.config import validate
    from visionzoo.datasets.shapes import ShapesClassification
    from visionzoo.tasks.classification.task import build_transforms

    model = visionzoo.create_model("resnet18", weights="shapes").eval()
    cfg = validate(json.loads(WEIGHTS.with_suffix(".json").read_text())["config"])
    assert model.pretrained_cfg["class_names"] == ["circle", "hexagon", "square", "star", "triangle"]
    assert model.pretrained_cfg["mean"] == cfg.data.mean
    # test-split samples rendered in memory (the same generator as the files the card was measured on)
    data = ShapesClassification("test", num_samples=300, image_size=64, transform=build_transforms(cfg, train=False))
    images = torch.stack([data[i][0] for i in range(len(data))])
    # the in-memory dataset numbers classes in SHAPE_CLASSES order; the weights use the folder (sorted) order
    to_model = [model.pretrained_cfg["class_names"].index(name) for name in data.classes]
    labels = torch.tensor([to_model[data[i][1]] for i in range(len(data))])
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.93


def test_evaluate_py_accepts_the_weights_file(tmp_path):
    from visionzoo.datasets.write_shapes import write_image_folder

    write_image_folder(tmp_path / "d", image_size=64, counts={"train": 0, "val": 0, "test": 60}, progress=False)
    proc = run_script("evaluate.py", WEIGHTS, "--data", tmp_path / "d", "--split", "test", "--report",
                      tmp_path / "r", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["num_samples"] == 60 and metrics["scalars"]["top1"] >= 0.85


def test_torch_hub_loads_shipped_weights():
    model = torch.hub.load(str(ROOT), "resnet18", source="local", weights="shapes")
    assert model.fc.out_features == 5


@pytest.mark.parametrize("tag", ["shapes"])
def test_model_info_reports_measured_metrics(tag):
    info = visionzoo.model_info("resnet18")
    assert info["weights"][tag]["metrics"]["top1"] >= 0.95
