"""Pages of the documentation generated from the code and the data, never copied by hand:

- ``config.md``: every config key, its type, default and meaning, read from the schema dataclasses
  (visionzoo/config/schema.py), each task's own dataclasses (``augment_config``, ``loss_config``,
  ``eval_config``), the registered data sets' ``data.params`` dataclasses and the trackers' parameter dataclasses;
- ``weights.md``: the shipped weights, from their model cards (weights/*.json);
- ``benchmarks.md``: benchmarks/RESULTS.md.

Hand-written pages (and README.md) may hold a block of shipped weights between
``<!-- weights-table:TASK -->`` and ``<!-- /weights-table -->`` (TASK: a task name or ``all``). The build
fills those blocks from the cards; ``python docs/gen_pages.py --update`` rewrites them in the source
files, and a test checks that they are current.

MkDocs runs this file as a hook (``hooks:`` in mkdocs.yml): the generated pages are added to the build
without being written into docs/. ``python docs/gen_pages.py --out DIR`` writes them to DIR instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import re
import sys
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
WEIGHTS_DIR = ROOT / "weights"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
TASKS = ("classification", "detection", "segmentation", "tracking", "generative")
BLOCK = re.compile(r"(<!-- weights-table:(?P<task>[\w-]+) -->\n)(?P<body>.*?)(<!-- /weights-table -->)", re.S)

if str(ROOT) not in sys.path:  # run as a script or an MkDocs hook from a checkout
    sys.path.insert(0, str(ROOT))


# ---- config reference ---------------------------------------------------------------------------
def _comments(cls) -> dict[str, str]:
    """The comments of each field of a dataclass: the lines right above it and the one after it."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        m = re.match(r"\s+(\w+)\s*:", line)
        if m and not stripped.startswith(("def ", '"', "'")):
            inline = _inline_comment(line)
            # a one-word comment above a group of fields names the group ("# SiamFC")
            head = " ".join(above)
            out[m.group(1)] = (f"{head}: {inline}" if inline and len(head.split()) <= 2 and head
                               else " ".join([head, inline])).strip()
        above = []
    return out


def _inline_comment(line: str) -> str:
    try:
        for tok in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if tok.type == tokenize.COMMENT:
                return tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return ""


