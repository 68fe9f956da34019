"""Semantic-segmentation metrics from a confusion matrix: the four scores of the FCN paper (Long,
Shelhamer and Darrell, "Fully Convolutional Networks for Semantic Segmentation", sec. 5):

With ``n_ij`` the number of pixels of class ``i`` predicted as class ``j``, ``t_i = sum_j n_ij`` the
pixels of class ``i`` and ``k`` the number of classes::

    pixel accuracy          sum_i n_ii / sum_i t_i
    mean accuracy           (1/k) sum_i n_ii / t_i
    mean IoU                (1/k) sum_i n_ii / (t_i + sum_j n_ji - n_ii)
    frequency-weighted IoU  (sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)

Classes that would make a ratio 0/0 are left out of the means, as the FCN authors' ``score.py``
does with ``np.nanmean``:

* mean IoU averages over the classes with a non-empty union, i.e. present in the ground truth *or*
  predicted at least once. A class absent from the ground truth but predicted somewhere (false
  positives only) has IoU 0 and counts; a class neither present nor predicted is reported as None.
* mean accuracy averages over the classes present in the ground truth (``t_i > 0``); the others are
  reported as None.
* frequency-weighted IoU weights by ``t_i``, so absent classes contribute nothing either way.

Pixels whose target is ``ignore_index`` (255, the VOC "void" label) are not counted, whatever is
predicted there.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from visionzoo.tasks.base import checked_class_names

__all__ = [
    "ConfusionMeter",
    "confusion_matrix",
    "image_mean_iou",
    "normalized_confusion",
    "segmentation_metrics",
]


def _describe(values: torch.Tensor, limit: int = 10) -> str:
    uniq = torch.unique(values.detach().cpu()).tolist()
    shown = ", ".join(str(int(v)) for v in uniq[:limit])
    return shown + (f", ... ({len(uniq)} distinct values)" if len(uniq) > limit else "")


def _check_labels(name: str, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    return t.detach().to(torch.int64)


def _counted_pixels(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                    ignore_index: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validated int64 (pred, target) and the boolean mask of the pixels that count."""
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred = _check_labels("pred", pred)
    target = _check_labels("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.device != target.device:
        raise ValueError(f"pred and target are on different devices: {pred.device} vs {target.device}")
    counted = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != int(ignore_index)
    bad = counted & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"target values outside [0, {num_classes}) (ignore_index = {ignore_index}): "
                         f"{_describe(target[bad])}")
    bad = counted & ((pred < 0) | (pred >= num_classes))
    if bool(bad.any()):
        raise ValueError(f"predicted values outside [0, {num_classes}) at counted pixels: {_describe(pred[bad])}")
    return pred, target, counted


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """The (k, k) int64 confusion matrix of integer label maps of any (equal) shape: entry [i, j]
    counts the pixels of ground-truth class i predicted as class j. Computed with ``torch.bincount``
    on the inputs' device.

    Pixels whose target equals `ignore_index` (None: none ignored) are skipped, whatever their
    prediction. Other target values outside [0, k), and predictions outside [0, k) at counted
    pixels, raise ValueError.
    """
    pred, target, counted = _counted_pixels(pred, target, num_classes, ignore_index)
    k = int(num_classes)
    codes = target[counted] * k + pred[counted]
    return torch.bincount(codes, minlength=k * k).reshape(k, k)


def image_mean_iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                   ignore_index: int | None = 255) -> torch.Tensor:
    """Mean IoU of each image of a batch of label maps (N, H, W): a float64 tensor (N,) on the inputs'
    device. Each image averages over the classes present in its ground truth or its prediction
    (counted pixels only); an image without counted pixels gets NaN."""
    if pred.ndim < 2:
        raise ValueError(f"expected batched label maps (N, ...), got shape {tuple(pred.shape)}")
    pred, target, counted = _counted_pixels(pred, target, num_classes, ignore_index)
    n, k = target.shape[0], int(num_classes)
    image = torch.arange(n, device=target.device).view(-1, *([1] * (target.ndim - 1))).expand_as(target)
    codes = (image * k + target) * k + pred
    cms = torch.bincount(codes[counted], minlength=n * k * k).reshape(n, k, k).to(torch.float64)
    tp = cms.diagonal(dim1=1, dim2=2)
    union = cms.sum(dim=2) + cms.sum(dim=1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(tp))
    count = present.sum(dim=1)
    return torch.where(count > 0, iou.sum(dim=1) / count.clamp(min=1),
                       torch.full_like(iou[:, 0], float("nan")))


