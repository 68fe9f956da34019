"""Segmentation end to end: shapes scenes written to disk in the Pascal VOC layout (and as image/mask
folders) -> train.py / evaluate.py as subprocesses; the evaluation path against an independent
recomputation of the confusion matrix; bad masks stopping a run with a clear error."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import ROOT, read_jsonl, run_script

CRF_EVAL = "{crf: true, crf_params: {iterations: 3, window_radius: 3}, examples_in_report: 3, worst_in_report: 2}"


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    from visionzoo.datasets.write_shapes_segmentation import write_shapes_segmentation

    root = tmp_path_factory.mktemp("shapes_seg")
    write_shapes_segmentation(root, image_size=48, counts={"train": 16, "val": 6, "test": 6}, seed=0,
                              progress=False)
    return root


def write_config(path, root, extra: str = "", data: dict | None = None, model: str = "fcn8s_resnet18",
                 model_kwargs: dict | None = None, eval_section: str = CRF_EVAL) -> str:
    data = {"root": str(root), "input_size": 40, "batch_size": 8, "eval_batch_size": 4, "num_workers": 0,
            **(data or {})}
    path.write_text(f"""
_base_: {ROOT / 'configs/segmentation/_base_.yaml'}
model: {{name: {model}, kwargs: {json.dumps(model_kwargs or {})}}}
data: {json.dumps(data)}
optim: {{lr: 0.02}}
train: {{epochs: 2, log_interval: 1}}
eval: {eval_section}
{extra}
""")
    return str(path)


@pytest.mark.slow
def test_train_then_evaluate_with_crf_and_report(tmp_path, voc_root):
    cfg = write_config(tmp_path / "cfg.yaml", voc_root)
    run_dir = tmp_path / "run"
    proc = run_script("train.py", cfg, "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_jsonl(run_dir / "log.jsonl")
    train = [r for r in log if r["type"] == "train"]
    assert len(train) == 4 and all(np.isfinite(r["loss"]) for r in train)
    epochs = [r for r in log if r["type"] == "epoch"]
    assert len(epochs) == 2 and {"val_mean_iou", "val_crf_mean_iou", "val_fw_iou"} <= set(epochs[-1])

    proc = run_script("evaluate.py", run_dir, "--report", tmp_path / "report", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert result["split"] == "test" and result["num_samples"] == 6
    m = result["metrics"]
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "crf_mean_iou", "crf_pixel_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    assert set(m["per_class_iou"]) == {"background", "circle", "square", "triangle", "star", "hexagon"}
    assert m["crf_gain_mean_iou"] == pytest.approx(m["crf_mean_iou"] - m["mean_iou"])
    cm = np.asarray(m["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == 6 * 48 * 48  # every test pixel counted once (no ignore, no padding)

    # the same numbers from the checkpoint, the dataset files and numpy alone
    import visionzoo
    from visionzoo.datasets.segmentation import read_mask

    model = visionzoo.create_model("fcn8s_resnet18", weights=str(run_dir / "best.pt"), num_classes=6).eval()
    ids = (voc_root / "ImageSets/Segmentation/test.txt").read_text().split()
    expected = np.zeros((6, 6), dtype=np.int64)
    for i in ids:
        image = np.asarray(Image.open(voc_root / "JPEGImages" / f"{i}.jpg").convert("RGB"), dtype=np.float32) / 255
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        x = torch.from_numpy(((image - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            pred = model(x)["out"].argmax(1)[0].numpy()
        gt = read_mask(voc_root / "SegmentationClass" / f"{i}.png")
        np.add.at(expected, (gt.ravel(), pred.ravel()), 1)
    np.testing.assert_array_equal(cm, expected)
    iou = np.diag(expected) / (expected.sum(0) + expected.sum(1) - np.diag(expected))
    assert m["mean_iou"] == pytest.approx(np.nanmean(iou))

    # the notebook Segmenter gives the same prediction as the loop above, and refines it with the CRF
    last = np.asarray(Image.open(voc_root / "JPEGImages" / f"{ids[-1]}.jpg").convert("RGB"))
    names = (voc_root / "classes.txt").read_text().split()
    plain = visionzoo.Segmenter(model, class_names=names)(voc_root / "JPEGImages" / f"{ids[-1]}.jpg")
    np.testing.assert_array_equal(plain.mask, pred)
    assert plain.probabilities.shape == (6, 48, 48)
    np.testing.assert_allclose(plain.probabilities.sum(0), 1.0, rtol=1e-5)
    refined = visionzoo.Segmenter(model, class_names=names, crf={"iterations": 3}, window=32)(last)
    assert refined.mask.shape == (48, 48) and set(refined.present()) <= set(names)
    assert visionzoo.Segmenter(model, class_names=names).overlay(last, plain).size == (48, 48)

    html = (tmp_path / "report" / "report.html").read_text()
    for section in ("Per-class IoU", "Confusion matrix", "Examples", "Worst images by IoU", "FCN + CRF",
                    "Training curves"):
        assert section in html
    assert "src=\"http" not in html  # self-contained


@pytest.mark.slow
def test_image_mask_folders_and_sliding_window(tmp_path, voc_root):
    """The generic folder layout (images/<split>, masks/<split>, classes.txt) trains the torchvision-style
    FCN head, and evaluation by sliding window over images larger than the window works."""
    root = tmp_path / "folders"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in (voc_root / "ImageSets/Segmentation" / f"{split}.txt").read_text().split():
            shutil.copy(voc_root / "JPEGImages" / f"{i}.jpg", root / "images" / split / f"{i}.jpg")
            shutil.copy(voc_root / "SegmentationClass" / f"{i}.png", root / "masks" / split / f"{i}.png")
    shutil.copy(voc_root / "classes.txt", root / "classes.txt")
    cfg = write_config(tmp_path / "cfg.yaml", root, model="fcn_resnet18", model_kwargs={"aux_loss": True},
                       data={"dataset": "folder", "test_split": None}, extra="loss: {aux_weight: 0.4}",
                       eval_section="{crf: false, sliding_window: 32, window_overlap: 0.5}")
    run_dir = tmp_path / "run"
    proc = run_script("train.py", cfg, "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = [r for r in read_jsonl(run_dir / "log.jsonl") if r["type"] == "train"]
    assert "loss_aux" in train[0]
    assert train[0]["loss"] == pytest.approx(train[0]["loss_out"] + 0.4 * train[0]["loss_aux"], rel=1e-4)
    proc = run_script("evaluate.py", run_dir, "--report", tmp_path / "report", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert result["split"] == "val" and "crf_mean_iou" not in result["metrics"]


@pytest.mark.slow
def test_bad_mask_stops_training_with_a_clear_error(tmp_path, voc_root):
    root = tmp_path / "bad"
    shutil.copytree(voc_root, root)
    first = (root / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    mask_file = root / "SegmentationClass" / f"{first}.png"
    Image.fromarray(np.full((48, 48), 9, dtype=np.uint8), "L").save(mask_file)
    cfg = write_config(tmp_path / "cfg.yaml", root)
    proc = run_script("train.py", cfg, "--run-dir", tmp_path / "run", "--no-progress")
    assert proc.returncode == 1
    assert str(mask_file) in proc.stderr and "9" in proc.stderr
    assert "Traceback" not in proc.stderr