def _type(tp) -> str:
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return "any"
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " \\| ".join(_type(a) for a in args)
        return inner + (" or null" if len(args) < len(typing.get_args(tp)) else "")
    if dataclasses.is_dataclass(tp):
        return "mapping"
    if origin is not None:
        args = ", ".join(_type(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _show(value) -> str:
    if dataclasses.is_dataclass(value):
        return "see below"
    if value is None:
        return "`null`"
    if isinstance(value, float) and len(repr(value)) > 8:
        return f"`{value:.4g}`"
    if isinstance(value, str) and value == "":
        return '`""`'
    text = json.dumps(value) if isinstance(value, (list, dict, bool)) else str(value)
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# What the code's comments leave out, by key (a test checks that each key still exists).
NOTES = {
    "model.name": "a registered model (`visionzoo.list_models()`); required",
    "model.num_classes": "null: from the data",
    "data.root": "dataset folder (relative paths: to the working directory)",
    "data.train_split": "split names, folders or annotation files depending on the dataset",
    "data.input_size": "image side in px; detectors resize by `model.kwargs` `min_size` / `max_size` instead",
    "data.mean": "input normalisation (ImageNet's by default); travels with the weights",
    "data.eval_batch_size": "null: `data.batch_size`",
    "data.num_workers": "data-loading processes",
    "data.on_corrupt": "an unreadable image stops the run naming the file (`error`), or is left out with a "
                       "warning naming the files and count each epoch (`skip`)",
    "data.max_image_pixels": "larger images are refused as possible decompression bombs",
    "optim.lr": "not rescaled for the number of processes",
    "train.epochs": "the last epoch is always validated",
    "train.seed": "data order and augmentation depend on (seed, epoch, sample) only",
    "train.amp": "mixed precision; fp16 uses a GradScaler",
    "train.channels_last": "channels-last memory format for model and batches",
    "train.compile": "`torch.compile` the model",
    "train.ema.enabled": "keep an exponential moving average of the weights; `best.pt` holds both",
    "train.tensorboard": "TensorBoard events in `RUN/tb/`",
    "train.sync_batchnorm": "SyncBatchNorm under torchrun; CUDA only (an error on CPU)",
    "output.dir": "run directories go to `output.dir/output.name` unless `--run-dir` is given",
    "loss.label_smoothing": "cross-entropy label smoothing",
    "eval.topk": "top-k accuracies reported",
    "eval.misclassified_in_report": "misclassified test images shown in the report",
    "eval.examples_in_report": "example images drawn in the report",
    "eval.report_score_threshold": "predictions scoring lower are not drawn in the report",
    "data.params.pairs_per_epoch": "training pairs drawn per epoch",
    "data.params.min_size": "px: smallest target side used in a pair",
    "data.params.max_aspect": "largest target aspect ratio used in a pair",
    "data.params.min_cover": "smallest cover label (GOT-10k) of a target used in a pair",
    "data.params.context": "context margin of the crops: p = context x (w + h)",
}


def _sentence(*parts: str) -> str:
    return "; ".join(p.strip().rstrip(".") for p in parts if p and p.strip())


def dataclass_rows(cls, prefix: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every field of `cls`, nested dataclasses expanded."""
    hints = typing.get_type_hints(cls)
    notes: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a field inherited from a base dataclass keeps the base's comment
        if dataclasses.is_dataclass(klass):
            notes.update({k: v for k, v in _comments(klass).items() if v or k not in notes})
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints.get(f.name, f.type)
        meaning = _sentence(notes.get(f.name, ""), NOTES.get(key, ""))
        rows.append((key, _type(tp), _show(_default(f)), _cell(meaning)))
        if dataclasses.is_dataclass(tp):
            rows += dataclass_rows(tp, key + ".")
    return rows


def data_param_rows(task: str) -> list[tuple[str, str, str, str, str]]:
    """Rows (key, type, default, meaning, data sets) for the `data.params` keys of the data sets registered for
    `task`: each key once, typed and defaulted as the first data set that reads it has it, with the data sets
    that read it (a different default is given with the data set; a different meaning is given per data set)."""
    from visionzoo.datasets.registry import dataset_names, get_dataset  # torch: only when a page is built

    names = dataset_names(task)
    keys: dict[str, dict] = {}  # key -> {"row": first row, "readers": [(data set, default, meaning)]}
    for name in names:
        for key, tp, default, meaning in dataclass_rows(get_dataset(task, name).params, "data.params."):
            entry = keys.setdefault(key, {"row": (key, tp, default), "readers": []})
            entry["readers"].append((name, default, meaning))
    rows = []
    for entry in keys.values():
        readers = entry["readers"]
        first_default = entry["row"][2]
        if len(readers) == len(names):
            who = "all"
        else:
            who = ", ".join(f"`{n}`" for n, _, _ in readers)
        others: dict[str, list[str]] = {}  # another default -> the data sets that have it
        for n, d, _ in readers:
            if d != first_default:
                others.setdefault(d, []).append(f"`{n}`")
        if others:
            who += " (default " + "; ".join(f"{', '.join(ns)}: {d}" for d, ns in others.items()) + ")"
        meanings: dict[str, list[str]] = {}
        for n, _, m in readers:
            meanings.setdefault(m, []).append(n)
        if len(meanings) == 1:
            meaning = next(iter(meanings))
        else:
            meaning = "; ".join(f"{', '.join(f'`{n}`' for n in ns)}: {m}" for m, ns in meanings.items() if m)
        rows.append((*entry["row"], meaning, who))
    return rows


def _table(rows) -> list[str]:
    if rows and len(rows[0]) == 5:  # data.params: the data sets that read each key
        lines = ["| key | type | default | meaning | data sets |", "|---|---|---|---|---|"]
        return lines + [f"| `{k}` | {t} | {d} | {m} | {w} |" for k, t, d, m, w in rows]
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {m} |" for k, t, d, m in rows]
    return lines


CONFIG_INTRO = """# Config reference

*Generated from the schema dataclasses (`visionzoo/config/schema.py`) and each task's own dataclasses by
`docs/gen_pages.py`: every key the validator accepts is listed here, with its type and default.*

Configs live in `configs/<task>/` (installed with the package too). `_base_: file.yaml` (or a list of files)
inherits; deeper keys merge. `KEY=VALUE` on the command line overrides any key (values are YAML), e.g.
`train.epochs=3 optim.lr=0.01 data.augment.hflip=0`.

Validation is strict: an unknown key is an error naming it and the closest valid key; a value of the wrong
type names the key, the value and the expected type. The sections `data.augment`, `loss` and `eval` depend on
the config's `task`, and the keys of `data.params` on its data set: their tables follow the shared sections, one
per task, with the data sets that read each key of `data.params`.

`data.dataset` names a dataset builder of the task: `image_folder` or `shapes` for classification (and
generative models), `coco` or `voc` for detection, `voc` or `folder` for segmentation, `got10k`, `otb`,
`lasot` or `sequences` (layout detected per sequence, or `data.params.layout`) for tracking; the
[datasets page](datasets.md) lists every builder.
"""


def config_reference() -> str:
    from visionzoo.config.schema import ExperimentConfig, OptimConfig
    from visionzoo.tasks import get_task

    lines = [CONFIG_INTRO, "## Shared sections", ""]
    hints = typing.get_type_hints(ExperimentConfig)
    notes = _comments(ExperimentConfig)
    for f in dataclasses.fields(ExperimentConfig):
        tp = hints[f.name]
        lines += [f"### `{f.name}`", ""]
        if notes.get(f.name):
            lines += [_sentence(notes[f.name]) + ".", ""]
        if dataclasses.is_dataclass(tp):
            lines += _table(dataclass_rows(tp, f.name + "."))
        elif f.name == "optimizers":
            lines += [f"A mapping from a name to an [`optim`](#optim) section ({_type(tp)}), for tasks that "
                      "update parts of a model with separate optimizers (GANs: `generator`, `discriminator`, "
                      "each with `params:` naming its sub-module). Each entry has the keys:", ""]
            lines += _table(dataclass_rows(OptimConfig, "optimizers.NAME."))
        elif f.name == "task":
            lines += ["The task: " + ", ".join(f"`{t}`" for t in TASKS) + ". It types the task sections below.", ""]
            continue
        else:
            lines += [f"Typed by the task: see [the task sections](#task-sections) (`{f.name}.*`).", ""]
            continue
        lines.append("")
    lines += ["## Task sections", "",
              "Keys of `data.augment`, `loss`, `eval` and `data.params` for each task.", ""]
    for name in TASKS:
        task = get_task(name)
        lines += [f"### {name.capitalize()}", ""]
        for section, cls in (("data.augment", task.augment_config), ("loss", task.loss_config),
                             ("eval", task.eval_config)):
            rows = dataclass_rows(cls, section + ".")
            lines += [f"#### `{section}` ({name})", ""]
            lines += _table(rows) if rows else ["No keys: this task does not use the section."]
            lines.append("")
        lines += [f"#### `data.params` ({name})", ""]
        rows = data_param_rows(name)
        if rows:
            lines += _table(rows) + ["", "Each data set reads only the keys listed with it: any other key is an error "
                                     "naming the key, the data set, its keys and the closest one.", ""]
        else:
            lines += ["No keys: the data sets of this task take no `data.params`.", ""]
        if name == "tracking":
            lines += _tracker_tables()
    return "\n".join(lines).rstrip() + "\n"


def _tracker_tables() -> list[str]:
    from visionzoo.tracking.siamfc import SiamFCParams
    from visionzoo.tracking.sint import SINTParams

    lines = ["#### `eval.tracker` (tracking)", "",
             "The tracker's inference parameters; they travel in the model card, so `create_tracker` "
             "rebuilds the evaluated tracker (keyword arguments override them).", ""]
    for title, cls in (("SiamFC (`siamfc_*`)", SiamFCParams), ("SINT (`sint*`)", SINTParams)):
        lines += [f"{title}:", ""] + _table(dataclass_rows(cls, "eval.tracker.")) + [""]
    return lines


def config_classes() -> list[tuple[type, str]]:
    """Every dataclass the reference covers, with the key prefix of its fields (for the tests)."""
    from visionzoo.config.schema import ExperimentConfig, OptimConfig
    from visionzoo.tasks import get_task
    from visionzoo.tracking.siamfc import SiamFCParams
    from visionzoo.tracking.sint import SINTParams

    out: list[tuple[type, str]] = [(ExperimentConfig, ""), (OptimConfig, "optimizers.NAME.")]
    for name in TASKS:
        task = get_task(name)
        out += [(task.augment_config, "data.augment."), (task.loss_config, "loss."), (task.eval_config, "eval.")]
    return out + [(SiamFCParams, "eval.tracker."), (SINTParams, "eval.tracker.")]


# ---- weights --------------------------------------------------------------------------------------
HEADLINE = {  # metric keys shown in the tables, in order, when a card has them
    "classification": ["top1", "top5", "macro_f1"],
    "detection": ["bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "segm_AP50"],
    "segmentation": ["mean_iou", "crf_mean_iou", "pixel_accuracy", "fw_iou"],
    "tracking": ["ao", "sr50", "sr75", "success_auc", "precision_20", "fps"],
    "generative": ["fid", "kid", "diversity_ratio", "psnr", "psnr_gain", "elbo_bits_per_dim", "bits_per_dim"],
}


def load_cards(weights_dir: Path = WEIGHTS_DIR) -> list[dict]:
    cards = []
    for path in sorted(weights_dir.glob("*.json")):
        card = json.loads(path.read_text())
        if not isinstance(card, dict) or "model" not in card:
            continue
        card["_file"] = path.name
        card["_weights"] = path.with_suffix(".safetensors").name
        cards.append(card)
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted(cards, key=lambda c: (order.get(c.get("task"), 99), c["model"], c.get("tag", "")))


METRIC_NAMES = {"top1": "top-1", "top5": "top-5", "macro_f1": "macro F1", "bbox_AP": "box AP",
                "bbox_AP50": "box AP50", "bbox_AP75": "box AP75", "segm_AP": "mask AP", "segm_AP50": "mask AP50",
                "mean_iou": "mIoU", "crf_mean_iou": "mIoU with CRF", "pixel_accuracy": "pixel acc.",
                "fw_iou": "fwIoU", "ao": "AO", "sr50": "SR0.5", "sr75": "SR0.75", "success_auc": "success AUC",
                "precision_20": "precision@20", "fps": "fps", "fid": "FID", "kid": "KID",
                "diversity_ratio": "diversity ratio", "psnr": "PSNR dB", "psnr_gain": "PSNR gain dB",
                "elbo_bits_per_dim": "ELBO bits/dim", "bits_per_dim": "NLL bits/dim"}


def _num(v) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def _headline(card: dict) -> str:
    metrics = card.get("metrics") or {}
    parts = [f"{METRIC_NAMES.get(k, k)} {_num(metrics[k])}" for k in HEADLINE.get(card.get("task"), [])
             if isinstance(metrics.get(k), (int, float))]
    split = f" ({metrics['split']})" if metrics.get("split") and metrics.get("split") != "test" else ""
    return (", ".join(parts) + split) if parts else "\u2014"


def _input(card: dict) -> str:
    if card.get("input_size"):
        return "\u00d7".join(str(v) for v in card["input_size"])
    if card.get("min_size"):
        return f"shorter side {card['min_size']}, longer \u2264 {card.get('max_size', card['min_size'])}"
    return "\u2014"


def weights_table(cards: list[dict], link_prefix: str | None = None) -> str:
    """A Markdown table of `cards`; with `link_prefix` (e.g. "weights/") each card's file is linked."""
    lines = ["| weights | task | input | size | metrics (test split) |", "|---|---|---|---|---|"]
    for c in cards:
        name = f"{c['model']}.{c.get('tag', '')}"
        label = f"[`{name}`]({link_prefix}{c['_file']})" if link_prefix is not None else f"[`{name}`](weights.md#{_anchor(c)})"
        size = f"{c['size_bytes'] / 2**20:.1f} MB" if isinstance(c.get("size_bytes"), int) else "\u2014"
        lines.append(f"| {label} | {c.get('task', '')} | {_input(c)} | {size} | {_headline(c)} |")
    return "\n".join(lines) + "\n"


def _anchor(card: dict) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{card['model']}-{card.get('tag', '')}".lower()).strip("-")


WEIGHTS_INTRO = """# Shipped weights

*Generated from the model cards (`weights/*.json`) by `docs/gen_pages.py`.*

Each weight file (`weights/<model>.<tag>.safetensors`, fp16) has a model card beside it
(`<model>.<tag>.json`): model, tag, task, class names, input size, normalisation, the metrics measured by
`evaluate.py` on the test split, the file's sha256, the training config and the commands that reproduce it.
`create_model(model, weights=tag)` finds the file in the checkout's `weights/` folder or in the user cache
(`$VISIONZOO_HOME/weights/`, default `~/.cache/visionzoo/weights/`) and checks it against the card's sha256
before use; the [downloads page](downloads.md) gives the whole lookup order (paths, `torchvision:TAG`,
URLs, `hf-hub:` names) and the offline switch.

- `python -m visionzoo.publish RUN_DIR --tag TAG` makes a weight file and its card from a training run. A run
  that fine-tunes a file (`model.weights`) gets `trained.initial_weights` in its card (that file, its sha256
  and its own card's training record), and that card's commands head its `reproduce` list.
- Weights whose class count differs from `num_classes` get a fresh head (with a warning); any other mismatch
  is an error listing each mismatched key and shape. A `.pt`/`.pth` file is read only through
  `torch.load(weights_only=True)`: one holding pickled Python objects is refused, never unpickled.
"""


def weights_page(cards: list[dict] | None = None) -> str:
    cards = load_cards() if cards is None else cards
    lines = [WEIGHTS_INTRO, "## Overview", "", weights_table(cards).rstrip(), ""]
    for c in cards:
        name = f"{c['model']}.{c.get('tag', '')}"
        lines += [f"## {name} {{#{_anchor(c)}}}", ""]
        metrics = c.get("metrics") or {}
        trained = c.get("trained") or {}
        facts = [("task", c.get("task")), ("file", f"`weights/{c['_weights']}`"),
                 ("card", f"`weights/{c['_file']}`"), ("sha256", f"`{c.get('sha256', '')}`"),
                 ("input", _input(c)), ("classes", ", ".join(map(str, c.get("class_names") or [])) or None),
                 ("mean / std", f"{c.get('mean')} / {c.get('std')}" if c.get("mean") else None),
                 ("training", (f"{trained.get('epochs')} epochs" if trained.get("epochs") else "")
                  + (f", {trained['seconds'] / 60:.0f} min" if isinstance(trained.get("seconds"), (int, float)) else "")
                  + (f" on {trained['device']}" if trained.get("device") else "") or None),
                 ("note", trained.get("note"))]
        lines += ["| | |", "|---|---|"] + [f"| {k} | {_cell(str(v))} |" for k, v in facts if v]
        lines += ["", f"Metrics on the {metrics.get('split', 'evaluated')} split"
                  + (f" of `{metrics['data_root']}`" if metrics.get("data_root") else "") + ":", ""]
        shown = {k: v for k, v in metrics.items() if k not in ("split", "data_root") and not isinstance(v, (dict, list))}
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_cell(_num(v))} |" for k, v in shown.items()]
        lines.append("")
        if c.get("reproduce"):
            lines += ["Reproduce:", "", "```bash", *c["reproduce"], "```", ""]
        if c.get("config"):
            lines += ["<details><summary>Training config</summary>", "", "```json",
                      json.dumps(c["config"], indent=2), "```", "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def fill_weight_tables(text: str, cards: list[dict] | None = None, link_prefix: str | None = None) -> str:
    """`text` with each weights-table block rebuilt from the cards."""
    cards = load_cards() if cards is None else cards

    def fill(m: re.Match) -> str:
        task = m.group("task")
        chosen = [c for c in cards if task == "all" or c.get("task") == task]
        return m.group(1) + weights_table(chosen, link_prefix) + m.group(4)

    return BLOCK.sub(fill, text)


def _link_prefix(rel_path: str) -> str | None:
    return "weights/" if rel_path == "README.md" else None


def table_files() -> list[str]:
    """README.md and every docs page, relative to the repository root (README links cards from there)."""
    return ["README.md", *(f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")))]


def update_sources(check: bool = False) -> list[str]:
    """Rewrite the weights-table blocks of README.md and docs/*.md (or, with `check`, only list the stale
    files)."""
    stale = []
    cards = load_cards()
    for rel in table_files():
        path = ROOT / rel
        if not path.is_file():
            continue
        text = path.read_text()
        new = fill_weight_tables(text, cards, _link_prefix(rel))
        if new != text:
            stale.append(rel)
            if not check:
                path.write_text(new)
    return stale


# ---- benchmarks -----------------------------------------------------------------------------------
def benchmarks_page() -> str:
    text = RESULTS.read_text() if RESULTS.is_file() else "# Benchmark results\n\nbenchmarks/RESULTS.md is missing.\n"

    # links relative to benchmarks/ do not resolve inside the site: keep their text, name the file
    def relink(m: re.Match) -> str:
        target = m.group(2)
        if target.startswith(("#", "http://", "https://")):
            return m.group(0)
        return f"{m.group(1)} (`benchmarks/{target}`)"

    text = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", relink, text)
    text = re.sub(r"(?m)^Issue \d+ \([^)]*\)\.\s*", "", text)  # a tracker reference, not for users
    lines = text.splitlines()
    note = ("*This page is benchmarks/RESULTS.md; [benchmarking](benchmarking.md) explains the scripts.*")
    return "\n".join([lines[0], "", note, *lines[1:]]).rstrip() + "\n"


# ---- output ---------------------------------------------------------------------------------------
def generated_pages() -> dict[str, str]:
    return {"config.md": config_reference(), "weights.md": weights_page(), "benchmarks.md": benchmarks_page()}


# MkDocs hooks (mkdocs.yml: `hooks: [docs/gen_pages.py]`)
def on_files(files, config):
    from mkdocs.structure.files import File

    for name, content in generated_pages().items():
        existing = files.get_file_from_path(name)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, name, content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    return fill_weight_tables(markdown)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the generated pages into this folder")
    p.add_argument("--update", action="store_true", help="rewrite the weights-table blocks in README and docs/")
    p.add_argument("--check", action="store_true", help="exit 1 if a weights-table block is out of date")
    args = p.parse_args(argv)
    if args.update or args.check:
        stale = update_sources(check=args.check)
        verb = "out of date" if args.check else "updated"
        for rel in stale:
            print(f"{verb}: {rel}")
        if args.check and stale:
            print("run: python docs/gen_pages.py --update", file=sys.stderr)
            return 1
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, content in generated_pages().items():
            (out / name).write_text(content)
            print(out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