def _as_matrix(cm: Any) -> torch.Tensor:
    cm = torch.as_tensor(cm).detach().cpu()
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] < 1:
        raise ValueError(f"confusion matrix must be square (k, k) with k >= 1, got shape {tuple(cm.shape)}")
    if cm.is_complex() or cm.dtype == torch.bool:
        raise ValueError(f"confusion matrix must hold counts, got dtype {cm.dtype}")
    cm = cm.to(torch.float64)
    if not bool(torch.isfinite(cm).all()) or bool((cm < 0).any()):
        raise ValueError("confusion matrix entries must be finite and non-negative")
    return cm


def segmentation_metrics(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The FCN metrics of a confusion matrix (rows = ground truth, columns = prediction) as plain
    Python values:

    ``pixel_accuracy``, ``mean_accuracy``, ``mean_iou``, ``fw_iou`` (fractions in [0, 1]),
    ``per_class_iou`` and ``per_class_accuracy`` ({name: value or None}), ``pixels`` (counted
    pixels), ``classes_present`` (classes with ground-truth pixels) and ``classes_in_mean_iou``
    (classes with a non-empty union, the denominator of ``mean_iou``).

    A class's IoU is None when it is neither in the ground truth nor predicted (0/0) and its
    accuracy is None when it has no ground-truth pixels; None entries are left out of the means (see
    the module docstring). With no counted pixels at all (``pixels`` = 0) the four scores are None.
    """
    cm = _as_matrix(cm)
    k = cm.shape[0]
    class_names = checked_class_names(class_names, k)

    tp = cm.diagonal()
    support = cm.sum(dim=1)  # t_i
    predicted = cm.sum(dim=0)  # sum_j n_ji
    union = support + predicted - tp
    total = float(support.sum())
    iou = [float(tp[i] / union[i]) if union[i] > 0 else None for i in range(k)]
    acc = [float(tp[i] / support[i]) if support[i] > 0 else None for i in range(k)]
    iou_defined = [v for v in iou if v is not None]
    acc_defined = [v for v in acc if v is not None]
    result: dict[str, Any] = {
        "pixel_accuracy": float(tp.sum()) / total if total > 0 else None,
        "mean_accuracy": sum(acc_defined) / len(acc_defined) if acc_defined else None,
        "mean_iou": sum(iou_defined) / len(iou_defined) if iou_defined else None,
        "fw_iou": (sum(float(support[i]) * v for i, v in enumerate(iou) if v is not None) / total
                   if total > 0 else None),
        "per_class_iou": dict(zip(class_names, iou)),
        "per_class_accuracy": dict(zip(class_names, acc)),
        "pixels": int(round(total)),
        "classes_present": int((support > 0).sum()),
        "classes_in_mean_iou": len(iou_defined),
    }
    return result


def normalized_confusion(cm: Any) -> torch.Tensor:
    """The confusion matrix with each row divided by its sum (row i: where the pixels of class i went,
    the diagonal being per-class recall), float64 on the CPU; rows without pixels are all zeros."""
    cm = _as_matrix(cm)
    rows = cm.sum(dim=1, keepdim=True)
    return torch.where(rows > 0, cm / rows.clamp(min=1e-300), torch.zeros_like(cm))


class ConfusionMeter:
    """Accumulates a segmentation confusion matrix over batches of label maps.

    Summable state (see :meth:`state_tensors`): the (k, k) int64 confusion matrix, kept on `device`
    (for a distributed all-reduce it must be on the backend's device, e.g. CUDA for NCCL). Each
    batch's counting runs on the inputs' device; only the (k, k) result moves.

    Per-image mean IoU (:attr:`per_image_iou`, :meth:`worst`) is recorded for the batches given
    `indices`; it is local to the process and not part of the summable state.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 ignore_index: int | None = 255, device: torch.device | str = "cpu"):
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        class_names = checked_class_names(class_names, num_classes)
        self.num_classes = num_classes
        self.class_names = class_names
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self.device = torch.device(device)
        self.reset()

    def reset(self) -> None:
        k = self.num_classes
        self.confusion = torch.zeros(k, k, dtype=torch.int64, device=self.device)
        self.per_image_iou: dict[int, float] = {}

    # ---- distributed state --------------------------------------------------------------------
    def state_tensors(self) -> list[torch.Tensor]:
        """[confusion (k, k) int64]: a copy that can be summed across processes and given back to
        :meth:`load_state_tensors`."""
        return [self.confusion.clone()]

    def load_state_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        if len(tensors) != 1:
            raise ValueError(f"expected 1 state tensor (the confusion matrix), got {len(tensors)}")
        (cm,) = tensors
        k = self.num_classes
        if tuple(cm.shape) != (k, k):
            raise ValueError(f"state tensor confusion: shape {tuple(cm.shape)} != expected {(k, k)}")
        self.device = cm.device
        self.confusion = cm.detach().to(dtype=torch.int64).clone()

    # ---- update -------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor,
               indices: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor | None:
        """Add a batch: integer label maps `pred` and `target` (N, H, W); a single (H, W) map is taken as
        a batch of one. `pred` may also be logits (N, k, H, W), reduced by arg-max over dim 1.

        With `indices` (the N images' dataset indices) each image's mean IoU (over the classes in its
        ground truth or prediction) is recorded in :attr:`per_image_iou` (images without counted
        pixels are not recorded; a repeated index keeps the latest value) and the (N,) float64 tensor
        of those values (NaN for no counted pixels) is returned; otherwise returns None.
        """
        if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError("pred and target must be torch.Tensors")
        if target.ndim == 2:
            pred, target = pred[None], target[None]
        if pred.is_floating_point() and pred.ndim == target.ndim + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(f"logits must have {self.num_classes} channels (dim 1), got shape "
                                 f"{tuple(pred.shape)}")
            pred = pred.argmax(dim=1)
        if target.ndim != 3:
            raise ValueError(f"expected label maps (N, H, W), got target shape {tuple(target.shape)}")
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index).to(self.device)
        if indices is None:
            return None
        idx = [int(i) for i in torch.as_tensor(indices).reshape(-1).tolist()]
        if len(idx) != target.shape[0]:
            raise ValueError(f"{len(idx)} indices for {target.shape[0]} images")
        scores = image_mean_iou(pred, target, self.num_classes, self.ignore_index)
        for i, s in zip(idx, scores.cpu().tolist()):
            if s == s:  # not NaN
                self.per_image_iou[i] = float(s)
        return scores

    # ---- results ------------------------------------------------------------------------------
    def compute(self) -> dict[str, Any]:
        """:func:`segmentation_metrics` of the accumulated matrix plus ``confusion_matrix`` (nested
        lists, rows = ground truth). Before any counted pixel the scores are None and ``pixels`` is 0."""
        cm = self.confusion.cpu()
        result = segmentation_metrics(cm, self.class_names)
        result["confusion_matrix"] = cm.tolist()
        return result

    def worst(self, n: int | None = None) -> list[tuple[int, float]]:
        """The recorded images as (index, mean IoU), lowest IoU first (ties by index); at most `n`."""
        rows = sorted(self.per_image_iou.items(), key=lambda r: (r[1], r[0]))
        if n is not None:
            rows = rows[: max(0, int(n))]
        return [(int(i), float(v)) for i, v in rows]
