"""The classification report: one self-contained HTML file built from ClassificationMeter metrics,
the run log, misclassified images, the first conv layer and run information."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from visionzoo.models.stn import SpatialTransformer
from visionzoo.reports.figures import bar_chart, confusion_matrix_figure, filter_grid
from visionzoo.reports.html import HtmlReport, add_run_info, add_training_curves

__all__ = ["build_classification_report", "stn_examples"]

MAX_F1_BARS = 40
MAX_COUNT_TABLE_CLASSES = 20


def _pct(value: Any) -> str:
    return f"{100 * float(value):.2f}%" if isinstance(value, numbers.Real) else "\u2014"


def _display(value: Any) -> Any:
    """Friendlier values for the key-value tables (sizes as 3×224×224)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, numbers.Integral) for v in value):
        return "\u00d7".join(str(int(v)) for v in value)
    return value



def _summary(report: HtmlReport, metrics: Mapping, model_summary: Mapping | None) -> None:
    report.add_section("Summary")
    topk = sorted((k for k in metrics if k.startswith("top") and k[3:].isdigit()), key=lambda k: int(k[3:]))
    stats: list[tuple[str, Any]] = [(f"top-{k[3:]} accuracy", _pct(metrics[k])) for k in topk]
    if "macro_f1" in metrics:
        stats.append(("macro F1", f"{float(metrics['macro_f1']):.4f}"))
    if "loss" in metrics:
        stats.append(("mean loss", f"{float(metrics['loss']):.4f}"))
    if "num_samples" in metrics:
        stats.append(("samples", metrics["num_samples"]))
    report.add_stats(stats)
    if model_summary:
        report.add_key_values("Model", {k: _display(v) for k, v in model_summary.items()})




def _per_class(report: HtmlReport, metrics: Mapping, class_names: Sequence[str], cm: np.ndarray | None) -> None:
    report.add_section("Per-class metrics")
    per_class = metrics.get("per_class") or {}
    if not per_class:
        report.add_note("No per-class metrics available.")
        return
    names = [n for n in class_names if n in per_class] + [n for n in per_class if n not in class_names]
    index = {n: i for i, n in enumerate(class_names)}
    header = ["class", "precision", "recall", "F1", "support", "most often mistaken for"]
    rows = []
    for name in names:
        m = per_class[name]
        confused = None
        i = index.get(name)
        if cm is not None and i is not None and i < cm.shape[0]:
            row = cm[i].copy()
            row[i] = 0
            j = int(row.argmax())
            if row[j] > 0 and j < len(class_names):
                confused = f"{class_names[j]} ({int(row[j])})"
        rows.append([name, float(m["precision"]), float(m["recall"]), float(m["f1"]), int(m["support"]), confused])
    report.add_table(None, header, rows,
                     caption="Precision = correct / predicted as the class; recall = correct / samples of the "
                             "class; 0 where undefined. Last column: the most frequent wrong prediction "
                             "for samples of the class (count).")
    f1 = [(n, float(per_class[n]["f1"])) for n in names]
    if len(f1) > MAX_F1_BARS:
        f1 = sorted(f1, key=lambda p: p[1])[:MAX_F1_BARS]
        title, caption = f"F1 of the {MAX_F1_BARS} weakest classes", f"{len(names)} classes in total."
    else:
        title, caption = "F1 per class", None
    report.add_figure("F1 per class", bar_chart([p[0] for p in f1], [p[1] for p in f1], title=title, ylabel="F1",
                                                ylim=(0, 1.1)), caption=caption)


def _confusion(report: HtmlReport, class_names: Sequence[str], cm: np.ndarray | None) -> None:
    report.add_section("Confusion matrix")
    if cm is None:
        report.add_note("No confusion matrix available.")
        return
    names = list(class_names) if len(class_names) == cm.shape[0] else [str(i) for i in range(cm.shape[0])]
    report.add_figure(None, confusion_matrix_figure(cm, names, normalize=True),
                      caption="Rows: true class; columns: predicted class; each row divided by its total, so "
                              "the diagonal is the per-class recall.")
    if cm.shape[0] <= MAX_COUNT_TABLE_CLASSES:
        header = ["true \u2193 / predicted \u2192", *names, "total"]
        rows = [[names[i], *(int(v) for v in cm[i]), int(cm[i].sum())] for i in range(cm.shape[0])]
        rows.append(["total", *(int(v) for v in cm.sum(axis=0)), int(cm.sum())])
        report.add_table("Counts", header, rows)
    else:
        report.add_note(f"Raw counts are not tabulated for {cm.shape[0]} classes; they are in metrics.json "
                        "(confusion_matrix).")


def _misclassified(report: HtmlReport, metrics: Mapping,
                   items: Sequence[tuple[Image.Image, str, str, float]] | None) -> None:
    report.add_section("Misclassified samples")
    if not items:
        if metrics.get("top1") == 1.0:
            report.add_note("No misclassified samples: every prediction was correct.")
        else:
            report.add_note("No images of misclassified samples are available for this dataset.")
        return
    grid = [(image, f"{true} \u2192 {pred} ({float(conf):.2f})") for image, true, pred, conf in items]
    report.add_image_grid(None, grid, columns=8,
                          caption=f"The {len(grid)} most confident mistakes: true class \u2192 predicted class "
                                  "(softmax confidence of the prediction).")


