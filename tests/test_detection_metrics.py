"""Detection evaluation: CocoEvaluator against plain pycocotools, VOC07 AP on hand-computed cases, and
the detection report."""
import base64
import contextlib
import copy
import io
import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionzoo.inference.draw import draw_detections
from visionzoo.tasks.detection.metrics import COCO_METRIC_NAMES, CocoEvaluator, voc07_ap50
from visionzoo.tasks.detection.report import build_detection_report

# model label -> dataset category id (non-contiguous ids, label 0 = background is not used)
LABEL_TO_CAT = {1: 3, 2: 7, 3: 11}
CAT_NAMES = {3: "cat", 7: "dog", 11: "person"}
IMAGES = {1: (160, 200), 2: (200, 240), 3: (100, 100), 4: (240, 320), 5: (120, 160)}  # id -> (H, W)


# ---- ground truth ---------------------------------------------------------------------------------
def rect_mask(hw, x1, y1, x2, y2):
    m = np.zeros(hw, dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def ellipse_mask(hw, x1, y1, x2, y2):
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    return ((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1


def compressed_rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def uncompressed_rle(mask):
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def polygon(x1, y1, x2, y2):
    return [[x1, y1, x2, y1, x2, y2, x1, y2]]


# (image, category, kind, (x1, y1, x2, y2), encoding, iscrowd); areas: < 32^2 small, < 96^2 medium, else large
GT_OBJECTS = [
    (1, 3, "rect", (10, 10, 90, 110), "rle", 0),       # large 80x100
    (1, 7, "ellipse", (120, 20, 170, 70), "rle", 0),   # medium
    (1, 11, "rect", (30, 130, 50, 150), "poly", 0),    # small 20x20
    (1, 11, "rect", (150, 100, 190, 150), "rle", 1),   # crowd region
    (2, 7, "rect", (20, 20, 140, 160), "poly", 0),     # large
    (2, 3, "rect", (160, 30, 185, 50), "rle", 0),      # small 25x20
    (2, 11, "ellipse", (150, 90, 230, 190), "rle", 0),  # medium
    (2, 11, "rect", (5, 170, 25, 190), "rle", 0),      # small, missed by every detection
    (4, 3, "rect", (100, 60, 220, 200), "rle", 0),     # large
    (4, 3, "rect", (10, 10, 40, 40), "rle", 0),        # small 30x30
    (4, 7, "ellipse", (240, 120, 310, 230), "rle", 0),  # medium
    (4, 11, "rect", (250, 10, 300, 60), "poly", 0),    # medium 50x50
    (5, 11, "rect", (20, 20, 100, 100), "rle", 0),     # medium 80x80
    # image 3 has no annotations
]


def gt_mask(image_id, kind, box):
    hw = IMAGES[image_id]
    return rect_mask(hw, *box) if kind == "rect" else ellipse_mask(hw, *box)


def make_gt_dataset():
    images = [{"id": i, "height": h, "width": w, "file_name": f"{i}.jpg"} for i, (h, w) in IMAGES.items()]
    categories = [{"id": c, "name": n, "supercategory": "thing"} for c, n in CAT_NAMES.items()]
    annotations = []
    for ann_id, (image_id, cat, kind, box, encoding, crowd) in enumerate(GT_OBJECTS, start=1):
        m = gt_mask(image_id, kind, box)
        if crowd:
            seg = uncompressed_rle(m)
        elif encoding == "poly":
            seg = polygon(*box)
        else:
            seg = compressed_rle(m)
        x, y, w, h = (float(v) for v in mask_util.toBbox(compressed_rle(m)))
        annotations.append({"id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": seg,
                            "area": float(mask_util.area(compressed_rle(m))), "bbox": [x, y, w, h],
                            "iscrowd": crowd})
    return {"images": images, "annotations": annotations, "categories": categories}


def make_coco(dataset):
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# ---- detections ---------------------------------------------------------------------------------
def q(v):
    """Round to a multiple of 0.25 (exact in float32 and float64)."""
    return np.round(np.asarray(v, dtype=np.float64) * 4) / 4


def make_predictions(seed=0):
    """One prediction dict per image (XYXY float64 boxes, model labels, scores, (N, H, W) bool masks)."""
    rng = np.random.default_rng(seed)
    cat_to_label = {c: lab for lab, c in LABEL_TO_CAT.items()}
    per_image = {i: [] for i in IMAGES}
    for image_id, cat, kind, box, _, crowd in GT_OBJECTS:
        if crowd:  # a detection on the crowd region: ignored by COCOeval
            per_image[image_id].append((cat, np.asarray(box, float), 0.55, "rect"))
            continue
        if (image_id, box) == (2, (5, 170, 25, 190)):
            continue  # missed
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        jitter = rng.uniform(-0.25, 0.25, 4) * np.array([w, h, w, h]) * (0.2 if rng.random() < 0.6 else 1.0)
        per_image[image_id].append((cat, q(np.array(box, float) + jitter), float(q(rng.uniform(0.3, 1.0))), kind))
    # false positives: wrong class on a true object, background boxes, a duplicate
    per_image[1].append((7, q([12, 12, 88, 105]), 0.65, "rect"))
    per_image[2].append((3, q([60, 100, 110, 150]), 0.9, "rect"))
    per_image[2].append((7, q([22, 18, 141, 158]), 0.4, "rect"))  # duplicate of the dog
    per_image[3].append((11, q([10, 10, 60, 70]), 0.8, "ellipse"))  # image without ground truth
    per_image[4].append((11, q([255.5, 12.25, 299.75, 58.5]), 0.55, "rect"))  # tie in score with another
    per_image[4].append((3, q([0, 150, 6, 158]), 0.2, "rect"))  # tiny false positive
    predictions = {}
    for image_id, dets in per_image.items():
        hw = IMAGES[image_id]
        boxes = np.array([d[1] for d in dets], dtype=np.float64).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, hw[1])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, hw[0])
        masks = np.zeros((len(dets), *hw), dtype=bool)
        for k, (_, b, _, kind) in enumerate(dets):
            ib = [int(round(v)) for v in b]
            masks[k] = rect_mask(hw, *ib) if kind == "rect" else ellipse_mask(hw, *ib)
        predictions[image_id] = {
            "boxes": boxes,
            "scores": np.array([d[2] for d in dets], dtype=np.float64),
            "labels": np.array([cat_to_label[d[0]] for d in dets], dtype=np.int64),
            "masks": masks,
        }
    return predictions


def to_coco_results(predictions, iou_type):
    """The reference conversion, written independently of the evaluator."""
    results = []
    for image_id, p in predictions.items():
        for box, score, label, mask in zip(p["boxes"], p["scores"], p["labels"], p["masks"]):
            r = {"image_id": image_id, "category_id": LABEL_TO_CAT[int(label)], "score": float(score)}
            if iou_type == "bbox":
                x1, y1, x2, y2 = (float(v) for v in box)
                r["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:
                rle = mask_util.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]
                rle["counts"] = rle["counts"].decode("ascii")
                r["segmentation"] = rle
            results.append(r)
    return results


def reference_cocoeval(dataset, results, iou_type, img_ids=None):
    gt = make_coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(results))
        E = COCOeval(gt, dt, iouType=iou_type)
        if img_ids is not None:
            E.params.imgIds = img_ids
        E.evaluate()
        E.accumulate()
        E.summarize()
    return E


