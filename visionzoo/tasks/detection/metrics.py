"""Detection metrics: COCO-style evaluation through pycocotools (box and mask AP / AR, per-class AP,
precision-recall curves) and Pascal VOC 2007 11-point AP@0.5.

Nothing here needs torchvision: predictions may be torch tensors, numpy arrays or nested lists.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

__all__ = ["COCO_METRIC_NAMES", "IOU_TYPES", "CocoEvaluator", "voc07_ap50"]

IOU_TYPES = ("bbox", "segm")
# the order of COCOeval.stats (iouType "bbox" / "segm")
COCO_METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# ---- array helpers --------------------------------------------------------------------------------
def _as_numpy(x: Any, dtype=None) -> np.ndarray:
    """numpy array from a torch tensor (any device / dtype), numpy array or (nested) sequence."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        if x.is_floating_point() and dtype is not None and np.dtype(dtype).kind == "f":
            x = x.double()  # float16 / bfloat16 have no (exact) numpy counterpart
        x = x.numpy()
    return np.asarray(x, dtype=dtype)


def _binary_masks(masks: Any, threshold: float) -> np.ndarray:
    """(N, H, W) bool from (N, 1, H, W) / (N, H, W) probabilities, 0/1 values or bools."""
    if hasattr(masks, "detach"):
        masks = masks.detach()
        masks = masks if str(masks.dtype) == "torch.bool" else masks > threshold  # on the tensor's device
        masks = masks.cpu().numpy()
    masks = np.asarray(masks)
    if masks.ndim == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"masks of shape (N, C, H, W) must have C == 1, got shape {masks.shape}")
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape (N, 1, H, W) or (N, H, W), got shape {masks.shape}")
    return masks if masks.dtype == np.bool_ else masks > threshold


