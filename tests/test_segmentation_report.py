"""The segmentation report on its own: overlays in the VOC colours and a report from hand-made metrics."""
import numpy as np
import torch
from PIL import Image

from visionzoo.datasets.segmentation import voc_palette
from visionzoo.inference.draw import colorize, overlay
from visionzoo.tasks.segmentation.metrics import ConfusionMeter
from visionzoo.tasks.segmentation.report import build_segmentation_report


def test_colorize_and_overlay():
    mask = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    palette = np.asarray(voc_palette()).reshape(256, 3)
    assert np.array_equal(np.asarray(colorize(mask)), palette[mask])
    image = Image.fromarray(np.full((2, 2, 3), 100, dtype=np.uint8))
    blended = np.asarray(overlay(image, mask, alpha=0.5)).astype(int)
    assert (blended[0, 0] == 100).all()  # background shows the image
    assert np.allclose(blended[0, 1], 0.5 * 100 + 0.5 * palette[1], atol=1)
    assert np.allclose(blended[1, 1], 0.5 * 100 + 0.5 * 255, atol=1)  # ignore whitened
    assert overlay(image.resize((4, 4)), mask).size == (2, 2)  # the image follows the mask's size


def test_report_from_metrics(tmp_path):
    names = ["background", "cat", "dog"]
    target = torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 255]]])
    meters = {v: ConfusionMeter(3, names) for v in ("plain", "crf")}
    meters["plain"].update(torch.tensor([[[0, 1, 1, 1], [0, 2, 0, 0]]]), target)
    meters["crf"].update(torch.tensor([[[0, 0, 1, 1], [0, 2, 2, 0]]]), target)
    metrics = meters["plain"].compute()
    crf = meters["crf"].compute()
    metrics.update({f"crf_{k}": crf[k] for k in ("mean_iou", "pixel_accuracy", "mean_accuracy", "fw_iou",
                                                  "per_class_iou")})
    metrics["crf_gain_mean_iou"] = crf["mean_iou"] - metrics["mean_iou"]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (2, 4, 3), dtype=np.uint8))
    mask = target[0].numpy().astype(np.uint8)
    preds = {"plain": np.zeros((2, 4), np.uint8), "crf": mask.copy()}
    path = build_segmentation_report(tmp_path / "r.html", title="t", metrics=metrics, class_names=names,
                                     examples=[(0, image, mask, preds)],
                                     worst={"plain": [(0.2, 0, image, mask, preds["plain"])]})
    html = path.read_text()
    for text in ("Per-class IoU", "Confusion matrix", "Worst images by IoU", "FCN + CRF", "mean IoU with CRF",
                 f"{metrics['crf_gain_mean_iou']:+.4f}", "Class colours"):
        assert text in html
    plain_only = {k: v for k, v in metrics.items() if not k.startswith("crf_")}
    html = build_segmentation_report(tmp_path / "p.html", title="t", metrics=plain_only, class_names=names).read_text()
    assert "eval.crf=true" in html and "No example predictions" in html
