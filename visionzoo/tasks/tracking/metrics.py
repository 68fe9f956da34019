"""Single-object tracking metrics as the GOT-10k toolkit computes them (numpy, float64).

Two protocols share the per-frame IoU on continuous (x, y, w, h) boxes (no +1 pixel):

* OTB (one-pass evaluation): per sequence, the success curve S(t) = fraction of frames with IoU > t for
  t in :data:`SUCCESS_THRESHOLDS` (its mean over the 21 thresholds is the "AUC") and the precision curve
  P(tau) = fraction of frames with centre error <= tau px for tau in :data:`PRECISION_THRESHOLDS`
  (P(20) is the precision score); every frame with a ground-truth box of positive size counts, the
  first included. The curves are then averaged over sequences.
* GOT-10k: frame 0 (the initialisation) and frames where the target is not visible (cover == 0 or
  absent) are dropped; AO is the mean IoU over the remaining frames of *all* sequences pooled, SR_t the
  fraction of them with IoU > t.

Two IoU conventions for AO / SR (:data:`IOU_CONVENTIONS`), chosen with `iou_convention`:

* ``"got10k"`` (the default): the official toolkit's ``rect_iou`` (:func:`rect_iou`), so AO equals the
  figures published with it. With the image bound, each box's x, y are clamped to [0, W] x [0, H] and
  then its width / height to [0, W - x] x [0, H - y]: a box sticking out on the left or top is shifted
  onto the image, keeping its size, rather than cut. A visible frame whose ground-truth box has zero
  width or height is scored (IoU 0), as in the toolkit.
* ``"geometric"``: both boxes are intersected with the image (the part outside is cut off), and frames
  whose ground truth has no area are not scored (:func:`box_iou_xywh`).

The OTB figures use no image bound, so they are the same under both.

Under both, a frame whose ground truth is missing (a NaN row) is not scored, while a missing prediction
(a NaN row) on a scored frame counts as a failure (IoU 0, infinite centre error), so a tracker cannot
gain by giving up.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IOU_CONVENTIONS", "PRECISION_THRESHOLDS", "SUCCESS_THRESHOLDS", "SequenceResult", "box_iou_xywh",
           "center_error", "got10k_sequence_ious", "otb_sequence_scores", "precision_curve", "rect_iou",
           "success_curve", "summarize"]

SUCCESS_THRESHOLDS = np.linspace(0, 1, 21)
PRECISION_THRESHOLDS = np.arange(0, 51)
PRECISION_AT = 20  # px, the OTB precision score
IOU_CONVENTIONS = ("got10k", "geometric")


def _boxes(x: Any, what: str = "boxes") -> np.ndarray:
    """(N, 4) float64 from an (N, 4) or a single (4,) array-like."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{what} must have shape (N, 4) as x, y, w, h; got shape {arr.shape}")
    return arr


def _valid_truth(gt: np.ndarray) -> np.ndarray:
    """Frames whose ground truth can be scored: finite and with a positive area."""
    return np.isfinite(gt).all(axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)


def box_iou_xywh(a: Any, b: Any) -> np.ndarray:
    """Row-by-row IoU of (N, 4) x, y, w, h boxes `a` (predictions) and `b` (ground truth) in continuous
    coordinates, a box covering [x, x + w) x [y, y + h). NaN where either row has a NaN or `b` has no area
    (the frame cannot be scored); a prediction of negative size counts as empty."""
    a, b = _boxes(a, "a"), _boxes(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"box_iou_xywh needs boxes of equal shape, got {a.shape} and {b.shape}")
    aw, ah = np.clip(a[:, 2], 0, None), np.clip(a[:, 3], 0, None)
    bw, bh = b[:, 2], b[:, 3]
    iw = np.clip(np.minimum(a[:, 0] + aw, b[:, 0] + bw) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 1] + ah, b[:, 1] + bh) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    valid = np.isfinite(a).all(axis=1) & _valid_truth(b)
    with np.errstate(invalid="ignore"):
        iou = np.divide(inter, union, out=np.full(len(a), np.nan), where=valid)
    return np.clip(iou, 0.0, 1.0)


