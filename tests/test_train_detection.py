"""Detection end to end: shapes scenes written to disk as COCO JSON (and a Pascal VOC folder) ->
train.py / evaluate.py as subprocesses for Faster, Mask and Fast R-CNN; the detection task's evaluation
path against plain pycocotools; the notebook Detector; backbone initialisation from a classifier."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import ROOT, read_jsonl, run_script
from visionzoo.config import load_config

TINY_MODEL = {"min_size": 64, "max_size": 64, "anchor_sizes": [8, 16, 32, 64, 128], "fpn_channels": 32,
              "representation_size": 64, "box_batch_size_per_image": 32, "trainable_layers": 3}
TINY_FAST = {"min_size": 64, "max_size": 64, "fpn_channels": 32, "representation_size": 64,
             "batch_size_per_image": 16, "trainable_layers": 3}


@pytest.fixture(scope="module")
def scenes_root(tmp_path_factory):
    from visionzoo.datasets.write_shapes_scenes import write_coco_scenes

    root = tmp_path_factory.mktemp("scenes")
    write_coco_scenes(root, image_size=64, counts={"train": 8, "val": 4, "test": 4}, seed=0, progress=False)
    return root


def write_config(path, root, model: str, kwargs: dict, extra: str = "", data: dict | None = None) -> str:
    data = {"root": str(root), "batch_size": 4, "eval_batch_size": 4, "num_workers": 0, **(data or {})}
    path.write_text(f"""
