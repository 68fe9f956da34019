"""The segmentation report: one self-contained HTML file with the FCN paper's four metrics (without and
with CRF refinement), per-class IoU, the normalised confusion matrix, image / ground truth / prediction
overlays (drawn by visionzoo.inference.draw, as the Segmenter draws them) and the images the model gets
most wrong."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from visionzoo.inference.draw import class_palette, overlay
from visionzoo.reports.figures import confusion_matrix_figure, new_figure
from visionzoo.reports.html import HtmlReport, add_run_info, add_training_curves, escape

__all__ = ["build_segmentation_report"]

METRICS = (("pixel_accuracy", "pixel accuracy", "sum_i n_ii / sum_i t_i"),
           ("mean_accuracy", "mean accuracy", "(1/k) sum_i n_ii / t_i"),
           ("mean_iou", "mean IoU", "(1/k) sum_i n_ii / (t_i + sum_j n_ji - n_ii)"),
           ("fw_iou", "frequency-weighted IoU", "(sum_k t_k)^-1 sum_i t_i n_ii / (t_i + sum_j n_ji - n_ii)"))
VARIANT_TITLES = {"plain": "FCN", "crf": "FCN + CRF"}


def _fmt(value) -> str:
    return "\u2014" if value is None else f"{float(value):.3f}"


def _summary(report: HtmlReport, metrics: Mapping, model_summary: Mapping | None) -> None:
    report.add_section("Summary")
    has_crf = metrics.get("crf_mean_iou") is not None
    stats: list[tuple[str, Any]] = [("mean IoU", _fmt(metrics.get("mean_iou"))),
                                    ("pixel accuracy", _fmt(metrics.get("pixel_accuracy")))]
    if has_crf:
        gain = metrics.get("crf_gain_mean_iou")
        stats += [("mean IoU with CRF", _fmt(metrics.get("crf_mean_iou"))),
                  ("CRF gain (mIoU)", "\u2014" if gain is None else f"{gain:+.4f}")]
    if metrics.get("pixels") is not None:
        stats.append(("labelled pixels", int(metrics["pixels"])))
    report.add_stats(stats)
    header = ["metric", "definition", "FCN"] + (["FCN + CRF", "CRF \u2212 FCN"] if has_crf else [])
    rows = []
    for key, name, formula in METRICS:
        row = [name, formula, metrics.get(key)]
        if has_crf:
            a, b = metrics.get(key), metrics.get(f"crf_{key}")
            row += [b, None if a is None or b is None else b - a]
        rows.append(row)
    report.add_table("Metrics (Long, Shelhamer & Darrell)", header, rows,
                     caption="n_ij = pixels of class i predicted as j, t_i = pixels of class i, k = classes present. "
                             "Pixels labelled 255 (ignore) and padding are not counted; classes absent from both "
                             "the ground truth and the predictions are left out of the means.")
    if not has_crf:
        report.add_note("CRF refinement was not evaluated (set eval.crf=true to compare).")
    if model_summary:
        report.add_key_values("Model", dict(model_summary))


def _per_class(report: HtmlReport, metrics: Mapping, class_names: Sequence[str]) -> None:
    report.add_section("Per-class IoU")
    plain = metrics.get("per_class_iou") or {}
    crf = metrics.get("crf_per_class_iou")
    names = [n for n in class_names if n in plain]
    if not names:
        report.add_note("No per-class IoU available.")
        return
    fig = new_figure(float(np.clip(0.5 * len(names) + 3, 5, 15)), 3.8)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    series = [("FCN", plain, "#4c78a8")] + ([("FCN + CRF", crf, "#f58518")] if crf else [])
    width = 0.8 / len(series)
    for k, (label, values, color) in enumerate(series):
        heights = [values.get(n) if values.get(n) is not None else 0.0 for n in names]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, heights, width=width, label=label, color=color)
    ax.set_xticks(x, names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("IoU")
    ax.set_title("IoU per class")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    report.add_figure(None, fig, caption="Intersection over union per class; classes with no pixels in the ground "
                                         "truth or the predictions are drawn at 0 and shown as \u2014 below.")
    accuracy = metrics.get("per_class_accuracy") or {}
    header = ["class", "IoU", "accuracy"] + (["IoU with CRF"] if crf else [])
    rows = [[n, plain.get(n), accuracy.get(n)] + ([crf.get(n)] if crf else []) for n in names]
    report.add_table(None, header, rows)


def _confusion(report: HtmlReport, metrics: Mapping, class_names: Sequence[str]) -> None:
    report.add_section("Confusion matrix")
    cm = metrics.get("confusion_matrix")
    if cm is None:
        report.add_note("No confusion matrix available.")
        return
    report.add_figure(None, confusion_matrix_figure(np.asarray(cm), class_names, normalize=True),
                      caption="Rows: true class, columns: predicted class, each row divided by the pixels of its "
                              "class (the diagonal is the per-class pixel accuracy).")


def _cells(image: Image.Image, mask: np.ndarray, preds: Mapping[str, np.ndarray], label: str):
    pred_shape = next(iter(preds.values())).shape
    if mask.shape != pred_shape:  # evaluated at another size (data.params.base_size): show it at that size
        mask = np.asarray(Image.fromarray(mask).resize(pred_shape[::-1], Image.Resampling.NEAREST))
    cells = [(image.resize(pred_shape[::-1], Image.Resampling.BILINEAR) if image.size != pred_shape[::-1]
              else image, f"{label}: image"), (overlay(image, mask), "ground truth")]
    cells += [(overlay(image, p), VARIANT_TITLES.get(v, v)) for v, p in preds.items()]
    return cells


def _legend(class_names: Sequence[str]) -> str:
    palette = class_palette()
    items = "".join(
        f'<span style="display:inline-block;margin:0 12px 4px 0"><span style="display:inline-block;width:12px;'
        f'height:12px;vertical-align:middle;background:rgb{tuple(int(c) for c in palette[k])}"></span> '
        f"{escape(name)}</span>" for k, name in enumerate(class_names) if k > 0)
    return f'<p class="caption">Class colours: {items}</p>'


def _examples(report: HtmlReport, examples, worst: Mapping[str, Sequence], class_names: Sequence[str]) -> None:
    report.add_section("Examples")
    report.add_html(_legend(class_names))
    if not examples:
        report.add_note("No example predictions were kept (eval.examples_in_report = 0).")
    else:
        columns = 2 + len(examples[0][3])
        items = [cell for index, image, mask, preds in examples for cell in _cells(image, mask, preds, f"#{index}")]
        report.add_image_grid(None, items, columns=columns,
                              caption="Per row: the image, its ground truth and the predictions, as class colours "
                                      "over the image (ignore pixels whitened).")
    report.add_section("Worst images by IoU")
    if not any(worst.values()):
        report.add_note("No per-image scores were kept (eval.worst_in_report = 0).")
        return
    for variant, items in worst.items():
        cells = []
        for iou, index, image, mask, pred in items:
            cells += _cells(image, mask, {variant: pred}, f"#{index} IoU {iou:.3f}")
        report.add_image_grid(f"Lowest mean IoU: {VARIANT_TITLES.get(variant, variant)}", cells, columns=3,
                              caption="Per-image mean IoU over the classes in that image's ground truth or "
                                      "prediction; lowest first.")


def build_segmentation_report(
    out_path: str | Path,
    *,
    title: str,
    metrics: Mapping,
    class_names: Sequence[str],
    examples: Sequence[tuple[int, Image.Image, np.ndarray, Mapping[str, np.ndarray]]] = (),
    worst: Mapping[str, Sequence[tuple[float, int, Image.Image, np.ndarray, np.ndarray]]] | None = None,
    log_records: Sequence[dict] | None = None,
    model_summary: Mapping | None = None,
    run_info: Mapping | None = None,
) -> Path:
    """Write the report for `metrics` (from the segmentation accumulator) to `out_path` and return its path.

    `examples`: (dataset index, image, ground-truth mask, {variant: predicted mask}) with variants "plain"
    and, when evaluated, "crf". `worst`: per variant, (IoU, index, image, mask, prediction), lowest first."""
    class_names = [str(c) for c in class_names]
    parts = [f"{len(class_names)} classes"]
    if metrics.get("num_images"):
        parts.insert(0, f"{int(metrics['num_images']):,} images")
    if metrics.get("crf_mean_iou") is not None:
        parts.append("with and without CRF")
    report = HtmlReport(title, subtitle="Segmentation report \u00b7 " + " \u00b7 ".join(parts))
    _summary(report, metrics, model_summary)
    add_training_curves(report, log_records)
    _per_class(report, metrics, class_names)
    _confusion(report, metrics, class_names)
    _examples(report, list(examples), worst or {}, class_names)
    add_run_info(report, run_info)
    return report.write(out_path)
