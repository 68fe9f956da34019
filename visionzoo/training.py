"""Task, default hooks and Trainer from a config, in one call: what train.py, the tests and the benchmarks
build. It sits above the engine (which knows no task and no diagnostic) and picks what a training run
does around its steps from the config's `train` section."""
from __future__ import annotations

from pathlib import Path

from visionzoo.diagnostics.stats import LayerStatsHook
from visionzoo.engine.hooks import (
    BestCheckpoint,
    EmaHook,
    HookBase,
    JsonLog,
    ProgressBar,
    SignalHook,
    ValidationLine,
)
from visionzoo.engine.trainer import Trainer
from visionzoo.tasks import task_for


def default_hooks(cfg, show_progress: bool = True) -> list[HookBase]:
    """EMA (train.ema), the progress bar (`show_progress`), best.pt, the line per validation, signal handling,
    the layer statistics (train.layer_stats_interval) and the JSON-lines log (TensorBoard with
    train.tensorboard); in this order, which is the order they run in."""
    hooks: list[HookBase] = []
    if cfg.train.ema.enabled:
        hooks.append(EmaHook(cfg.train.ema.decay))
    if show_progress:
        hooks.append(ProgressBar())
    hooks += [BestCheckpoint(), ValidationLine(), SignalHook()]
    if cfg.train.layer_stats_interval > 0:
        hooks.append(LayerStatsHook(cfg.train.layer_stats_interval))
    hooks.append(JsonLog(tensorboard=cfg.train.tensorboard))
    return hooks


def build_trainer(cfg, run_dir: str | Path, resume: str | Path | None = None, show_progress: bool = True,
                  config_path: str | None = None, hooks: list[HookBase] | None = None) -> Trainer:
    """The config's task and `hooks` (default: default_hooks(cfg, show_progress)) in a Trainer."""
    return Trainer(task_for(cfg), run_dir, default_hooks(cfg, show_progress) if hooks is None else hooks,
                   resume=resume, config_path=config_path)