_base_: {ROOT / 'configs/detection/_base_.yaml'}
model: {{name: {model}, kwargs: {json.dumps(kwargs)}}}
data: {json.dumps(data)}
optim: {{lr: 0.01}}
train: {{epochs: 1, log_interval: 1}}
{extra}
""")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("model,kwargs,iou_types", [
    ("faster_rcnn_resnet18_fpn", TINY_MODEL, ["bbox"]),
    ("mask_rcnn_resnet18_fpn", TINY_MODEL, ["bbox", "segm"]),
])
def test_train_then_evaluate_with_report(tmp_path, scenes_root, model, kwargs, iou_types):
    cfg = write_config(tmp_path / "cfg.yaml", scenes_root, model, kwargs)
    run_dir = tmp_path / "run"
    proc = run_script("train.py", cfg, "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_jsonl(run_dir / "log.jsonl")
    train = [r for r in log if r["type"] == "train"]
    assert len(train) == 2 and all(np.isfinite(r["loss"]) for r in train)
    assert "loss_objectness" in train[0] and ("loss_mask" in train[0]) == ("segm" in iou_types)
    epoch = next(r for r in log if r["type"] == "epoch")
    assert "val_bbox_AP" in epoch

    proc = run_script("evaluate.py", run_dir, "--report", tmp_path / "report", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert result["split"] == "test" and result["num_samples"] == 4
    for t in iou_types:
        for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"):
            assert -1.0 <= result["scalars"][f"{t}_{name}"] <= 1.0
        assert set(result["metrics"]["per_class"][t]) == {"circle", "square", "triangle", "star", "hexagon"}
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Per-class AP" in html and "Example detections" in html and "Precision" in html
    assert "src=\"http" not in html  # self-contained


@pytest.mark.slow
def test_fast_rcnn_with_selective_search_trains_and_caches(tmp_path, scenes_root):
    cfg = write_config(tmp_path / "cfg.yaml", scenes_root, "fast_rcnn_resnet18_fpn", TINY_FAST,
                       data={"params": {"proposal_cache_dir": str(tmp_path / "cache"), "proposal_top_k_train": 50,
                                        "proposal_top_k_test": 20}})
    run_dir = tmp_path / "run"
    proc = run_script("train.py", cfg, "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cached = list((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == 8 + 4  # train + val images, once each
    train = [r for r in read_jsonl(run_dir / "log.jsonl") if r["type"] == "train"]
    assert set(train[0]) >= {"loss", "loss_classifier", "loss_box_reg"} and "loss_objectness" not in train[0]
    proc = run_script("evaluate.py", run_dir, "--split", "val", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 12  # evaluation reused the cache
    assert json.loads(proc.stdout.splitlines()[-1])["split"] == "val"


def test_fast_rcnn_with_a_proposals_file(tmp_path, scenes_root):
    """Proposals as data (detectron2's layout): the ground-truth boxes, slightly shifted, as proposals."""
    from visionzoo.datasets.coco import CocoDetection
    from visionzoo.proposals import write_proposals_file
    from visionzoo.tasks import task_for

    ds = CocoDetection(scenes_root / "images/train", scenes_root / "annotations/instances_train.json")
    ids, boxes, scores = [], [], []
    for i in range(len(ds)):
        b = ds.load_target(i)["boxes"].numpy() + 0.5
        ids.append(ds.ids[i])
        boxes.append(np.concatenate([b, [[0, 0, 32, 32]]]).astype(np.float32))
        scores.append(np.arange(len(b) + 1, 0, -1, dtype=np.float32))
    write_proposals_file(tmp_path / "props_train.npz", ids, boxes, scores)
    cfg = load_config(write_config(tmp_path / "cfg.yaml", scenes_root, "fast_rcnn_resnet18_fpn", TINY_FAST,
                                   data={"params": {"proposals": f"{tmp_path}/props_{{split}}.npz",
                                                    "proposal_top_k_train": 2}}))
    task = task_for(cfg)
    train = task.build_dataset("train", train=True)
    image, target = train[0]
    assert target["proposals"].shape[0] <= 2 and target["proposals"].shape[1] == 4
    model = task.build_model(train)
    batch = task.to_device(task.collate([train[0], train[1]]), torch.device("cpu"), False)
    losses = task.training_losses(model, batch, None)
    assert torch.isfinite(losses["loss"]) and set(losses) == {"loss", "loss_classifier", "loss_box_reg"}
    with pytest.raises(FileNotFoundError):
        task.build_dataset("val", train=False)  # no props_val.npz


def test_task_evaluation_matches_plain_pycocotools(scenes_root):
    """The same detections through the task's accumulator (what evaluate.py runs) and through plain
    pycocotools: all twelve box and mask numbers agree."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from visionzoo.tasks import task_for

    cfg = load_config(write_config(scenes_root / "eval_cfg.yaml", scenes_root, "mask_rcnn_resnet18_fpn", TINY_MODEL))
    task = task_for(cfg)
    ds = task.build_dataset("val", train=False)
    acc = task.new_accumulator(ds)
    rng = np.random.default_rng(0)
    results = []
    for i in range(len(ds)):
        _, target = ds[i]
        boxes = target["boxes"].as_subclass(torch.Tensor) + torch.as_tensor(rng.normal(0, 1.5, (len(target["boxes"]), 4)),
                                                                           dtype=torch.float32)
        labels = target["labels"].clone()
        if len(labels):
            labels[0] = labels[0] % 5 + 1  # one wrong class per image
        scores = torch.as_tensor(rng.uniform(0.3, 1.0, len(labels)), dtype=torch.float32)
        masks = target["masks"].float()[:, None]
        pred = {"boxes": boxes, "labels": labels, "scores": scores, "masks": masks}
        acc.update(None, [pred], [i])
        cat = {k: v for k, v in ds.label_to_cat_id.items()}
        for b, lab, s, m in zip(boxes.tolist(), labels.tolist(), scores.tolist(), target["masks"].numpy()):
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": ds.ids[i], "category_id": cat[lab], "score": s, "segmentation": rle,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    ours = acc.compute()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(scenes_root / "annotations/instances_val.json"))
        for iou_type in ("bbox", "segm"):
            dt = gt.loadRes([dict(r) for r in results]) if results else COCO()
            ev = COCOeval(gt, dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
            for name, value in zip(names, ev.stats):
                assert ours[f"{iou_type}_{name}"] == pytest.approx(value, abs=1e-9), (iou_type, name)


def test_voc_data_trains_and_reports_voc07(tmp_path):
    """A Pascal VOC folder (XML with a difficult object) through the task, with VOC07 AP50 enabled."""
    from visionzoo.tasks import task_for

    root = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    names = []
    for k in range(4):
        name = f"00000{k}"
        names.append(name)
        img = np.zeros((48, 64, 3), np.uint8)
        img[10:30, 12:40] = (200, 40, 40)
        Image.fromarray(img).save(root / "JPEGImages" / f"{name}.jpg")
        (root / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height><depth>3</depth>"
            "</size><object><name>car</name><difficult>0</difficult><bndbox><xmin>13</xmin><ymin>11</ymin>"
            "<xmax>40</xmax><ymax>30</ymax></bndbox></object><object><name>dog</name><difficult>1</difficult>"
            "<bndbox><xmin>40</xmin><ymin>30</ymin><xmax>60</xmax><ymax>45</ymax></bndbox></object></annotation>")
    (root / "ImageSets/Main/train.txt").write_text("\n".join(names))
    (root / "ImageSets/Main/val.txt").write_text("\n".join(names[:2]))
    cfg = tmp_path / "voc.yaml"
    write_config(cfg, tmp_path, "faster_rcnn_resnet18_fpn", TINY_MODEL, extra="eval: {voc07: true}\n",
                 data={"dataset": "voc", "params": {"year": 2007}, "test_split": None})
    c = load_config(cfg)
    task = task_for(c)
    assert task.split_exists("val") and not task.split_exists("test")
    train = task.build_dataset("train", train=True)
    assert len(train.classes) == 21
    val = task.build_dataset("val", train=False, class_names=train.classes)
    acc = task.new_accumulator(val)
    car = train.classes.index("car")
    for i in range(len(val)):
        acc.update(None, [{"boxes": torch.tensor([[13.0, 11, 40, 30]]), "labels": torch.tensor([car]),
                           "scores": torch.tensor([0.9])}], [i])
    metrics = acc.compute()
    assert metrics["voc07_mAP"] == pytest.approx(1.0)  # the difficult dog counts neither way
    assert metrics["bbox_AP50"] == pytest.approx(1.0)
    assert task.scalar_metrics(metrics)["voc07_mAP"] == pytest.approx(1.0)


def test_bad_detection_config_values_are_named(tmp_path, scenes_root):
    from visionzoo.tasks import task_for

    cfg = load_config(write_config(tmp_path / "a.yaml", scenes_root, "faster_rcnn_resnet18_fpn", TINY_MODEL,
                                   data={"params": {"ann_fle": "x.json"}}))
    with pytest.raises(ValueError, match="data.params.ann_fle.*did you mean 'ann_file'"):
        task_for(cfg).build_dataset("train", train=True)
    cfg = load_config(write_config(tmp_path / "b.yaml", scenes_root, "faster_rcnn_resnet18_fpn", TINY_MODEL,
                                   data={"dataset": "imagenet"}))
    with pytest.raises(ValueError, match="'imagenet' is not a detection dataset"):
        task_for(cfg).build_dataset("train", train=True)
    cfg = load_config(write_config(tmp_path / "c.yaml", scenes_root, "faster_rcnn_resnet18_fpn", TINY_MODEL,
                                   extra="loss: {weights: {loss_mask: 2.0}}"))
    task = task_for(cfg)
    train = task.build_dataset("train", train=True)
    model = task.build_model(train)
    batch = task.to_device(task.collate([train[0], train[1]]), torch.device("cpu"), False)
    with pytest.raises(ValueError, match="loss.weights names \\['loss_mask'\\]"):
        task.training_losses(model, batch, None)
    with pytest.raises(ValueError, match="trained on"):
        task.build_dataset("val", train=False, class_names=["__background__", "cat"])


def test_loss_weights_scale_the_total(tmp_path, scenes_root):
    from visionzoo.tasks import task_for

    cfg = load_config(write_config(tmp_path / "w.yaml", scenes_root, "faster_rcnn_resnet18_fpn", TINY_MODEL,
                                   extra="loss: {weights: {loss_classifier: 3.0, loss_objectness: 0.0}}"))
    task = task_for(cfg)
    train = task.build_dataset("train", train=False)
    torch.manual_seed(0)
    model = task.build_model(train)
    batch = task.to_device(task.collate([train[0], train[1]]), torch.device("cpu"), False)
    torch.manual_seed(1)
    losses = task.training_losses(model, batch, None)
    expected = 3 * losses["loss_classifier"] + losses["loss_box_reg"] + losses["loss_rpn_box_reg"]
    assert float(losses["loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_detector_predicts_in_original_coordinates_and_draws(tmp_path, scenes_root):
    """The notebook predictor on a detector whose weights file carries its card: paths, PIL images,
    arrays and tensors give the same detections; boxes are in the input image's pixels."""
    import matplotlib

    matplotlib.use("Agg")
    from safetensors.torch import save_file

    import visionzoo

    torch.manual_seed(0)
    model = visionzoo.create_model("faster_rcnn_resnet18_fpn", num_classes=6, **TINY_MODEL)
    with torch.no_grad():  # a predictor that always fires: background logit very low
        model.roi_heads.box_predictor.cls_score.bias[0] = -20.0
    path = tmp_path / "det.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    names = ["__background__", "circle", "square", "triangle", "star", "hexagon"]
    path.with_suffix(".json").write_text(json.dumps({
        "model": "faster_rcnn_resnet18_fpn", "num_classes": 6, "class_names": names,
        "config": {"model": {"kwargs": TINY_MODEL}}}))
    det = visionzoo.Detector("faster_rcnn_resnet18_fpn", weights=str(path), score_threshold=0.0)
    assert det.model.transform.min_size == (64,)  # architecture keywords came from the card
    image_file = next((scenes_root / "images/val").glob("*.png"))
    pil = Image.open(image_file).convert("RGB").resize((96, 80))
    by_path = det(str(image_file))
    assert by_path.image_size == (64, 64)
    results = det([pil, np.asarray(pil), torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)])
    assert len(results) == 3 and len(results[0]) > 0
    for r in results[1:]:
        np.testing.assert_allclose(r.boxes, results[0].boxes, atol=1e-4)
    r = results[0]
    assert r.image_size == (80, 96)
    assert (r.boxes[:, 0] >= 0).all() and (r.boxes[:, 2] <= 96).all() and (r.boxes[:, 3] <= 80).all()
    assert set(r.names) <= set(names[1:]) and r.masks is None
    drawn = det.draw(pil, r)
    assert drawn.size == (96, 80) and np.asarray(drawn).tolist() != np.asarray(pil).tolist()
    assert det.plot(pil, r).axes
    with pytest.raises(ValueError, match="Float images must hold values in \\[0, 1\\]"):
        det(torch.full((3, 8, 8), 2.0))
    with pytest.raises(TypeError, match="expected a path"):
        det(42)


