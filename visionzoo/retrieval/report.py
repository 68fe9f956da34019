"""The retrieval report: one self-contained HTML file with the metrics, the recall@k curve, per-class AP,
and query images next to their top results (relevant results outlined green, the others red)."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from visionzoo.reports.figures import bar_chart, new_figure
from visionzoo.reports.html import HtmlReport, add_run_info

__all__ = ["build_retrieval_report", "outlined"]

RELEVANT = (22, 163, 74)  # green
IRRELEVANT = (220, 38, 38)  # red
QUERY = (37, 99, 235)  # blue


def outlined(image: Image.Image, colour: tuple[int, int, int], max_size: int = 96) -> Image.Image:
    """`image` (shrunk to `max_size` px on its longer side if larger) inside a coloured frame; the report
    shows small images enlarged with crisp pixels."""
    image = image.convert("RGB")
    if max(image.size) > max_size:
        image = image.copy()
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return ImageOps.expand(image, border=max(2, max(image.size) // 20), fill=colour)


def _pct(value) -> str:
    return "\u2014" if value is None else f"{100 * float(value):.2f}%"


def _recall_curve(result, max_k: int):
    ks = list(range(1, max_k + 1))
    fig = new_figure(5.6, 3.4)
    ax = fig.add_subplot()
    ax.plot(ks, result.recall_at(ks), color="#1f77b4", marker="o", markersize=3, linewidth=1.4)
    ax.set_ylim(0, 1.02)
    ax.set_title("Recall@k: a relevant item within the top k", fontsize=11)
    ax.set_xlabel("k", fontsize=9)
    ax.set_ylabel("fraction of queries", fontsize=9)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    return fig


def _query_rows(result, indices: Sequence[int], k: int, query_image: Callable[[int], Image.Image],
                gallery_image: Callable[[int], Image.Image], query_label: Sequence[int],
                gallery_label: Sequence[int], class_names: Sequence[str]) -> list[tuple[Image.Image, str]]:
    cells = []
    for qi in indices:
        ap = result.average_precision[qi]
        ap_text = "no relevant item" if np.isnan(ap) else f"AP {ap:.2f}"
        cells.append((outlined(query_image(qi), QUERY), f"query: {class_names[query_label[qi]]} ({ap_text})"))
        for rank in range(k):
            gi = int(result.top_indices[qi, rank])
            relevant = gallery_label[gi] == query_label[qi]
            cells.append((outlined(gallery_image(gi), RELEVANT if relevant else IRRELEVANT),
                          f"#{rank + 1} {class_names[gallery_label[gi]]} {result.top_scores[qi, rank]:.3f}"))
    return cells


def build_retrieval_report(
    out_path: str | Path, *, title: str, result, class_names: Sequence[str],
    query_image: Callable[[int], Image.Image], gallery_image: Callable[[int], Image.Image],
    query_labels: Sequence[int], gallery_labels: Sequence[int], info: Mapping,
    model_summary: Mapping | None = None, run_info: Mapping | None = None,
    examples: int = 10, hardest: int = 6, k: int = 8,
) -> Path:
    """Write the report. `result` is a RetrievalResult; `query_image(i)` / `gallery_image(j)` give the
    images of query i and gallery item j (their positions in the features); `info` describes the splits
    and features (shown as key-value pairs)."""
    m = result.metrics
    class_names = [str(c) for c in class_names]
    report = HtmlReport(title, subtitle=f"Retrieval report \u00b7 {m['num_queries']:,} queries \u00b7 "
                                        f"gallery of {m['gallery_size']:,}")
    report.add_section("Summary")
    stats = [("mAP", _pct(m["mAP"]))] + [(f"recall@{k_}", _pct(m[f"recall@{k_}"])) for k_ in m["ks"]]
    stats += [(f"precision@{k_}", _pct(m[f"precision@{k_}"])) for k_ in m["ks"]]
    report.add_stats(stats)
    if m["queries_without_relevant"]:
        report.add_note(f"{m['queries_without_relevant']} queries have no relevant item in the gallery; they are "
                        "left out of every mean.")
    report.add_key_values("Setup", dict(info))
    if model_summary:
        report.add_key_values("Model", dict(model_summary))
    report.add_text("Relevant = the gallery item has the query's class. recall@k: fraction of queries with at "
                    "least one relevant item among the top k. precision@k: relevant items among the top k / k. "
                    "mAP: average precision over the whole ranked gallery (mean precision at the rank of each "
                    "relevant item, tied scores as one threshold), averaged over queries.")

    report.add_section("Recall at k")
    report.add_figure(None, _recall_curve(result, max_k=min(50, m["gallery_size"] - int(m["exclude_self"]))))

    report.add_section("Per-class")
    per_class = m.get("per_class") or {}
    if per_class:
        names = [n for n in class_names if n in per_class]
        report.add_table(None, ["class", "queries", "AP", "recall@1"],
                         [[n, per_class[n]["queries"], per_class[n]["AP"], per_class[n]["recall@1"]] for n in names],
                         caption="Mean AP and recall@1 over the queries of each class.")
        report.add_figure(None, bar_chart(names, [per_class[n]["AP"] for n in names], title="AP per query class",
                                          ylabel="mean AP", ylim=(0, 1.1)))
    else:
        report.add_note("No per-class results.")

    k = max(1, min(k, result.top_indices.shape[1]))
    q = len(result.average_precision)
    caption = (f"Each row: a query (blue frame) and its top {k} gallery results, best first, with class and "
               "similarity; relevant results in green frames, others in red.")
    report.add_section("Query results")
    shown = np.unique(np.linspace(0, q - 1, num=min(examples, q)).round().astype(int)).tolist() if q else []
    report.add_image_grid(f"{len(shown)} queries spread over the query set",
                          _query_rows(result, shown, k, query_image, gallery_image, query_labels, gallery_labels,
                                      class_names), columns=k + 1, caption=caption)
    scored = np.flatnonzero(~np.isnan(result.average_precision))
    worst = scored[np.argsort(result.average_precision[scored], kind="stable")][:hardest].tolist()
    report.add_image_grid(f"The {len(worst)} queries with the lowest AP",
                          _query_rows(result, worst, k, query_image, gallery_image, query_labels, gallery_labels,
                                      class_names), columns=k + 1, caption=caption)
    add_run_info(report, run_info)
    return report.write(out_path)
