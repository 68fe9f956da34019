"""The CamVid recipe on the real files (skipped without ../shared/data): the shipped config trains 2 steps on small
crops, and the notebook Segmenter (with and without the CRF) runs the checkpoint on a real 480x360 frame and
draws the overlay."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import ROOT


@pytest.mark.slow
def test_camvid_recipe_trains_and_segments_a_frame(shared_archive, tmp_path, one_thread):
    from visionzoo.config import load_config
    from visionzoo.datasets.camvid import CAMVID_CLASSES
    from visionzoo.predict import Segmenter
    from visionzoo.training import build_trainer

    root = shared_archive("camvid-jpeg.tar.gz")
    cfg = load_config(ROOT / "configs/segmentation/fcn_r18_camvid.yaml", [
        f"data.root={root}", "train.epochs=1", "train.max_steps_per_epoch=2", "train.log_interval=1",
        "data.val_split=null", "data.batch_size=2", "data.num_workers=0", "data.input_size=96"])
    torch.manual_seed(0)
    build_trainer(cfg, tmp_path / "run", show_progress=False).fit()

    frame = root / "CamVid" / "test" / "0001TP_008550.jpg"
    segmenter = Segmenter("fcn8s_resnet18", weights=str(tmp_path / "run" / "last.pt"))
    assert segmenter.class_names == list(CAMVID_CLASSES)
    result = segmenter(str(frame))
    assert result.mask.shape == (360, 480) and 0 <= result.mask.min() and result.mask.max() <= 10
    np.testing.assert_allclose(result.probabilities.sum(0), 1.0, atol=1e-4)
    refined = Segmenter("fcn8s_resnet18", weights=str(tmp_path / "run" / "last.pt"), crf=True)(str(frame))
    assert refined.mask.shape == (360, 480)
    segmenter.overlay(str(frame), result).save(tmp_path / "overlay.png")
    assert Image.open(tmp_path / "overlay.png").size == (480, 360)
