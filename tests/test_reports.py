import base64
import io
import math
import re

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from visionzoo.reports.compare import compare_html, compare_runs, format_table
from visionzoo.reports.figures import bar_chart, confusion_matrix_figure, filter_grid, training_curves
from visionzoo.reports.html import HtmlReport, add_training_curves, data_uri_png, format_value
from visionzoo.reports.layer_stats import StatsThresholds, find_warnings, records_from_log, summarize
from visionzoo.tasks.classification.metrics import ClassificationMeter
from visionzoo.tasks.classification.report import build_classification_report

SECTION_TITLES = ["Summary", "Training curves", "Per-class metrics", "Confusion matrix", "Misclassified samples",
                  "First-layer filters", "Run information"]


def fake_log(epochs=3, steps_per_epoch=10):
    records = [{"type": "run", "event": "start", "epoch": 0, "step": 0, "device": "cpu"}]
    for e in range(1, epochs + 1):
        for s in range(2, steps_per_epoch + 1, 2):
            step = (e - 1) * steps_per_epoch + s
            records.append({"type": "train", "epoch": e, "step": step, "lr": 0.1 / step, "loss": 2.0 / step,
                            "aux_loss": 0.5 / step, "images_per_s": 300.0, "time": 1.0 * step})
        records.append({"type": "val", "epoch": e, "step": e * steps_per_epoch, "top1": 0.5 + 0.1 * e,
                        "top5": 1.0, "loss": 1.0 / e})
        records.append({"type": "epoch", "epoch": e, "step": e * steps_per_epoch, "train_loss": 1.0 / e,
                        "seconds": 4.0, "lr": 0.05})
        records.append({"type": "checkpoint", "file": "last.pt", "epoch": e})
        records.append({"type": "warning", "epoch": e, "message": "<script>alert(1)</script>"})
    return records


def fake_metrics(names, n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, len(names), (n,), generator=g)
    logits = torch.randn(n, len(names), generator=g)
    logits[torch.arange(n), targets] += 1.5
    meter = ClassificationMeter(len(names), names)
    meter.update(logits, targets)
    return meter


def img_srcs(html):
    return re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)


def assert_self_contained(html):
    assert 'src="http' not in html and "src='http" not in html
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html and "url(" not in html
    for href in re.findall(r'href="([^"]*)"', html):
        assert href.startswith("#"), href
    srcs = img_srcs(html)
    for src in srcs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix), src[:40]
        data = base64.b64decode(src[len(prefix):], validate=True)
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
    return srcs


def test_full_classification_report(tmp_path):
    names = ["cat", "dog", "<b>x</b>", "bird & fish", "ant"]
    meter = fake_metrics(names)
    metrics = meter.compute()
    wrong = [(Image.new("RGB", (32, 32), (i * 40, 80, 120)), names[t], names[p], c)
             for i, (_, t, p, c) in enumerate(meter.misclassified(6))]
    wrong.append((Image.new("L", (400, 300), 128), names[0], names[2], 0.5))  # large, grey: thumbnailed
    out = build_classification_report(
        tmp_path / "sub" / "report.html", title="resnet18 <on> shapes", metrics=metrics, class_names=names,
        log_records=fake_log(), misclassified_images=wrong, first_layer_weight=torch.randn(16, 3, 7, 7),
        model_summary={"name": "resnet18", "task": "classification", "parameters": 11_179_077, "gflops": 0.149,
                       "input_size": [3, 64, 64], "weights": None},
        run_info={"command": ["python", "train.py", "cfg.yaml"], "git_commit": "abc123",
                  "versions": {"torch": "2.15", "python": "3.11"},
                  "config": {"model": {"name": "resnet18"}, "note": "</pre><i>"}})
    assert out == tmp_path / "sub" / "report.html" and out.is_file()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["report.html"]  # one file, nothing beside it
    html = out.read_text(encoding="utf-8")
    srcs = assert_self_contained(html)
    # curves, F1 bars, confusion matrix, 7 misclassified, filters
    assert len(srcs) == 3 + 7 + 1
    for title in SECTION_TITLES:
        assert f">{title}<" in html
        assert re.search(r'<a href="#[^"]+">' + re.escape(title) + "</a>", html)  # table of contents
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    assert "bird &amp; fish" in html
    assert "resnet18 &lt;on&gt; shapes" in html
    assert "&lt;/pre&gt;&lt;i&gt;" in html and "</pre><i>" not in html
    assert "alert(1)" not in html  # warning records are ignored
    assert "Generated" in html and "<details" in html
    assert f"{100 * metrics['top1']:.2f}%" in html
    assert "\u2192" in html  # "true -> pred (conf)" captions
    assert "image-rendering:pixelated" in html.replace(" ", "")


