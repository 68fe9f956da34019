"""Details of the detection report: the model table's input size and GFLOPs are the detector's own, the
example caption names the evaluated split, coinciding precision-recall curves all stay visible, and
captions in crowded scenes do not cover each other."""
from __future__ import annotations

import json
import re
from itertools import combinations

import numpy as np
import pytest
import torch
from PIL import Image

import visionzoo
from visionzoo.inference.draw import draw_detections, place_label
from visionzoo.profile import gflops
from visionzoo.tasks.detection.report import (
    LINE_COLORS,
    _pr_figure,
    build_detection_report,
    measured_model_summary,
)
from visionzoo.weights import REPO_WEIGHTS_DIR


def overlap(a, b):
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


# ---- caption ------------------------------------------------------------------------------------
def _tiny_report(tmp_path, **kwargs):
    image = Image.new("RGB", (64, 48), (90, 90, 90))
    gt = {"boxes": [[4, 4, 30, 30]], "labels": ["cat"]}
    pred = {"boxes": [[5, 5, 31, 29]], "labels": ["cat"], "scores": [0.9]}
    metrics = {"iou_types": ["bbox"], "bbox_AP": 0.5, "bbox_AP50": 0.9}
    out = build_detection_report(tmp_path / "report.html", title="t", metrics=metrics, class_names=["cat"],
                                 examples=[(image, gt, pred)], **kwargs)
    return out.read_text()


def test_example_caption_names_the_evaluated_split(tmp_path):
    html = _tiny_report(tmp_path, run_info={"evaluated": {"split": "test", "root": "data/x"}})
    assert "1 images of the test split" in html and "validation images" not in html
    assert "images of the val split" in _tiny_report(tmp_path, split="val")
    assert "1 evaluated images" in _tiny_report(tmp_path)  # split unknown: no claim about it


# ---- precision-recall curves --------------------------------------------------------------------
def _color_pixels(rgb: np.ndarray, hex_color: str, tol: int = 40) -> int:
    c = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(rgb.astype(int) - c).max(axis=-1) <= tol).sum())


def test_pr_curves_at_precision_one_each_stay_visible():
    """Three classes with the same curve (precision 1.0 up to recall 0.8): every class's colour must
    show inside the plot area, not only the last line drawn."""
    recall = np.linspace(0, 1, 101)
    same = np.where(recall <= 0.8, 1.0, 0.0).tolist()
    names = ["circle", "square", "star"]
    curves = {"bbox": {"recall": recall.tolist(), "precision": {n: same for n in names}, "iou_threshold": 0.5}}
    per_class = {"bbox": {n: {"AP50": 0.8, "num_gt": 10} for n in names}}
    fig, shown = _pr_figure(curves, per_class, ["bbox"], names)
    assert shown == 3
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    ax = fig.axes[0]
    x0, y0, x1, y1 = (int(round(v)) for v in ax.get_window_extent().extents)
    height = rgb.shape[0]
    plot = rgb[height - y1:height - y0, x0:x1]  # the axes only: the legend sits outside
    counts = [_color_pixels(plot, LINE_COLORS[i]) for i in range(3)]
    assert min(counts) > 200, counts  # each a visible band / markers along the shared stretch


# ---- captions in crowded scenes -----------------------------------------------------------------
def test_place_label_prefers_the_corner_and_avoids_occupied_spots():
    assert place_label((20, 30, 60, 70), (25, 10), (100, 100)) == (20, 20, 45, 30)  # above, left
    assert place_label((20, 30, 60, 70), (25, 10), (100, 100), prefer="bottom") == (20, 70, 45, 80)
    assert place_label((20, 30, 60, 70), (25, 10), (100, 100), occupied=[(20, 20, 45, 30)]) == (20, 30, 45, 40)
    assert place_label((0, 0, 10, 10), (25, 10), (100, 100))[:2] == (0, 0)  # kept inside the image


def test_crowded_scene_captions_do_not_overlap():
    """Twelve boxes sharing nearly the same corner, ground truth then predictions on one image: every
    caption lands inside the image and clear of all others."""
    image = Image.new("RGB", (256, 256), (30, 30, 30))
    rng = np.random.default_rng(0)
    corners = 100 + rng.integers(-4, 5, size=(12, 2))
    boxes = np.concatenate([corners, corners + 40], axis=1).astype(float)
    captions: list = []
    draw_detections(image, boxes[:6], ["triangle"] * 6, color_by_label=False, dashed=True, text_position="bottom",
                    occupied=captions)
    out = draw_detections(image, boxes[6:], ["hexagon"] * 6, scores=np.linspace(0.99, 0.5, 6),
                          color_by_label=False, occupied=captions)
    assert out.size == image.size and len(captions) == 12
    for a, b in combinations(captions, 2):
        assert overlap(a, b) == 0, (a, b)
    for x1, y1, x2, y2 in captions:
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256