def as_torch(p, float_masks=False):
    out = {"boxes": torch.tensor(p["boxes"], dtype=torch.float32), "scores": torch.tensor(p["scores"]),
           "labels": torch.tensor(p["labels"])}
    m = torch.from_numpy(p["masks"])
    if float_masks:  # (N, 1, H, W) probabilities: 0.8 inside, 0.2 outside, exactly 0.5 counts as outside
        probs = torch.where(m, 0.8, 0.2)[:, None]
        if probs.shape[0]:
            probs[0, 0, 0, :] = torch.where(m[0, 0, :], 0.8, 0.5)
        out["masks"] = probs
    else:
        out["masks"] = m
    return out


@pytest.fixture(scope="module")
def dataset():
    return make_gt_dataset()


@pytest.fixture(scope="module")
def predictions():
    return make_predictions()


def run_evaluator(dataset, predictions, iou_types=("bbox", "segm"), batch=2, torch_inputs=True):
    ev = CocoEvaluator(make_coco(dataset), iou_types=iou_types, label_to_cat_id=LABEL_TO_CAT)
    ids = list(predictions)
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        preds = [as_torch(predictions[i], float_masks=(i % 2 == 0)) if torch_inputs else predictions[i]
                 for i in chunk]
        ev.update(preds, chunk)
    return ev


