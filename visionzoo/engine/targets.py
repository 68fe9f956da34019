"""What evaluate.py and publish can be pointed at: a run directory, a trainer checkpoint, or a
weights file with its model card. Each resolves to (config, weights file, metadata)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from visionzoo.config import ConfigError, load_yaml_with_bases, validate
from visionzoo.engine.checkpoint import load_checkpoint
from visionzoo.factory import INIT_ONLY_KWARGS, create_model
from visionzoo.weights import read_card


@dataclass
class EvalTarget:
    cfg: object
    weights: Path
    meta: dict
    run_dir: Path | None


def load_target(target: str | Path) -> EvalTarget:
    path = Path(target)
    if path.is_dir():
        config_file = path / "config.yaml"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} is not a run directory: it has no config.yaml")
        ckpt_file = next((path / n for n in ("best.pt", "last.pt") if (path / n).is_file()), None)
        if ckpt_file is None:
            raise FileNotFoundError(f"{path} holds no checkpoint (best.pt or last.pt): has training written one yet?")
        cfg = validate(load_yaml_with_bases(config_file), where=str(config_file))
        meta = load_checkpoint(ckpt_file).get("meta", {})
        return EvalTarget(cfg, ckpt_file, meta, path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluate: {path} is neither a run directory nor a weights/checkpoint file")
    if path.suffix == ".safetensors":
        card = read_card(path)
        if "config" not in card:
            raise ConfigError(f"{path}: its model card ({path.with_suffix('.json')}) is missing or has no 'config'; "
                              "evaluate.py needs it to rebuild the model and data")
        return EvalTarget(validate(card["config"], where=str(path.with_suffix(".json"))), path, card, None)
    ckpt = load_checkpoint(path)
    if "config" not in ckpt:
        raise ConfigError(f"{path}: checkpoint carries no config")
    return EvalTarget(validate(ckpt["config"], where=str(path)), path, ckpt.get("meta", {}),
                      path.parent if (path.parent / "config.yaml").is_file() else None)


def latest_metrics(run_dir: Path) -> dict | None:
    files = sorted(run_dir.glob("metrics_*.json"), key=lambda p: p.stat().st_mtime)
    if files:
        return json.loads(files[-1].read_text())
    return None


def apply_eval_options(cfg, *, data: str | None = None, batch_size: int | None = None, workers: int | None = None,
                       device: str | None = None):
    """evaluate.py's --data, --batch-size, --workers and --device over a target's config (in place)."""
    if data:
        cfg.data.root = data
    if batch_size:
        cfg.data.eval_batch_size = batch_size
    if workers is not None:
        cfg.data.num_workers = workers
    if device:
        cfg.train.device = device
    return cfg


def build_target_model(target: EvalTarget, cfg=None):
    """The target's model with its weights: class count from the card's class names, builder keywords from the
    config (`cfg`, default the target's own), minus those that only matter at initialisation."""
    cfg = cfg or target.cfg
    class_names = target.meta.get("class_names")
    return create_model(cfg.model.name, weights=target.weights,
                        num_classes=len(class_names) if class_names else cfg.model.num_classes,
                        **{k: v for k, v in cfg.model.kwargs.items() if k not in INIT_ONLY_KWARGS})


def pick_split(task, requested: str | None) -> str:
    """`requested`, else the task's config's test split if it exists, else its val split."""
    if requested:
        return requested
    for split in (task.cfg.data.test_split, task.cfg.data.val_split):
        if split and task.split_exists(split):
            return split
    raise ConfigError("no evaluation split: the config names no test/val split that exists; pass --split")