def test_report_with_missing_pieces(tmp_path):
    names = [f"class{i}" for i in range(25)]  # > 20 classes: no count table
    metrics = fake_metrics(names, n=200).compute()
    out = build_classification_report(tmp_path / "r.html", title="t", metrics=metrics, class_names=names,
                                      log_records=None, misclassified_images=[], first_layer_weight=None,
                                      model_summary={}, run_info=None)
    html = out.read_text()
    assert_self_contained(html)
    for title in SECTION_TITLES:
        assert f">{title}<" in html
    assert "No training log" in html
    assert "No images of misclassified" in html
    assert "no convolution layer" in html
    assert "No run information" in html
    assert "not tabulated" in html
    # an unusable log (only other record types) also gives a note
    out = build_classification_report(tmp_path / "r2.html", title="t", metrics=metrics, class_names=names,
                                      log_records=[{"type": "run"}, {"type": "warning", "message": "m"}],
                                      misclassified_images=[], first_layer_weight=torch.randn(8, 1, 3, 3),
                                      model_summary={"name": "m"}, run_info={})
    assert "No training log" in out.read_text()


def test_html_report_escaping_and_structure(tmp_path):
    r = HtmlReport("<T>", subtitle="a & b")
    r.add_text("x < y\n\nsecond <p>")  # content before any section starts one
    s = r.add_section("Data <1>")
    assert s.anchor == "data-1"
    r.add_key_values("kv <k>", {"<key>": "<v>", "n": 12345, "f": 0.123456, "nested": {"a": "<z>"}})
    r.add_table("tbl", ["<h>", "v"], [["<c>", 1.5], ["d", None]], caption="cap <c>")
    r.add_json("json <j>", {"k": "<v>"})
    r.add_section("Data <1>")  # duplicate title: unique anchor
    r.add_image("img", Image.new("RGB", (8, 8)), caption="small")
    r.add_image_grid("grid", [(Image.new("RGB", (10, 10)), "<cap>")], columns=4)
    fig = Figure()
    fig.add_subplot().plot([1, 2, 3])
    r.add_figure("fig", fig)
    html = r.write(tmp_path / "x.html").read_text()
    assert_self_contained(html)
    assert "<T>" not in html and "&lt;T&gt;" in html and "a &amp; b" in html
    for raw in ("<key>", "<v>", "<h>", "<c>", "<cap>", "<z>", "<j>", "<k>", "x < y", "second <p>"):
        assert raw not in html
    assert 'id="data-1"' in html and 'id="data-1-2"' in html
    assert "12,345" in html and "0.1235" in html and "\u2014" in html
    assert len(img_srcs(html)) == 3
    assert not fig.axes  # closed/cleared after embedding