def _filters(report: HtmlReport, weight: torch.Tensor | None) -> None:
    report.add_section("First-layer filters")
    if weight is None:
        report.add_note("The model has no convolution layer to show.")
        return
    shape = tuple(weight.shape)
    if len(shape) != 4:
        report.add_note(f"First-layer weights have shape {shape}, not (out, in, kh, kw); not shown.")
        return
    image = filter_grid(weight)
    mode = "colour (RGB input channels)" if shape[1] == 3 else "grey (first input channel)"
    report.add_image(None, image, caption=f"{shape[0]} filters of shape {shape[1]}\u00d7{shape[2]}\u00d7{shape[3]}, "
                                          f"each min-max normalised on its own, shown in {mode}.")


def stn_examples(model: torch.nn.Module, dataset, mean: Sequence[float], std: Sequence[float],
                 count: int = 16) -> list[tuple[Image.Image, Image.Image, str]] | None:
    """(input, transformed input, caption) for ``count`` images spread over ``dataset`` (as the model sees
    them, after the evaluation transform) when ``model`` has a spatial transformer (``model.stn``); None
    otherwise. The caption gives the zoom 1/sqrt|det A| and rotation of the predicted affine map."""
    stn = getattr(getattr(model, "module", model), "stn", None)  # through a DDP wrapper too
    if not isinstance(stn, SpatialTransformer) or len(dataset) == 0:
        return None
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    images = torch.stack([dataset[int(i)][0] for i in indices])
    device = next(stn.parameters()).device
    was_training = stn.training
    stn.eval()
    with torch.no_grad():
        warped, theta = stn.forward_with_theta(images.to(device))
    stn.train(was_training)
    m = torch.tensor(list(mean)).view(1, -1, 1, 1)
    s = torch.tensor(list(std)).view(1, -1, 1, 1)

    def to_pil(batch: torch.Tensor) -> list[Image.Image]:
        pixels = ((batch.float().cpu() * s + m).clamp(0, 1) * 255).round().to(torch.uint8)
        return [Image.fromarray(p.permute(1, 2, 0).numpy().squeeze()) for p in pixels]

    out = []
    for before, after, t in zip(to_pil(images), to_pil(warped), theta.float().cpu()):
        (a, b, _), (c, d, _) = t.tolist()
        zoom = 1.0 / math.sqrt(max(abs(a * d - b * c), 1e-12))
        # theta maps output to input positions, so the image turns by minus theta's angle (y down)
        angle = math.degrees(math.atan2(c, a))
        out.append((before, after, f"zoom {zoom:.2f}, rotation {angle:+.0f}\u00b0"))
    return out


def _stn(report: HtmlReport, examples: Sequence[tuple[Image.Image, Image.Image, str]] | None) -> None:
    if not examples:
        return
    report.add_section("Spatial transformer")
    grid = []
    for before, after, caption in examples:
        grid += [(before, "input"), (after, f"transformed: {caption}")]
    report.add_image_grid(None, grid, columns=8,
                          caption="Pairs of input images (left, after the evaluation transform) and what the "
                                  "spatial transformer hands the classifier (right). Zoom > 1 magnifies; the "
                                  "rotation is of the sampling grid, so the content turns the other way.")


def build_classification_report(
    out_path: str | Path,
    *,
    title: str,
    metrics: Mapping,
    class_names: Sequence[str],
    log_records: Sequence[dict] | None = None,
    misclassified_images: Sequence[tuple[Image.Image, str, str, float]] | None = None,
    first_layer_weight: torch.Tensor | None = None,
    model_summary: Mapping | None = None,
    run_info: Mapping | None = None,
    stn_examples: Sequence[tuple[Image.Image, Image.Image, str]] | None = None,
) -> Path:
    """Write the classification report for `metrics` (from ``ClassificationMeter.compute()``) to
    `out_path` as one self-contained HTML file and return its path. Missing pieces (no log, no
    misclassified images, no conv layer, no run info) become a short note. `stn_examples` (from
    :func:`stn_examples`) adds a section of inputs next to their spatially transformed versions."""
    class_names = [str(c) for c in class_names]
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.int64) if metrics.get("confusion_matrix") is not None else None
    if cm is not None and (cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.size == 0):
        cm = None
    parts = []
    if "num_samples" in metrics:
        parts.append(f"{int(metrics['num_samples']):,} samples")
    parts.append(f"{len(class_names)} classes")
    report = HtmlReport(title, subtitle="Classification report \u00b7 " + " \u00b7 ".join(parts))
    _summary(report, metrics, model_summary)
    add_training_curves(report, log_records)
    _per_class(report, metrics, class_names, cm)
    _confusion(report, class_names, cm)
    _stn(report, stn_examples)
    _misclassified(report, metrics, misclassified_images)
    _filters(report, first_layer_weight)
    add_run_info(report, run_info)
    return report.write(out_path)
