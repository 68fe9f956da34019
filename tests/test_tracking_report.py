"""The tracking report on its own: box drawing, the OTB-style plots and a self-contained report built from
synthetic results."""
import re

import numpy as np
import pytest

from visionzoo.reports.html import escape
from visionzoo.tasks.tracking.metrics import SequenceResult, summarize
from visionzoo.tasks.tracking.report import (
    GT_COLOR,
    PRED_COLOR,
    build_tracking_report,
    draw_boxes,
    precision_plot,
    success_plot,
)


def _img_sources(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)


def test_draw_boxes_colours():
    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    out = np.asarray(draw_boxes(rgb, gt=[5, 5, 20, 20], pred=[30, 10, 20, 20], line_width=1))
    assert tuple(out[5, 10]) == GT_COLOR             # top edge of the ground truth
    assert tuple(out[10, 40]) == PRED_COLOR          # top edge of the prediction
    assert tuple(out[15, 15]) == (0, 0, 0)           # inside stays untouched
    assert not rgb.any()                             # the input is not modified
    none = np.asarray(draw_boxes(rgb, None, [np.nan] * 4))
    assert not none.any()


def test_plots_label_and_validate():
    good, bad = np.linspace(1, 0, 21), np.linspace(0.5, 0, 21)
    fig = success_plot({"weak": bad, "strong": good})
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"[{good.mean():.3f}] strong", f"[{bad.mean():.3f}] weak"]  # best first
    prec = np.linspace(0, 1, 51)
    fig = precision_plot({"t": prec})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == [f"[{prec[20]:.3f}] t"]
    with pytest.raises(ValueError, match="expected 21"):
        success_plot({"t": prec})
    with pytest.raises(ValueError, match="at least one"):
        precision_plot({})


def test_report_from_synthetic_results(tmp_path):
    rng = np.random.default_rng(0)
    results = []
    names = ["boat", "car-3", "person<1>"]
    for k, name in enumerate(names):
        n = 6 + k
        gt = np.column_stack([rng.uniform(0, 30, (n, 2)), rng.uniform(8, 20, (n, 2))])
        pred = gt + rng.normal(0, 2 + 4 * k, gt.shape)
        results.append(SequenceResult(name, pred, gt, cover=np.full(n, 8), times=np.full(n, 0.02)))
    metrics = summarize(results)
    small = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    large = rng.integers(0, 255, (200, 400, 3), dtype=np.uint8)  # downscaled to 320 px wide
    showcase = [
        {"name": "boat", "label": "best", "ao": 0.81,
         "frames": [(0, small, [5, 5, 20, 20], [5, 5, 20, 20]),
                    (3, large, [50, 40, 100, 80], [60, 40, 100, 80])]},
        {"name": "person<1>", "label": "worst", "ao": 0.12,
         "frames": [(1, small, None, [10, 10, 5, 5]), (2, small, [1, 1, 10, 10], [np.nan] * 4)]},
    ]
    log = [{"type": "train", "step": s, "loss": 1.0 / (s + 1), "lr": 0.01} for s in range(5)]
    path = build_tracking_report(tmp_path / "r" / "report.html", title="SiamFC on synthetic", metrics=metrics,
                                 showcase=showcase, log_records=log, model_summary={"parameters": 2_300_000},
                                 run_info={"command": ["evaluate.py", "x.yaml"], "config": {"a": 1}})
    assert path.is_file()
    html = path.read_text()
    sources = _img_sources(html)
    assert len(sources) >= 2 + 4 + 1  # two plots, four frames, training curves
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert 'src="http' not in html
    for heading in ("Summary", "Success and precision plots", "Per-sequence results",
                    "Best and worst sequences", "Training curves", "Run information", "Model"):
        assert f">{heading}" in html
    for text in ("AO", "SR0.5", "SR0.75", "success AUC", "precision@20 px", "fps", "21 overlap thresholds",
                 "cover == 0", f"{metrics['ao']:.3f}"):
        assert escape(text) in html
    start = html.index('<section id="per-sequence-results"')
    table = html[start:html.index('<section id="best-and-worst-sequences"')]
    for name in names:
        assert f"<td>{escape(name)}</td>" in table
    assert "best: boat (AO 0.810)" in html and escape("worst: person<1> (AO 0.120)") in html
    assert "frame 3 \u00b7 IoU" in html and "frame 1 \u00b7 IoU \u2014" in html  # no ground truth: no IoU
    assert "frame 2 \u00b7 IoU 0.000" in html  # a missing prediction scores 0
    # sorted by AO, best first
    aos = sorted((p["ao"], p["name"]) for p in metrics["per_sequence"])[::-1]
    positions = [table.index(f"<td>{escape(name)}</td>") for _, name in aos]
    assert positions == sorted(positions)


def test_report_without_optional_parts(tmp_path):
    box = [0, 0, 10, 10]
    metrics = summarize([SequenceResult("only", np.array([box] * 3), np.array([box] * 3))])
    html = build_tracking_report(tmp_path / "p.html", title="t", metrics=metrics, showcase=[]).read_text()
    assert "No frames were kept" in html and "No training log available" in html
    assert "No run information available" in html
    assert all(src.startswith("data:image/png;base64,") for src in _img_sources(html))