def test_backbone_starts_from_the_shipped_classifier():
    import visionzoo
    from visionzoo.weights import WeightsError, read_state_dict

    model = visionzoo.create_model("mask_rcnn_resnet18_fpn", num_classes=6, backbone_weights="shapes",
                                   fpn_channels=32, representation_size=64)
    state = read_state_dict(ROOT / "weights/resnet18.shapes.safetensors")
    body = model.backbone.body
    assert torch.equal(body.layer3[1].conv2.weight, state["layer3.1.conv2.weight"].float())
    assert torch.equal(body.bn1.running_var, state["bn1.running_var"].float())
    assert model.backbone.fpn.inner_blocks[0][0].out_channels == 32
    with pytest.raises(WeightsError, match="not found"):
        visionzoo.create_model("faster_rcnn_resnet18_fpn", backbone_weights="no-such-tag")
    with pytest.raises(ValueError, match="anchor_sizes must be 5"):
        visionzoo.create_model("faster_rcnn_resnet18_fpn", anchor_sizes=[8, 16])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["faster_rcnn", "mask_rcnn", "fast_rcnn"])
def test_fine_tune_config_starts_from_its_weights_file(tmp_path, scenes_root, model):
    """configs/detection/*_finetune.yaml start from a published file (model.weights); pointed at the shipped
    file, one step at a negligible lr leaves the trained weights where the file put them."""
    from visionzoo.weights import REPO_WEIGHTS_DIR, read_state_dict

    shipped = REPO_WEIGHTS_DIR / f"{model}_resnet18_fpn.shapes.safetensors"
    run_dir = tmp_path / "run"
    proc = run_script("train.py", ROOT / f"configs/detection/{model}_r18_shapes_finetune.yaml",
                      f"model.weights={shipped}", f"data.root={scenes_root}", "data.num_workers=0",
                      "data.batch_size=4", "train.epochs=1", "train.max_steps_per_epoch=1",
                      "optim.lr=1.0e-12", f"data.params.proposal_cache_dir={tmp_path / 'cache'}",
                      "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)["model"]
    start = read_state_dict(shipped)
    for key in ("backbone.body.layer4.1.conv2.weight", "roi_heads.box_predictor.cls_score.weight"):
        torch.testing.assert_close(trained[key], start[key].float(), rtol=0, atol=1e-6)