def _check_convention(convention: str) -> str:
    if convention not in IOU_CONVENTIONS:
        raise ValueError(f"iou_convention must be one of {', '.join(IOU_CONVENTIONS)}; got {convention!r}")
    return convention


def _toolkit_bounded(boxes: np.ndarray, bound: Sequence[float]) -> np.ndarray:
    """The toolkit's bounding of (x, y, w, h) boxes to an image (width, height): x, y clamped to [0, W] x
    [0, H] first, then w, h to [0, W - x] x [0, H - y] (a box reaching out on the left keeps its width)."""
    w_img, h_img = float(bound[0]), float(bound[1])
    x, y = np.clip(boxes[:, 0], 0, w_img), np.clip(boxes[:, 1], 0, h_img)
    return np.stack([x, y, np.clip(boxes[:, 2], 0, w_img - x), np.clip(boxes[:, 3], 0, h_img - y)], axis=1)


def rect_iou(a: Any, b: Any, bound: Sequence[float] | None = None) -> np.ndarray:
    """Row-by-row IoU of (N, 4) x, y, w, h boxes `a` and `b` by the GOT-10k toolkit's formula: with `bound`
    = image (width, height), both are first bounded as :func:`_toolkit_bounded` says; intersection
    max(0, min(right) - max(left)) x max(0, min(bottom) - max(top)); IoU = intersection / (area_a + area_b -
    intersection + eps), eps = float64 machine epsilon, clipped to [0, 1]. A box of zero width or height
    scores 0 against anything; a NaN in either row gives NaN (the caller decides what that frame means)."""
    a, b = _boxes(a, "a"), _boxes(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"rect_iou needs boxes of equal shape, got {a.shape} and {b.shape}")
    if bound is not None:
        a, b = _toolkit_bounded(a, bound), _toolkit_bounded(b, bound)
    iw = np.maximum(np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0)
    ih = np.maximum(np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0)
    inter = iw * ih
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.clip(inter / (union + np.finfo(np.float64).eps), 0.0, 1.0)


def center_error(a: Any, b: Any) -> np.ndarray:
    """Row-by-row Euclidean distance (px) between the centres (x + w/2, y + h/2) of `a` and `b`; NaN where
    either row has a NaN. (The toolkit's (w - 1) / 2 centres give the same differences.)"""
    a, b = _boxes(a, "a"), _boxes(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"center_error needs boxes of equal shape, got {a.shape} and {b.shape}")
    d = (a[:, :2] + a[:, 2:] / 2) - (b[:, :2] + b[:, 2:] / 2)
    return np.sqrt((d ** 2).sum(axis=1))


