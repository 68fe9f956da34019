"""YOLO-format detection data written in tmp_path: boxes from normalised centre/size, class names from data.yaml
or classes.txt, negatives, orphan label files reported, malformed lines named by file and line; train.py and
evaluate.py on it."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import ROOT, read_jsonl, run_script
from visionzoo.datasets.yolo import YOLODetection

TINY_MODEL = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 32,
              "representation_size": 64, "box_batch_size_per_image": 32, "trainable_layers": 3}


def write_yolo(root, counts=None, seed=0, names_file="data.yaml"):
    """PNG images with a raccoon-ish blob (class 0) and a box (class 1); every fourth image is a negative without
    a label file. Returns {split: {image name: [(class, x1, y1, x2, y2) in pixels]}}."""
    counts = counts or {"train": 8, "val": 4}
    rng = np.random.default_rng(seed)
    truth = {}
    for split, n in counts.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        truth[split] = {}
        for k in range(n):
            w, h = 80, 64
            image = Image.fromarray(rng.integers(60, 200, (h, w, 3), dtype=np.uint8))
            draw, lines, boxes = ImageDraw.Draw(image), [], []
            if k % 4 != 3:
                for cls in (0, 1)[: 1 + k % 2]:
                    x1, y1 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
                    x2, y2 = x1 + int(rng.integers(12, w // 2)), y1 + int(rng.integers(10, h // 2))
                    (draw.ellipse if cls == 0 else draw.rectangle)([x1, y1, x2 - 1, y2 - 1], fill=(30, 30, 30))
                    lines.append(f"{cls} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
                                 f"{(y2 - y1) / h:.6f}")
                    boxes.append((cls, x1, y1, x2, y2))
                (root / "labels" / split / f"img{k}.txt").write_text("\n".join(lines) + "\n")
            image.save(root / "images" / split / f"img{k}.png")
            truth[split][f"img{k}"] = boxes
    if names_file == "data.yaml":
        (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: raccoon\n  1: crate\n")
    elif names_file == "classes.txt":
        (root / "classes.txt").write_text("raccoon\ncrate\n")
    return truth


def test_boxes_negatives_and_names(tmp_path):
    truth = write_yolo(tmp_path)
    ds = YOLODetection(tmp_path, "train")
    assert ds.classes == ["__background__", "raccoon", "crate"] and len(ds) == 8 and ds.negatives == 2
    for i, name in enumerate(ds.names):
        a = ds.get_annotation(i)
        expected = np.array([b[1:] for b in truth["train"][name]], np.float32).reshape(-1, 4)
        np.testing.assert_allclose(a["boxes"], expected, atol=1e-3)
        assert a["labels"].tolist() == [b[0] + 1 for b in truth["train"][name]]
    image, target = ds[3]  # a negative: an image, no boxes
    assert ds.names[3] == "img3" and tuple(image.shape) == (3, 64, 80) and target["boxes"].shape == (0, 4)

    (tmp_path / "data.yaml").unlink()
    (tmp_path / "classes.txt").write_text("raccoon\ncrate\n")
    assert YOLODetection(tmp_path, "val").classes == ["__background__", "raccoon", "crate"]
    assert YOLODetection(tmp_path, "val", classes=["a", "b"]).classes == ["__background__", "a", "b"]
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(ValueError, match="no data.yaml or classes.txt"):
        YOLODetection(tmp_path, "val")


def test_orphan_labels_are_reported(tmp_path):
    write_yolo(tmp_path)
    (tmp_path / "labels" / "val" / "lost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.warns(UserWarning, match=r"1 label file\(s\) without an image .*lost\.txt"):
        ds = YOLODetection(tmp_path, "val")
    assert [p.name for p in ds.orphan_labels] == ["lost.txt"] and len(ds) == 4


@pytest.mark.parametrize("line,message", [
    ("0 0.5 0.5 0.2", r"expected 'class cx cy w h' \(5 values\), got 4"),
    ("0 0.1 0.2 0.3 0.4 0.5 0.6", r"expected .*got 7.*polygon labels"),
    ("raccoon 0.5 0.5 0.2 0.2", r"class 'raccoon' is not an integer index"),
    ("2 0.5 0.5 0.2 0.2", r"class index 2 outside 0\.\.1 \(2 class names\)"),
    ("0 40 32 10 10", r"fractions of the image size in 0\.\.1 \(normalised\)"),
    ("0 0.5 nan 0.2 0.2", r"fractions of the image size"),
    ("1 0.5 0.5 0.2 x", r"must be numbers"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    write_yolo(tmp_path)
    label = tmp_path / "labels" / "val" / "img1.txt"
    label.write_text(label.read_text() + "\n" + line + "\n")
    n = len(label.read_text().splitlines())
    with pytest.raises(ValueError, match=re.escape(f"{label}, line {n}: ") + ".*" + message):
        YOLODetection(tmp_path, "val")


def test_bad_layout_errors(tmp_path):
    write_yolo(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"YOLO image folder not found: .*images/test"):
        YOLODetection(tmp_path, "test")
    (tmp_path / "data.yaml").write_text("names: raccoon\n")
    with pytest.raises(ValueError, match=r"data\.yaml: expected 'names' as a list"):
        YOLODetection(tmp_path, "val")
    image = tmp_path / "images" / "val" / "img0.png"
    image.write_bytes(b"not an image")
    (tmp_path / "data.yaml").write_text("names: [raccoon, crate]\n")
    with pytest.raises(Exception, match=re.escape(str(image))):
        YOLODetection(tmp_path, "val")


@pytest.mark.slow
def test_train_and_evaluate_on_yolo_data(tmp_path):
    root = tmp_path / "yolo"
    write_yolo(root, counts={"train": 8, "val": 4, "test": 4})
    cfg = tmp_path / "cfg.yaml"
    data = {"dataset": "yolo", "root": str(root), "batch_size": 4, "eval_batch_size": 4, "num_workers": 0}
    cfg.write_text(f"""
_base_: {ROOT / 'configs/detection/_base_.yaml'}
model: {{name: faster_rcnn_resnet18_fpn, kwargs: {json.dumps(TINY_MODEL)}}}
data: {json.dumps(data)}
optim: {{lr: 0.01}}
train: {{epochs: 1, log_interval: 1}}
""")
    run_dir = tmp_path / "run"
    proc = run_script("train.py", cfg, "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_jsonl(run_dir / "log.jsonl")
    assert len([r for r in log if r["type"] == "train"]) == 2
    assert "val_bbox_AP" in next(r for r in log if r["type"] == "epoch")
    proc = run_script("evaluate.py", run_dir, "--report", tmp_path / "report", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert result["split"] == "test" and result["num_samples"] == 4
    assert set(result["metrics"]["per_class"]["bbox"]) == {"raccoon", "crate"}
