"""YAML experiment configs: `_base_` inheritance, `key.sub=value` overrides, strict validation.

    cfg = load_config("configs/classification/resnet18_shapes.yaml", ["train.epochs=3"])

An unknown key names itself and the closest valid key; a wrong type names key, value and expected
type. `to_dict(cfg)` gives the resolved config that is saved in each run directory.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import sys
from pathlib import Path

import yaml

from visionzoo.config.schema import ExperimentConfig
from visionzoo.factory import _check_kwargs
from visionzoo.registry import get_entry
from visionzoo.strict import ConfigError, from_dict
from visionzoo.tasks import get_task

__all__ = ["ConfigError", "ExperimentConfig", "load_config", "load_yaml_with_bases", "to_dict", "validate"]


# Most nodes a config may hold once its aliases are expanded. Aliases let a small file describe an exponentially
# large tree ("billion laughs"); every later step (merging, validation, saving config.yaml) expands it.
MAX_YAML_NODES = 1_000_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping (PyYAML would silently keep the last one, so a
    second `data:` section would quietly drop the first) and documents whose aliases expand to more than
    MAX_YAML_NODES nodes."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping (first at line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _check_expanded_size(root) -> None:
    """Count the nodes of the document with every alias expanded (each distinct node once, memoised), and
    refuse a recursive alias or a total above MAX_YAML_NODES before anything is constructed."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise yaml.constructor.ConstructorError(None, None, "an alias refers to a node that contains it "
                                                    "(recursive structure)", node.start_mark)
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = min(total, MAX_YAML_NODES + 1)  # capped: the sum of huge counts stays a small integer
        return sizes[key]

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        n = size(root)
    except RecursionError:
        raise yaml.constructor.ConstructorError(None, None, "the document nests too deeply",
                                                root.start_mark) from None
    finally:
        sys.setrecursionlimit(limit)
    if n > MAX_YAML_NODES:
        raise yaml.constructor.ConstructorError(
            None, None, f"aliases expand the document to more than {MAX_YAML_NODES:,} nodes (a config is far "
            "smaller; refused rather than exhausting memory)", root.start_mark)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, found {type(data).__name__}")
    return data


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.pop("_replace_", False):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_yaml_with_bases(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML file, merging the files named by `_base_` (relative to it) underneath it."""
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"{path}: _base_ inheritance loops back to itself via {' -> '.join(map(str, _seen))}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names, got {bases!r}")
    merged: dict = {}
    for base in bases:
        merged = deep_merge(merged, load_yaml_with_bases(path.parent / base, _seen + (path,)))
    return deep_merge(merged, data)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` overrides; values are parsed as YAML (so 3, 0.1, true, [1, 2], null work)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        key, raw = item.split("=", 1)
        try:
            value = yaml.load(raw, Loader=_StrictLoader) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


def validate(data: dict, where: str = "config") -> ExperimentConfig:
    """Validate a merged config dict into an ExperimentConfig, with task-specific sections typed."""
    cfg = from_dict(ExperimentConfig, data, where)
    if not cfg.task:
        raise ConfigError(f"{where}: 'task' is required (one of the registered tasks, e.g. classification)")
    if not cfg.model.name:
        raise ConfigError(f"{where}: 'model.name' is required (see visionzoo.list_models())")
    try:
        task = get_task(cfg.task)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    cfg.loss = from_dict(task.loss_config, cfg.loss or {}, where, prefix="loss.")
    cfg.eval = from_dict(task.eval_config, cfg.eval or {}, where, prefix="eval.")
    cfg.data.augment = from_dict(task.augment_config, cfg.data.augment or {}, where, prefix="data.augment.")
    _check_values(cfg, where)
    _check_model_kwargs(cfg, where)
    return cfg


def _check_values(cfg: ExperimentConfig, where: str) -> None:
    def need(ok: bool, key: str, value, expected: str):
        if not ok:
            raise ConfigError(f"{where}: '{key}' = {value!r} is invalid: expected {expected}")

    need(cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "an integer >= 1")
    need(cfg.train.accumulate >= 1, "train.accumulate", cfg.train.accumulate, "an integer >= 1")
    need(cfg.train.log_interval >= 1, "train.log_interval", cfg.train.log_interval, "an integer >= 1")
    need(cfg.train.eval_interval >= 1, "train.eval_interval", cfg.train.eval_interval,
         "an integer >= 1 (epochs between validations; the last epoch is always validated)")
    need(cfg.train.max_steps_per_epoch is None or cfg.train.max_steps_per_epoch >= 1, "train.max_steps_per_epoch",
         cfg.train.max_steps_per_epoch, "null or an integer >= 1")
    need(cfg.train.layer_stats_interval >= 0, "train.layer_stats_interval", cfg.train.layer_stats_interval,
         "an integer >= 0 (0 = off)")
    need(cfg.data.batch_size >= 1, "data.batch_size", cfg.data.batch_size, "an integer >= 1")
    need(cfg.data.num_workers >= 0, "data.num_workers", cfg.data.num_workers, "an integer >= 0")
    need(cfg.data.input_size >= 8, "data.input_size", cfg.data.input_size, "an integer >= 8")
    need(0 < cfg.data.crop_pct <= 1, "data.crop_pct", cfg.data.crop_pct, "a number in (0, 1]")
    need(len(cfg.data.mean) == len(cfg.data.std), "data.std", cfg.data.std, "as many values as data.mean")
    need(all(s > 0 for s in cfg.data.std), "data.std", cfg.data.std, "positive values")
    for name, opt in {"optim": cfg.optim, **{f"optimizers.{k}": v for k, v in cfg.optimizers.items()}}.items():
        need(opt.lr > 0, f"{name}.lr", opt.lr, "a positive number")
        need(len(opt.betas) == 2, f"{name}.betas", opt.betas, "two numbers")
    need(cfg.train.grad_clip is None or cfg.train.grad_clip > 0, "train.grad_clip", cfg.train.grad_clip,
         "null or a positive number")
    need(0 < cfg.train.ema.decay < 1, "train.ema.decay", cfg.train.ema.decay, "a number in (0, 1)")
    # `x >= 0` is False for NaN, so these comparisons refuse NaN too
    for name, opt in {"optim": cfg.optim, **{f"optimizers.{k}": v for k, v in cfg.optimizers.items()}}.items():
        need(math.isfinite(opt.lr), f"{name}.lr", opt.lr, "a finite positive number")
        need(0 <= opt.momentum <= 1, f"{name}.momentum", opt.momentum, "a number in [0, 1]")
        need(all(0 <= b < 1 for b in opt.betas), f"{name}.betas", opt.betas, "two numbers in [0, 1)")
        need(0 <= opt.weight_decay < math.inf, f"{name}.weight_decay", opt.weight_decay, "a finite number >= 0")
        need(0 < opt.eps < math.inf, f"{name}.eps", opt.eps, "a finite positive number")
    need(0 <= cfg.schedule.warmup_epochs < math.inf, "schedule.warmup_epochs", cfg.schedule.warmup_epochs,
         "a finite number >= 0")
    need(0 < cfg.schedule.warmup_factor <= 1, "schedule.warmup_factor", cfg.schedule.warmup_factor,
         "a number in (0, 1]")
    need(0 <= cfg.train.seed < 2**63, "train.seed", cfg.train.seed, "an integer in [0, 2**63)")
    smoothing = getattr(cfg.loss, "label_smoothing", None)
    if smoothing is not None:
        need(0 <= smoothing < 1, "loss.label_smoothing", smoothing, "a number in [0, 1)")
    need(cfg.data.max_image_pixels >= 1, "data.max_image_pixels", cfg.data.max_image_pixels, "an integer >= 1")
    need(cfg.data.prefetch_factor >= 1, "data.prefetch_factor", cfg.data.prefetch_factor, "an integer >= 1")


def _check_model_kwargs(cfg: ExperimentConfig, where: str) -> None:
    """model.kwargs must be keywords of the model's builder (a typo would otherwise surface as a TypeError
    from deep inside model construction, after the data was loaded)."""
    if not cfg.model.kwargs:
        return
    try:
        entry = get_entry(cfg.model.name)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"{where}: 'model.name' = {cfg.model.name!r}: {e}") from None
    try:
        _check_kwargs(cfg.model.name, entry.builder, {k: v for k, v in cfg.model.kwargs.items() if k != "stn"})
    except TypeError as e:
        raise ConfigError(f"{where}: 'model.kwargs': {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    data = apply_overrides(load_yaml_with_bases(path), overrides or [])
    cfg = validate(data, where=str(path))
    if cfg.output.name is None:
        cfg.output.name = Path(path).stem
    return cfg


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
