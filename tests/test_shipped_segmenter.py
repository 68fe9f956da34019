"""The FCN shipped in weights/: model card, integrity, and that it really segments fresh shapes scenes
written to disk (evaluate.py on the weights file alone, and the notebook Segmenter)."""
from __future__ import annotations

import json

import pytest

import visionzoo
from tests.helpers import run_script
from visionzoo.weights import REPO_WEIGHTS_DIR, sha256_file

MODEL = "fcn4s_resnet18"
NAMES = ["background", "circle", "square", "triangle", "star", "hexagon"]
WEIGHTS = REPO_WEIGHTS_DIR / f"{MODEL}.shapes.safetensors"


@pytest.fixture(scope="module")
def fresh_scenes(tmp_path_factory):
    """Scenes from another seed than the training data: 40 test images in the VOC layout."""
    from visionzoo.datasets.write_shapes_segmentation import write_shapes_segmentation

    root = tmp_path_factory.mktemp("fresh_seg")
    write_shapes_segmentation(root, image_size=128, counts={"train": 0, "val": 0, "test": 40}, seed=123,
                              progress=False)
    return root


def test_card_is_complete_and_matches_the_file():
    card = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert card["model"] == MODEL and card["task"] == "segmentation" and card["dtype"] == "float16"
    assert card["class_names"] == NAMES and card["num_classes"] == 6
    assert card["sha256"] == sha256_file(WEIGHTS) and WEIGHTS.stat().st_size <= 40 * 2**20
    assert card["metrics"]["split"] == "test" and card["trained"]["seconds"] > 0
    m = card["metrics"]
    assert 0 < m["mean_iou"] <= m["pixel_accuracy"] <= 1 and "crf_mean_iou" in m
    assert any("write_shapes_segmentation" in c for c in card["reproduce"])


@pytest.mark.slow
def test_evaluate_py_on_fresh_scenes(fresh_scenes):
    proc = run_script("evaluate.py", WEIGHTS, "--data", fresh_scenes, "--split", "test", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scalars = json.loads(proc.stdout.splitlines()[-1])
    card = json.loads(WEIGHTS.with_suffix(".json").read_text())
    # 40 fresh images against the card's 300: the same model, so within a generous margin
    assert scalars["mean_iou"] >= card["metrics"]["mean_iou"] - 0.08
    assert "crf_mean_iou" in scalars


def test_segmenter_finds_the_shapes(fresh_scenes):
    from visionzoo.datasets.segmentation import VOCSegmentation

    data = VOCSegmentation(fresh_scenes, split="test")
    seg = visionzoo.Segmenter(MODEL, weights="shapes")
    assert seg.class_names == NAMES
    correct = total = 0
    for i in range(10):
        mask = data.load_mask(i)
        pred = seg(data.image_path(i)).mask
        correct += int((pred == mask).sum())
        total += mask.size
    assert correct / total >= 0.9