def success_curve(ious: Any) -> np.ndarray:
    """(21,) fraction of frames with IoU strictly greater than each of :data:`SUCCESS_THRESHOLDS`, over the
    frames whose IoU is not NaN (all NaN when there are none). Strict, so S(1) is 0 and S(0) excludes
    misses."""
    v = np.asarray(ious, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return np.full(len(SUCCESS_THRESHOLDS), np.nan)
    return (v[:, None] > SUCCESS_THRESHOLDS[None, :]).mean(axis=0)


def precision_curve(errors: Any) -> np.ndarray:
    """(51,) fraction of frames with centre error <= each of :data:`PRECISION_THRESHOLDS` px, over the frames
    whose error is not NaN (all NaN when there are none); an infinite error never counts."""
    v = np.asarray(errors, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return np.full(len(PRECISION_THRESHOLDS), np.nan)
    return (v[:, None] <= PRECISION_THRESHOLDS[None, :]).mean(axis=0)


def _check_lengths(pred: np.ndarray, gt: np.ndarray, name: str = "sequence") -> None:
    if len(pred) != len(gt):
        raise ValueError(f"{name}: {len(pred)} predicted boxes for {len(gt)} ground-truth boxes")


def otb_sequence_scores(pred: Any, gt: Any, *, iou_convention: str = "got10k") -> dict[str, Any]:
    """One sequence under the OTB protocol: the success curve, its AUC (mean of the 21 values), the
    precision curve, the precision at 20 px and the mean IoU, over every frame with a ground-truth box of
    positive size (frame 0 included, as the toolkit's OTB experiment scores it; a tracker reports the
    initial box there). No image bound applies, so both IoU conventions give the same figures here (the
    toolkit's formula adds a float64 epsilon to the union). `frames` is the number of frames scored; with
    none, the curves and scores are NaN."""
    pred, gt = _boxes(pred, "pred"), _boxes(gt, "gt")
    _check_lengths(pred, gt)
    iou = rect_iou if _check_convention(iou_convention) == "got10k" else box_iou_xywh
    valid = _valid_truth(gt)
    ious = np.nan_to_num(iou(pred[valid], gt[valid]), nan=0.0)
    errors = center_error(pred[valid], gt[valid])
    errors[~np.isfinite(errors)] = np.inf
    success, precision = success_curve(ious), precision_curve(errors)
    return {"frames": int(valid.sum()),
            "success_curve": success,
            "success_auc": float(success.mean()),
            "precision_curve": precision,
            "precision_20": float(precision[PRECISION_AT]),
            "mean_iou": float(ious.mean()) if ious.size else math.nan}


def _clip_to_image(boxes: np.ndarray, bound: Sequence[float]) -> np.ndarray:
    """Boxes intersected with the image [0, W] x [0, H] (NaN rows stay NaN)."""
    w, h = float(bound[0]), float(bound[1])
    x1, y1 = np.clip(boxes[:, 0], 0, w), np.clip(boxes[:, 1], 0, h)
    x2, y2 = np.clip(boxes[:, 0] + boxes[:, 2], 0, w), np.clip(boxes[:, 1] + boxes[:, 3], 0, h)
    return np.stack([x1, y1, np.clip(x2 - x1, 0, None), np.clip(y2 - y1, 0, None)], axis=1)


def got10k_sequence_ious(pred: Any, gt: Any, cover: Any = None, absent: Any = None, *,
                         bound: Sequence[float] | None = None, iou_convention: str = "got10k") -> np.ndarray:
    """The IoUs GOT-10k scores for one sequence: frame 0 (given to the tracker) is dropped, and so are frames
    with cover == 0 (when `cover` is given), frames marked absent (`absent` != 0, when given) and frames
    without a ground-truth box (NaN; under "geometric" also a zero-size one). `bound` = image (width,
    height) bounds both boxes to the image first, as the toolkit does for the validation set: its way
    under "got10k" (:func:`rect_iou`), by intersection under "geometric". A NaN prediction on a kept frame
    scores 0."""
    pred, gt = _boxes(pred, "pred"), _boxes(gt, "gt")
    _check_lengths(pred, gt)
    if _check_convention(iou_convention) == "got10k":
        keep = np.isfinite(gt).all(axis=1)
    else:
        if bound is not None:
            pred, gt = _clip_to_image(pred, bound), _clip_to_image(gt, bound)
        keep = _valid_truth(gt)
    keep[:1] = False
    for label, flags, visible in (("cover", cover, lambda f: f > 0), ("absent", absent, lambda f: f == 0)):
        if flags is None:
            continue
        flags = np.asarray(flags, dtype=np.float64).ravel()
        if len(flags) != len(gt):
            raise ValueError(f"{len(flags)} {label} labels for {len(gt)} frames")
        keep &= visible(flags)
    if iou_convention == "got10k":
        return np.nan_to_num(rect_iou(pred[keep], gt[keep], bound), nan=0.0)
    return np.nan_to_num(box_iou_xywh(pred[keep], gt[keep]), nan=0.0)


@dataclass
class SequenceResult:
    """One tracked sequence: the boxes the tracker reported (pred[0] is the initial box), the ground truth,
    GOT-10k's visibility labels when the dataset has them, and per-frame wall times in seconds (times[0] is
    the init() call, times[1:] the update() calls). `image_size` = (width, height) bounds the boxes to the
    image for AO / SR as the GOT-10k toolkit does (see the module's IoU conventions); leave it None to score
    unbounded boxes."""

    name: str
    pred: np.ndarray
    gt: np.ndarray
    cover: np.ndarray | None = None
    absent: np.ndarray | None = None
    times: np.ndarray | None = None
    image_size: tuple[int, int] | None = None

    @property
    def fps(self) -> float | None:
        """update() calls per second (frame 0's initialisation is not tracking); None without times."""
        if self.times is None:
            return None
        times = np.asarray(self.times, dtype=np.float64).ravel()[1:]
        seconds = float(times.sum())
        return len(times) / seconds if len(times) and seconds > 0 else None


def _num(value: Any) -> float | None:
    """A JSON-friendly float: NaN / inf / None -> None."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _checked(result: SequenceResult) -> tuple[np.ndarray, np.ndarray]:
    name = f"sequence {result.name!r}"
    pred, gt = _boxes(result.pred, f"{name} pred"), _boxes(result.gt, f"{name} gt")
    _check_lengths(pred, gt, name)
    if len(gt) == 0:
        raise ValueError(f"{name} has no frames")
    for label in ("cover", "absent", "times"):
        value = getattr(result, label)
        if value is not None and np.asarray(value).size != len(gt):
            raise ValueError(f"{name}: {np.asarray(value).size} {label} values for {len(gt)} frames")
    return pred, gt


def summarize(results: Sequence[SequenceResult], *, iou_convention: str = "got10k") -> dict[str, Any]:
    """Both protocols over a set of sequences, as a JSON-serialisable dict (undefined values are None), with
    the IoU convention named in `iou_convention` ("got10k": the official toolkit's, "geometric").

    OTB: `success_curve` / `precision_curve` are the per-sequence curves averaged over the sequences that
    have ground truth, `success_auc` their mean (the same as the mean of the per-sequence AUCs) and
    `precision_20` the curve at 20 px. GOT-10k: `ao`, `sr50`, `sr75` pool the IoUs of all kept frames of
    all sequences (`ao_frames` of them), so long sequences weigh more. `fps` = update frames / update
    seconds over the sequences with times. `per_sequence` holds the same numbers per sequence."""
    results = list(results)
    if not results:
        raise ValueError("summarize() needs at least one SequenceResult, got none")
    _check_convention(iou_convention)
    per_sequence, success, precision, pooled = [], [], [], []
    update_frames, update_seconds = 0, 0.0
    for r in results:
        pred, gt = _checked(r)
        otb = otb_sequence_scores(pred, gt, iou_convention=iou_convention)
        ious = got10k_sequence_ious(pred, gt, r.cover, r.absent, bound=r.image_size, iou_convention=iou_convention)
        if otb["frames"]:
            success.append(otb["success_curve"])
            precision.append(otb["precision_curve"])
        pooled.append(ious)
        if r.times is not None:
            times = np.asarray(r.times, dtype=np.float64).ravel()[1:]
            update_frames += len(times)
            update_seconds += float(times.sum())
        per_sequence.append({
            "name": str(r.name),
            "frames": int(len(gt)),
            "success_auc": _num(otb["success_auc"]),
            "precision_20": _num(otb["precision_20"]),
            "ao": _num(ious.mean()) if ious.size else None,
            "sr50": _num((ious > 0.5).mean()) if ious.size else None,
            "sr75": _num((ious > 0.75).mean()) if ious.size else None,
            "fps": _num(r.fps),
            "mean_iou": _num(otb["mean_iou"]),
        })
    if not success:
        raise ValueError(f"no frame of the {len(results)} sequence(s) has a ground-truth box to score")
    success_mean, precision_mean = np.mean(success, axis=0), np.mean(precision, axis=0)
    ious = np.concatenate(pooled)
    return {
        "success_auc": float(success_mean.mean()),
        "success_curve": [float(v) for v in success_mean],
        "precision_20": float(precision_mean[PRECISION_AT]),
        "precision_curve": [float(v) for v in precision_mean],
        "ao": _num(ious.mean()) if ious.size else None,
        "sr50": _num((ious > 0.5).mean()) if ious.size else None,
        "sr75": _num((ious > 0.75).mean()) if ious.size else None,
        "fps": update_frames / update_seconds if update_frames and update_seconds > 0 else None,
        "num_sequences": len(results),
        "num_frames": int(sum(p["frames"] for p in per_sequence)),
        "ao_frames": int(ious.size),
        "iou_convention": iou_convention,
        "per_sequence": per_sequence,
    }