def _encode_masks(masks: np.ndarray) -> list[dict]:
    """Compressed RLEs (counts as str, so they are JSON-serialisable) of (N, H, W) bool masks."""
    if masks.shape[0] == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    out = []
    for rle in rles:
        counts = rle["counts"]
        out.append({"size": [int(s) for s in rle["size"]],
                    "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts})
    return out


@contextlib.contextmanager
def _quiet():
    """Capture pycocotools' prints; yields the buffer."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf


def _load_gt(coco_gt: COCO | str | Path | Mapping) -> COCO:
    """A private COCO ground truth: COCOeval writes into the annotations (polygons become RLEs,
    `ignore` flags), so a caller's object or dict is copied first."""
    if isinstance(coco_gt, (str, Path)):
        with open(coco_gt, encoding="utf-8") as f:
            dataset = json.load(f)
    elif isinstance(coco_gt, COCO):
        dataset = copy.deepcopy(coco_gt.dataset)
    elif isinstance(coco_gt, Mapping):
        dataset = copy.deepcopy(dict(coco_gt))
    else:
        raise TypeError(f"coco_gt must be a pycocotools COCO, a path to a COCO JSON file or a COCO dataset dict, "
                        f"got {type(coco_gt).__name__}")
    for key in ("images", "annotations", "categories"):
        dataset.setdefault(key, [])
    gt = COCO()
    gt.dataset = dataset
    with _quiet():
        gt.createIndex()
    return gt


def _empty_results(gt: COCO) -> COCO:
    """A detection COCO object with no annotations (``COCO.loadRes([])`` raises)."""
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                  "annotations": []}
    with _quiet():
        dt.createIndex()
    return dt


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ---- COCO evaluation ------------------------------------------------------------------------------
class CocoEvaluator:
    """COCO box / mask evaluation with pycocotools.

    Build it from the ground truth (a ``COCO`` object, a path to a COCO JSON file or a COCO dataset
    dict; it is copied, never modified), the IoU types to evaluate (``("bbox",)`` or
    ``("bbox", "segm")``) and ``label_to_cat_id``, the map from the model's contiguous labels to the
    dataset's category ids (None: labels are category ids).

    :meth:`update` takes one prediction dict per image, in ORIGINAL image coordinates:
    ``boxes`` (N, 4) XYXY, ``scores`` (N,), ``labels`` (N,) and, for "segm", ``masks`` ((N, 1, H, W)
    probabilities, thresholded at ``mask_threshold``, or (N, H, W) bools). Every evaluated image must be
    passed, also those without detections: the evaluation runs on exactly the images seen (all images
    of the ground truth when none were), like the torchvision reference evaluator. An image passed
    again replaces its earlier predictions (distributed samplers pad with repeated samples).

    For distributed evaluation gather ``results()`` and ``image_ids`` of every rank and give them to
    one evaluator's :meth:`extend` before :meth:`compute`.
    """

    def __init__(self, coco_gt: COCO | str | Path | Mapping, iou_types: Sequence[str] = ("bbox",),
                 label_to_cat_id: Mapping[int, int] | None = None, mask_threshold: float = 0.5):
        if isinstance(iou_types, str):
            iou_types = (iou_types,)
        iou_types = tuple(iou_types)
        bad = [t for t in iou_types if t not in IOU_TYPES]
        if bad or not iou_types or len(set(iou_types)) != len(iou_types):
            raise ValueError(f"iou_types must be distinct values out of {IOU_TYPES}, got {list(iou_types)}")
        self.iou_types = iou_types
        self.coco_gt = _load_gt(coco_gt)
        self.mask_threshold = float(mask_threshold)
        cat_ids = set(self.coco_gt.getCatIds())
        if label_to_cat_id is None:
            self.label_to_cat_id = {int(c): int(c) for c in cat_ids}
        else:
            self.label_to_cat_id = {int(k): int(v) for k, v in label_to_cat_id.items()}
            unknown = sorted(set(self.label_to_cat_id.values()) - cat_ids)
            if unknown:
                raise ValueError(f"label_to_cat_id maps to category ids that the ground truth does not have: "
                                 f"{unknown} (ground-truth ids: {sorted(cat_ids)})")
        if "segm" in iou_types:
            missing = [a.get("id") for a in self.coco_gt.dataset["annotations"] if not a.get("segmentation")]
            if missing:
                raise ValueError(f"iou type 'segm' needs a segmentation for every ground-truth annotation; "
                                 f"{len(missing)} have none (e.g. annotation ids {missing[:5]})")
        self._images = {int(img["id"]): img for img in self.coco_gt.dataset["images"]}
        self.reset()

    def reset(self) -> None:
        # image id -> its results (COCO result dicts carrying "bbox" and, for segm, "segmentation")
        self._by_image: dict[int, list[dict]] = {}

    # ---- accumulation -----------------------------------------------------------------------------
    def update(self, predictions: Sequence[Mapping], image_ids: Iterable[int]) -> None:
        image_ids = [int(i) for i in (image_ids.tolist() if hasattr(image_ids, "tolist") else image_ids)]
        if len(image_ids) != len(predictions):
            raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
        converted = [(image_id, self._convert(image_id, pred)) for image_id, pred in zip(image_ids, predictions)]
        for image_id, results in converted:  # only after every prediction was valid
            self._by_image[image_id] = results

    def _convert(self, image_id: int, pred: Mapping) -> list[dict]:
        if image_id not in self._images:
            raise ValueError(f"image id {image_id} is not in the ground truth")
        boxes = _as_numpy(pred.get("boxes", np.zeros((0, 4))), np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"image {image_id}: boxes must have shape (N, 4), got {boxes.shape}")
        n = boxes.shape[0]
        scores = _as_numpy(pred.get("scores", np.zeros(0)), np.float64).reshape(-1)
        labels = _as_numpy(pred.get("labels", np.zeros(0)), np.int64).reshape(-1)
        if scores.shape[0] != n or labels.shape[0] != n:
            raise ValueError(f"image {image_id}: {n} boxes, {scores.shape[0]} scores, {labels.shape[0]} labels")
        if n and not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
            raise ValueError(f"image {image_id}: boxes or scores are not finite")
        unknown = sorted({int(v) for v in labels} - set(self.label_to_cat_id))
        if unknown:
            raise ValueError(f"image {image_id}: labels {unknown} have no category id in label_to_cat_id")
        rles: list[dict] | None = None
        if "segm" in self.iou_types:
            if pred.get("masks") is None:
                if n:
                    raise ValueError(f"image {image_id}: iou type 'segm' needs 'masks' in the predictions")
                rles = []
            else:
                masks = _binary_masks(pred["masks"], self.mask_threshold)
                if masks.shape[0] != n:
                    raise ValueError(f"image {image_id}: {masks.shape[0]} masks for {n} boxes")
                info = self._images[image_id]
                if "height" in info and "width" in info and n:
                    expected = (int(info["height"]), int(info["width"]))
                    if tuple(masks.shape[1:]) != expected:
                        raise ValueError(f"image {image_id}: masks are {tuple(masks.shape[1:])} (H, W) but the "
                                         f"image is {expected}; masks must be in original image coordinates")
                rles = _encode_masks(masks)
        results = []
        for i in range(n):
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            r = {"image_id": image_id, "category_id": self.label_to_cat_id[int(labels[i])],
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[i])}
            if rles is not None:
                r["segmentation"] = rles[i]
            results.append(r)
        return results

    # ---- gathering --------------------------------------------------------------------------------
    @property
    def image_ids(self) -> list[int]:
        """The evaluated images, in the order they were first seen."""
        return list(self._by_image)

    def results(self) -> list[dict]:
        """The accumulated detections as COCO result dicts (``image_id``, ``category_id``, ``bbox`` XYWH,
        ``score`` and, with "segm", ``segmentation`` as compressed RLE with str counts); JSON-serialisable."""
        return [r for rs in self._by_image.values() for r in rs]

    def extend(self, results: Iterable[Mapping], image_ids: Iterable[int] = ()) -> None:
        """Add another rank's :meth:`results`; `image_ids` (that rank's :attr:`image_ids`) also adds its
        images without detections. Images already present are replaced by the incoming ones."""
        incoming: dict[int, list[dict]] = {int(i): [] for i in image_ids}
        for r in results:
            incoming.setdefault(int(r["image_id"]), []).append(dict(r))
        unknown = sorted(set(incoming) - set(self._images))
        if unknown:
            raise ValueError(f"image ids not in the ground truth: {unknown[:10]}")
        self._by_image.update(incoming)

    # ---- evaluation -------------------------------------------------------------------------------
    def _category_names(self) -> dict[int, str]:
        cats = sorted(self.coco_gt.dataset["categories"], key=lambda c: c["id"])
        names = [str(c.get("name", c["id"])) for c in cats]
        return {int(c["id"]): (n if names.count(n) == 1 else f"{n} ({c['id']})") for c, n in zip(cats, names)}

    def run_cocoeval(self, iou_type: str) -> tuple[COCOeval, str]:
        """evaluate / accumulate / summarize for one iou type; returns the COCOeval and its printout."""
        if iou_type not in self.iou_types:
            raise ValueError(f"iou type {iou_type!r} was not requested (iou_types = {self.iou_types})")
        drop = "segmentation" if iou_type == "bbox" else "bbox"  # segm: area & box come from the mask
        results = [{k: copy.deepcopy(v) for k, v in r.items() if k != drop} for r in self.results()]
        img_ids = sorted(self._by_image) or sorted(self.coco_gt.getImgIds())
        with _quiet() as buf:
            coco_dt = self.coco_gt.loadRes(results) if results else _empty_results(self.coco_gt)
            coco_eval = COCOeval(self.coco_gt, coco_dt, iouType=iou_type)
            coco_eval.params.imgIds = img_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        return coco_eval, buf.getvalue()

    def compute(self) -> dict[str, Any]:
        """Evaluate every iou type. Returns

        - ``{type}_{name}`` for the 12 COCO numbers (``bbox_AP`` ... ``segm_ARl``), exactly
          ``COCOeval.stats``: fractions in [0, 1], -1 where undefined (no ground truth in that area range);
        - ``num_images``, ``num_detections``, ``iou_types``;
        - ``per_class[type][name]``: ``category_id``, ``AP`` (AP@[.5:.95]), ``AP50``, ``AR100``, ``num_gt``
          (non-crowd) and ``num_detections``; AP values are None for a category without ground truth;
        - ``pr_curves[type]``: ``iou_threshold`` (0.5), ``recall`` (101 points 0..1) and
          ``precision[name]`` (101 values, or None without ground truth), area "all", 100 detections;
        - ``coco_summary[type]``: COCOeval's printed summary.

        Without any detection the numbers are 0 (or -1 where undefined), not an error.
        """
        names = self._category_names()
        results = self.results()
        img_ids = sorted(self._by_image) or sorted(self.coco_gt.getImgIds())
        out: dict[str, Any] = {"iou_types": list(self.iou_types), "num_images": len(img_ids),
                               "num_detections": len(results)}
        per_class: dict[str, dict] = {}
        pr_curves: dict[str, dict] = {}
        summaries: dict[str, str] = {}
        dets_per_cat: dict[int, int] = {}
        for r in results:
            dets_per_cat[r["category_id"]] = dets_per_cat.get(r["category_id"], 0) + 1
        gt_per_cat: dict[int, int] = {}
        evaluated = set(img_ids)
        for ann in self.coco_gt.dataset["annotations"]:
            if ann["image_id"] in evaluated and not ann.get("iscrowd", 0):
                gt_per_cat[ann["category_id"]] = gt_per_cat.get(ann["category_id"], 0) + 1
        for iou_type in self.iou_types:
            coco_eval, text = self.run_cocoeval(iou_type)
            summaries[iou_type] = text.strip()
            stats = np.asarray(coco_eval.stats, dtype=np.float64)
            for name, value in zip(COCO_METRIC_NAMES, stats):
                out[f"{iou_type}_{name}"] = float(value)
            p = coco_eval.params
            precision = coco_eval.eval["precision"]  # (T, R, K, A, M)
            recall = coco_eval.eval["recall"]  # (T, K, A, M)
            t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
            a_all = list(p.areaRngLbl).index("all")
            m_max = int(np.argmax(p.maxDets))
            classes: dict[str, dict] = {}
            curves: dict[str, list[float] | None] = {}
            for k, cat_id in enumerate(p.catIds):
                name = names.get(int(cat_id), str(cat_id))
                pk = precision[:, :, k, a_all, m_max]
                valid = pk[pk > -1]
                p50 = precision[t50, :, k, a_all, m_max]
                rk = recall[:, k, a_all, m_max]
                rk = rk[rk > -1]
                classes[name] = {
                    "category_id": int(cat_id),
                    "AP": _finite_or_none(valid.mean()) if valid.size else None,
                    "AP50": _finite_or_none(p50[p50 > -1].mean()) if (p50 > -1).any() else None,
                    "AR100": _finite_or_none(rk.mean()) if rk.size else None,
                    "num_gt": gt_per_cat.get(int(cat_id), 0),
                    "num_detections": dets_per_cat.get(int(cat_id), 0),
                }
                curves[name] = [float(v) for v in p50] if (p50 > -1).all() else None
            per_class[iou_type] = classes
            pr_curves[iou_type] = {"iou_threshold": float(p.iouThrs[t50]),
                                   "recall": [float(v) for v in p.recThrs], "precision": curves}
        out["per_class"] = per_class
        out["pr_curves"] = pr_curves
        out["coco_summary"] = summaries
        return out