def test_data_uri_png_and_format_value():
    uri = data_uri_png(Image.new("F", (4, 4)))  # float image: converted
    assert uri.startswith("data:image/png;base64,")
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    assert data_uri_png(fig).startswith("data:image/png;base64,")
    with pytest.raises(TypeError):
        data_uri_png("not an image")
    assert format_value(None) == "\u2014"
    assert format_value(True) == "yes"
    assert format_value(0.8333333) == "0.8333"
    assert format_value(1234567) == "1,234,567"
    assert format_value(np.float32(0.5)) == "0.5"
    assert format_value(1e-5) == "1.000e-05"
    assert format_value(float("nan")) == "nan"


def test_training_curves():
    assert training_curves([]) is None
    assert training_curves([{"type": "run"}, {"type": "checkpoint", "epoch": 1}]) is None
    fig = training_curves(fake_log())
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    titles = {ax.get_title() for ax in visible}
    assert titles == {"Training loss", "Learning rate", "Validation top1", "Validation top5", "Validation loss"}
    loss_ax = next(ax for ax in visible if ax.get_title() == "Training loss")
    assert sorted(line.get_label() for line in loss_ax.get_lines()) == ["aux_loss", "loss"]
    # only epoch records: falls back to their train_* / val_* entries
    fig = training_curves([{"type": "epoch", "epoch": 1, "step": 10, "train_loss": 1.0, "lr": 0.1,
                            "val_top1": 0.5}, {"type": "epoch", "epoch": 2, "step": 20, "train_loss": 0.5,
                                               "lr": 0.05, "val_top1": 0.7}])
    assert {ax.get_title() for ax in fig.axes if ax.get_visible()} == {"Training loss", "Learning rate",
                                                                        "Validation top1"}


def test_training_curves_resumed_run_drops_redone_steps():
    recs = [{"type": "train", "step": s, "loss": 1.0, "lr": 0.1} for s in (10, 20, 30)]
    recs += [{"type": "train", "step": s, "loss": 0.5, "lr": 0.1} for s in (20, 30, 40)]
    fig = training_curves(recs)
    line = next(ax for ax in fig.axes if ax.get_title() == "Training loss").get_lines()[0]
    assert list(line.get_xdata()) == [10, 20, 30, 40]
    assert list(line.get_ydata()) == [1.0, 0.5, 0.5, 0.5]


@pytest.mark.parametrize("n", [1, 3, 30, 45])
def test_confusion_matrix_figure(n):
    rng = np.random.default_rng(n)
    cm = rng.integers(0, 20, (n, n))
    cm[0] = 0  # a class with no samples: no NaN
    fig = confusion_matrix_figure(cm, [f"a very long class name {i}" for i in range(n)])
    image = fig.axes[0].get_images()[0].get_array()
    assert not np.isnan(np.asarray(image)).any()
    assert np.asarray(image).max() <= 1.0
    data_uri_png(fig)
    with pytest.raises(ValueError):
        confusion_matrix_figure(np.zeros((2, 3)), ["a", "b"])


def test_bar_chart():
    fig = bar_chart(["a", "b", "c"], [0.1, 0.5, 0.9], "F1", "f1")
    assert len(fig.axes[0].patches) == 3
    data_uri_png(fig)
    with pytest.raises(ValueError):
        bar_chart(["a"], [1, 2], "t", "y")


def test_filter_grid():
    img = filter_grid(torch.randn(4, 3, 3, 3))
    assert img.mode == "RGB"
    # 2 x 2 filters, each 3 px enlarged 12x to 36 px, 2 px padding
    assert img.size == (2 * 38 + 2, 2 * 38 + 2)
    w = torch.zeros(2, 3, 11, 11)
    w[0, 0, 0, 0] = 1.0  # filter 0: one bright red pixel at the top-left; filter 1: constant -> grey
    arr = np.asarray(filter_grid(w, pad=0))
    scale = round(36 / 11)
    assert tuple(arr[0, 0]) == (255, 0, 0) and tuple(arr[scale, scale]) == (0, 0, 0)
    assert tuple(arr[0, 11 * scale]) == (128, 128, 128)
    grey = filter_grid(torch.randn(64, 1, 5, 5))
    arr = np.asarray(grey)
    assert (arr[..., 0] == arr[..., 1]).all()
    assert filter_grid(torch.randn(96, 64, 3, 3)).size[0] > 0
    with pytest.raises(ValueError):
        filter_grid(torch.randn(3, 3, 3))


