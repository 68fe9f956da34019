"""The detectors shipped in weights/: model cards, integrity, and that they really find shapes in fresh
scenes written to disk (evaluate.py on the weights file alone, and the notebook Detector)."""
from __future__ import annotations

import json

import pytest

import visionzoo
from tests.helpers import run_script
from visionzoo.weights import REPO_WEIGHTS_DIR, sha256_file

DETECTORS = {  # model -> iou types its card reports
    "faster_rcnn_resnet18_fpn": ("bbox",),
    "mask_rcnn_resnet18_fpn": ("bbox", "segm"),
    "fast_rcnn_resnet18_fpn": ("bbox",),
}
NAMES = ["__background__", "circle", "square", "triangle", "star", "hexagon"]


def weights_file(model):
    return REPO_WEIGHTS_DIR / f"{model}.shapes.safetensors"


@pytest.fixture(scope="module")
def fresh_scenes(tmp_path_factory):
    """Scenes from another seed than the training data: 40 test images."""
    from visionzoo.datasets.write_shapes_scenes import write_coco_scenes

    root = tmp_path_factory.mktemp("fresh_scenes")
    write_coco_scenes(root, image_size=128, counts={"train": 0, "val": 0, "test": 40}, seed=123, progress=False)
    return root


@pytest.mark.parametrize("model", DETECTORS)
def test_card_is_complete_and_matches_the_file(model):
    path = weights_file(model)
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["model"] == model and card["task"] == "detection" and card["dtype"] == "float16"
    assert card["class_names"] == NAMES and card["num_classes"] == 6
    assert card["sha256"] == sha256_file(path) and path.stat().st_size <= 40 * 2**20
    assert card["metrics"]["split"] == "test" and card["trained"]["seconds"] > 0
    for t in DETECTORS[model]:
        assert 0 < card["metrics"][f"{t}_AP"] <= card["metrics"][f"{t}_AP50"] <= 1
    assert card["config"]["model"]["kwargs"]["min_size"] == 128
    assert any("write_shapes_scenes" in c for c in card["reproduce"])


@pytest.mark.slow
@pytest.mark.parametrize("model", DETECTORS)
def test_evaluate_py_on_fresh_scenes(tmp_path, fresh_scenes, model):
    proc = run_script("evaluate.py", weights_file(model), "--data", fresh_scenes, "--split", "test",
                      "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scalars = json.loads(proc.stdout.splitlines()[-1])
    card = json.loads(weights_file(model).with_suffix(".json").read_text())
    for t in DETECTORS[model]:
        # 40 fresh images against the card's 300: the same model, so within a generous margin
        assert scalars[f"{t}_AP50"] >= card["metrics"][f"{t}_AP50"] - 0.15


def test_detector_loads_the_card_and_finds_shapes(fresh_scenes):
    from visionzoo.datasets.coco import CocoDetection

    det = visionzoo.Detector("mask_rcnn_resnet18_fpn", weights="shapes", score_threshold=0.5)
    assert det.class_names == NAMES and det.model.transform.min_size == (128,)
    data = CocoDetection(fresh_scenes / "images/test", fresh_scenes / "annotations/instances_test.json")
    from collections import Counter

    matched = total = 0
    for i in range(10):
        target = data.load_target(i)
        r = det(data.image_path(i))
        assert r.masks is not None and r.masks.shape[1:] == (128, 128)
        gt = Counter(NAMES[k] for k in target["labels"].tolist())
        matched += sum((gt & Counter(r.names)).values())
        total += sum(gt.values())
    assert matched >= 0.6 * total  # most annotated shapes found with their class (card: box AR100 0.84)