# ---- COCO: agreement with pycocotools ---------------------------------------------------------------
@pytest.mark.parametrize("torch_inputs", [True, False])
def test_matches_plain_pycocotools_bbox_and_segm(dataset, predictions, torch_inputs):
    ev = run_evaluator(dataset, predictions, torch_inputs=torch_inputs)
    metrics = ev.compute()
    assert metrics["iou_types"] == ["bbox", "segm"]
    assert metrics["num_images"] == len(IMAGES)
    assert metrics["num_detections"] == sum(len(p["scores"]) for p in predictions.values())
    for iou_type in ("bbox", "segm"):
        ref = reference_cocoeval(dataset, to_coco_results(predictions, iou_type), iou_type)
        ours = [metrics[f"{iou_type}_{name}"] for name in COCO_METRIC_NAMES]
        assert ours == [float(v) for v in ref.stats], iou_type
        # the fixture exercises every area range and a non-trivial result
        assert all(v > -1 for v in ref.stats), (iou_type, ref.stats)
        assert 0.1 < ref.stats[0] < 0.95, (iou_type, ref.stats)
        assert "Average Precision" in metrics["coco_summary"][iou_type]
    assert metrics["bbox_AP"] != metrics["segm_AP"]


def test_compute_is_quiet_and_repeatable(dataset, predictions, capsys):
    ev = run_evaluator(dataset, predictions)
    first = ev.compute()
    second = ev.compute()
    out = capsys.readouterr().out
    assert out == ""
    for name in COCO_METRIC_NAMES:
        assert first[f"bbox_{name}"] == second[f"bbox_{name}"]
        assert first[f"segm_{name}"] == second[f"segm_{name}"]


def test_ground_truth_is_not_modified(dataset, predictions):
    coco = make_coco(dataset)
    before = json.dumps(coco.dataset, sort_keys=True)
    ev = CocoEvaluator(coco, iou_types=("bbox", "segm"), label_to_cat_id=LABEL_TO_CAT)
    ev.update([predictions[i] for i in IMAGES], list(IMAGES))
    ev.compute()
    assert json.dumps(coco.dataset, sort_keys=True) == before


def test_ground_truth_from_json_path(tmp_path, dataset, predictions):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(dataset))
    ev = CocoEvaluator(str(path), iou_types=("bbox",), label_to_cat_id=LABEL_TO_CAT)
    ev.update([predictions[i] for i in IMAGES], list(IMAGES))
    ref = reference_cocoeval(dataset, to_coco_results(predictions, "bbox"), "bbox")
    assert [ev.compute()[f"bbox_{n}"] for n in COCO_METRIC_NAMES] == [float(v) for v in ref.stats]


def test_only_seen_images_are_evaluated(dataset, predictions):
    seen = [1, 2, 3]
    ev = CocoEvaluator(dataset, iou_types=("bbox",), label_to_cat_id=LABEL_TO_CAT)
    ev.update([predictions[i] for i in seen], seen)
    results = to_coco_results({i: predictions[i] for i in seen}, "bbox")
    ref = reference_cocoeval(dataset, results, "bbox", img_ids=seen)
    metrics = ev.compute()
    assert metrics["num_images"] == 3
    assert [metrics[f"bbox_{n}"] for n in COCO_METRIC_NAMES] == [float(v) for v in ref.stats]


