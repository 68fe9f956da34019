"""A generic, self-contained HTML report builder.

The report is one file: inline CSS, every image embedded as a ``data:image/png;base64`` URI, no
scripts and no external resources, so it can be mailed, archived or opened offline. It knows nothing
about any task; task packages compose it from sections, tables, figures and image grids.

    report = HtmlReport("resnet18 on shapes", subtitle="validation split")
    report.add_section("Summary")
    report.add_key_values("Metrics", {"top1": 0.93, "loss": 0.21})
    report.add_figure("Training curves", fig)
    report.write("out/report.html")

All text given to the builder (titles, captions, table cells, keys, values) is HTML-escaped; only the
``html`` argument of :meth:`HtmlReport.add_section` / :meth:`Section.add_html` is inserted as is.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html as _html
import io
import json
import math
import numbers
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from visionzoo.reports.figures import training_curves
from visionzoo.reports.layer_stats import add_layer_statistics

__all__ = ["HtmlReport", "Section", "data_uri_png", "escape", "format_value"]


def escape(text: Any) -> str:
    """HTML-escape any value (converted with ``str``), quotes included."""
    return _html.escape("" if text is None else str(text), quote=True)


def format_value(value: Any) -> str:
    """A short, human-readable string for a table cell or key-value entry (not escaped).

    None -> an em dash; bools -> yes/no; integers with thousands separators from 10,000 on; floats to
    4 significant digits (scientific notation for very small or very large magnitudes); nested
    containers as compact JSON.
    """
    if value is None:
        return "\u2014"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        value = int(value)
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1e6 or magnitude < 1e-3:
            return f"{value:.3e}"
        if magnitude >= 1e4:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, (Mapping, list, tuple)):
        try:
            return json.dumps(value, default=str, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _pyplot_if_loaded():
    return sys.modules.get("matplotlib.pyplot")


def _close_figure(fig) -> None:
    """Release a matplotlib figure; pyplot-managed figures are also removed from pyplot's registry."""
    plt = _pyplot_if_loaded()
    if plt is not None and getattr(getattr(fig, "canvas", None), "manager", None) is not None:
        plt.close(fig)
    else:
        fig.clear()


def _png_bytes(pil_or_fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    if isinstance(pil_or_fig, Image.Image):
        image = pil_or_fig
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buf, format="PNG", optimize=True)
    elif hasattr(pil_or_fig, "savefig"):
        pil_or_fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    else:
        raise TypeError(f"expected a PIL.Image.Image or a matplotlib Figure, got {type(pil_or_fig).__name__}")
    return buf.getvalue()


def data_uri_png(pil_or_fig, dpi: int = 110) -> str:
    """A ``data:image/png;base64,...`` URI for a PIL image or a matplotlib Figure (not closed)."""
    return "data:image/png;base64," + base64.b64encode(_png_bytes(pil_or_fig, dpi=dpi)).decode("ascii")


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "section"


@dataclass
class Section:
    """One top-level section (an ``<h2>`` and a TOC entry) holding HTML blocks."""

    title: str
    anchor: str
    blocks: list[str] = field(default_factory=list)

    def add_html(self, html: str) -> Section:
        """Append trusted, already-escaped HTML."""
        if html:
            self.blocks.append(html)
        return self

    def render(self) -> str:
        body = "\n".join(self.blocks)
        return (f'<section id="{escape(self.anchor)}">\n<h2>{escape(self.title)}'
                f'<a class="anchor" href="#{escape(self.anchor)}" aria-label="link to this section">#</a></h2>\n'
                f"{body}\n</section>")