# ---- model table --------------------------------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
def test_measured_model_summary_uses_the_detectors_own_resize():
    torch.manual_seed(0)
    model = visionzoo.create_model("faster_rcnn_resnet18_fpn", num_classes=6, min_size=128, max_size=160,
                                   backbone_weights=None).eval()
    image = torch.rand(3, 96, 200)  # shorter side 96 -> 128 would make the longer 267 > 160: capped
    s = measured_model_summary(model, (image, {}), {"name": "x", "input_size": [3, 224, 224], "gflops": None})
    assert s["name"] == "x" and s["resize"] == "shorter side 128, longer side at most 160"
    assert s["input_size"][0] == 3 and max(s["input_size"][1:]) <= 160 + 31  # padded to a multiple of 32
    assert s["input_size"] != [3, 224, 224] and s["input_size"][1] % 32 == 0
    # the whole detector costs more than its backbone trunk alone on the same input, and not absurdly more
    trunk = gflops(model.backbone.body, s["input_size"], on_meta=False)
    assert trunk < s["gflops"] < 20 * trunk
    assert "one 200\u00d796 image" in s["gflops_measured_on"]


@pytest.mark.usefixtures("one_thread")
def test_measured_model_summary_fast_rcnn_counts_its_proposals():
    torch.manual_seed(0)
    model = visionzoo.create_model("fast_rcnn_resnet18_fpn", num_classes=6, min_size=128, max_size=128,
                                   backbone_weights=None).eval()
    image = torch.rand(3, 128, 128)
    xy = torch.rand(64, 2) * 90
    few = {"proposals": torch.cat([xy, xy + 30], dim=1)}
    many = {"proposals": torch.cat([xy, xy + 30], dim=1).repeat(8, 1)}
    s_few = measured_model_summary(model, (image, few))
    s_many = measured_model_summary(model, (image, many))
    assert "64 proposals" in s_few["gflops_measured_on"] and "512 proposals" in s_many["gflops_measured_on"]
    assert s_many["gflops"] > s_few["gflops"] > 0  # the RoI head runs once per proposal
    assert measured_model_summary(model, (image, {}))["gflops"] is None  # no proposals: not measured


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_evaluate_report_model_table_of_the_shipped_detector(tmp_path):
    """The real command on the shipped Faster R-CNN: the report's model table says 3x128x128 (the card's
    min_size / max_size), not the config default 224, and gives GFLOPs."""
    from visionzoo.cli.evaluate import main
    from visionzoo.datasets.write_shapes_scenes import write_coco_scenes

    weights = REPO_WEIGHTS_DIR / "faster_rcnn_resnet18_fpn.shapes.safetensors"
    if not weights.is_file():
        pytest.skip(f"missing {weights}")
    root = tmp_path / "scenes"
    write_coco_scenes(root, image_size=128, counts={"train": 0, "val": 0, "test": 4}, seed=7, progress=False)
    assert main([str(weights), "--data", str(root), "--split", "test", "--report", str(tmp_path / "r"),
                 "--no-progress", "--batch-size", "2", "--workers", "0"]) in (0, None)
    html = (tmp_path / "r" / "report.html").read_text()
    table = html[html.index(">Model<"):]
    assert "3\u00d7128\u00d7128" in table and "224" not in table.split("</table>")[0]
    gflops_cell = re.search(r"gflops</t[dh]>\s*<td[^>]*>([^<]+)<", table)
    assert gflops_cell and float(gflops_cell.group(1)) > 0.1, table[:2000]
    assert "images of the test split" in html
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["split"] == "test"


def test_measured_model_summary_of_a_model_it_cannot_run_says_so():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, images):
            raise RuntimeError("needs targets")

    s = measured_model_summary(Broken(), (torch.rand(3, 32, 32), {}), {"gflops": None, "name": "b"})
    assert s["gflops"] is None and s["name"] == "b"
    assert s["gflops_measured_on"] == "not measured (RuntimeError: needs targets)"
