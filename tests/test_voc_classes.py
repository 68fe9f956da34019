"""A Pascal VOC data set of one's own classes (a raccoon set, as users bring): the refusal names the way to declare
classes; data.params.classes and a classes.txt in the root declare them; train.py and evaluate.py run on it."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.helpers import ROOT, read_jsonl, run_script
from visionzoo.datasets.voc import VOCDetection

TINY_MODEL = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 32,
              "representation_size": 64, "box_batch_size_per_image": 32, "trainable_layers": 5, "norm": "gn"}

XML = """<annotation><folder>raccoon</folder><filename>{name}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
OBJECT = """<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"""


def write_raccoon_voc(root, counts=None, classes=("raccoon",), seed=0):
    """JPEG photos of grey blobs with dark masks on a textured background, VOC XML boxes (1-based inclusive),
    ImageSets/Main/<split>.txt. Returns the boxes written, per image name."""
    counts = counts or {"train": 8, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    written = {}
    for split, n in counts.items():
        names = []
        for k in range(n):
            name = f"raccoon-{split}-{k}"
            w, h = 96, 80
            image = Image.fromarray(rng.integers(90, 160, (h, w, 3), dtype=np.uint8))
            draw = ImageDraw.Draw(image)
            objects = []
            for j in range(1 + k % 2):
                x1, y1 = int(rng.integers(2, w // 2)), int(rng.integers(2, h // 2))
                x2, y2 = x1 + int(rng.integers(20, 40)), y1 + int(rng.integers(16, 32))
                draw.ellipse([x1, y1, x2, y2], fill=(120, 120, 125))
                draw.rectangle([x1 + 4, y1 + 4, x2 - 4, y1 + 10], fill=(20, 20, 20))
                objects.append(OBJECT.format(cls=classes[j % len(classes)], x1=x1 + 1, y1=y1 + 1, x2=x2 + 1, y2=y2 + 1))
                written.setdefault(name, []).append((x1, y1, x2 + 1, y2 + 1))
            image.save(root / "JPEGImages" / f"{name}.jpg", quality=92)
            (root / "Annotations" / f"{name}.xml").write_text(XML.format(name=name, w=w, h=h, objects="".join(objects)))
            names.append(name)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return written


@pytest.fixture(scope="module")
def raccoons(tmp_path_factory):
    root = tmp_path_factory.mktemp("raccoon_voc")
    return root, write_raccoon_voc(root)


def test_unknown_class_names_how_to_declare(raccoons):
    root, _ = raccoons
    with pytest.raises(ValueError, match=r"unknown class name 'raccoon' .*known: aeroplane.*data\.params\.classes"):
        VOCDetection(root, split="train")


def test_classes_from_params_or_classes_txt(raccoons, tmp_path):
    root, written = raccoons
    ds = VOCDetection(root, split="train", classes=["raccoon"])
    assert ds.classes == ["__background__", "raccoon"] and len(ds) == 8
    _, target = ds[1]
    assert target["labels"].tolist() == [1, 1]
    assert target["boxes"].tolist() == [list(map(float, b)) for b in written[ds.ids[1]]]

    (root / "classes.txt").write_text("background\nraccoon\n")  # a segmentation-style file works too
    try:
        assert VOCDetection(root, split="test").classes == ["__background__", "raccoon"]
        (root / "classes.txt").write_text("raccoon\nraccoon\n")
        with pytest.raises(ValueError, match=r"classes\.txt: class name\(s\) 'raccoon' listed more than once"):
            VOCDetection(root, split="test")
    finally:
        (root / "classes.txt").unlink()
    with pytest.raises(ValueError, match="leave the background out"):
        VOCDetection(root, split="test", classes=["background", "raccoon"])
    with pytest.raises(ValueError, match="expected a list of class names"):
        VOCDetection(root, split="test", classes="raccoon")


@pytest.mark.slow
def test_train_and_evaluate_on_own_voc_classes(raccoons, tmp_path):
    root, _ = raccoons
    cfg = tmp_path / "cfg.yaml"
    data = {"dataset": "voc", "root": str(root), "batch_size": 4, "eval_batch_size": 4, "num_workers": 0,
            "params": {"classes": ["raccoon"]}}
    cfg.write_text(f"""
_base_: {ROOT / 'configs/detection/_base_.yaml'}
model: {{name: faster_rcnn_resnet18_fpn, kwargs: {json.dumps(TINY_MODEL)}}}
data: {json.dumps(data)}
optim: {{lr: 0.01}}
train: {{epochs: 1, log_interval: 1}}
eval: {{voc07: true}}
""")
    run_dir = tmp_path / "run"
    proc = run_script("train.py", cfg, "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [r for r in read_jsonl(run_dir / "log.jsonl") if r["type"] == "train"]
    assert len(train) == 2 and all(np.isfinite(r["loss"]) for r in train)
    proc = run_script("evaluate.py", run_dir, "--report", tmp_path / "report", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert result["split"] == "test" and result["num_samples"] == 4
    assert set(result["metrics"]["per_class"]["bbox"]) == {"raccoon"}
    assert set(result["metrics"]["voc07_per_class"]) == {"raccoon"}