class HtmlReport:
    """Builds one self-contained HTML page.

    :meth:`add_section` starts a section; the other ``add_*`` methods append to the current one
    (their ``title`` becomes a sub-heading). If no section was started yet, the first ``add_*``
    call starts one named after its title.
    """

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = str(title)
        self.subtitle = subtitle
        self.sections: list[Section] = []
        self._anchors: set[str] = set()
        self._figure_dpi = 110

    # ---- structure --------------------------------------------------------------------------
    def add_section(self, title: str, html: str = "", anchor: str | None = None) -> Section:
        base = _slug(anchor or title)
        unique, n = base, 2
        while unique in self._anchors:
            unique, n = f"{base}-{n}", n + 1
        self._anchors.add(unique)
        section = Section(str(title), unique)
        section.add_html(html)
        self.sections.append(section)
        return section

    @property
    def current(self) -> Section | None:
        return self.sections[-1] if self.sections else None

    def _target(self, title: str | None) -> tuple[Section, str]:
        """The section to append to and the sub-heading HTML for `title` (none when the section was
        just created from that title)."""
        if not self.sections:
            return self.add_section(title or "Report"), ""
        return self.sections[-1], (f"<h3>{escape(title)}</h3>" if title else "")

    def _append(self, title: str | None, body: str) -> Section:
        section, heading = self._target(title)
        section.add_html(heading + body)
        return section

    @staticmethod
    def _caption(caption: str | None, tag: str = "p") -> str:
        return f'<{tag} class="caption">{escape(caption)}</{tag}>' if caption else ""

    # ---- content ----------------------------------------------------------------------------
    def add_html(self, html: str, title: str | None = None) -> Section:
        """Append trusted HTML (not escaped) to the current section."""
        return self._append(title, html)

    def add_text(self, text: str, title: str | None = None) -> Section:
        """Escaped text; blank lines separate paragraphs, single newlines become line breaks."""
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", str(text)) if p.strip()]
        body = "\n".join("<p>" + escape(p).replace("\n", "<br>") + "</p>" for p in paragraphs)
        return self._append(title, body)

    def add_note(self, text: str, title: str | None = None) -> Section:
        """A short, muted note (e.g. why a piece of the report is missing)."""
        return self._append(title, f'<p class="note">{escape(text)}</p>')

    def add_stats(self, items: Sequence[tuple[str, Any]], title: str | None = None) -> Section:
        """A row of headline numbers ("cards"): [(label, value)]; values are formatted unless strings."""
        cards = "".join(
            f'<div class="stat"><div class="stat-value">{escape(v if isinstance(v, str) else format_value(v))}</div>'
            f'<div class="stat-label">{escape(k)}</div></div>'
            for k, v in items)
        return self._append(title, f'<div class="stats">{cards}</div>')

    def add_key_values(self, title: str | None, mapping: Mapping[str, Any]) -> Section:
        """A two-column table of keys and formatted values."""
        rows = []
        for key, value in mapping.items():
            cls = ' class="num"' if _is_number(value) else ""
            text = format_value(value)
            cell = f"<code>{escape(text)}</code>" if isinstance(value, (Mapping, list, tuple)) else escape(text)
            rows.append(f"<tr><th scope=\"row\">{escape(key)}</th><td{cls}>{cell}</td></tr>")
        if not rows:
            return self._append(title, '<p class="note">(none)</p>')
        return self._append(title, '<div class="table-wrap"><table class="kv"><tbody>'
                                   + "".join(rows) + "</tbody></table></div>")

    def add_table(self, title: str | None, header: Sequence[str], rows: Sequence[Sequence[Any]],
                  caption: str | None = None) -> Section:
        """A table; numeric cells are formatted (see :func:`format_value`) and right-aligned."""
        head = "".join(f'<th scope="col">{escape(h)}</th>' for h in header)
        body = []
        for row in rows:
            cells = []
            for value in row:
                cls = ' class="num"' if _is_number(value) else ""
                cells.append(f"<td{cls}>{escape(format_value(value))}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        table = (f'<div class="table-wrap"><table class="data"><thead><tr>{head}</tr></thead>'
                 f'<tbody>{"".join(body)}</tbody></table></div>')
        return self._append(title, table + self._caption(caption))

    def add_figure(self, title: str | None, fig, caption: str | None = None) -> Section:
        """Embed a matplotlib Figure as a PNG and close it."""
        try:
            uri = data_uri_png(fig, dpi=self._figure_dpi)
        finally:
            _close_figure(fig)
        alt = escape(title or caption or "figure")
        body = (f'<figure class="plot"><img src="{uri}" alt="{alt}">'
                f'{self._caption(caption, "figcaption")}</figure>')
        return self._append(title, body)

    def add_image(self, title: str | None, pil_image: Image.Image, caption: str | None = None,
                  max_display: int = 640) -> Section:
        """Embed a PIL image; small images are shown enlarged with crisp (nearest) pixels."""
        w, h = pil_image.size
        scale = max(1, min(8, max_display // max(w, h, 1)))
        style = f'style="width:{w * scale}px"' if scale > 1 else ""
        cls = "pixelated" if scale > 1 else ""
        alt = escape(title or caption or "image")
        body = (f'<figure class="image"><img class="{cls}" {style} src="{data_uri_png(pil_image)}" alt="{alt}">'
                f'{self._caption(caption, "figcaption")}</figure>')
        return self._append(title, body)

    def add_image_grid(self, title: str | None, items: Sequence[tuple[Image.Image, str]], columns: int = 8,
                       caption: str | None = None, max_size: int = 192) -> Section:
        """A grid of images, each with a caption. Images larger than `max_size` are stored as
        thumbnails; smaller ones are scaled up to the cell width with pixelated rendering."""
        columns = max(1, int(columns))
        cells = []
        for image, label in items:
            if max(image.size) > max_size:
                image = image.copy()
                image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
            cls = "pixelated" if max(image.size) < 128 else ""
            cells.append(f'<figure class="cell"><img class="{cls}" src="{data_uri_png(image)}" alt="{escape(label)}">'
                         f"<figcaption>{escape(label)}</figcaption></figure>")
        if not cells:
            return self._append(title, '<p class="note">(no images)</p>' + self._caption(caption))
        grid = (f'<div class="grid" style="grid-template-columns:repeat({columns},minmax(0,1fr))">'
                + "".join(cells) + "</div>")
        return self._append(title, grid + self._caption(caption))

    def add_json(self, title: str | None, obj: Any, expanded: bool = False) -> Section:
        """Pretty-printed JSON in a collapsible ``<details>`` block (summary = title)."""
        text = json.dumps(obj, indent=2, default=str, ensure_ascii=False)
        summary = escape(title or "JSON")
        section = self.current if self.sections else self.add_section(title or "JSON")
        attr = " open" if expanded else ""
        section.add_html(f"<details{attr}><summary>{summary}</summary><pre>{escape(text)}</pre></details>")
        return section

    # ---- output -----------------------------------------------------------------------------
    def render(self) -> str:
        now = _dt.datetime.now().astimezone()
        stamp = now.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
        toc = "".join(f'<li><a href="#{escape(s.anchor)}">{escape(s.title)}</a></li>' for s in self.sections)
        subtitle = f'<p class="subtitle">{escape(self.subtitle)}</p>' if self.subtitle else ""
        sections = "\n".join(s.render() for s in self.sections)
        nav = f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol></nav>' if self.sections else ""
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="visionzoo">
<title>{escape(self.title)}</title>
<style>{_CSS}</style>
</head>
<body>
<header class="page-header">
<h1>{escape(self.title)}</h1>
{subtitle}
<p class="generated">Generated <time datetime="{escape(now.isoformat(timespec="seconds"))}">{escape(stamp)}</time>
by visionzoo</p>
</header>
<main>
{nav}
{sections}
</main>
<footer>Self-contained report: all figures and images are embedded in this file.</footer>
</body>
</html>
"""

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path


_CSS = """
:root{--fg:#1f2328;--muted:#656d76;--border:#d0d7de;--bg:#f6f8fa;--card:#fff;--accent:#0969da;--stripe:#f6f8fa}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
 font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI","Noto Sans",Helvetica,Arial,sans-serif}
.page-header{background:#24292f;color:#fff;padding:28px 32px 20px}
.page-header h1{margin:0;font-size:26px;font-weight:600;overflow-wrap:anywhere}
.subtitle{margin:6px 0 0;color:#d0d7de;font-size:16px}
.generated{margin:10px 0 0;color:#afb8c1;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:24px 24px 8px}
section,.toc{background:var(--card);border:1px solid var(--border);border-radius:8px;padding:18px 22px;margin:0 0 20px}
.toc h2{font-size:15px;margin:0 0 6px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.toc ol{margin:0;padding-left:22px;columns:2;column-gap:32px}
.toc li{margin:2px 0}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
h2{font-size:20px;margin:0 0 12px;padding-bottom:8px;border-bottom:1px solid var(--border);font-weight:600}
h2 .anchor{margin-left:8px;color:var(--border);font-weight:400;visibility:hidden}
h2:hover .anchor{visibility:visible}
h3{font-size:16px;margin:18px 0 8px;font-weight:600}
section>h3:first-of-type{margin-top:4px}
p{margin:6px 0}
.note{color:var(--muted);font-style:italic}
.caption,figcaption{color:var(--muted);font-size:13px;margin-top:4px}
.table-wrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:14px;margin:4px 0}
th,td{padding:5px 12px;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
table.data thead th{background:var(--stripe);border-bottom:2px solid var(--border);white-space:nowrap;position:sticky;top:0}
table.data tbody tr:nth-child(even){background:#fafbfc}
table.data tbody tr:hover{background:#eef4fc}
table.kv th{font-weight:600;color:var(--muted);white-space:nowrap;padding-right:24px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
td code{overflow-wrap:anywhere}
.stats{display:flex;flex-wrap:wrap;gap:12px;margin:6px 0 10px}
.stat{flex:1 1 140px;border:1px solid var(--border);border-radius:8px;padding:10px 14px;background:#fbfcfd}
.stat-value{font-size:24px;font-weight:600;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.stat-label{color:var(--muted);font-size:13px}
figure{margin:8px 0}
figure.plot img{max-width:100%;height:auto;display:block}
figure.image img{max-width:100%;height:auto;display:block;border:1px solid var(--border)}
.grid{display:grid;gap:10px;margin:6px 0}
.grid figure.cell{margin:0;border:1px solid var(--border);border-radius:6px;padding:6px;background:#fbfcfd;min-width:0}
.grid img{width:100%;height:auto;display:block;background:#eee}
.grid figcaption{font-size:12px;line-height:1.3;margin-top:5px;color:var(--fg);overflow-wrap:anywhere}
img.pixelated{image-rendering:pixelated}
details{border:1px solid var(--border);border-radius:6px;margin:8px 0;background:#fbfcfd}
details summary{cursor:pointer;padding:8px 12px;font-weight:600}
details pre{margin:0;padding:10px 14px;border-top:1px solid var(--border);overflow:auto;max-height:600px;background:#fff}
footer{max-width:1180px;margin:0 auto;padding:0 24px 28px;color:var(--muted);font-size:12px}
@media print{body{background:#fff}.page-header{background:#fff;color:#000}section,.toc{border:none;padding:0}}
"""


def _is_flat_mapping(value: Any) -> bool:
    return isinstance(value, Mapping) and all(not isinstance(v, (Mapping, list, tuple)) for v in value.values())


def add_run_info(report: HtmlReport, run_info: Mapping | None) -> None:
    """A "Run information" section: command, provenance, versions, and the config as collapsible JSON."""
    report.add_section("Run information")
    if not run_info:
        report.add_note("No run information available.")
        return
    flat: dict[str, Any] = {}
    for key, value in run_info.items():
        if not isinstance(value, (Mapping, list, tuple)):
            flat[key] = value
        elif isinstance(value, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            flat[key] = " ".join(map(str, value)) if key in ("command", "argv") else list(value)
    if flat:
        report.add_key_values(None, flat)
    for key, value in run_info.items():
        if key == "config" or key in flat:
            continue
        if _is_flat_mapping(value) and value:
            report.add_key_values(str(key), dict(value))
        else:
            report.add_json(str(key), value)
    if "config" in run_info:
        report.add_json("Configuration", run_info["config"])


def add_training_curves(report: HtmlReport, log_records: Sequence[dict] | None) -> None:
    """A "Training curves" section from a run's JSON-lines log, or a note when there is none."""
    report.add_section("Training curves")
    fig = training_curves(list(log_records)) if log_records else None
    if fig is None:
        report.add_note("No training log available (the model was not trained in a visionzoo run directory, "
                        "or the log holds no train / validation records).")
        return
    report.add_figure(None, fig, caption="Training loss terms and learning rate per logged step; validation "
                                         "metrics per evaluated epoch (the value at the last epoch is labelled).")
    add_layer_statistics(report, log_records)
