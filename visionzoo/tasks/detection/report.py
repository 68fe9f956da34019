"""The detection report: one self-contained HTML file built from CocoEvaluator metrics (COCO numbers per
iou type, per-class AP, precision-recall curves), example images with ground-truth and predicted boxes
/ masks (drawn by visionzoo.inference.draw, as the Detector draws them), the run log and run information."""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from visionzoo.inference.draw import GT_COLOR, PRED_COLOR, draw_detections, mask_array, to_numpy
from visionzoo.models.utils import unwrap
from visionzoo.reports.figures import new_figure
from visionzoo.reports.html import HtmlReport, add_run_info, add_training_curves, escape

__all__ = ["build_detection_report", "measured_model_summary"]

IOU_TYPE_TITLES = {"bbox": "box", "segm": "mask"}
METRIC_DESCRIPTIONS = {
    "AP": "AP @ IoU 0.50:0.95 (primary COCO metric)",
    "AP50": "AP @ IoU 0.50 (PASCAL-style)",
    "AP75": "AP @ IoU 0.75 (strict)",
    "APs": "AP, small objects (area < 32\u00b2 px)",
    "APm": "AP, medium objects (32\u00b2 \u2013 96\u00b2 px)",
    "APl": "AP, large objects (area > 96\u00b2 px)",
    "AR1": "AR, 1 detection per image",
    "AR10": "AR, 10 detections per image",
    "AR100": "AR, 100 detections per image",
    "ARs": "AR, small objects",
    "ARm": "AR, medium objects",
    "ARl": "AR, large objects",
}
METRIC_NAMES = tuple(METRIC_DESCRIPTIONS)

# lines on white: matplotlib's tab20, the dark shades first
LINE_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
               "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"]
MAX_PR_CLASSES = 20
PR_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]
MAX_AP_BARS = 80
MAX_DRAWN_PREDICTIONS = 50