# ---- Pascal VOC 2007 ------------------------------------------------------------------------------
def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray, plus_one: float) -> np.ndarray:
    iw = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + plus_one
    ih = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + plus_one
    overlap = iw.clip(min=0) * ih.clip(min=0)
    area = (box[2] - box[0] + plus_one) * (box[3] - box[1] + plus_one)
    areas = (boxes[:, 2] - boxes[:, 0] + plus_one) * (boxes[:, 3] - boxes[:, 1] + plus_one)
    union = area + areas - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def _ap_from_pr(recall: np.ndarray, precision: np.ndarray, eleven_point: bool) -> float:
    if eleven_point:
        # VOC2007: mean over t = 0, 0.1, ..., 1 of the best precision at recall >= t (0 when none);
        # t = k / 10 so that e.g. a recall of exactly 3/10 counts for t = 0.3
        total = 0.0
        for k in range(11):
            reached = precision[recall >= k / 10]
            total += float(reached.max()) if reached.size else 0.0
        return total / 11
    # VOC2010+: area under the monotone (right-to-left maximum) precision envelope
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def voc07_ap50(predictions: Sequence[Mapping], targets: Sequence[Mapping], *,
               class_names: Sequence[str] | None = None, iou_threshold: float = 0.5,
               eleven_point: bool = True, pixel_inclusive: bool = False) -> dict[str, Any]:
    """Pascal VOC 2007 detection AP at IoU 0.5 per class and their mean (mAP).

    `predictions` and `targets` are per-image lists (same order). Predictions: ``boxes`` (N, 4) XYXY,
    ``scores`` (N,), ``labels`` (N,); targets: ``boxes`` (M, 4), ``labels`` (M,) and optional
    ``difficult`` (M,) bools. Per class, the detections of all images are ranked by score (stable for
    ties); each is a true positive when its best-overlapping ground truth of the class in its image
    (IoU >= `iou_threshold`, as in the devkit's VOCevaldet.m) is not difficult and not matched yet, a
    false positive otherwise — except when that ground truth is difficult: then it is neither. Recall is
    over the non-difficult ground truths. AP is the 11-point interpolated precision (VOC2007) or, with
    ``eleven_point=False``, the area under the precision envelope (VOC2010+).

    ``pixel_inclusive`` uses the devkit's integer-pixel convention (widths are x2 - x1 + 1); the default
    treats boxes as continuous coordinates, like COCO and torchvision.

    Returns ``{"mAP": float, "per_class": {class: AP or None}, "num_gt": {class: int}}``: classes are
    ``class_names`` (keys are the names; labels index them) or else the labels seen (int keys); AP is
    None for a class without non-difficult ground truth, and the mean is over the other classes
    (0.0 when there are none).
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    plus_one = 1.0 if pixel_inclusive else 0.0
    # per class: image -> (gt boxes, difficult, matched flags); detections (score, image, box)
    gts: dict[int, dict[int, list]] = {}
    dets: dict[int, list[tuple[float, int, np.ndarray]]] = {}
    for img, (pred, target) in enumerate(zip(predictions, targets)):
        t_boxes = _as_numpy(target.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        t_labels = _as_numpy(target.get("labels", np.zeros(0)), np.int64).reshape(-1)
        difficult = target.get("difficult")
        t_diff = (np.zeros(len(t_labels), dtype=bool) if difficult is None
                  else _as_numpy(difficult).astype(bool).reshape(-1))
        if not (len(t_boxes) == len(t_labels) == len(t_diff)):
            raise ValueError(f"target {img}: {len(t_boxes)} boxes, {len(t_labels)} labels, {len(t_diff)} difficult")
        for c in np.unique(t_labels):
            sel = t_labels == c
            gts.setdefault(int(c), {})[img] = [t_boxes[sel], t_diff[sel], np.zeros(int(sel.sum()), dtype=bool)]
        p_boxes = _as_numpy(pred.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4)
        p_scores = _as_numpy(pred.get("scores", np.zeros(0)), np.float64).reshape(-1)
        p_labels = _as_numpy(pred.get("labels", np.zeros(0)), np.int64).reshape(-1)
        if not (len(p_boxes) == len(p_scores) == len(p_labels)):
            raise ValueError(f"prediction {img}: {len(p_boxes)} boxes, {len(p_scores)} scores, {len(p_labels)} labels")
        for box, score, label in zip(p_boxes, p_scores, p_labels):
            dets.setdefault(int(label), []).append((float(score), img, box))

    if class_names is not None:
        class_names = [str(c) for c in class_names]
        bad = sorted(c for c in set(gts) | set(dets) if not 0 <= c < len(class_names))
        if bad:
            raise ValueError(f"labels {bad} are outside [0, {len(class_names)}) of class_names")
        classes = list(range(len(class_names)))
    else:
        classes = sorted(set(gts) | set(dets))

    per_class: dict[Any, float | None] = {}
    num_gt: dict[Any, int] = {}
    for c in classes:
        key = class_names[c] if class_names is not None else c
        class_gts = gts.get(c, {})
        npos = int(sum((~g[1]).sum() for g in class_gts.values()))
        num_gt[key] = npos
        if npos == 0:
            per_class[key] = None
            continue
        ranked = sorted(dets.get(c, []), key=lambda d: -d[0])  # sorted() is stable
        tp = np.zeros(len(ranked))
        fp = np.zeros(len(ranked))
        for d, (_, img, box) in enumerate(ranked):
            entry = class_gts.get(img)
            if entry is None or len(entry[0]) == 0:
                fp[d] = 1
                continue
            boxes, diff, matched = entry
            ious = _iou_one_to_many(box, boxes, plus_one)
            j = int(np.argmax(ious))
            if ious[j] >= iou_threshold and ious[j] > 0:
                if diff[j]:
                    continue  # a difficult object: neither true nor false positive
                if not matched[j]:
                    tp[d] = 1
                    matched[j] = True
                else:
                    fp[d] = 1  # duplicate detection
            else:
                fp[d] = 1
        keep = (tp + fp) > 0  # drop detections of difficult objects from the ranking
        tp_cum = np.cumsum(tp[keep])
        fp_cum = np.cumsum(fp[keep])
        recall = tp_cum / npos
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        per_class[key] = _ap_from_pr(recall, precision, eleven_point)
    defined = [v for v in per_class.values() if v is not None]
    return {"mAP": float(np.mean(defined)) if defined else 0.0, "per_class": per_class, "num_gt": num_gt}
