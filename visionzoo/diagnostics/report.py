"""Self-contained HTML pages for the diagnostics, built with the shared report builder; the layer-statistics
sections themselves live with the reports, which draw them from a training log too."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from visionzoo.reports.html import HtmlReport
from visionzoo.reports.layer_stats import add_layer_stats_sections


def build_stats_report(out_path: str | Path, *, stats, title: str, info: dict | None = None,
                       losses: Sequence[float] | None = None) -> Path:
    """The `diagnose stats` page: warnings, per-layer charts (dead ReLUs, saturation, channel correlation,
    gradient norms, update ratios) and the per-layer table of an ActivationStats."""
    report = HtmlReport(title, subtitle=f"Layer statistics over {len(stats.records)} recorded steps")
    add_layer_stats_sections(report, stats.records, thresholds=stats.thresholds, info=info, losses=losses)
    return report.write(out_path)
