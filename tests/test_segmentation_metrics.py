import math

import numpy as np
import pytest
import torch

from visionzoo.tasks.segmentation.metrics import (
    ConfusionMeter,
    confusion_matrix,
    image_mean_iou,
    normalized_confusion,
    segmentation_metrics,
)

# A hand-made 3-class 4x4 case with three ignored (255) pixels; the prediction at ignored pixels is
# arbitrary and must not count.
TARGET = torch.tensor([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 255, 255],
                       [2, 2, 2, 255]])
PRED = torch.tensor([[0, 1, 1, 1],
                     [0, 0, 1, 2],
                     [2, 0, 0, 1],
                     [2, 2, 2, 2]])
# class 0 (4 px): predicted 0, 1, 0, 0      -> n00 = 3, n01 = 1
# class 1 (4 px): predicted 1, 1, 1, 2      -> n11 = 3, n12 = 1
# class 2 (5 px): predicted 2, 0, 2, 2, 2   -> n22 = 4, n20 = 1
CM = [[3, 1, 0],
      [0, 3, 1],
      [1, 0, 4]]
NAMES = ["bg", "cat", "dog"]


def test_hand_computed_confusion_matrix_with_ignore():
    cm = confusion_matrix(PRED, TARGET, 3)
    assert cm.dtype == torch.int64
    assert cm.tolist() == CM
    # the prediction at ignored pixels does not matter, even out of range
    pred = PRED.clone()
    pred[TARGET == 255] = 99
    assert confusion_matrix(pred, TARGET, 3).tolist() == CM
    # uint8 label maps (as decoded from PNG) work too
    assert confusion_matrix(PRED.to(torch.uint8), TARGET.to(torch.uint8), 3).tolist() == CM
    # without an ignore index 255 is a bad target
    with pytest.raises(ValueError, match="255"):
        confusion_matrix(PRED, TARGET, 3, ignore_index=None)


def test_hand_computed_metrics():
    m = segmentation_metrics(torch.tensor(CM), NAMES)
    # t = [4, 4, 5], column sums = [4, 4, 5], diagonal = [3, 3, 4], 13 counted pixels
    assert m["pixels"] == 13
    assert m["pixel_accuracy"] == pytest.approx(10 / 13)
    assert m["mean_accuracy"] == pytest.approx((3 / 4 + 3 / 4 + 4 / 5) / 3)
    # IoU: 3 / (4 + 4 - 3) = 0.6, 3 / (4 + 4 - 3) = 0.6, 4 / (5 + 5 - 4) = 2/3
    assert m["per_class_iou"] == pytest.approx({"bg": 0.6, "cat": 0.6, "dog": 2 / 3})
    assert m["per_class_accuracy"] == pytest.approx({"bg": 0.75, "cat": 0.75, "dog": 0.8})
    assert m["mean_iou"] == pytest.approx(28 / 45)
    # (4 * 0.6 + 4 * 0.6 + 5 * 2/3) / 13
    assert m["fw_iou"] == pytest.approx(122 / 195)
    assert m["classes_present"] == 3 and m["classes_in_mean_iou"] == 3


def test_absent_classes():
    # 4 classes: class 2 is never in the ground truth but predicted once (a false positive: IoU 0,
    # counted in mean IoU, accuracy undefined); class 3 is neither present nor predicted (excluded).
    target = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 2], [1, 1]])
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    m = segmentation_metrics(cm)
    assert m["per_class_iou"] == {"0": 0.5, "1": 1.0, "2": 0.0, "3": None}
    assert m["per_class_accuracy"] == {"0": 0.5, "1": 1.0, "2": None, "3": None}
    assert m["mean_iou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["mean_accuracy"] == pytest.approx(0.75)
    assert m["pixel_accuracy"] == pytest.approx(0.75)
    assert m["fw_iou"] == pytest.approx((2 * 0.5 + 2 * 1.0) / 4)
    assert m["classes_present"] == 2 and m["classes_in_mean_iou"] == 3


def test_empty_matrix_gives_none():
    m = segmentation_metrics(torch.zeros(3, 3, dtype=torch.int64))
    assert m["pixels"] == 0
    for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou"):
        assert m[key] is None
    assert set(m["per_class_iou"].values()) == {None}
    meter = ConfusionMeter(3)
    out = meter.compute()
    assert out["pixels"] == 0 and out["mean_iou"] is None
    assert out["confusion_matrix"] == [[0] * 3] * 3
    # all pixels ignored: still nothing counted
    meter.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 255))
    assert meter.compute()["pixels"] == 0


