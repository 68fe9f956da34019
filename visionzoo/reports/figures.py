"""Generic matplotlib figures for reports (no task knowledge).

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas, so nothing touches pyplot's
global state or the interactive backend; embed them with ``HtmlReport.add_figure``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

__all__ = ["bar_chart", "confusion_matrix_figure", "filter_grid", "new_figure", "training_curves"]

# keys of "train" records that are bookkeeping, not loss terms
_TRAIN_NON_LOSS = {"type", "epoch", "step", "lr", "images_per_s", "time", "seconds", "skipped", "data_time",
                   "batch_time", "grad_norm", "memory", "memory_gb", "max_memory_gb", "samples"}
_VAL_NON_METRIC = {"type", "epoch", "step", "time", "seconds", "num_samples", "images_per_s"}
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]


def new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas (independent of pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _is_scalar(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _series(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """x/y lists in log order, where a step back in x (a resumed run re-doing steps) drops the earlier
    points from that x on; a repeated x keeps the latest value."""
    kept: list[tuple[float, float]] = []
    for x, y in points:
        while kept and kept[-1][0] >= x:
            kept.pop()
        kept.append((x, y))
    return [p[0] for p in kept], [p[1] for p in kept]


def _style_axes(ax, title: str, xlabel: str, ylabel: str | None = None) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def training_curves(records: list[dict], max_metric_panels: int = 12) -> Figure | None:
    """Training curves from run-log records (JSON lines; see the trainer's log format).

    Panels: the training loss terms vs step ("train" records; falls back to the ``train_*`` entries of
    "epoch" records), the learning rate vs step, then one panel per scalar validation metric vs epoch
    ("val" records; falls back to the ``val_*`` entries of "epoch" records). Other record types are
    ignored. Returns None when there is nothing to plot.
    """
    records = [r for r in records or [] if isinstance(r, dict)]
    train = [r for r in records if r.get("type") == "train" and _is_scalar(r.get("step"))]
    epochs = [r for r in records if r.get("type") == "epoch"]
    val = [r for r in records if r.get("type") == "val" and _is_scalar(r.get("epoch"))]

    losses: dict[str, list[tuple[float, float]]] = {}
    if train:
        for r in train:
            for k, v in r.items():
                if k not in _TRAIN_NON_LOSS and _is_scalar(v):
                    losses.setdefault(k, []).append((float(r["step"]), float(v)))
    else:
        for r in epochs:
            if not _is_scalar(r.get("step")):
                continue
            for k, v in r.items():
                if k.startswith("train_") and _is_scalar(v):
                    losses.setdefault(k[len("train_"):], []).append((float(r["step"]), float(v)))

    lr_points = [(float(r["step"]), float(r["lr"])) for r in (train or epochs)
                 if _is_scalar(r.get("step")) and _is_scalar(r.get("lr"))]

    metrics: dict[str, list[tuple[float, float]]] = {}
    if val:
        for r in val:
            for k, v in r.items():
                if k not in _VAL_NON_METRIC and _is_scalar(v):
                    metrics.setdefault(k, []).append((float(r["epoch"]), float(v)))
    else:
        for r in epochs:
            if not _is_scalar(r.get("epoch")):
                continue
            for k, v in r.items():
                if k.startswith("val_") and _is_scalar(v):
                    metrics.setdefault(k[len("val_"):], []).append((float(r["epoch"]), float(v)))
    metric_names = list(metrics)[:max_metric_panels]

    panels = (1 if losses else 0) + (1 if lr_points else 0) + len(metric_names)
    if panels == 0:
        return None
    ncols = min(3, panels)
    nrows = math.ceil(panels / ncols)
    fig = new_figure(4.2 * ncols, 3.1 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    i = 0
    if losses:
        ax = axes[i]
        i += 1
        # "loss" first, then the other terms in first-seen order
        names = sorted(losses, key=lambda k: (k != "loss", list(losses).index(k)))
        for j, name in enumerate(names):
            x, y = _series(losses[name])
            ax.plot(x, y, color=_COLORS[j % len(_COLORS)], linewidth=1.4 if name == "loss" else 1.0,
                    marker="o" if len(x) <= 3 else None, markersize=3, label=name)
        _style_axes(ax, "Training loss", "step", "loss")
        if len(names) > 1:
            ax.legend(fontsize=8, frameon=False)
    if lr_points:
        ax = axes[i]
        i += 1
        x, y = _series(lr_points)
        ax.plot(x, y, color="#6f42c1", linewidth=1.4, marker="o" if len(x) <= 3 else None, markersize=3)
        _style_axes(ax, "Learning rate", "step", "lr")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    for name in metric_names:
        ax = axes[i]
        i += 1
        x, y = _series(metrics[name])
        ax.plot(x, y, color="#2ca02c", linewidth=1.4, marker="o", markersize=3.5)
        ax.annotate(f"{y[-1]:.4g}", (x[-1], y[-1]), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=8, color="#2ca02c")
        _style_axes(ax, f"Validation {name}", "epoch", name)
        if all(float(e).is_integer() for e in x):
            ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes[i:]:
        ax.set_visible(False)
    return fig


def _truncate(label: str, width: int) -> str:
    label = str(label)
    return label if len(label) <= width else label[: max(1, width - 1)] + "\u2026"


def confusion_matrix_figure(cm: np.ndarray, class_names: Sequence[str] | None = None,
                            normalize: bool = True) -> Figure:
    """A confusion-matrix heat map (rows = true class, columns = predicted).

    With `normalize`, each row is divided by its total (rows without samples stay 0), so the diagonal
    is the per-class recall. Cells are annotated up to 30 classes; beyond that labels are truncated and
    thinned out so they stay legible.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {cm.shape}")
    n = cm.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}x{n} confusion matrix")
    if normalize:
        totals = cm.sum(axis=1, keepdims=True).astype(np.float64)
        values = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=np.float64), where=totals > 0)
        vmax = 1.0
    else:
        values = cm.astype(np.float64)
        vmax = max(float(values.max()), 1.0) if n else 1.0

    size = float(np.clip(0.42 * n + 2.6, 4.5, 15.0))
    fig = new_figure(size + 1.2, size)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    cbar.ax.tick_params(labelsize=8)
    if normalize:
        cbar.set_label("fraction of true class", fontsize=9)

    label_width = 18 if n <= 30 else 10
    step = 1 if n <= 60 else math.ceil(n / 60)
    ticks = np.arange(0, n, step)
    label_size = 9 if n <= 12 else 8 if n <= 30 else 6
    ax.set_xticks(ticks, [_truncate(names[t], label_width) for t in ticks], rotation=45 if n > 4 else 0,
                  ha="right" if n > 4 else "center", rotation_mode="anchor", fontsize=label_size)
    ax.set_yticks(ticks, [_truncate(names[t], label_width) for t in ticks], fontsize=label_size)
    ax.set_xlabel("predicted class", fontsize=10)
    ax.set_ylabel("true class", fontsize=10)
    ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else " (counts)"), fontsize=11)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)

    if 0 < n <= 30:
        font = 10 if n <= 8 else 8 if n <= 15 else 6
        threshold = 0.55 * vmax
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                if normalize:
                    if cm[i, j] == 0:
                        text = "0" if n <= 15 else ""
                    else:
                        text = f"{v:.2f}"
                else:
                    text = str(int(cm[i, j])) if cm[i, j] or n <= 15 else ""
                if text:
                    ax.text(j, i, text, ha="center", va="center", fontsize=font,
                            color="white" if v > threshold else "#1f2328")
    return fig


