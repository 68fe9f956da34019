"""Tracking metrics against hand-computed cases and an independent loop implementation: continuous IoU,
centre error, strict success thresholds, inclusive precision, GOT-10k's frame exclusions and pooling, and
the two IoU conventions (the GOT-10k toolkit's rect_iou, worked by hand from its formulas, and the
geometric clip)."""
import json
import math

import numpy as np
import pytest

from visionzoo.tasks.tracking.metrics import (
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    SequenceResult,
    box_iou_xywh,
    center_error,
    got10k_sequence_ious,
    otb_sequence_scores,
    precision_curve,
    rect_iou,
    success_curve,
    summarize,
)

EPS = np.finfo(np.float64).eps  # the toolkit adds it to every union

NAN4 = [np.nan] * 4


def test_thresholds():
    assert SUCCESS_THRESHOLDS.shape == (21,) and SUCCESS_THRESHOLDS[0] == 0 and SUCCESS_THRESHOLDS[-1] == 1
    assert SUCCESS_THRESHOLDS[10] == 0.5
    assert np.array_equal(PRECISION_THRESHOLDS, np.arange(51))


def test_iou_hand_cases():
    gt = np.array([[0, 0, 10, 10]] * 6, dtype=float)
    pred = np.array([[0, 0, 10, 10],      # identical
                     [20, 20, 5, 5],      # disjoint
                     [5, 0, 10, 10],      # half shifted: 50 / 150
                     [10, 0, 10, 10],     # touching edges: continuous boxes do not overlap
                     [2, 2, 5, 5],        # contained: 25 / 100
                     [0, 0, 5, 10]])      # exactly half: 50 / 100
    assert np.allclose(box_iou_xywh(pred, gt), [1, 0, 50 / 150, 0, 0.25, 0.5], rtol=0, atol=1e-15)
    assert box_iou_xywh(pred, gt)[5] == 0.5
    # no +1 pixel: a +1 convention would give 4 / 14 here
    assert box_iou_xywh([[1, 1, 2, 2]], [[0, 0, 2, 2]])[0] == pytest.approx(1 / 7, abs=1e-15)
    assert box_iou_xywh([[0.5, 0, 1, 1]], [[0, 0, 1, 1]])[0] == pytest.approx(0.5 / 1.5, abs=1e-15)
    assert box_iou_xywh([0, 0, 10, 10], [5, 0, 10, 10]).shape == (1,)  # a single box works too