def _numpy_reference(pred, target, k, ignore=255):
    """Independent implementation: np.add.at for the histogram, the FCN authors' score.py formulas."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = target != ignore
    hist = np.zeros((k, k), dtype=np.int64)
    np.add.at(hist, (target[keep], pred[keep]), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.diag(hist).sum() / hist.sum()
        cls_acc = np.diag(hist) / hist.sum(1)
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    freq = hist.sum(1) / hist.sum()
    fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
    return hist, acc, np.nanmean(cls_acc), np.nanmean(iu), fwavacc, iu, cls_acc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    k = 6
    target = rng.integers(0, k, size=(3, 17, 23))
    target[target == 4] = 3  # class 4 absent from the ground truth...
    pred = np.where(rng.random(target.shape) < 0.6, target, rng.integers(0, k, size=target.shape))
    if seed == 0:
        pred[pred == 4] = 0  # ...and, for one seed, never predicted either (excluded from the means)
    target[rng.random(target.shape) < 0.1] = 255
    hist, acc, macc, miou, fwiou, iu, cls_acc = _numpy_reference(pred, target, k)
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), k)
    np.testing.assert_array_equal(cm.numpy(), hist)
    m = segmentation_metrics(cm)
    assert m["pixel_accuracy"] == pytest.approx(acc, abs=1e-12)
    assert m["mean_accuracy"] == pytest.approx(macc, abs=1e-12)
    assert m["mean_iou"] == pytest.approx(miou, abs=1e-12)
    assert m["fw_iou"] == pytest.approx(fwiou, abs=1e-12)
    for i in range(k):
        got = m["per_class_iou"][str(i)]
        assert (got is None) == bool(np.isnan(iu[i]))
        if got is not None:
            assert got == pytest.approx(iu[i], abs=1e-12)
        got = m["per_class_accuracy"][str(i)]
        assert (got is None) == bool(np.isnan(cls_acc[i]))
    assert (m["per_class_iou"]["4"] is None) == (seed == 0)


def test_batch_accumulation_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (8, 9, 11), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.2] = 255
    pred = torch.randint(0, 5, (8, 9, 11), generator=g)
    one = ConfusionMeter(5)
    one.update(pred, target)
    batched = ConfusionMeter(5)
    for s in range(0, 8, 3):
        batched.update(pred[s:s + 3], target[s:s + 3])
    assert torch.equal(one.confusion, batched.confusion)
    assert one.compute() == batched.compute()
    assert one.confusion.sum() == (target != 255).sum()
    # logits are reduced by arg-max
    logits = torch.nn.functional.one_hot(pred, 5).permute(0, 3, 1, 2).float()
    from_logits = ConfusionMeter(5)
    from_logits.update(logits, target)
    assert torch.equal(from_logits.confusion, one.confusion)


def test_state_tensors_round_trip_sums_meters():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 4, (6, 7, 5), generator=g)
    pred = torch.randint(0, 4, (6, 7, 5), generator=g)
    a, b, full = ConfusionMeter(4, NAMES + ["bird"]), ConfusionMeter(4, NAMES + ["bird"]), ConfusionMeter(4)
    a.update(pred[:2], target[:2])
    b.update(pred[2:], target[2:])
    full.update(pred, target)
    (ta,), (tb,) = a.state_tensors(), b.state_tensors()
    ta += tb  # what the all-reduce does
    assert torch.equal(a.confusion, a.state_tensors()[0])  # state_tensors are copies
    merged = ConfusionMeter(4, NAMES + ["bird"])
    merged.load_state_tensors([ta])
    assert torch.equal(merged.confusion, full.confusion)
    assert merged.compute()["mean_iou"] == full.compute()["mean_iou"]
    with pytest.raises(ValueError, match="1 state tensor"):
        merged.load_state_tensors([ta, tb])
    with pytest.raises(ValueError, match="shape"):
        merged.load_state_tensors([torch.zeros(3, 3, dtype=torch.int64)])


def test_per_image_iou_and_worst():
    target = torch.tensor([[[0, 0], [1, 1]],
                           [[2, 2], [2, 255]],
                           [[255, 255], [255, 255]]])
    pred = torch.tensor([[[0, 1], [1, 1]],
                         [[2, 2], [0, 0]],
                         [[1, 1], [1, 1]]])
    # image 10: class 0 IoU 1/2, class 1 IoU 2/3 -> 7/12
    # image 11: class 2 IoU 2/3, class 0 (predicted, absent) IoU 0, ignored pixel not counted -> 1/3
    # image 12: no counted pixels -> NaN, not recorded
    meter = ConfusionMeter(3)
    scores = meter.update(pred, target, indices=torch.tensor([10, 11, 12]))
    assert scores[:2].tolist() == pytest.approx([7 / 12, 1 / 3])
    assert math.isnan(scores[2].item())
    assert meter.per_image_iou == pytest.approx({10: 7 / 12, 11: 1 / 3})
    assert meter.worst(1) == [(11, pytest.approx(1 / 3))]
    assert [i for i, _ in meter.worst()] == [11, 10]
    assert meter.worst(0) == []
    assert meter.update(pred, target) is None  # no indices: nothing recorded
    assert len(meter.per_image_iou) == 2
    perfect = image_mean_iou(target.clamp(max=2), target, 3)
    assert perfect[:2].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="indices"):
        meter.update(pred, target, indices=[1, 2])


def test_normalized_confusion():
    n = normalized_confusion(torch.tensor([[3, 1, 0], [0, 0, 0], [1, 0, 4]]))
    assert n.dtype == torch.float64
    expected = torch.tensor([[0.75, 0.25, 0.0], [0.0, 0.0, 0.0], [0.2, 0.0, 0.8]], dtype=torch.float64)
    torch.testing.assert_close(n, expected)


def test_errors():
    with pytest.raises(ValueError, match="7"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, 7], [1, 255]]), 3)
    with pytest.raises(ValueError, match="-1"):
        confusion_matrix(torch.zeros(2, 2, dtype=torch.long), torch.tensor([[0, -1], [1, 255]]), 3)
    with pytest.raises(ValueError, match="predicted.*5"):
        confusion_matrix(torch.tensor([[0, 5], [1, 1]]), torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="shapes"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="num_classes"):
        ConfusionMeter(0)
    with pytest.raises(ValueError, match="class names"):
        ConfusionMeter(3, ["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        ConfusionMeter(2, ["a", "a"])
    with pytest.raises(ValueError, match="square"):
        segmentation_metrics(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="non-negative"):
        segmentation_metrics(torch.tensor([[1, -1], [0, 1]]))
    meter = ConfusionMeter(3)
    with pytest.raises(ValueError, match="target values"):
        meter.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 3))
    assert meter.confusion.sum() == 0  # a rejected batch adds nothing


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs():
    meter = ConfusionMeter(3, device="cuda")
    meter.update(PRED[None].cuda(), TARGET[None].cuda(), indices=[0])
    assert meter.confusion.device.type == "cuda"
    assert meter.confusion.cpu().tolist() == CM
    cpu_meter = ConfusionMeter(3)  # state on the CPU, counting on the GPU
    cpu_meter.update(PRED[None].cuda(), TARGET[None].cuda())
    assert cpu_meter.confusion.tolist() == CM