def bar_chart(names: Sequence[str], values: Sequence[float], title: str, ylabel: str,
              value_labels: bool | None = None, ylim: tuple[float, float] | None = None) -> Figure:
    """A vertical bar chart; bar values are written on the bars when there are at most 25."""
    names = [str(n) for n in names]
    values = [float(v) for v in values]
    if len(names) != len(values):
        raise ValueError(f"{len(names)} names for {len(values)} values")
    n = len(values)
    width = float(np.clip(0.38 * n + 2.5, 5.0, 15.0))
    fig = new_figure(width, 3.8)
    ax = fig.add_subplot()
    x = np.arange(n)
    ax.bar(x, values, color="#4c78a8", width=0.7, edgecolor="none")
    rotate = n > 6 or any(len(s) > 10 for s in names)
    ax.set_xticks(x, [_truncate(s, 18) for s in names], rotation=45 if rotate else 0,
                  ha="right" if rotate else "center", rotation_mode="anchor", fontsize=9 if n <= 30 else 7)
    if value_labels is None:
        value_labels = n <= 25
    if value_labels:
        for xi, v in zip(x, values):
            ax.annotate(f"{v:.3g}", (xi, v), textcoords="offset points", xytext=(0, 2), ha="center",
                        va="bottom", fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    elif values and min(values) >= 0:
        ax.set_ylim(0, max(values) * 1.12 if max(values) > 0 else 1)
    ax.set_xlim(-0.6, n - 0.4)
    _style_axes(ax, title, "", ylabel)
    ax.grid(False, axis="x")
    return fig


def filter_grid(weight, max_filters: int = 256, cell: int = 36, pad: int = 2,
                background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """First-conv-layer weights (out, in, kh, kw) as one RGB image grid.

    Each filter is min-max normalised on its own; filters with 3 input channels are shown in colour,
    others as the first input channel in grey. Filters are enlarged with nearest-neighbour sampling to
    about `cell` pixels so that 3x3 to 11x11 kernels are visible. At most `max_filters` are drawn.
    """
    w = weight.detach().float().cpu().numpy() if hasattr(weight, "detach") else np.asarray(weight, dtype=np.float32)
    if w.ndim != 4:
        raise ValueError(f"expected conv weights of shape (out, in, kh, kw), got shape {tuple(w.shape)}")
    out_ch, in_ch, kh, kw = w.shape
    if out_ch == 0 or in_ch == 0:
        raise ValueError(f"empty conv weights of shape {tuple(w.shape)}")
    w = w[:max_filters]
    n = w.shape[0]
    filters = w if in_ch == 3 else w[:, :1]
    flat = filters.reshape(n, -1)
    lo = flat.min(axis=1)[:, None, None, None]
    hi = flat.max(axis=1)[:, None, None, None]
    span = hi - lo
    norm = np.where(span > 0, (filters - lo) / np.where(span > 0, span, 1.0), 0.5)
    norm = np.nan_to_num(norm, nan=0.5)
    tiles = (norm.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)  # n, kh, kw, c
    if tiles.shape[-1] == 1:
        tiles = np.repeat(tiles, 3, axis=-1)
    scale = max(1, round(cell / max(kh, kw)))
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw = tiles.shape[1], tiles.shape[2]
    cols = max(1, min(n, 16, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    canvas = np.empty((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), dtype=np.uint8)
    canvas[:] = np.asarray(background, dtype=np.uint8)
    for idx in range(n):
        r, c = divmod(idx, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        canvas[y:y + th, x:x + tw] = tiles[idx]
    return Image.fromarray(canvas)
