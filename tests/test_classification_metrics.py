import json
import math

import pytest
import torch
import torch.nn.functional as F

from visionzoo.tasks.classification.metrics import ClassificationMeter

# A hand-made 3-class case. Class 2 is never predicted.
#   sample  target  logits      top-1  top-2 (ranked)
#   0       0       [3, 1, 0]   0      0, 1   -> top1 hit
#   1       0       [1, 3, 0]   1      1, 0   -> top2 hit
#   2       1       [0, 3, 1]   1      1, 2   -> top1 hit
#   3       1       [3, 0, 1]   0      0, 2   -> miss at k=2, hit at k=3
#   4       2       [1, 3, 2]   1      1, 2   -> top2 hit
#   5       2       [3, 0, 2]   0      0, 2   -> top2 hit
LOGITS = torch.tensor([[3.0, 1, 0], [1, 3, 0], [0, 3, 1], [3, 0, 1], [1, 3, 2], [3, 0, 2]])
TARGETS = torch.tensor([0, 0, 1, 1, 2, 2])
NAMES = ["cat", "dog", "bird"]


def small_meter(**kwargs):
    meter = ClassificationMeter(3, NAMES, topk=(1, 2, 5), **kwargs)
    meter.update(LOGITS, TARGETS)
    return meter


def test_confusion_matrix_and_topk():
    m = small_meter().compute()
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [1, 1, 0]]
    assert m["num_samples"] == 6
    assert m["top1"] == pytest.approx(2 / 6)
    assert m["top2"] == pytest.approx(5 / 6)
    assert m["top5"] == 1.0  # k clipped to the 3 classes
    assert set(m) >= {"top1", "top2", "top5", "loss", "num_samples", "macro_f1", "per_class", "confusion_matrix"}