def test_no_detections_gives_zeros(dataset):
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 1, 10, 10)}
    ev = CocoEvaluator(dataset, iou_types=("bbox", "segm"), label_to_cat_id=LABEL_TO_CAT)
    ev.update([empty] * len(IMAGES), list(IMAGES))
    for metrics in (ev.compute(), CocoEvaluator(dataset, ("bbox", "segm"), LABEL_TO_CAT).compute()):
        assert metrics["num_detections"] == 0
        assert metrics["num_images"] == len(IMAGES)
        for t in ("bbox", "segm"):
            assert [metrics[f"{t}_{n}"] for n in COCO_METRIC_NAMES] == [0.0] * 12
            for entry in metrics["per_class"][t].values():
                assert entry["AP"] == 0.0 and entry["AP50"] == 0.0 and entry["num_detections"] == 0
            assert all(c == [0.0] * 101 for c in metrics["pr_curves"][t]["precision"].values())
        assert not ev.results()


def test_label_mapping_back_to_category_ids(dataset):
    ev = CocoEvaluator(dataset, label_to_cat_id=LABEL_TO_CAT)
    ev.update([{"boxes": [[0, 0, 10, 20], [5, 5, 7.5, 9]], "scores": [0.9, 0.1], "labels": [1, 3]}], [1])
    assert ev.results() == [
        {"image_id": 1, "category_id": 3, "bbox": [0.0, 0.0, 10.0, 20.0], "score": 0.9},
        {"image_id": 1, "category_id": 11, "bbox": [5.0, 5.0, 2.5, 4.0], "score": 0.1},
    ]
    with pytest.raises(ValueError, match="labels \\[0\\]"):
        ev.update([{"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [0]}], [1])
    with pytest.raises(ValueError, match="not in the ground truth"):
        ev.update([{"boxes": [[0, 0, 1, 1]], "scores": [0.5], "labels": [1]}], [99])
    with pytest.raises(ValueError, match="category ids"):
        CocoEvaluator(dataset, label_to_cat_id={1: 4})
    with pytest.raises(ValueError, match="iou_types"):
        CocoEvaluator(dataset, iou_types=("keypoints",))
    # without a mapping, labels are category ids
    ev = CocoEvaluator(dataset)
    ev.update([{"boxes": [[0, 0, 10, 20]], "scores": [0.9], "labels": [7]}], [2])
    assert ev.results()[0]["category_id"] == 7


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pycocotools decode on numpy 2
def test_masks_are_thresholded_and_encoded(dataset):
    hw = IMAGES[1]
    probs = np.full((1, 1, *hw), 0.2, dtype=np.float32)
    probs[0, 0, 10:20, 30:50] = 0.7
    probs[0, 0, 20, 30:50] = 0.5  # not above the threshold
    ev = CocoEvaluator(dataset, ("bbox", "segm"), LABEL_TO_CAT)
    ev.update([{"boxes": [[30, 10, 50, 20]], "scores": [0.9], "labels": [2], "masks": torch.from_numpy(probs)}], [1])
    (r,) = ev.results()
    json.dumps(r)
    decoded = mask_util.decode({"size": r["segmentation"]["size"], "counts": r["segmentation"]["counts"].encode()})
    assert decoded.shape == hw and decoded.sum() == 200 and decoded[10:20, 30:50].all()
    with pytest.raises(ValueError, match="original image"):
        ev.update([{"boxes": [[0, 0, 1, 1]], "scores": [0.9], "labels": [2], "masks": np.ones((1, 5, 5), bool)}], [1])
    with pytest.raises(ValueError, match="masks"):
        ev.update([{"boxes": [[0, 0, 1, 1]], "scores": [0.9], "labels": [2]}], [1])


def test_per_class_ap_matches_cocoeval_precision_array(dataset, predictions):
    metrics = run_evaluator(dataset, predictions).compute()
    for iou_type in ("bbox", "segm"):
        ref = reference_cocoeval(dataset, to_coco_results(predictions, iou_type), iou_type)
        precision = ref.eval["precision"]
        assert ref.params.catIds == sorted(CAT_NAMES)
        per_class = metrics["per_class"][iou_type]
        assert set(per_class) == set(CAT_NAMES.values())
        for k, cat in enumerate(ref.params.catIds):
            entry = per_class[CAT_NAMES[cat]]
            assert entry["category_id"] == cat
            p = precision[:, :, k, 0, 2]
            assert entry["AP"] == pytest.approx(float(np.mean(p[p > -1])), abs=1e-12)
            assert entry["AP50"] == pytest.approx(float(np.mean(precision[0, :, k, 0, 2])), abs=1e-12)
            curve = metrics["pr_curves"][iou_type]["precision"][CAT_NAMES[cat]]
            assert curve == [float(v) for v in precision[0, :, k, 0, 2]]
        # every class has ground truth, so the mean of the per-class APs is the overall AP
        assert np.mean([e["AP"] for e in per_class.values()]) == pytest.approx(metrics[f"{iou_type}_AP"], abs=1e-12)
        assert metrics["pr_curves"][iou_type]["recall"] == [float(v) for v in np.linspace(0, 1, 101)]
        assert metrics["pr_curves"][iou_type]["iou_threshold"] == 0.5
    per_class = metrics["per_class"]["bbox"]
    assert per_class["person"]["num_gt"] == 5  # the crowd region does not count
    assert per_class["cat"]["num_detections"] == 6


def test_category_without_ground_truth_is_none(dataset, predictions):
    data = copy.deepcopy(dataset)
    data["categories"].append({"id": 20, "name": "horse"})
    ev = CocoEvaluator(data, ("bbox",), {**LABEL_TO_CAT, 4: 20})
    ev.update([predictions[i] for i in IMAGES], list(IMAGES))
    ev.update([{"boxes": [[0, 0, 30, 30]], "scores": [0.99], "labels": [4]}], [3])
    metrics = ev.compute()
    horse = metrics["per_class"]["bbox"]["horse"]
    assert horse["AP"] is None and horse["AP50"] is None and horse["num_gt"] == 0 and horse["num_detections"] == 1
    assert metrics["pr_curves"]["bbox"]["precision"]["horse"] is None
    json.dumps(metrics)


def test_gather_with_results_and_extend(dataset, predictions):
    whole = run_evaluator(dataset, predictions, iou_types=("bbox", "segm")).compute()
    rank0 = CocoEvaluator(dataset, ("bbox", "segm"), LABEL_TO_CAT)
    rank1 = CocoEvaluator(dataset, ("bbox", "segm"), LABEL_TO_CAT)
    rank0.update([predictions[i] for i in (1, 2, 3)], [1, 2, 3])
    rank1.update([predictions[i] for i in (4, 5, 1)], [4, 5, 1])  # image 1 repeated (sampler padding)
    payload = json.loads(json.dumps({"results": rank1.results(), "image_ids": rank1.image_ids}))
    rank0.extend(payload["results"], payload["image_ids"])
    merged = rank0.compute()
    assert sorted(rank0.image_ids) == sorted(IMAGES)
    for t in ("bbox", "segm"):
        assert [merged[f"{t}_{n}"] for n in COCO_METRIC_NAMES] == [whole[f"{t}_{n}"] for n in COCO_METRIC_NAMES]


# ---- Pascal VOC 2007 --------------------------------------------------------------------------------
def test_voc07_difficult_is_ignored():
    targets = [
        {"boxes": [[0, 0, 10, 10]], "labels": [0]},
        {"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [0, 0], "difficult": [False, True]},
    ]
    predictions = [
        {"boxes": [[0, 0, 10, 10]], "scores": [0.9], "labels": [0]},                   # TP
        {"boxes": [[20, 20, 30, 30], [50, 50, 60, 60], [1, 0, 10, 10]],                 # difficult, FP, TP
         "scores": [0.8, 0.7, 0.6], "labels": [0, 0, 0]},
    ]
    # ranked: TP, (ignored), FP, TP -> recall .5 .5 1, precision 1 .5 2/3
    # 11-point: t = 0 .. .5 -> 1 (6 points), t = .6 .. 1 -> 2/3 (5 points)
    out = voc07_ap50(predictions, targets, class_names=["thing"])
    assert out["per_class"]["thing"] == pytest.approx((6 + 5 * 2 / 3) / 11)
    assert out["mAP"] == pytest.approx(28 / 33)
    assert out["num_gt"] == {"thing": 2}
    # counted as a false positive instead, the AP would be lower
    no_difficult = [targets[0], {"boxes": targets[1]["boxes"][:1], "labels": [0]}]
    assert voc07_ap50(predictions, no_difficult)["per_class"][0] == pytest.approx((6 + 5 * 0.5) / 11)


def test_voc07_duplicates_misses_and_undefined_classes():
    targets = [
        {"boxes": [[0, 0, 10, 10], [40, 40, 60, 60], [70, 0, 90, 20]], "labels": [0, 1, 1]},
        {"boxes": [[0, 0, 50, 50]], "labels": [2], "difficult": [True]},
    ]
    predictions = [
        {"boxes": [[0, 0, 10, 10], [0, 0, 10, 10], [41, 40, 60, 61], [0, 0, 20, 20]],
         "scores": [0.9, 0.8, 0.7, 0.95], "labels": [0, 0, 1, 3]},
        {"boxes": [[0, 0, 50, 50]], "scores": [0.5], "labels": [2]},
    ]
    out = voc07_ap50(predictions, targets, class_names=["a", "b", "c", "d"])
    assert out["per_class"]["a"] == pytest.approx(1.0)  # TP then a duplicate (FP) at full recall
    assert out["per_class"]["b"] == pytest.approx(6 / 11)  # one of two found, at precision 1
    assert out["per_class"]["c"] is None  # only a difficult object
    assert out["per_class"]["d"] is None  # no ground truth at all
    assert out["mAP"] == pytest.approx((1 + 6 / 11) / 2)
    # the area method (VOC2010+): a = 1, b = 0.5
    assert voc07_ap50(predictions, targets, eleven_point=False)["mAP"] == pytest.approx(0.75)


def test_voc07_recall_threshold_boundary_and_ranking():
    # 10 objects, 3 found by the best-scored detections then 2 false positives: recall reaches exactly .3
    targets = [{"boxes": [[10 * i, 0, 10 * i + 5, 5] for i in range(10)], "labels": [0] * 10}]
    boxes = [[0, 0, 5, 5], [10, 0, 15, 5], [20, 0, 25, 5], [200, 200, 210, 210], [300, 300, 310, 310]]
    predictions = [{"boxes": boxes, "scores": [0.9, 0.8, 0.7, 0.95, 0.6], "labels": [0] * 5}]
    # ranked: FP (0.95), TP, TP, TP, FP -> precision at recall .1/.2/.3 = 1/2, 2/3, 3/4
    out = voc07_ap50(predictions, targets)
    assert out["per_class"][0] == pytest.approx(4 * 0.75 / 11)  # t = 0, .1, .2, .3 -> 3/4


def test_voc07_iou_threshold_and_pixel_convention():
    targets = [{"boxes": [[0, 0, 3, 3]], "labels": [0]}]
    exactly_half = [{"boxes": [[1, 0, 4, 3]], "scores": [1.0], "labels": [0]}]  # IoU 6/12
    assert voc07_ap50(exactly_half, targets)["mAP"] == pytest.approx(1.0)  # IoU >= 0.5 is a hit
    targets = [{"boxes": [[0, 0, 2, 2]], "labels": [0]}]
    preds = [{"boxes": [[1, 0, 3, 2]], "scores": [1.0], "labels": [0]}]
    assert voc07_ap50(preds, targets)["mAP"] == 0.0  # continuous: IoU 1/3
    assert voc07_ap50(preds, targets, pixel_inclusive=True)["mAP"] == pytest.approx(1.0)  # 6/12 with +1
    assert voc07_ap50([{"boxes": np.zeros((0, 4))}], [{"boxes": np.zeros((0, 4))}]) == {
        "mAP": 0.0, "per_class": {}, "num_gt": {}}


# ---- report -------------------------------------------------------------------------------------
def img_srcs(html):
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)


def test_draw_detections():
    image = Image.new("RGB", (120, 80), (40, 40, 40))
    mask = np.zeros((1, 80, 120), dtype=bool)
    mask[0, 10:30, 10:50] = True
    out = draw_detections(image, torch.tensor([[10.0, 10.0, 50.0, 30.0]]), ["cat"], scores=[0.87], masks=mask)
    assert out.size == image.size and out.mode == "RGB"
    arr = np.asarray(out)
    assert (arr[20, 30] != 40).any()  # mask overlay
    assert (arr[70, 100] == 40).all()  # untouched background
    same = draw_detections(image, np.zeros((0, 4)), [])
    assert np.array_equal(np.asarray(same), np.asarray(image))
    with pytest.raises(ValueError):
        draw_detections(image, [[0, 0, 1, 1]], ["a", "b"])


def test_detection_report_is_self_contained(tmp_path, dataset, predictions):
    metrics = run_evaluator(dataset, predictions).compute()
    names = {lab: CAT_NAMES[c] for lab, c in LABEL_TO_CAT.items()}
    examples = []
    ann_by_image = {}
    for ann in dataset["annotations"]:
        ann_by_image.setdefault(ann["image_id"], []).append(ann)
    for image_id in (1, 2, 3):
        h, w = IMAGES[image_id]
        image = Image.fromarray(np.random.default_rng(image_id).integers(0, 255, (h, w, 3), dtype=np.uint8))
        anns = ann_by_image.get(image_id, [])
        gt = {"image_id": image_id, "boxes": [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                               a["bbox"][1] + a["bbox"][3]] for a in anns],
              "labels": [CAT_NAMES[a["category_id"]] for a in anns]}
        p = predictions[image_id]
        pred = {"boxes": p["boxes"], "scores": p["scores"], "labels": [names[int(v)] for v in p["labels"]],
                "masks": torch.from_numpy(p["masks"]).float()[:, None]}
        examples.append((image, gt, pred))
    log = [{"type": "train", "epoch": 1, "step": s, "loss": 1.0 / s, "loss_box": 0.5 / s, "lr": 0.01}
           for s in range(1, 6)] + [{"type": "val", "epoch": 1, "bbox_AP": 0.2}, {"type": "val", "epoch": 2, "bbox_AP": 0.3}]
    out = build_detection_report(tmp_path / "r" / "report.html", title="fasterrcnn <toy>", metrics=metrics,
                                 class_names=list(names.values()), examples=examples, log_records=log,
                                 model_summary={"parameters": 41_000_000, "input_size": [800, 1333]},
                                 run_info={"command": ["train.py", "-c", "x.yaml"], "config": {"a": 1}})
    html = out.read_text()
    assert "fasterrcnn &lt;toy&gt;" in html and "<toy>" not in html
    for section in ("Summary", "Training curves", "Per-class AP", "Precision", "Example detections",
                    "Run information"):
        assert section in html
    assert "<script" not in html.lower() and "url(" not in html and "<link" not in html.lower()
    for href in re.findall(r'href="([^"]*)"', html):
        assert href.startswith("#")
    srcs = img_srcs(html)
    # training curves, 2 AP bar charts, PR curves, 3 examples
    assert len(srcs) == 7
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.size[0] > 10 and image.size[1] > 10
    assert f"{metrics['bbox_AP']:.4g}" in html


def test_detection_report_with_minimal_inputs(tmp_path, dataset):
    metrics = CocoEvaluator(dataset, ("bbox",), LABEL_TO_CAT).compute()  # no detections
    metrics["bbox_APs"] = -1.0  # undefined numbers render as a dash
    out = build_detection_report(tmp_path / "report.html", title="empty", metrics=metrics,
                                 class_names=["cat", "dog", "person"], examples=[], log_records=None,
                                 model_summary=None, run_info=None)
    html = out.read_text()
    assert "No training log" in html and "No example images" in html and "No run information" in html
    assert ">-1<" not in html
