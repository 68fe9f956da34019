"""The Penn-Fudan recipe end to end on the real files (skipped without ../shared/data): the shipped config trains
2 steps (smaller images), evaluates on the test split with box and mask AP, and the notebook Detector runs the
resulting checkpoint on a real photo and draws it."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from tests.helpers import ROOT

QUICK = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.log_interval=1", "data.val_split=null",
         "data.batch_size=2", "data.eval_batch_size=2", "data.num_workers=0", "data.augment.jitter_size=160",
         "model.kwargs.min_size=160", "model.kwargs.max_size=240", "model.kwargs.fpn_channels=32",
         "model.kwargs.representation_size=64", "model.kwargs.box_detections_per_img=10", "eval.examples_in_report=2"]


@pytest.mark.slow
def test_pennfudan_recipe_trains_evaluates_and_predicts(shared_archive, tmp_path, one_thread):
    from visionzoo.config import load_config
    from visionzoo.predict import Detector
    from visionzoo.training import build_trainer

    root = shared_archive("pennfudanped.tar.gz")
    cfg = load_config(ROOT / "configs/detection/mask_rcnn_r18_pennfudan.yaml",
                      [f"data.root={root}", "data.params.test_size=4", *QUICK])
    assert cfg.model.kwargs["norm"] == "gn" and cfg.data.dataset == "pennfudan"
    torch.manual_seed(0)
    trainer = build_trainer(cfg, tmp_path / "run", show_progress=False)
    assert len(trainer.train_set) == 146  # 170 - 4 test - 20 val
    trainer.fit()
    checkpoint = tmp_path / "run" / "last.pt"
    from visionzoo.cli.evaluate import main as evaluate

    assert evaluate([str(tmp_path / "run"), "--report", str(tmp_path / "report"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 4
    assert "segm_AP" in metrics["scalars"] and "bbox_AP50" in metrics["scalars"]

    photo = root / "PennFudanPed" / "PNGImages" / "PennPed00096.png"
    detector = Detector("mask_rcnn_resnet18_fpn", weights=str(checkpoint), score_threshold=0.0)
    assert detector.class_names == ["__background__", "person"]
    result = detector(str(photo))
    assert len(result) > 0 and set(result.names) == {"person"} and result.masks.shape[1:] == Image.open(photo).size[::-1]
    drawn = detector.draw(str(photo), result)
    drawn.save(tmp_path / "drawn.png")
    assert Image.open(tmp_path / "drawn.png").size == Image.open(photo).size