def _scaled(image: Image.Image, target: Mapping, scale: float, size: tuple[int, int]) -> dict:
    boxes = to_numpy(target.get("boxes", np.zeros((0, 4))), np.float64).reshape(-1, 4) * scale
    labels = target.get("labels", [])
    labels = [str(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    out = {"boxes": boxes, "labels": labels, "scores": target.get("scores")}
    if target.get("masks") is not None:
        out["masks"] = mask_array(target["masks"], boxes.shape[0], size)
    return out


def _example_image(image: Image.Image, gt: Mapping, pred: Mapping, score_threshold: float,
                   min_side: int = 384, max_side: int = 640) -> tuple[Image.Image, str]:
    """Ground truth (green, dashed) and predictions (magenta) drawn on the image, resized so that its
    longer side is in [min_side, max_side]; plus a caption."""
    w, h = image.size
    longest = max(w, h, 1)
    scale = min(max(longest, min_side), max_side) / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    canvas = image.convert("RGB").resize(size, resample) if scale != 1 else image.convert("RGB")
    g = _scaled(image, gt, scale, size)
    p = _scaled(image, pred, scale, size)
    scores = (np.ones(len(p["labels"])) if p["scores"] is None
              else to_numpy(p["scores"], np.float64).reshape(-1))
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= score_threshold][:MAX_DRAWN_PREDICTIONS]
    captions: list = []  # ground-truth and prediction captions keep clear of each other
    canvas = draw_detections(canvas, g["boxes"], g["labels"], masks=g.get("masks"), color_by_label=False,
                             color=GT_COLOR, dashed=True, text_position="bottom", occupied=captions)
    p_masks = p.get("masks")
    canvas = draw_detections(canvas, p["boxes"][order], [p["labels"][i] for i in order],
                             scores=scores[order] if p["scores"] is not None else None,
                             masks=p_masks[order] if p_masks is not None else None, color_by_label=False,
                             color=PRED_COLOR, occupied=captions)
    parts = []
    if gt.get("image_id") is not None:
        parts.append(f"image {gt['image_id']}")
    parts.append(f"{len(g['labels'])} ground truth")
    parts.append(f"{len(order)} of {len(p['labels'])} predictions shown (score \u2265 {score_threshold:g})")
    return canvas, " \u00b7 ".join(parts)


# ---- model table ----------------------------------------------------------------------------------
def measured_model_summary(model, sample, summary: Mapping | None = None) -> dict:
    """`summary` with the detector's real input size and GFLOPs, measured on `sample` = (image tensor
    (3, H, W) in [0, 1], target), one evaluation sample (its ``proposals`` feed Fast R-CNN).

    A detector resizes each image itself (shorter side to ``min_size``, longer side at most
    ``max_size``), so a config's ``data.input_size`` says nothing about it; the size reported is the
    one the backbone sees. GFLOPs are multiply-adds (FlopCounterMode's count / 2, as in the
    classification table) of one inference forward on that image, on the CPU: the RoI heads' share
    depends on how many proposals the image yields, so the figure is for this image."""
    out = dict(summary or {})
    net = unwrap(model)
    transform = getattr(net, "transform", None)
    image, target = sample
    image = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    if transform is not None and hasattr(transform, "min_size"):
        min_size = transform.min_size[-1] if isinstance(transform.min_size, (list, tuple)) else transform.min_size
        out["resize"] = f"shorter side {int(min_size)}, longer side at most {int(transform.max_size)}"
    proposals = None
    if getattr(net, "needs_proposals", False):
        proposals = target.get("proposals") if isinstance(target, Mapping) else None
        if proposals is None:
            out["gflops"] = None
            return out
        proposals = [proposals.as_subclass(torch.Tensor).float()]
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            x = [image.to(device).float()]
            if transform is not None:
                out["input_size"] = [int(v) for v in transform(x)[0].tensors.shape[1:]]
            else:
                out["input_size"] = [int(v) for v in image.shape]
            with FlopCounterMode(display=False) as counter:
                net(x, None, proposals=[p.to(device) for p in proposals]) if proposals is not None else net(x)
        out["gflops"] = counter.get_total_flops() / 2 / 1e9
        out["gflops_measured_on"] = (f"one {image.shape[-1]}\u00d7{image.shape[-2]} image of the evaluated split"
                                     + (f", {len(proposals[0])} proposals" if proposals is not None else ""))
    except Exception as e:  # a model this cannot run: the report still gets written, saying why
        out["gflops"] = None
        out["gflops_measured_on"] = f"not measured ({type(e).__name__}: {e})"[:200]
    finally:
        net.train(was_training)
    return out


# ---- figures --------------------------------------------------------------------------------------
def _style(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _truncate(text: str, width: int = 18) -> str:
    """Shortened in the middle, so that names differing only at the end stay distinguishable."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2 + (width - 1) % 2
    return text[:head] + "\u2026" + text[len(text) - (width - 1 - head):]


def _ap_bars(names: Sequence[str], ap: Sequence[float], ap50: Sequence[float], title: str):
    n = len(names)
    fig = new_figure(float(np.clip(0.32 * n + 2.5, 5.5, 15.0)), 3.3)
    ax = fig.add_subplot()
    x = np.arange(n)
    ax.bar(x - 0.2, ap50, width=0.4, color="#9ecae9", label="AP50")
    ax.bar(x + 0.2, ap, width=0.4, color="#4c78a8", label="AP@[.50:.95]")
    rotate = n > 6 or any(len(s) > 10 for s in names)
    ax.set_xticks(x, [_truncate(s) for s in names], rotation=45 if rotate else 0,
                  ha="right" if rotate else "center", rotation_mode="anchor", fontsize=9 if n <= 30 else 7)
    if n <= 25:
        for xi, v in zip(x, ap):
            ax.annotate(f"{v:.2f}", (xi + 0.2, v), textcoords="offset points", xytext=(0, 2), ha="center",
                        va="bottom", fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_xlim(-0.6, n - 0.4)
    _style(ax, title, "", "AP")
    ax.grid(False, axis="x")
    ax.legend(fontsize=8, frameon=False, loc="upper right", ncols=2)
    return fig


def _pr_figure(pr_curves: Mapping, per_class: Mapping, iou_types: Sequence[str], order: Sequence[str]):
    """One panel per iou type; a line per class (at most MAX_PR_CLASSES, the most frequent)."""
    panels = []
    for t in iou_types:
        curves = (pr_curves.get(t) or {})
        precision = {k: v for k, v in (curves.get("precision") or {}).items() if v is not None}
        if precision and curves.get("recall"):
            panels.append((t, curves, precision))
    if not panels:
        return None, 0
    fig = new_figure(10.5, 3.8 * len(panels))
    axes = fig.subplots(len(panels), 1, squeeze=False).ravel()
    shown_max = 0
    for ax, (t, curves, precision) in zip(axes, panels):
        stats = per_class.get(t) or {}
        rank = {name: i for i, name in enumerate(order)}
        names = sorted(precision, key=lambda k: (-(stats.get(k, {}).get("num_gt") or 0), rank.get(k, 1 << 30), k))
        names = names[:MAX_PR_CLASSES]
        names.sort(key=lambda k: (rank.get(k, 1 << 30), k))
        shown_max = max(shown_max, len(names))
        recall = np.asarray(curves["recall"], dtype=np.float64)
        cmap = [LINE_COLORS[i % len(LINE_COLORS)] for i in range(len(names))]
        # Curves often coincide (all at precision 1.0 up to some recall): each later line is drawn
        # thinner on top of the earlier ones, so coinciding stretches show as nested bands, and each
        # class has its own marker at recall positions staggered against the other classes'.
        k = len(names)
        every = max(4, len(recall) // 8)
        for i, name in enumerate(names):
            ap50 = stats.get(name, {}).get("AP50")
            label = f"{_truncate(name, 16)} ({ap50:.2f})" if isinstance(ap50, numbers.Real) else _truncate(name, 16)
            width = 1.2 + 2.6 * (k - 1 - i) / max(1, k - 1)
            ax.plot(recall, precision[name], color=cmap[i], linewidth=width, alpha=0.9, label=label,
                    marker=PR_MARKERS[i % len(PR_MARKERS)], markersize=4.5, markeredgewidth=0.8,
                    markevery=(int(round(i * every / k)) % every, every), solid_capstyle="butt")
        ax.set_xlim(0, 1.0)
        ax.set_ylim(0, 1.06)
        thr = curves.get("iou_threshold", 0.5)
        _style(ax, f"{IOU_TYPE_TITLES.get(t, t).capitalize()} precision\u2013recall at IoU {thr:g}", "recall",
               "precision")
        ax.legend(fontsize=7.5, frameon=False, loc="center left", bbox_to_anchor=(1.01, 0.5),
                  title="class (AP50)", title_fontsize=8, ncols=1 if len(names) <= 14 else 2)
    return fig, shown_max


# ---- sections -------------------------------------------------------------------------------------
def _value(v: Any) -> Any:
    """-1 (undefined in COCOeval) and missing values become None (shown as a dash)."""
    if isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v) >= 0:
        return float(v)
    return None


def _iou_types(metrics: Mapping) -> list[str]:
    types = [t for t in metrics.get("iou_types") or [] if t in IOU_TYPE_TITLES]
    if not types:
        types = [t for t in IOU_TYPE_TITLES if f"{t}_AP" in metrics]
    return types


def _display(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, numbers.Integral) for v in value):
        return "\u00d7".join(str(int(v)) for v in value)
    return value


def _summary(report: HtmlReport, metrics: Mapping, types: Sequence[str], model_summary: Mapping | None) -> None:
    report.add_section("Summary")
    stats: list[tuple[str, Any]] = []
    for t in types:
        for name in ("AP", "AP50") if len(types) > 1 else ("AP", "AP50", "AP75"):
            v = _value(metrics.get(f"{t}_{name}"))
            stats.append((f"{IOU_TYPE_TITLES[t]} {name}", f"{v:.3f}" if v is not None else "\u2014"))
    for key, label in (("num_images", "images"), ("num_detections", "detections")):
        if isinstance(metrics.get(key), numbers.Integral):
            stats.append((label, metrics[key]))
    report.add_stats(stats)
    if types:
        header = ["metric", "meaning", *(f"{IOU_TYPE_TITLES[t]} ({t})" for t in types)]
        rows = [[name, METRIC_DESCRIPTIONS[name], *(_value(metrics.get(f"{t}_{name}")) for t in types)]
                for name in METRIC_NAMES]
        report.add_table("COCO metrics", header, rows,
                         caption="COCOeval numbers as fractions in [0, 1]; AR values are averaged over IoU "
                                 "0.50:0.95. \u2014 where undefined (no ground truth in that area range; "
                                 "COCOeval reports -1).")
    else:
        report.add_note("No COCO metrics available.")
    summaries = metrics.get("coco_summary") or {}
    for t in types:
        if summaries.get(t):
            report.add_html(f"<details><summary>COCOeval output ({escape(t)})</summary>"
                            f"<pre>{escape(summaries[t])}</pre></details>")
    if model_summary:
        report.add_key_values("Model", {k: _display(v) for k, v in model_summary.items()})




def _class_order(class_names: Sequence[str], per_class: Mapping) -> list[str]:
    seen = {n for t in per_class.values() for n in (t or {})}
    return [n for n in class_names if n in seen] + sorted(seen - set(class_names))


def _per_class(report: HtmlReport, metrics: Mapping, types: Sequence[str], order: Sequence[str]) -> None:
    report.add_section("Per-class AP")
    per_class = metrics.get("per_class") or {}
    if not order:
        report.add_note("No per-class metrics available.")
        return
    header = ["class", "ground truth", "detections"]
    for t in types:
        header += [f"{IOU_TYPE_TITLES[t]} AP", f"{IOU_TYPE_TITLES[t]} AP50"]
    rows = []
    for name in order:
        first = next((per_class[t][name] for t in types if name in (per_class.get(t) or {})), {})
        row = [name, first.get("num_gt"), first.get("num_detections")]
        for t in types:
            entry = (per_class.get(t) or {}).get(name, {})
            row += [_value(entry.get("AP")), _value(entry.get("AP50"))]
        rows.append(row)
    report.add_table(None, header, rows,
                     caption="AP@[.50:.95] and AP50 per category from COCOeval's precision array (all areas, "
                             "100 detections per image); \u2014 for a category without ground truth in the "
                             "evaluated images. Ground truth excludes crowd regions.")
    for t in types:
        entries = [(n, (per_class.get(t) or {}).get(n, {})) for n in order]
        entries = [(n, e) for n, e in entries if _value(e.get("AP")) is not None]
        if not entries:
            continue
        caption = None
        if len(entries) > MAX_AP_BARS:
            entries = sorted(entries, key=lambda p: p[1]["AP"])[:MAX_AP_BARS]
            caption = f"The {MAX_AP_BARS} weakest of {len(order)} classes."
        title = f"{IOU_TYPE_TITLES[t].capitalize()} AP per class"
        fig = _ap_bars([n for n, _ in entries], [float(e["AP"]) for _, e in entries],
                       [float(_value(e.get("AP50")) or 0.0) for _, e in entries], title)
        report.add_figure(title, fig, caption=caption)


def _pr_section(report: HtmlReport, metrics: Mapping, types: Sequence[str], order: Sequence[str]) -> None:
    report.add_section("Precision\u2013recall curves")
    fig, shown = _pr_figure(metrics.get("pr_curves") or {}, metrics.get("per_class") or {}, types, order)
    if fig is None:
        report.add_note("No precision-recall curves available.")
        return
    total = len(order)
    more = f" Shown: the {shown} of {total} classes with the most ground truth." if total > shown else ""
    report.add_figure(None, fig, caption="Interpolated precision at 101 recall points (COCOeval, all areas, "
                                         "100 detections per image); the legend gives each class's AP50." + more)


_LEGEND = (
    '<p class="legend" style="display:flex;gap:22px;align-items:center;flex-wrap:wrap;margin:4px 0 10px">'
    f'<span><span style="display:inline-block;width:30px;border-top:3px dashed {GT_COLOR};vertical-align:middle;'
    'margin-right:6px"></span>ground truth, label below the box (translucent green: mask)</span>'
    f'<span><span style="display:inline-block;width:30px;border-top:3px solid {PRED_COLOR};vertical-align:middle;'
    'margin-right:6px"></span>prediction, label and score above the box (translucent magenta: mask)</span></p>'
)


def _examples(report: HtmlReport, examples, score_threshold: float, split: str | None) -> None:
    report.add_section("Example detections")
    if not examples:
        report.add_note("No example images are available for this dataset.")
        return
    items = [_example_image(image, gt, pred, score_threshold) for image, gt, pred in examples]
    report.add_html(_LEGEND)
    source = f"images of the {split} split" if split else "evaluated images"
    report.add_image_grid(None, items, columns=2, max_size=640,
                          caption=f"{len(items)} {source}; predictions below score {score_threshold:g} "
                                  "are not drawn.")



def build_detection_report(
    out_path: str | Path,
    *,
    title: str,
    metrics: Mapping,
    class_names: Sequence[str],
    examples: Sequence[tuple[Image.Image, Mapping, Mapping]] | None = None,
    log_records: Sequence[dict] | None = None,
    model_summary: Mapping | None = None,
    run_info: Mapping | None = None,
    score_threshold: float = 0.5,
    split: str | None = None,
) -> Path:
    """Write the detection report for `metrics` (from ``CocoEvaluator.compute()``) to `out_path` as one
    self-contained HTML file and return its path.

    `examples` are (image, ground truth, prediction) with ``boxes`` (N, 4 XYXY in image coordinates),
    ``labels`` (names), prediction ``scores`` and optional ``masks``; a ground truth's optional
    ``image_id`` goes into the caption. Predictions scoring below `score_threshold` are not drawn.
    Missing pieces (no log, no examples, no run info) become a short note. `split` names the evaluated
    split in the captions (default: ``run_info["evaluated"]["split"]`` when there)."""
    if split is None and isinstance(run_info, Mapping) and isinstance(run_info.get("evaluated"), Mapping):
        split = run_info["evaluated"].get("split")
    class_names = [str(c) for c in class_names]
    types = _iou_types(metrics)
    order = _class_order(class_names, metrics.get("per_class") or {})
    parts = []
    if isinstance(metrics.get("num_images"), numbers.Integral):
        parts.append(f"{int(metrics['num_images']):,} images")
    parts.append(f"{len(class_names)} classes")
    if types:
        parts.append(" + ".join(IOU_TYPE_TITLES[t] for t in types) + " AP")
    report = HtmlReport(title, subtitle="Detection report \u00b7 " + " \u00b7 ".join(parts))
    _summary(report, metrics, types, model_summary)
    add_training_curves(report, log_records)
    _per_class(report, metrics, types, order)
    _pr_section(report, metrics, types, order)
    _examples(report, examples, score_threshold, split)
    add_run_info(report, run_info)
    return report.write(out_path)
