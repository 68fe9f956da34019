"""Self-contained HTML pages for the diagnostics, built with the shared report builder."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from visionzoo.reports.figures import bar_chart, new_figure
from visionzoo.reports.html import HtmlReport

MAX_PARAM_LINES = 12


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "\u2026" + name[-(width - 1):]


def _stat_bars(report: HtmlReport, summary: dict, stat: str, title: str, ylabel: str, caption: str,
               threshold: float | None = None, log: bool = False) -> None:
    names = [n for n, s in summary.items() if stat in s and math.isfinite(s[stat]["mean"])]
    if not names:
        return
    values = [summary[n][stat]["mean"] for n in names]
    if log:
        fig = new_figure(max(6.0, min(15.0, 0.3 * len(names) + 3)), 3.8)
        ax = fig.add_subplot()
        ax.bar(range(len(names)), [max(v, 1e-12) for v in values], color="#4c78a8")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=11)
        ax.grid(True, axis="y", alpha=0.3)
    else:
        fig = bar_chart([_short(n) for n in names], values, title=title, ylabel=ylabel,
                        ylim=(0, max(1.0, max(values) * 1.1)) if stat.endswith(("fraction", "correlation")) else None)
        ax = fig.axes[0]
    if threshold is not None:
        ax.axhline(threshold, color="#d62728", linestyle="--", linewidth=1)
    report.add_figure(title, fig, caption=caption)


def _param_lines(report: HtmlReport, records: Sequence[dict], stat: str, title: str, caption: str) -> None:
    names: list[str] = []
    for r in records:
        for n, p in r["params"].items():
            if stat in p and n not in names:
                names.append(n)
    if not names:
        return
    if len(names) > MAX_PARAM_LINES:  # first, last and evenly spaced layers in between
        idx = sorted({round(i * (len(names) - 1) / (MAX_PARAM_LINES - 1)) for i in range(MAX_PARAM_LINES)})
        names = [names[i] for i in idx]
    fig = new_figure(7.5, 4)
    ax = fig.add_subplot()
    for n in names:
        pts = [(r["step"], r["params"][n][stat]) for r in records if n in r["params"] and stat in r["params"][n]]
        pts = [(s, v) for s, v in pts if math.isfinite(v) and v > 0]
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", markersize=2, linewidth=1, label=_short(n))
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(stat.replace("_", " "))
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    report.add_figure(title, fig, caption=caption)


def build_stats_report(out_path: str | Path, *, stats, title: str, info: dict | None = None,
                       losses: Sequence[float] | None = None) -> Path:
    """The `diagnose stats` page: warnings, per-layer charts (dead ReLUs, saturation, channel correlation,
    gradient norms, update ratios) and the per-layer table."""
    report = HtmlReport(title, subtitle=f"Layer statistics over {len(stats.records)} recorded steps")
    add_layer_stats_sections(report, stats, info=info, losses=losses)
    return report.write(out_path)


def stats_from_log(log_records: Sequence[dict]):
    """The ActivationStats a training run logged (`train.layer_stats_interval`), or None."""
    from visionzoo.diagnostics.stats import ActivationStats

    records = [{k: v for k, v in r.items() if k != "type"} for r in log_records or ()
               if isinstance(r, dict) and r.get("type") == "layer_stats"]
    if not records:
        return None
    stats = ActivationStats()
    stats.records = records
    return stats


def add_layer_stats_sections(report: HtmlReport, stats, *, info: dict | None = None,
                             losses: Sequence[float] | None = None, heading: str = "Warnings") -> None:
    """Warnings, per-layer activation charts, weight / gradient charts and tables of `stats`."""
    summary, warnings, t = stats.summary(), stats.warnings(), stats.thresholds
    report.add_section(heading)
    if warnings:
        report.add_table(None, ["layer", "problem", "worst value", "first step", "message"],
                         [[w["layer"], w["kind"], w["value"], w["step"], w["message"]] for w in warnings])
    else:
        report.add_note("No statistic crossed its threshold.")
    report.add_key_values("Thresholds", {k: v for k, v in vars(t).items()})
    if info:
        report.add_key_values("Run", info)
    if losses:
        fig = new_figure(7, 3)
        ax = fig.add_subplot()
        ax.plot(range(1, len(losses) + 1), losses, color="#1f77b4")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.grid(True, alpha=0.3)
        report.add_figure("Training loss", fig)

    acts = summary["activations"]
    report.add_section("Activations")
    if not acts:
        report.add_note("No activation or conv/linear module was called: nothing recorded.")
    relus = {n: s for n, s in acts.items() if "dead_fraction" in s}
    if relus:
        _stat_bars(report, relus, "dead_fraction", "Dead ReLU units per layer", "fraction dead",
                   "Fraction of units (channels) that output 0 for every input of a batch, mean over recorded steps; "
                   f"dashed: the warning threshold {t.dead_relu:g}.", t.dead_relu)
    else:
        report.add_note("No ReLU modules: dead units are not measured (functional activations have no hooks).")
    sat = {n: s for n, s in acts.items() if "saturated_fraction" in s}
    if sat:
        _stat_bars(report, sat, "saturated_fraction", "Saturated sigmoid / tanh outputs", "fraction saturated",
                   f"Sigmoid outside [0.01, 0.99], |tanh| > 0.99; dashed: threshold {t.saturation:g}.", t.saturation)
    corr = {n: s for n, s in acts.items() if "channel_correlation" in s and "#" not in n}
    if corr:
        _stat_bars(report, corr, "channel_correlation", "Mean |correlation| between channels", "mean |corr|",
                   "Pearson correlation between the channels of each layer's output (subsampled channels and "
                   f"positions), mean over recorded steps; dashed: threshold {t.correlation:g}.", t.correlation)

    report.add_section("Weights and gradients")
    _param_lines(report, stats.records, "grad_norm", "Gradient norm per parameter",
                 "L2 norm of each parameter's gradient at the recorded steps (at most "
                 f"{MAX_PARAM_LINES} parameters, spread from the first layer to the last).")
    _param_lines(report, stats.records, "update_ratio", "Update / weight ratio",
                 "||W_after - W_before|| / ||W_before|| of one optimizer step; about 1e-3 is the usual healthy "
                 f"order. Warnings above {t.update_ratio_high:g} and below {t.update_ratio_low:g}.")
    params = summary["params"]
    if params:
        rows = [[n, p.get("weight_norm", {}).get("last"), p.get("grad_norm", {}).get("mean"),
                 p.get("update_ratio", {}).get("mean")] for n, p in params.items()]
        report.add_table("Per parameter (last weight norm, mean over steps)",
                         ["parameter", "weight norm", "grad norm", "update ratio"], rows)
    if acts:
        rows = [[n, s.get("kind"), s.get("mean", {}).get("mean"), s.get("std", {}).get("mean"),
                 s.get("dead_fraction", {}).get("mean"), s.get("saturated_fraction", {}).get("mean"),
                 s.get("channel_correlation", {}).get("mean")] for n, s in acts.items()]
        report.add_table("Per activation layer (mean over steps)",
                         ["layer", "kind", "mean", "std", "dead", "saturated", "channel corr"], rows)
