"""Side-by-side comparison of runs: a header and rows for the terminal or an HTML page.

Each entry is ``{"name": str, "metrics": {flat scalar metrics}, "info": {model, params, ...}}``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visionzoo.reports.figures import bar_chart
from visionzoo.reports.html import HtmlReport

__all__ = ["compare_html", "compare_runs", "format_table"]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (numbers.Number, str)) or value is None


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def compare_runs(entries: list[dict]) -> tuple[list[str], list[list]]:
    """header = ["name", *info keys, *scalar metric keys] (each in first-seen order over the entries);
    one row per entry, None where an entry lacks a column. Non-scalar metric values (per-class
    dicts, matrices) are left out; a metric whose key is also an info key is named "<key> (metric)"."""
    info_keys: list[str] = []
    metric_keys: list[str] = []
    for entry in entries:
        for key in (entry.get("info") or {}):
            if key != "name" and key not in info_keys:
                info_keys.append(key)
        for key, value in (entry.get("metrics") or {}).items():
            if _is_number(value) and key not in metric_keys:
                metric_keys.append(key)
    metric_columns = [f"{k} (metric)" if k in info_keys or k == "name" else k for k in metric_keys]
    header = ["name", *info_keys, *metric_columns]
    rows = []
    for entry in entries:
        info = entry.get("info") or {}
        metrics = entry.get("metrics") or {}
        row: list = [entry.get("name")]
        row += [info.get(k) if _is_scalar(info.get(k)) else str(info.get(k)) for k in info_keys]
        row += [metrics.get(k) if _is_number(metrics.get(k)) else None for k in metric_keys]
        rows.append(row)
    return header, rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return str(value) if math.isnan(value) or math.isinf(value) else f"{value:.4g}"
    return str(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table: numbers right-aligned (floats to 4 significant digits), text
    left-aligned, missing values as "-"."""
    cells = [[_cell(v) for v in row] for row in rows]
    ncols = max([len(header), *(len(r) for r in cells)]) if cells or header else 0
    head = [str(h) for h in header] + [""] * (ncols - len(header))
    cells = [r + [""] * (ncols - len(r)) for r in cells]
    numeric = [bool(rows) and all(_is_number(r[i]) or r[i] is None for r in rows if i < len(r))
               and any(i < len(r) and _is_number(r[i]) for r in rows) for i in range(ncols)]
    widths = [max([len(head[i]), *(len(r[i]) for r in cells)]) for i in range(ncols)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def compare_html(header: Sequence[str], rows: Sequence[Sequence[Any]], out_path: str | Path,
                 title: str = "Run comparison") -> Path:
    """Write a small self-contained HTML page with the comparison table and one bar chart per
    numeric column (when there are at least two runs)."""
    report = HtmlReport(title, subtitle=f"{len(rows)} run(s)")
    report.add_section("Table")
    report.add_table(None, list(header), [list(r) for r in rows])
    names = [str(r[0]) if r else "" for r in rows]
    charts = []
    for i, column in enumerate(header):
        if i == 0:
            continue
        pairs = [(n, r[i]) for n, r in zip(names, rows) if i < len(r) and _is_number(r[i])
                 and math.isfinite(float(r[i]))]
        if len(pairs) >= 2:
            charts.append((column, pairs))
    if charts:
        report.add_section("Charts")
        for column, pairs in charts:
            report.add_figure(column, bar_chart([p[0] for p in pairs], [float(p[1]) for p in pairs],
                                                title=str(column), ylabel=str(column)))
    return report.write(out_path)