def test_iou_nan_and_empty_rows():
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], NAN4, [0, 0, 0, 0], [0, 0, -5, 10]])
    gt = np.array([NAN4, [0, 0, 0, 10], [0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    iou = box_iou_xywh(pred, gt)
    assert np.isnan(iou[:3]).all()                  # absent / zero-area truth, missing prediction
    assert iou[3] == 0 and iou[4] == 0              # an empty prediction against real truth is a miss
    with pytest.raises(ValueError, match="shape"):
        box_iou_xywh(np.zeros((2, 4)), np.zeros((3, 4)))


def test_center_error():
    a = np.array([[0, 0, 2, 2], [0, 0, 4, 4], NAN4])
    b = np.array([[3, 4, 2, 2], [4, 5, 2, 2], [0, 0, 1, 1]])
    err = center_error(a, b)
    assert err[0] == pytest.approx(5.0) and err[1] == pytest.approx(5.0)  # centres (1,1)->(4,5), (2,2)->(5,6)
    assert np.isnan(err[2])


def test_success_curve_strict_and_auc():
    gt = np.array([[0, 0, 10, 10]] * 4, dtype=float)
    pred = np.array([[0, 0, 5, 10], [0, 0, 10, 5], [0, 0, 10, 10], [50, 50, 10, 10]])
    ious = box_iou_xywh(pred, gt)
    assert list(ious) == [0.5, 0.5, 1.0, 0.0]
    curve = success_curve(ious)
    expected = np.array([0.75] * 10 + [0.25] * 10 + [0.0])  # IoU 0.5 does not count at t = 0.5; none at t = 1
    assert np.array_equal(curve, expected)
    assert otb_sequence_scores(pred, gt)["success_auc"] == pytest.approx(10 / 21, abs=1e-15)
    assert np.array_equal(success_curve([np.nan, 1.0]), [1.0] * 20 + [0.0])  # NaN frames are not counted
    assert np.isnan(success_curve([np.nan])).all()


def test_precision_inclusive():
    curve = precision_curve([20.0, 20.0001, 0.0, 50.0, np.nan, np.inf])
    assert curve.shape == (51,)
    assert curve[0] == pytest.approx(1 / 5)        # 0 <= 0; the NaN is not counted, inf never succeeds
    assert curve[20] == pytest.approx(2 / 5)       # exactly 20 px counts
    assert curve[21] == pytest.approx(3 / 5)
    assert curve[50] == pytest.approx(4 / 5)


def test_otb_sequence_excludes_absent_truth_and_counts_missing_predictions():
    gt = np.array([[0, 0, 10, 10], NAN4, [0, 0, 10, 10], [0, 0, 10, 10]])
    pred = np.array([[0, 0, 10, 10], [0, 0, 10, 10], NAN4, [3, 4, 10, 10]])
    scores = otb_sequence_scores(pred, gt)
    assert scores["frames"] == 3
    iou3 = (7 * 6) / (200 - 42)
    assert scores["mean_iou"] == pytest.approx((1 + 0 + iou3) / 3)
    assert scores["precision_curve"][5] == pytest.approx(2 / 3)  # errors 0, inf (missing), 5
    assert scores["precision_curve"][4] == pytest.approx(1 / 3)
    assert scores["precision_20"] == pytest.approx(2 / 3)
    assert np.array_equal(scores["success_curve"], success_curve([1.0, 0.0, iou3]))


def test_got10k_excludes_first_frame_cover_and_absent():
    gt = np.array([[10, 10, 20, 20]] * 5, dtype=float)
    pred = np.array([gt[0], [10, 10, 10, 20], gt[2], [100, 100, 20, 20], gt[4]])  # IoU exactly 0.5 at 1
    cover = np.array([8, 8, 0, 3, 8])
    absent = np.array([0, 0, 0, 0, 1])
    assert list(box_iou_xywh(pred, gt)) == [1, 0.5, 1, 0, 1]
    ious = got10k_sequence_ious(pred, gt, cover=cover, absent=absent)
    assert np.allclose(ious, [0.5, 0.0])  # frames 0 (init), 2 (cover 0) and 4 (absent) are dropped
    assert got10k_sequence_ious(pred, gt).size == 4
    summary = summarize([SequenceResult("s", pred, gt, cover=cover, absent=absent)])
    assert summary["ao"] == pytest.approx(0.25)        # with frames 0, 2 and 4 it would be 0.7
    assert summary["sr50"] == 0.0                      # 0.5 is not above 0.5
    assert summary["ao_frames"] == 2
    with pytest.raises(ValueError, match="cover"):
        got10k_sequence_ious(pred, gt, cover=cover[:3])


def test_got10k_bound_follows_the_toolkit_by_default_and_clips_geometrically_on_request():
    gt = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    pred = np.array([[0, 0, 10, 10], [-10, 0, 20, 10]])  # half outside the image on the left
    for convention in ("got10k", "geometric"):
        assert got10k_sequence_ious(pred, gt, iou_convention=convention)[0] == pytest.approx(0.5)
    # the toolkit moves x to 0 and keeps w = 20 (<= W - x): the box becomes [0, 0, 20, 10], IoU 100 / 200
    assert got10k_sequence_ious(pred, gt, bound=(100, 100))[0] == pytest.approx(0.5)
    # the geometric clip cuts the part left of the image: [0, 0, 10, 10], IoU 1
    assert got10k_sequence_ious(pred, gt, bound=(100, 100), iou_convention="geometric")[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="iou_convention.*got10k, geometric.*'toolkit'"):
        got10k_sequence_ious(pred, gt, iou_convention="toolkit")


def test_rect_iou_hand_worked_from_the_toolkit_formulas():
    """rect_iou(rects1, rects2, bound): x <- clip(x, 0, W), y <- clip(y, 0, H), w <- clip(w, 0, W - x),
    h <- clip(h, 0, H - y) for both; intersection max(0, min(x1 + w1, x2 + w2) - max(x1, x2)) x (same in y);
    IoU = inter / (area1 + area2 - inter + eps), clipped to [0, 1]. Each row worked out by hand."""
    bound = (100, 50)
    cases = [  # pred, gt, bounded IoU, unbounded IoU
        ([0, 0, 10, 10], [5, 0, 10, 10], 50 / (150 + EPS), 50 / (150 + EPS)),
        ([-10, 0, 20, 10], [0, 0, 10, 10], 100 / (200 + EPS), 100 / (200 + EPS)),  # bounded: [0, 0, 20, 10]
        ([-5, -5, 10, 10], [0, 0, 10, 10], 100 / (100 + EPS), 25 / (175 + EPS)),   # shifted on, size kept
        ([95, 45, 10, 10], [90, 40, 10, 10], 25 / (100 + EPS), 25 / (175 + EPS)),  # cut on the right / bottom
        ([120, 0, 10, 10], [95, 0, 10, 10], 0.0, 0.0),                            # x -> 100, w -> 0
        ([5, 5, 10, 10], [5, 5, 0, 10], 0.0, 0.0),                                # zero-size truth
        ([0, 0, 1e-8, 1e-8], [0, 0, 1e-8, 1e-8], 1e-16 / (1e-16 + EPS), 1e-16 / (1e-16 + EPS)),  # eps shows
    ]
    pred = np.array([c[0] for c in cases], dtype=float)
    gt = np.array([c[1] for c in cases], dtype=float)
    assert np.allclose(rect_iou(pred, gt, bound), [c[2] for c in cases], rtol=1e-12, atol=0)
    assert np.allclose(rect_iou(pred, gt), [c[3] for c in cases], rtol=1e-12, atol=0)
    assert rect_iou(pred, gt)[6] < 0.32  # tiny boxes: the epsilon in the union shows (1.0 without it)
    assert np.isnan(rect_iou([NAN4], [[0, 0, 1, 1]])).all()
    assert pred[1, 0] == -10  # the caller's arrays are not bounded in place (the toolkit's are)
    with pytest.raises(ValueError, match="shape"):
        rect_iou(np.zeros((2, 4)), np.zeros((3, 4)))


def test_zero_size_truth_scores_zero_under_the_toolkit_and_is_skipped_geometrically():
    gt = np.array([[10, 10, 20, 20], [10, 10, 20, 20], [10, 10, 0, 20], [0, 0, 0, 0], [10, 10, 20, 20]])
    pred = np.array([[10, 10, 20, 20]] * 5, dtype=float)
    cover = np.array([8, 8, 8, 0, 8])  # the all-zero box is an absent target (cover 0): dropped under both
    assert got10k_sequence_ious(pred, gt, cover).tolist() == [1.0, 0.0, 1.0]
    assert got10k_sequence_ious(pred, gt, cover, iou_convention="geometric").tolist() == [1.0, 1.0]
    toolkit = summarize([SequenceResult("z", pred, gt, cover=cover)])
    geometric = summarize([SequenceResult("z", pred, gt, cover=cover)], iou_convention="geometric")
    assert toolkit["ao"] == pytest.approx(2 / 3) and toolkit["ao_frames"] == 3
    assert geometric["ao"] == 1.0 and geometric["ao_frames"] == 2
    assert toolkit["iou_convention"] == "got10k" and geometric["iou_convention"] == "geometric"
    # OTB: no bound, frames with a positive-size truth only, the same under both
    for key in ("success_auc", "precision_20", "success_curve"):
        assert toolkit[key] == geometric[key]
    with pytest.raises(ValueError, match="iou_convention"):
        summarize([SequenceResult("z", pred, gt)], iou_convention="GOT10K")


def _toolkit_loop_iou(p, g, bound):
    """One row of the toolkit's rect_iou, written from its formulas with plain floats."""
    def bounded(b):
        x, y = min(max(b[0], 0.0), bound[0]), min(max(b[1], 0.0), bound[1])
        return x, y, min(max(b[2], 0.0), bound[0] - x), min(max(b[3], 0.0), bound[1] - y)
    (px, py, pw, ph), (gx, gy, gw, gh) = bounded(p), bounded(g)
    inter = max(0.0, min(px + pw, gx + gw) - max(px, gx)) * max(0.0, min(py + ph, gy + gh) - max(py, gy))
    return min(max(inter / (pw * ph + gw * gh - inter + np.finfo(float).eps), 0.0), 1.0)


def test_rect_iou_matches_a_loop_on_boxes_leaving_the_image():
    rng = np.random.default_rng(7)
    gt = np.column_stack([rng.uniform(-20, 120, (400, 2)), rng.uniform(0, 60, (400, 2))])
    pred = np.column_stack([gt[:, :2] + rng.normal(0, 10, (400, 2)), gt[:, 2:] * rng.uniform(0.5, 1.5, (400, 2))])
    bound = (100, 80)
    expected = [_toolkit_loop_iou(p, g, bound) for p, g in zip(pred.tolist(), gt.tolist())]
    assert np.allclose(rect_iou(pred, gt, bound), expected, rtol=0, atol=1e-12)
    # somewhere the two conventions differ: boxes reaching out on the left or top
    geometric = got10k_sequence_ious(pred, gt, bound=bound, iou_convention="geometric")
    toolkit = got10k_sequence_ious(pred, gt, bound=bound)
    assert toolkit.shape != geometric.shape or not np.allclose(toolkit, geometric)


def test_ao_is_pooled_over_frames_not_sequences():
    box = [0, 0, 10, 10]
    a = SequenceResult("short", np.array([box, box]), np.array([box, box]))
    far = [50, 50, 10, 10]
    b = SequenceResult("long", np.array([box, far, far, far]), np.array([box] * 4))
    s = summarize([a, b])
    assert s["ao"] == pytest.approx(0.25)               # (1 + 0 + 0 + 0) / 4 frames, not (1 + 0) / 2
    assert s["sr50"] == pytest.approx(0.25) and s["sr75"] == pytest.approx(0.25)
    assert [p["ao"] for p in s["per_sequence"]] == [1.0, 0.0]
    # OTB curves are per sequence, then averaged: AUC is the mean of the per-sequence AUCs
    aucs = [p["success_auc"] for p in s["per_sequence"]]
    assert aucs == pytest.approx([20 / 21, 5 / 21])     # frame 0 counts under OTB
    assert s["success_auc"] == pytest.approx(np.mean(aucs))
    assert s["success_auc"] == pytest.approx(np.mean(s["success_curve"]))
    assert s["num_sequences"] == 2 and s["num_frames"] == 6 and s["ao_frames"] == 4


def test_fps_from_update_times():
    box = [0, 0, 10, 10]
    a = SequenceResult("a", np.array([box] * 2), np.array([box] * 2), times=np.array([5.0, 0.5]))
    b = SequenceResult("b", np.array([box] * 4), np.array([box] * 4), times=np.array([10.0, 0.1, 0.1, 0.2]))
    assert a.fps == pytest.approx(2.0) and b.fps == pytest.approx(7.5)  # 3 updates / 0.4 s; init excluded
    s = summarize([a, b])
    assert s["fps"] == pytest.approx(4 / 0.9)           # all update frames / all update seconds
    assert [p["fps"] for p in s["per_sequence"]] == pytest.approx([2.0, 7.5])
    untimed = summarize([SequenceResult("c", np.array([box]), np.array([box]))])
    assert untimed["fps"] is None and untimed["ao"] is None  # a one-frame sequence has nothing to score


def test_summary_is_json_and_has_keys():
    rng = np.random.default_rng(0)
    gt = np.column_stack([rng.uniform(0, 100, (30, 2)), rng.uniform(5, 40, (30, 2))])
    pred = gt + rng.normal(0, 4, gt.shape)
    gt[7] = np.nan
    s = summarize([SequenceResult("x", pred, gt, cover=np.full(30, 8), times=np.full(30, 0.01))])
    json.dumps(s, allow_nan=False)
    assert set(s) >= {"success_auc", "success_curve", "precision_20", "precision_curve", "ao", "sr50", "sr75",
                      "fps", "num_sequences", "num_frames", "per_sequence"}
    assert len(s["success_curve"]) == 21 and len(s["precision_curve"]) == 51
    assert set(s["per_sequence"][0]) == {"name", "frames", "success_auc", "precision_20", "ao", "sr50",
                                         "sr75", "fps", "mean_iou"}
    assert s["ao_frames"] == 28  # frame 0 and the NaN frame dropped


def test_errors():
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    with pytest.raises(ValueError, match=r"'seq7'.*5 predicted .* 6 ground-truth"):
        summarize([SequenceResult("seq7", np.zeros((5, 4)), np.ones((6, 4)))])
    with pytest.raises(ValueError, match="no frames"):
        summarize([SequenceResult("empty", np.zeros((0, 4)), np.zeros((0, 4)))])
    with pytest.raises(ValueError, match="times"):
        summarize([SequenceResult("t", np.ones((3, 4)), np.ones((3, 4)), times=np.ones(2))])
    with pytest.raises(ValueError, match="ground-truth box"):
        summarize([SequenceResult("nan", np.ones((3, 4)), np.full((3, 4), np.nan))])
    with pytest.raises(ValueError, match="shape"):
        otb_sequence_scores(np.zeros((3, 5)), np.zeros((3, 5)))


def _loop_iou(p, g):
    ix = max(0.0, min(p[0] + p[2], g[0] + g[2]) - max(p[0], g[0]))
    iy = max(0.0, min(p[1] + p[3], g[1] + g[3]) - max(p[1], g[1]))
    inter = ix * iy
    return inter / (p[2] * p[3] + g[2] * g[3] - inter)


def test_auc_matches_independent_loop_on_random_boxes():
    rng = np.random.default_rng(123)
    results, loop_aucs, loop_precisions = [], [], []
    for k, n in enumerate((500, 137, 263)):
        gt = np.column_stack([rng.uniform(0, 200, (n, 2)), rng.uniform(1, 60, (n, 2))])
        pred = np.column_stack([gt[:, :2] + rng.normal(0, 15, (n, 2)),
                                gt[:, 2:] * rng.uniform(0.5, 1.5, (n, 2))])
        results.append(SequenceResult(f"r{k}", pred, gt))
        ious = [_loop_iou(p, g) for p, g in zip(pred.tolist(), gt.tolist())]
        errors = [math.hypot(p[0] + p[2] / 2 - g[0] - g[2] / 2, p[1] + p[3] / 2 - g[1] - g[3] / 2)
                  for p, g in zip(pred.tolist(), gt.tolist())]
        assert np.allclose(box_iou_xywh(pred, gt), ious, rtol=0, atol=1e-12)
        rates = [sum(iou > k / 20 for iou in ious) / n for k in range(21)]
        loop_aucs.append(sum(rates) / 21)
        loop_precisions.append(sum(e <= 20 for e in errors) / n)
        scores = otb_sequence_scores(pred, gt)
        assert abs(scores["success_auc"] - loop_aucs[-1]) < 1e-12
        assert abs(scores["precision_20"] - loop_precisions[-1]) < 1e-12
    s = summarize(results)
    assert abs(s["success_auc"] - sum(loop_aucs) / 3) < 1e-12
    assert abs(s["precision_20"] - sum(loop_precisions) / 3) < 1e-12
