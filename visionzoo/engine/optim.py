"""Optimizers and learning-rate schedules from config (per-iteration schedules with linear warm-up)."""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from visionzoo.config.schema import OptimConfig, ScheduleConfig


def _submodule(model: nn.Module, path: str | None, key: str) -> nn.Module:
    if not path:
        return model
    module = model
    for part in path.split("."):
        if not hasattr(module, part):
            raise ValueError(f"{key}.params = {path!r}: the model has no sub-module {part!r}")
        module = getattr(module, part)
    return module


def _param_groups(module: nn.Module, cfg: OptimConfig) -> list[dict]:
    params = [p for p in module.parameters() if p.requires_grad]
    if not cfg.no_decay_norm_and_bias or cfg.weight_decay == 0:
        return [{"params": params}]
    decay, no_decay = [], []
    for m in module.modules():
        for p in m.parameters(recurse=False):
            if not p.requires_grad:
                continue
            is_norm = isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
            (no_decay if is_norm or p.ndim <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig, key: str = "optim") -> torch.optim.Optimizer:
    groups = _param_groups(_submodule(model, cfg.params, key), cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)


def lr_factor(step: int, *, cfg: ScheduleConfig, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * step / warmup
    epoch = step / steps_per_epoch
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** int(epoch // cfg.step_size)
    if cfg.name == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.name == "exponential":
        return cfg.gamma ** epoch
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    floor = cfg.min_lr_ratio
    if cfg.name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "polynomial":
        return floor + (1 - floor) * (1 - progress) ** cfg.power
    raise ValueError(f"schedule.name = {cfg.name!r} is not a known schedule")


def build_scheduler(optimizer, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int):
    fn = partial(lr_factor, cfg=cfg, steps_per_epoch=max(1, steps_per_epoch),
                 total_steps=max(1, steps_per_epoch) * epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