def test_per_class_precision_recall_f1():
    m = small_meter().compute()
    pc = m["per_class"]
    assert list(pc) == NAMES
    for name in ("cat", "dog"):  # 1 correct of 3 predicted, of 2 true
        assert pc[name]["precision"] == pytest.approx(1 / 3)
        assert pc[name]["recall"] == pytest.approx(1 / 2)
        assert pc[name]["f1"] == pytest.approx(0.4)
        assert pc[name]["support"] == 2
    # never predicted: precision undefined -> 0, no NaN
    assert pc["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["macro_f1"] == pytest.approx((0.4 + 0.4 + 0.0) / 3)
    for values in pc.values():
        assert all(not math.isnan(v) for v in values.values())
    json.dumps(m)  # plain Python values only


def test_macro_f1_skips_classes_absent_from_targets_and_predictions():
    meter = ClassificationMeter(4, topk=(1,))
    meter.update(LOGITS.repeat(1, 1).new_zeros(0, 4), torch.zeros(0, dtype=torch.long))  # empty batch is a no-op
    logits = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0]])
    meter.update(logits, torch.tensor([0, 1]))
    m = meter.compute()
    assert m["macro_f1"] == 1.0
    assert m["per_class"]["3"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_loss_matches_torch_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(37, 5) * 3
    targets = torch.randint(0, 5, (37,))
    meter = ClassificationMeter(5)
    for chunk in range(0, 37, 10):
        meter.update(logits[chunk:chunk + 10], targets[chunk:chunk + 10])
    expected = F.cross_entropy(logits.double(), targets).item()
    assert meter.compute()["loss"] == pytest.approx(expected, rel=1e-12)
    assert small_meter().compute()["loss"] == pytest.approx(F.cross_entropy(LOGITS, TARGETS).item(), rel=1e-6)


def test_given_loss_sum_is_used():
    meter = ClassificationMeter(3, NAMES)
    meter.update(LOGITS[:4], TARGETS[:4], loss_sum=2.0)
    meter.update(LOGITS[4:], TARGETS[4:], loss_sum=1.0)
    assert meter.compute()["loss"] == pytest.approx(0.5)


def test_batching_does_not_change_results():
    torch.manual_seed(1)
    logits, targets = torch.randn(50, 7), torch.randint(0, 7, (50,))
    whole = ClassificationMeter(7)
    whole.update(logits, targets)
    parts = ClassificationMeter(7)
    for i in range(0, 50, 8):
        parts.update(logits[i:i + 8], targets[i:i + 8])
    a, b = whole.compute(), parts.compute()
    assert a.pop("loss") == pytest.approx(b.pop("loss"))
    assert a == b
    assert whole.misclassified(None) == parts.misclassified(None)


@pytest.mark.parametrize("bad", [[0, 3, 1], [-1, 0, 2], [0, 7, -2]])
def test_targets_out_of_range_raise_and_name_the_values(bad):
    meter = ClassificationMeter(3, NAMES)
    with pytest.raises(ValueError) as err:
        meter.update(LOGITS[:3], torch.tensor(bad))
    for v in bad:
        if not 0 <= v < 3:
            assert str(v) in str(err.value)
    assert "[0, 3)" in str(err.value)
    with pytest.raises(ValueError):
        meter.compute()  # the bad batch was not counted


def test_bad_shapes_and_arguments_raise():
    meter = ClassificationMeter(3)
    with pytest.raises(ValueError, match="shape"):
        meter.update(torch.randn(4, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets"):
        meter.update(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        meter.update(torch.randn(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="class names"):
        ClassificationMeter(3, ["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        ClassificationMeter(2, ["a", "a"])
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationMeter(0)


def test_empty_meter_raises_clear_error():
    with pytest.raises(ValueError, match="no samples"):
        ClassificationMeter(3).compute()


def test_misclassified_sorted_by_confidence_in_dataset_order():
    meter = ClassificationMeter(3, NAMES)
    meter.update(LOGITS[:3], TARGETS[:3])
    meter.update(LOGITS[3:], TARGETS[3:])
    wrong = meter.misclassified(10)
    # confidences: samples 1 and 3 e^3/(1+e+e^3) > sample 5 e^3/(1+e^2+e^3) > sample 4 e^3/(e+e^2+e^3)
    ids = [w[0] for w in wrong]
    assert sorted(ids[:2]) == [1, 3] and ids[2:] == [5, 4]
    idx, target, pred, conf = next(w for w in wrong if w[0] == 1)
    assert (target, pred) == (0, 1)
    assert conf == pytest.approx(torch.softmax(LOGITS[1], 0).max().item(), rel=1e-6)
    assert sorted(w[0] for w in meter.misclassified(2)) == [1, 3]
    assert all(w[3] >= v[3] for w, v in zip(wrong, wrong[1:]))
    assert ClassificationMeter(3).misclassified(5) == []


def test_misclassified_uses_given_indices():
    meter = ClassificationMeter(3, NAMES)
    meter.update(LOGITS, TARGETS, indices=torch.arange(100, 106))
    ids = [w[0] for w in meter.misclassified(4)]
    assert sorted(ids[:2]) == [101, 103] and ids[2:] == [105, 104]


def test_misclassified_ties_keep_dataset_order():
    meter = ClassificationMeter(2)
    meter.update(torch.tensor([[2.0, 0.0]] * 5), torch.tensor([1, 0, 1, 1, 0]))
    assert [w[0] for w in meter.misclassified(None)] == [0, 2, 3]


def test_state_tensors_round_trip():
    meter = small_meter()
    state = meter.state_tensors()
    assert [t.dtype for t in state] == [torch.int64, torch.int64, torch.float64, torch.int64]
    fresh = ClassificationMeter(3, NAMES, topk=(1, 2, 5))
    fresh.load_state_tensors(state)
    assert fresh.compute() == meter.compute()
    state[0] += 100  # copies: the meter is unaffected
    assert meter.compute()["confusion_matrix"][0][0] == 1


def test_summed_state_of_two_meters_equals_one_meter_over_all_data():
    torch.manual_seed(2)
    logits, targets = torch.randn(64, 6), torch.randint(0, 6, (64,))
    everything = ClassificationMeter(6, topk=(1, 3))
    everything.update(logits, targets)
    a, b = ClassificationMeter(6, topk=(1, 3)), ClassificationMeter(6, topk=(1, 3))
    a.update(logits[:20], targets[:20])
    b.update(logits[20:45], targets[20:45])
    b.update(logits[45:], targets[45:])
    summed = [x + y for x, y in zip(a.state_tensors(), b.state_tensors())]  # what all_reduce(SUM) does
    a.load_state_tensors(summed)
    merged, expected = a.compute(), everything.compute()
    assert merged.pop("loss") == pytest.approx(expected.pop("loss"), rel=1e-12)
    assert merged == expected


def test_load_state_tensors_checks_shapes():
    meter = ClassificationMeter(3)
    with pytest.raises(ValueError):
        meter.load_state_tensors([torch.zeros(2, 2, dtype=torch.long)])
    state = meter.state_tensors()
    state[0] = torch.zeros(4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="confusion"):
        meter.load_state_tensors(state)
