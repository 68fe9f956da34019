"""Per-layer statistics of a training run (activations, weights, gradients) as report sections: the
numbers come from the "layer_stats" records of the run's JSON log, so any report can show them without
the diagnostics that recorded them (the diagnostics' ActivationStats writes those records and reuses the
summary and warnings here)."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from visionzoo.reports.figures import bar_chart, new_figure

__all__ = ["StatsThresholds", "add_layer_statistics", "add_layer_stats_sections", "find_warnings", "records_from_log",
           "summarize"]


@dataclass
class StatsThresholds:
    """Where a layer statistic becomes a warning."""

    dead_relu: float = 0.4  # fraction of dead units (CS231n: "as much as 40 % of your network can be dead")
    saturation: float = 0.3  # fraction of saturated sigmoid / tanh outputs
    correlation: float = 0.9  # mean |corr| between a layer's channels
    update_ratio_high: float = 1e-1  # ||dW|| / ||W|| per step: the lr is likely too high above this
    update_ratio_low: float = 1e-7  # ... and the layer barely learns below this
    grad_norm_low: float = 1e-10  # a gradient this small (but not exactly 0) has vanished


def records_from_log(log_records: Sequence[dict] | None) -> list[dict]:
    """The per-step layer statistics a training run logged (`train.layer_stats_interval`), without the
    log's "type" key; empty when it recorded none."""
    return [{k: v for k, v in r.items() if k != "type"} for r in log_records or ()
            if isinstance(r, dict) and r.get("type") == "layer_stats"]


def summarize(records: Sequence[dict]) -> dict:
    """Per activation layer and per parameter: the mean over recorded steps and the last value of each
    statistic ({"activations": {name: {stat: {"mean", "last"}}}, "params": {...}, "steps": n})."""
    out: dict = {"steps": len(records), "activations": {}, "params": {}}
    for section in ("activations", "params"):
        series: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        kinds: dict[str, str] = {}
        for record in records:
            for name, entry in record[section].items():
                if "kind" in entry:
                    kinds[name] = entry["kind"]
                for stat, value in entry.items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
                        series[name][stat].append(float(value))
        for name, stats in series.items():
            finite = {s: [v for v in vals if math.isfinite(v)] for s, vals in stats.items()}
            out[section][name] = {s: {"mean": sum(v) / len(v) if v else math.nan,
                                      "last": stats[s][-1]} for s, v in finite.items()}
            if name in kinds:
                out[section][name]["kind"] = kinds[name]
    return out


def find_warnings(records: Sequence[dict], thresholds: StatsThresholds | None = None) -> list[dict]:
    """One warning per (layer, problem) where a statistic crossed its threshold: {"layer", "kind",
    "value" (the worst one), "step" (first step it happened), "message"}."""
    t = thresholds or StatsThresholds()
    found: dict[tuple[str, str], dict] = {}

    def add(layer, kind, value, step, message, worse=max):
        key = (layer, kind)
        if key in found:
            found[key]["value"] = worse(found[key]["value"], value)
        else:
            found[key] = {"layer": layer, "kind": kind, "value": value, "step": step, "message": message}

    for record in records:
        step = record["step"]
        for name, e in record["activations"].items():
            if e.get("non_finite"):
                add(name, "non_finite", 1.0, step, f"{name}: NaN or inf in its output")
            if e.get("dead_fraction") is not None and e["dead_fraction"] > t.dead_relu:
                add(name, "dead_relu", e["dead_fraction"], step,
                    f"{name}: {e['dead_fraction']:.0%} of its units are dead (0 for every input of the batch) "
                    f"> {t.dead_relu:.0%}: lower the lr, check the init, or try LeakyReLU")
            if e.get("saturated_fraction") is not None and e["saturated_fraction"] > t.saturation:
                add(name, "saturated", e["saturated_fraction"], step,
                    f"{name}: {e['saturated_fraction']:.0%} of its outputs are saturated (> {t.saturation:.0%}): "
                    "their gradients vanish; normalise the inputs or scale the init down")
            corr = e.get("channel_correlation")
            if corr is not None and corr > t.correlation:
                add(name, "correlated", corr, step,
                    f"{name}: mean |correlation| between its channels is {corr:.2f} (> {t.correlation:g}): "
                    "the feature maps are largely redundant")
        for name, p in record["params"].items():
            g, ratio = p.get("grad_norm"), p.get("update_ratio")
            if g is not None and not math.isfinite(g):
                add(name, "non_finite_grad", g, step, f"{name}: gradient norm is {g}")
            elif g is not None and 0 < g < t.grad_norm_low:
                add(name, "vanishing_grad", g, step, f"{name}: gradient norm {g:.2e} < {t.grad_norm_low:g} "
                                                     "(vanished)", worse=min)
            if p.get("ndim", 2) < 2:  # biases and norm scales start near 0 or 1: their ratios say little
                ratio = None
            if ratio is not None and ratio > t.update_ratio_high:
                add(name, "update_high", ratio, step,
                    f"{name}: update/weight ratio {ratio:.2e} > {t.update_ratio_high:g}: the lr is likely too high")
            elif ratio is not None and 0 < ratio < t.update_ratio_low:
                add(name, "update_low", ratio, step,
                    f"{name}: update/weight ratio {ratio:.2e} < {t.update_ratio_low:g}: the layer barely "
                    "changes (lr too low, or vanishing gradients)", worse=min)
    return list(found.values())


# ---- report sections -------------------------------------------------------------------------------
MAX_PARAM_LINES = 12


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else "\u2026" + name[-(width - 1):]


def _stat_bars(report, summary: dict, stat: str, title: str, ylabel: str, caption: str,
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


def _param_lines(report, records: Sequence[dict], stat: str, title: str, caption: str) -> None:
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


def add_layer_stats_sections(report, records: Sequence[dict], *, thresholds: StatsThresholds | None = None,
                             info: dict | None = None, losses: Sequence[float] | None = None,
                             heading: str = "Warnings") -> None:
    """Warnings, per-layer activation charts, weight / gradient charts and tables of the recorded steps
    `records` (an HtmlReport `report`)."""
    t = thresholds or StatsThresholds()
    summary, warnings = summarize(records), find_warnings(records, t)
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
    _param_lines(report, records, "grad_norm", "Gradient norm per parameter",
                 "L2 norm of each parameter's gradient at the recorded steps (at most "
                 f"{MAX_PARAM_LINES} parameters, spread from the first layer to the last).")
    _param_lines(report, records, "update_ratio", "Update / weight ratio",
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


def add_layer_statistics(report, log_records: Sequence[dict] | None) -> None:
    """Per-layer statistics the run recorded (train.layer_stats_interval > 0): warnings and charts; nothing
    when it recorded none."""
    records = records_from_log(log_records)
    if records:
        add_layer_stats_sections(report, records, heading=f"Layer statistics during training "
                                                          f"({len(records)} recorded steps)")
