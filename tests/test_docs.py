"""The documentation: the generated config reference names every key the validator accepts, the weights
page and tables come from the model cards and are current, README stays a short front page whose links
resolve, and `mkdocs build --strict` passes (skipped when mkdocs is not installed)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_pages", ROOT / "docs" / "gen_pages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def config_page(gen):
    return gen.config_reference()


def _keys(cls, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out += _keys(hints[f.name], prefix + f.name + ".")
    return out


def test_config_reference_names_every_schema_field(gen, config_page):
    from visionzoo.config.schema import ExperimentConfig, TrainConfig

    keys = [k for cls, prefix in gen.config_classes() for k in _keys(cls, prefix)]
    # the shared schema and every task's sections are covered, nested sections included
    assert {"model.name", "data.max_image_pixels", "train.ema.decay", "output.name", "optimizers.NAME.lr"} <= set(keys)
    assert len(keys) > len(_keys(ExperimentConfig, "")) + 40
    missing = [k for k in keys if f"`{k}`" not in config_page]
    assert not missing, f"not in the generated config reference: {missing}"
    assert all(f"| `train.{f.name}` |" in config_page for f in dataclasses.fields(TrainConfig))
    # every registered data set's data.params keys, with their defaults (a key shared by several data sets of a
    # task shows the first one's)
    from visionzoo.datasets.registry import dataset_names, get_dataset

    for name in gen.TASKS:
        section = config_page.split(f"#### `data.params` ({name})")[1].split("####")[0]
        rows = {line.split(" | ")[0]: line for line in section.splitlines() if line.startswith("| `data.params.")}
        seen = set()
        for dataset in dataset_names(name):
            for f in dataclasses.fields(get_dataset(name, dataset).params):
                row = rows.get(f"| `data.params.{f.name}`")
                assert row is not None, f"{name}/{dataset}: data.params.{f.name} is not in the config reference"
                if f.name not in seen:
                    seen.add(f.name)
                    assert f" | {gen._show(gen._default(f))} | " in row, row


def test_config_reference_defaults_and_types_come_from_the_dataclasses(gen, config_page):
    from visionzoo.config.schema import DataConfig, OptimConfig

    assert f"| `data.batch_size` | int | `{DataConfig().batch_size}` |" in config_page
    assert f"| `optim.lr` | float | `{OptimConfig().lr}` |" in config_page
    assert "| `optim.name` | `sgd` \\| `adamw` \\| `adam` |" in config_page
    assert "| `data.eval_batch_size` | int or null | `null` |" in config_page


def test_config_notes_name_existing_keys(gen, config_page):
    """The hand-written notes attach to keys; a renamed key must not leave a note behind."""
    keys = {k for cls, prefix in gen.config_classes() for k in _keys(cls, prefix)}
    params = set(re.findall(r"`(data\.params\.\w+)`", config_page))
    stale = [k for k in gen.NOTES if k not in keys and k not in params]
    assert not stale, f"docs/gen_pages.py NOTES for keys that do not exist: {stale}"


def test_comments_become_meanings(gen):
    @dataclasses.dataclass
    class Example:
        # a group
        alpha: int = 1  # first
        # spread over
        # two lines
        beta: typing.Optional[str] = None
        gamma: list = dataclasses.field(default_factory=list)

    rows = {k: (t, d, m) for k, t, d, m in gen.dataclass_rows(Example, "x.")}
    assert rows["x.alpha"] == ("int", "`1`", "a group: first")
    assert rows["x.beta"] == ("str or null", "`null`", "spread over two lines")
    assert rows["x.gamma"] == ("list", "`[]`", "")


def test_weights_page_lists_every_card(gen):
    cards = sorted((ROOT / "weights").glob("*.json"))
    if not cards:
        pytest.skip("no model cards in weights/")
    page = gen.weights_page()
    for path in cards:
        card = json.loads(path.read_text())
        assert f"## {card['model']}.{card['tag']} " in page
        assert card["sha256"] in page
        for command in card.get("reproduce", []):
            assert command in page
    table = gen.weights_table(gen.load_cards(), "weights/")
    assert table.count("\n") == len(cards) + 2
    for path in cards:
        assert f"(weights/{path.name})" in table


def test_weights_table_rows_from_a_card(gen, tmp_path):
    card = {"model": "m", "tag": "t", "task": "classification", "input_size": [3, 32, 32], "size_bytes": 3 * 2**20,
            "metrics": {"split": "test", "top1": 0.91234, "top5": 1.0}, "sha256": "ab"}
    (tmp_path / "m.t.json").write_text(json.dumps(card))
    table = gen.weights_table(gen.load_cards(tmp_path), "weights/")
    assert "| [`m.t`](weights/m.t.json) | classification | 3×32×32 | 3.0 MB | top-1 0.912, top-5 1.000 |" in table


def test_weight_tables_in_readme_and_docs_are_current(gen):
    stale = gen.update_sources(check=True)
    assert not stale, f"{stale}: weights tables differ from the cards; run: python docs/gen_pages.py --update"
    readme = (ROOT / "README.md").read_text()
    assert "<!-- weights-table:all -->" in readme
    for task in ("classification", "detection", "segmentation", "tracking"):
        assert f"<!-- weights-table:{task} -->" in (ROOT / "docs" / f"{task}.md").read_text()


def test_benchmarks_page_is_results_md(gen):
    results = ROOT / "benchmarks" / "RESULTS.md"
    if not results.is_file():
        pytest.skip(f"missing {results}")
    page = gen.benchmarks_page()
    headings = re.findall(r"(?m)^## .*$", results.read_text())
    assert headings and all(h in page for h in headings)
    body = page.split("\n", 3)[3]  # after the title and the page's own note
    assert results.read_text().splitlines()[-1] in body
    assert not re.search(r"\]\((?!#|https?://)[^)]+\)", body)  # no links that only resolve in benchmarks/


def test_readme_is_a_short_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12_500
    assert not re.search(r"\bissues? ?#?\d+", readme, re.I)
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert quick.count("```bash") == 2  # exactly two commands
    assert 'pip install -e ".[test]" && python -m pytest -q' in quick
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    for target in re.findall(r"\]\(((?!https?://|#)[^)]+)\)", readme):
        assert (ROOT / target).exists(), f"README links to missing {target}"


def test_docs_pages_in_nav_exist_and_link_inside_the_site():
    mkdocs_yml = (ROOT / "mkdocs.yml").read_text()
    generated = {"config.md", "weights.md", "benchmarks.md"}
    pages = re.findall(r":\s*([\w-]+\.md)\s*$", mkdocs_yml, re.M)
    assert {"classification.md", "detection.md", "segmentation.md", "tracking.md", "generative.md"} <= set(pages)
    for page in pages:
        assert page in generated or (ROOT / "docs" / page).is_file(), f"mkdocs.yml names missing docs/{page}"
    orphans = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name not in pages)
    assert not orphans, f"docs pages missing from the nav in mkdocs.yml: {orphans}"
    for page in (ROOT / "docs").glob("*.md"):
        text = page.read_text()
        assert not re.search(r"\bissue[ -]?#?\d+", text, re.I), page.name
        for target in re.findall(r"\]\(((?!https?://|#)[^)#]+)(?:#[^)]*)?\)", text):
            assert target in generated or (ROOT / "docs" / target).is_file(), f"{page.name} links to {target}"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install -e '.[test]')")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    site = tmp_path / "site"
    config_html = (site / "config.html").read_text()
    assert "train.ema.decay" in config_html and "data.augment.scale_range" in config_html
    assert "resnet18.shapes" in (site / "weights.html").read_text()
    assert "<table>" in (site / "classification.html").read_text()


@pytest.mark.usefixtures("one_thread")
def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    """Every ```python block of README.md, in order, in one namespace, offline, from a folder holding the
    one file the quick start writes that the blocks read (rendered here exactly as write_shapes does)."""
    from visionzoo.datasets.shapes import SHAPE_CLASSES, make_classification_sample, sample_seed

    image, label = make_classification_sample(sample_seed(0, "test", 9), 64)
    assert SHAPE_CLASSES[label] == "star"
    path = tmp_path / "data" / "shapes" / "test" / "star" / "test_00009.png"
    path.parent.mkdir(parents=True)
    image.save(path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VISIONZOO_OFFLINE", "1")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["r"].labels[0] == "star" and len(namespace["r"].labels) == 3
    assert tuple(namespace["images"].shape) == (16, 3, 32, 32)
    assert tuple(namespace["feats"].shape) == (1, 512)