ENTRIES = [
    {"name": "run_a", "metrics": {"top1": 0.912345, "loss": 0.3, "per_class": {"a": {}}},
     "info": {"model": "resnet18", "params": 11_179_077}},
    {"name": "run_b", "metrics": {"top1": 0.8, "macro_f1": 0.75},
     "info": {"model": "vgg11", "params": 128_000_000, "epochs": 3}},
]


def test_compare_runs():
    header, rows = compare_runs(ENTRIES)
    assert header == ["name", "model", "params", "epochs", "top1", "loss", "macro_f1"]
    assert rows == [["run_a", "resnet18", 11_179_077, None, 0.912345, 0.3, None],
                    ["run_b", "vgg11", 128_000_000, 3, 0.8, None, 0.75]]
    assert compare_runs([]) == (["name"], [])


def test_format_table():
    header, rows = compare_runs(ENTRIES)
    text = format_table(header, rows)
    lines = text.splitlines()
    assert len(lines) == 4
    assert lines[0].split() == header
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert "0.9123" in lines[2] and "0.912345" not in lines[2]
    assert "11179077" in lines[2]
    assert lines[2].split()[3] == "-"
    # numbers right-aligned: the top1 column ends at the same position in every row
    end = lines[0].index("top1") + len("top1")
    assert lines[2][end - 1] == "3" and lines[3][end - 1] == "8"
    assert format_table(["a"], []).splitlines()[0] == "a"


def test_compare_html(tmp_path):
    header, rows = compare_runs(ENTRIES + [{"name": "<run c>", "metrics": {"top1": math.nan}, "info": {}}])
    out = compare_html(header, rows, tmp_path / "cmp.html")
    html = out.read_text()
    assert_self_contained(html)
    assert "&lt;run c&gt;" in html and "run_a" in html and "0.9123" in html


def test_layer_statistics_come_from_the_log_alone(tmp_path):
    """A run that logged layer statistics gets their sections in its report, read from the JSON log."""
    stats = [{"type": "layer_stats", "epoch": 1, "step": step, "losses": {"loss": 1.0},
              "activations": {"relu": {"kind": "ReLU", "dead_fraction": dead, "mean": 0.1},
                              "conv": {"kind": "Conv2d", "channel_correlation": 0.95}},
              "params": {"conv.weight": {"ndim": 4, "weight_norm": 2.0, "grad_norm": 0.1, "update_ratio": 0.5}}}
             for step, dead in ((0, 0.2), (10, 0.6))]
    records = records_from_log(fake_log() + stats)
    assert [r["step"] for r in records] == [0, 10] and all("type" not in r for r in records)
    summary = summarize(records)
    assert summary["steps"] == 2 and summary["activations"]["relu"]["dead_fraction"] == {"mean": pytest.approx(0.4), "last": 0.6}
    warnings = {(w["layer"], w["kind"]): w for w in find_warnings(records)}
    assert set(warnings) == {("relu", "dead_relu"), ("conv", "correlated"), ("conv.weight", "update_high")}
    assert warnings[("relu", "dead_relu")]["step"] == 10
    assert not find_warnings(records, StatsThresholds(dead_relu=0.9, correlation=0.99, update_ratio_high=1.0))
    report = HtmlReport("run")
    add_training_curves(report, fake_log() + stats)
    html = report.write(tmp_path / "r.html").read_text()
    assert "Layer statistics during training (2 recorded steps)" in html and "Dead ReLU units per layer" in html
    plain = HtmlReport("run")
    add_training_curves(plain, fake_log())
    assert "Layer statistics" not in plain.write(tmp_path / "p.html").read_text()

