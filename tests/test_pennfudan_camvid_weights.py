"""The shipped Penn-Fudan detectors and CamVid segmenter reproduce their model cards through evaluate.py on the
held-out split (skipped without ../shared/data), and their cards say what a user needs: data set, split, anchor,
licence and the training curve."""
from __future__ import annotations

import json

import pytest

from tests.helpers import run_script
from visionzoo.weights import REPO_WEIGHTS_DIR

CARD_KEYS = {"dataset", "splits", "anchor", "licence"}


def _card(name: str) -> dict:
    card = json.loads((REPO_WEIGHTS_DIR / f"{name}.json").read_text())
    assert CARD_KEYS <= set(card), sorted(card)
    assert card["metrics"]["split"] == "test" and card["trained"]["curve"]
    assert "from scratch" in card["anchor"]
    return card


def _evaluate(name: str, root, tmp_path, *overrides: str) -> dict:
    proc = run_script("evaluate.py", REPO_WEIGHTS_DIR / f"{name}.safetensors", "--data", root, "--split", "test",
                      "--report", tmp_path / "r", "--no-progress", *overrides)
    assert proc.returncode == 0, proc.stderr
    return json.loads((tmp_path / "r" / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("name,keys", [
    ("faster_rcnn_resnet18_fpn.pennfudan", ["bbox_AP", "bbox_AP50"]),
    ("mask_rcnn_resnet18_fpn.pennfudan", ["bbox_AP", "bbox_AP50", "segm_AP"]),
])
def test_shipped_pennfudan_detectors_reproduce_their_cards(shared_archive, tmp_path, name, keys):
    card = _card(name)
    assert "Penn-Fudan" in card["dataset"] and card["class_names"] == ["__background__", "person"]
    metrics = _evaluate(name, shared_archive("pennfudanped.tar.gz"), tmp_path)
    assert metrics["num_samples"] == 50  # the tutorial's 50 held-out photos
    for key in keys:  # the card was measured on the fp32 checkpoint; the file is fp16
        assert metrics["scalars"][key] == pytest.approx(card["metrics"][key], abs=0.01), key
    assert (tmp_path / "r" / "report.html").is_file()


@pytest.mark.slow
def test_shipped_camvid_segmenter_reproduces_its_card(shared_archive, tmp_path):
    name = "fcn8s_resnet18.camvid"
    card = _card(name)
    assert "non-commercial" in card["licence"] and "JPEG" in card["splits"]
    assert card["num_classes"] == 11 and card["class_names"][0] == "Sky"
    # without the CRF (3 of the 4 minutes on two cores); the card also holds the CRF's figures
    metrics = _evaluate(name, shared_archive("camvid-jpeg.tar.gz"), tmp_path, "eval.crf=false")
    assert metrics["num_samples"] == 233
    assert metrics["scalars"]["mean_iou"] == pytest.approx(card["metrics"]["mean_iou"], abs=0.005)
    assert card["metrics"]["crf_mean_iou"] > card["metrics"]["mean_iou"]  # the CRF's gain, measured on test
