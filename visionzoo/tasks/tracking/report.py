"""The tracking report: one self-contained HTML file with the GOT-10k and OTB numbers from
:func:`visionzoo.tasks.tracking.metrics.summarize`, OTB-style success and precision plots, a per-sequence
table and frames of the best and worst sequences with ground-truth and predicted boxes, the training log
and run information. :func:`success_plot`, :func:`precision_plot` and :func:`draw_boxes` are reusable on
their own (e.g. to compare several trackers in one figure)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from visionzoo.reports.figures import new_figure
from visionzoo.reports.html import HtmlReport, add_run_info, add_training_curves, escape
from visionzoo.tasks.tracking.metrics import (
    PRECISION_AT,
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    box_iou_xywh,
)

__all__ = ["build_tracking_report", "draw_boxes", "precision_plot", "success_plot"]

GT_COLOR = (0, 200, 83)      # ground truth: green
PRED_COLOR = (230, 25, 25)   # prediction: red
LINE_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
LINE_STYLES = ["-", "--", "-."]
MAX_FRAME_SIZE = 320  # px, longest side of a showcase frame in the report
DEFINITIONS = (
    "AO (average overlap), SR0.5 and SR0.75 follow GOT-10k: the IoU of every frame except each sequence's "
    "first (the initialisation) and frames where the target is not visible (cover == 0 or absent), pooled "
    "over all sequences (not averaged per sequence); SR_t is the fraction of those frames with IoU > t. "
    "Success AUC and precision@20 px follow OTB: per sequence, over every frame with ground truth (the first "
    "included), the success rate at 21 overlap thresholds 0, 0.05, ..., 1 (IoU > t) averaged into the AUC, "
    "and the fraction of frames with centre error <= 20 px; both are then averaged over sequences. IoU is "
    "computed on continuous x, y, w, h boxes (no +1 pixel); a frame without a prediction scores IoU 0. "
    "fps counts update() calls per second of their wall time (initialisation excluded).")


# ---- figures --------------------------------------------------------------------------------------
def _curves(curves: Mapping[str, Any], length: int, what: str) -> dict[str, np.ndarray]:
    if not curves:
        raise ValueError(f"{what} needs at least one curve")
    out = {}
    for name, curve in curves.items():
        arr = np.asarray(curve, dtype=np.float64).ravel()
        if arr.shape != (length,):
            raise ValueError(f"{what}: curve {name!r} has {arr.size} values, expected {length}")
        out[str(name)] = arr
    return out


def _score_key(score: float) -> float:
    return -score if math.isfinite(score) else math.inf


def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _plot(curves: dict[str, np.ndarray], scores: dict[str, float], x: np.ndarray, legend_loc: str) -> Figure:
    fig = new_figure(5.4, 4.2)
    ax = fig.add_subplot()
    for i, name in enumerate(sorted(curves, key=lambda n: _score_key(scores[n]))):  # best first, as OTB
        ax.plot(x, curves[name], color=LINE_COLORS[i % len(LINE_COLORS)],
                linestyle=LINE_STYLES[(i // len(LINE_COLORS)) % len(LINE_STYLES)], linewidth=1.8,
                label=f"[{scores[name]:.3f}] {name}")
    ax.set_xlim(float(x[0]), float(x[-1]))
    ax.set_ylim(0, 1.02)
    ax.legend(loc=legend_loc, fontsize=8, frameon=True)
    return fig


def success_plot(curves: Mapping[str, Any], title: str = "Success plot of OPE") -> Figure:
    """Success rate vs overlap threshold, one line per name -> (21,) curve; the legend gives each AUC (the
    curve's mean) as "[0.xxx] name", best first, as OTB plots do."""
    curves = _curves(curves, len(SUCCESS_THRESHOLDS), "success_plot")
    fig = _plot(curves, {n: float(c.mean()) for n, c in curves.items()}, SUCCESS_THRESHOLDS, "lower left")
    _style(fig.axes[0], title, "Overlap threshold", "Success rate")
    return fig


def precision_plot(curves: Mapping[str, Any], title: str = "Precision plot of OPE") -> Figure:
    """Precision vs location error threshold 0..50 px, one line per name -> (51,) curve; the legend gives
    each precision at 20 px as "[0.xxx] name", best first, as OTB plots do."""
    curves = _curves(curves, len(PRECISION_THRESHOLDS), "precision_plot")
    fig = _plot(curves, {n: float(c[PRECISION_AT]) for n, c in curves.items()}, PRECISION_THRESHOLDS,
                "lower right")
    ax = fig.axes[0]
    ax.axvline(PRECISION_AT, color="#999999", linestyle=":", linewidth=1)
    _style(ax, title, "Location error threshold (px)", "Precision")
    return fig


# ---- frames ---------------------------------------------------------------------------------------
def _box_or_none(box: Any) -> np.ndarray | None:
    if box is None:
        return None
    arr = np.asarray(box, dtype=np.float64).ravel()
    return arr if arr.shape == (4,) and np.isfinite(arr).all() else None


def _rgb_image(rgb: Any) -> Image.Image:
    if isinstance(rgb, Image.Image):
        return rgb.convert("RGB")
    return Image.fromarray(np.asarray(rgb, dtype=np.uint8), "RGB")


def draw_boxes(rgb: Any, gt: Any, pred: Any, line_width: int | None = None) -> Image.Image:
    """A copy of `rgb` (H x W x 3 uint8 array or PIL image) with the ground-truth x, y, w, h box in green and
    the predicted one in red on top; a None / NaN box is not drawn. The line width grows with the image
    so boxes stay visible on large frames."""
    image = _rgb_image(rgb).copy()
    draw = ImageDraw.Draw(image)
    lw = line_width or max(1, round(max(image.size) / 160))
    for box, color in ((_box_or_none(gt), GT_COLOR), (_box_or_none(pred), PRED_COLOR)):
        if box is None:
            continue
        x, y, w, h = box
        x1, x2 = sorted((x, x + w))
        y1, y2 = sorted((y, y + h))
        draw.rectangle([x1, y1, x2, y2], outline=color, width=lw)
    return image


def _frame_cell(index: int, rgb: Any, gt: Any, pred: Any) -> tuple[Image.Image, str]:
    """A frame shrunk to at most MAX_FRAME_SIZE px with its boxes drawn at that size, and its caption."""
    image = _rgb_image(rgb)
    gt_box, pred_box = _box_or_none(gt), _box_or_none(pred)
    scale = min(1.0, MAX_FRAME_SIZE / max(image.size))
    if scale < 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    cell = draw_boxes(image, None if gt_box is None else gt_box * scale,
                      None if pred_box is None else pred_box * scale)
    if gt_box is None:
        iou = math.nan  # nothing to score against
    elif pred_box is None:
        iou = 0.0  # a missing prediction is a failure, as in the metrics
    else:
        iou = float(box_iou_xywh(pred_box, gt_box)[0])
    return cell, f"frame {int(index)} \u00b7 IoU " + ("\u2014" if math.isnan(iou) else f"{iou:.3f}")


# ---- sections -------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "\u2014"
    return f"{float(value):.{digits}f}"


def _summary(report: HtmlReport, metrics: Mapping, model_summary: Mapping | None) -> None:
    report.add_section("Summary")
    stats: list[tuple[str, Any]] = [
        ("AO", _fmt(metrics.get("ao"))), ("SR0.5", _fmt(metrics.get("sr50"))),
        ("SR0.75", _fmt(metrics.get("sr75"))), ("success AUC", _fmt(metrics.get("success_auc"))),
        ("precision@20 px", _fmt(metrics.get("precision_20"))), ("fps", _fmt(metrics.get("fps"), 1))]
    for key, label in (("num_sequences", "sequences"), ("num_frames", "frames")):
        if metrics.get(key) is not None:
            stats.append((label, int(metrics[key])))
    report.add_stats(stats)
    report.add_html(f'<p class="caption">{escape(DEFINITIONS)}</p>')
    if model_summary:
        report.add_key_values("Model", dict(model_summary))


def _curves_section(report: HtmlReport, metrics: Mapping, name: str) -> None:
    report.add_section("Success and precision plots")
    if metrics.get("success_curve") is None and metrics.get("precision_curve") is None:
        report.add_note("No success or precision curves available.")
        return
    if metrics.get("success_curve") is not None:
        report.add_figure(None, success_plot({name: metrics["success_curve"]}),
                          caption="Fraction of frames whose IoU exceeds each overlap threshold, per sequence "
                                  "and then averaged over sequences; the legend gives the AUC (mean over the "
                                  "21 thresholds).")
    if metrics.get("precision_curve") is not None:
        report.add_figure(None, precision_plot({name: metrics["precision_curve"]}),
                          caption="Fraction of frames whose predicted centre lies within each distance of "
                                  "the ground-truth centre, averaged over sequences; the legend gives the "
                                  "value at 20 px.")


def _per_sequence(report: HtmlReport, metrics: Mapping) -> None:
    report.add_section("Per-sequence results")
    rows = list(metrics.get("per_sequence") or [])
    if not rows:
        report.add_note("No per-sequence results available.")
        return

    def key(row: Mapping) -> tuple[bool, float]:
        ao = row.get("ao")
        return (ao is None, -float(ao) if ao is not None else 0.0)

    rows.sort(key=key)
    report.add_table(None, ["sequence", "frames", "AO", "SR0.5", "success AUC", "precision@20", "fps"],
                     [[r.get("name"), r.get("frames"), r.get("ao"), r.get("sr50"), r.get("success_auc"),
                       r.get("precision_20"), r.get("fps")] for r in rows],
                     caption="Sorted by AO, best first. AO and SR0.5 use the GOT-10k frames of each "
                             "sequence (first frame and invisible target excluded); success AUC and "
                             "precision@20 the OTB frames (all with ground truth).")


def _showcase(report: HtmlReport, showcase: Sequence[Mapping]) -> None:
    report.add_section("Best and worst sequences")
    if not showcase:
        report.add_note("No frames were kept for the report.")
        return
    report.add_html('<p class="caption">Ground truth in green, prediction in red; frames are shown at most '
                    f"{MAX_FRAME_SIZE} px wide or high.</p>")
    for item in showcase:
        frames = list(item.get("frames") or [])
        label, name = item.get("label"), str(item.get("name", ""))
        heading = f"{label}: {name}" if label else name
        heading += f" (AO {_fmt(item.get('ao'))})"
        if not frames:
            report.add_note("No frames.", title=heading)
            continue
        cells = [_frame_cell(index, rgb, gt, pred) for index, rgb, gt, pred in frames]
        report.add_image_grid(heading, cells, columns=min(4, len(cells)), max_size=MAX_FRAME_SIZE)


def build_tracking_report(
    out_path: str | Path,
    *,
    title: str,
    metrics: Mapping,
    showcase: Sequence[Mapping] = (),
    log_records: Sequence[dict] | None = None,
    model_summary: Mapping | None = None,
    run_info: Mapping | None = None,
) -> Path:
    """Write the report for `metrics` (the dict from :func:`summarize`) to `out_path` and return its path.

    `showcase`: dicts {"name", "label" ("best" / "worst"), "ao", "frames": [(frame index, H x W x 3 uint8
    RGB, ground-truth x, y, w, h or None, predicted x, y, w, h)]}. The curves are labelled with
    metrics["tracker"] when present, else the title."""
    parts = []
    if metrics.get("num_sequences") is not None:
        parts.append(f"{int(metrics['num_sequences']):,} sequences")
    if metrics.get("num_frames") is not None:
        parts.append(f"{int(metrics['num_frames']):,} frames")
    report = HtmlReport(title, subtitle=" \u00b7 ".join(["Tracking report"] + parts))
    _summary(report, metrics, model_summary)
    _curves_section(report, metrics, str(metrics.get("tracker") or title))
    _per_sequence(report, metrics)
    _showcase(report, list(showcase))
    add_training_curves(report, log_records)
    add_run_info(report, run_info)
    return report.write(out_path)
