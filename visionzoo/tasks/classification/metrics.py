"""Classification metrics accumulated batch by batch: confusion matrix, top-k accuracy, mean loss,
per-class precision / recall / F1, and the most confident mistakes for the report."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from visionzoo.tasks.base import checked_class_names

__all__ = ["ClassificationMeter"]


def _safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


class ClassificationMeter:
    """Accumulates classification results.

    Summable state (see :meth:`state_tensors`): an int64 confusion matrix (rows = true class,
    columns = predicted = arg-max logit; exactly tied logits go to the first, i.e. lowest, class index, as
    `torch.argmax` does, and top-k takes tied classes in index order too), int64 top-k correct counts, the
    float64 summed loss and the int64 sample count. Per-sample (prediction, target, confidence) are also kept, in update order,
    so that :meth:`misclassified` can pick the most confident mistakes; they are local to the process
    and not part of the summable state.

    State lives on the device of the first `update` (so a distributed all-reduce can work on it
    directly); `compute` returns plain Python numbers.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 topk: Sequence[int] = (1, 5)):
        num_classes = int(num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        class_names = checked_class_names(class_names, num_classes)
        ks = sorted({int(k) for k in topk})
        if not ks or ks[0] < 1:
            raise ValueError(f"topk values must be >= 1, got {list(topk)}")
        self.num_classes = num_classes
        self.class_names = class_names
        self.topk = tuple(ks)
        self.reset()

    # ---- state ------------------------------------------------------------------------------
    def reset(self, device: torch.device | str | None = None) -> None:
        device = torch.device(device) if device is not None else torch.device("cpu")
        self._device = device
        c = self.num_classes
        self.confusion = torch.zeros(c, c, dtype=torch.int64, device=device)
        self.topk_correct = torch.zeros(len(self.topk), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros(1, dtype=torch.float64, device=self._loss_device(device))
        self.count = torch.zeros(1, dtype=torch.int64, device=device)
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self._confs: list[torch.Tensor] = []
        self._indices: list[torch.Tensor] = []
        self._seen = 0

    @staticmethod
    def _loss_device(device: torch.device) -> torch.device:
        return torch.device("cpu") if device.type == "mps" else device  # MPS has no float64

    def _move_to(self, device: torch.device) -> None:
        self._device = device
        self.confusion = self.confusion.to(device)
        self.topk_correct = self.topk_correct.to(device)
        self.loss_sum = self.loss_sum.to(self._loss_device(device))
        self.count = self.count.to(device)

    def state_tensors(self) -> list[torch.Tensor]:
        """[confusion (C, C) int64, topk_correct (K,) int64, loss_sum (1,) float64, count (1,) int64]:
        copies that can be summed across processes and given back to :meth:`load_state_tensors`."""
        return [self.confusion.clone(), self.topk_correct.clone(), self.loss_sum.clone(), self.count.clone()]

    def load_state_tensors(self, tensors: Sequence[torch.Tensor]) -> None:
        if len(tensors) != 4:
            raise ValueError(f"expected 4 state tensors, got {len(tensors)}")
        expected = [self.confusion, self.topk_correct, self.loss_sum, self.count]
        for name, new, old in zip(("confusion", "topk_correct", "loss_sum", "count"), tensors, expected):
            if tuple(new.shape) != tuple(old.shape):
                raise ValueError(f"state tensor {name}: shape {tuple(new.shape)} != expected {tuple(old.shape)}")
        confusion, topk_correct, loss_sum, count = tensors
        device = confusion.device
        self._device = device
        self.confusion = confusion.detach().to(device=device, dtype=torch.int64).clone()
        self.topk_correct = topk_correct.detach().to(device=device, dtype=torch.int64).clone()
        self.loss_sum = loss_sum.detach().to(device=self._loss_device(device), dtype=torch.float64).clone()
        self.count = count.detach().to(device=device, dtype=torch.int64).clone()

    # ---- update -----------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: float | None = None,
               indices: torch.Tensor | None = None) -> None:
        """Add a batch: `logits` (N, C), integer `targets` (N,). `loss_sum` is the batch's summed loss;
        when None the summed cross-entropy is computed here in float64. `indices` (N,) are the samples'
        dataset indices for :meth:`misclassified` (default: running position over all updates)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape (N, {self.num_classes}), got {tuple(logits.shape)}")
        targets = targets.reshape(-1)
        if targets.shape[0] != logits.shape[0]:
            raise ValueError(f"{targets.shape[0]} targets for {logits.shape[0]} logits")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise ValueError(f"targets must be integer class indices, got dtype {targets.dtype}")
        n = logits.shape[0]
        if n == 0:
            return
        if self.count.device != logits.device and self._seen == 0 and not self._preds:
            self._move_to(logits.device)
        device = self._device
        logits = logits.detach().to(device)
        targets = targets.detach().to(device=device, dtype=torch.int64)
        bad = (targets < 0) | (targets >= self.num_classes)
        if bool(bad.any()):
            values = sorted({int(v) for v in targets[bad].tolist()})
            shown = ", ".join(map(str, values[:10])) + (", ..." if len(values) > 10 else "")
            raise ValueError(f"targets outside [0, {self.num_classes}): {shown}")

        c = self.num_classes
        kmax = min(max(self.topk), c)
        # (N, kmax), best first; a stable sort, not topk, whose order among tied logits is unspecified
        top = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :kmax]
        preds = top[:, 0]  # == logits.argmax(1): the first maximal index
        hits = top.eq(targets[:, None])
        for i, k in enumerate(self.topk):
            self.topk_correct[i] += hits[:, : min(k, c)].any(dim=1).sum()
        self.confusion += torch.bincount(targets * c + preds, minlength=c * c).reshape(c, c)
        self.count += n
        if loss_sum is None:
            loss_device = self._loss_device(device)
            loss = F.cross_entropy(logits.to(device=loss_device, dtype=torch.float64), targets.to(loss_device),
                                   reduction="sum")
            self.loss_sum += loss
        else:
            self.loss_sum += float(loss_sum)
        probs = logits.float().softmax(dim=1)
        self._preds.append(preds)
        self._targets.append(targets)
        self._confs.append(probs.gather(1, preds[:, None]).squeeze(1))
        if indices is None:
            self._indices.append(torch.arange(self._seen, self._seen + n, device=device))
        else:
            indices = indices.reshape(-1)
            if indices.shape[0] != n:
                raise ValueError(f"{indices.shape[0]} indices for {n} samples")
            self._indices.append(indices.detach().to(device=device, dtype=torch.int64))
        self._seen += n

    def gather_samples(self) -> None:
        """Replace this process's per-sample records (predictions, targets, confidences, dataset indices) by
        those of every rank (distributed evaluation), so that misclassified() sees the whole dataset."""
        local = [torch.cat(x).cpu() if x else torch.zeros(0) for x in
                 (self._preds, self._targets, self._confs, self._indices)]
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, local)
        device = self.confusion.device
        self._preds, self._targets, self._confs, self._indices = (
            [part[i].to(device) for part in gathered if part[i].numel()] for i in range(4))

    # ---- results ----------------------------------------------------------------------------
    def compute(self) -> dict:
        """Metrics as plain Python values:

        ``top{k}`` (fractions in [0, 1]), ``loss`` (mean), ``num_samples``, ``macro_f1``, ``per_class``
        ({name: {precision, recall, f1, support}}; 0 where a ratio is undefined) and
        ``confusion_matrix`` (rows = true, columns = predicted). ``macro_f1`` averages F1 over the
        classes that occur as target or prediction (the scikit-learn convention), so classes absent
        from a small evaluation set do not count as zeros.
        """
        n = int(self.count.item())
        if n == 0:
            raise ValueError("ClassificationMeter.compute(): no samples were added (call update() with at "
                             "least one batch first; is the evaluation dataset empty?)")
        cm = self.confusion.cpu()
        tp = cm.diag()
        support = cm.sum(dim=1)
        predicted = cm.sum(dim=0)
        result: dict = {}
        for k, correct in zip(self.topk, self.topk_correct.cpu().tolist()):
            result[f"top{k}"] = correct / n
        result["loss"] = float(self.loss_sum.cpu().item()) / n
        result["num_samples"] = n
        per_class = {}
        f1s = []
        for i, name in enumerate(self.class_names):
            t, s, p = int(tp[i]), int(support[i]), int(predicted[i])
            precision = _safe_div(t, p)
            recall = _safe_div(t, s)
            f1 = _safe_div(2 * precision * recall, precision + recall)
            per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": s}
            if s > 0 or p > 0:
                f1s.append(f1)
        result["macro_f1"] = sum(f1s) / len(f1s) if f1s else 0.0
        result["per_class"] = per_class
        result["confusion_matrix"] = cm.tolist()
        return result

    def misclassified(self, limit: int | None = None) -> list[tuple[int, int, int, float]]:
        """The wrong predictions of this process as (index, target, prediction, confidence), most
        confident first (ties by index); at most `limit`."""
        if not self._preds:
            return []
        preds = torch.cat(self._preds).cpu()
        targets = torch.cat(self._targets).cpu()
        confs = torch.cat(self._confs).cpu()
        indices = torch.cat(self._indices).cpu()
        wrong = (preds != targets).nonzero().squeeze(1)
        rows = list(zip(indices[wrong].tolist(), targets[wrong].tolist(), preds[wrong].tolist(),
                        confs[wrong].tolist()))
        rows.sort(key=lambda r: (-r[3], r[0]))
        if limit is not None:
            rows = rows[: max(0, int(limit))]
        return [(int(i), int(t), int(p), float(c)) for i, t, p, c in rows]
