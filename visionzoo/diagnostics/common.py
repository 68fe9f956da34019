"""A short training loop on the Task interface, shared by the diagnostics (lr range test, overfit check,
layer statistics). It builds data, model and the update exactly as train.py would (the task's datasets and
losses, engine/update.py's Updater, engine/data.py's seeded loader) but runs a fixed number of steps with
no schedule, no checkpoints and no run directory: the diagnostics write only their own outputs."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from visionzoo.engine.data import build_loader
from visionzoo.engine.distributed import select_device
from visionzoo.engine.update import Updater
from visionzoo.tasks import task_for
from visionzoo.tasks.base import Task


def disable_augmentation(cfg) -> list[str]:
    """Turn the training augmentation off as far as the task's augment section allows; returns the keys
    changed (e.g. ["data.augment.enabled"]). Tasks without an `enabled` switch (generative) lose their flips."""
    aug = cfg.data.augment
    changed = []
    if hasattr(aug, "enabled"):
        if aug.enabled:
            aug.enabled = False
            changed.append("data.augment.enabled = false")
    else:
        for key in ("hflip", "vflip"):
            if getattr(aug, key, 0):
                setattr(aug, key, 0.0)
                changed.append(f"data.augment.{key} = 0")
    return changed


def find_module(model: nn.Module, name: str, what: str = "layer") -> nn.Module:
    """model's sub-module `name` (a dotted path from named_modules()); an unknown name is a ValueError
    listing the closest names."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    if not close:  # a bare leaf name ("conv1") may match the end of several dotted paths
        close = [n for n in names if n.split(".")[-1] == name.split(".")[-1]][:5]
    hint = f"; closest: {', '.join(close)}" if close else ""
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    raise ValueError(f"{type(model).__name__} has no {what} {name!r}{hint} (its modules: {shown})")


def shutdown_workers(loader) -> None:
    """Stop a DataLoader's persistent workers now. engine/data.py's workers ignore SIGTERM (the trainer's
    signal handling), so a loader left alive until interpreter exit would hang multiprocessing's exit handler,
    which terminates and then joins them; the trainer's epochs end their iterators, a short run stops mid-epoch."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


@dataclass
class TrainingSetup:
    """Data, model and the config's Updater (optimizers, update phases, precision; no lr schedule and no
    accumulation: the diagnostics set the lr themselves and step every batch)."""

    cfg: object
    task: Task
    device: torch.device
    train_set: Dataset
    model: nn.Module
    updater: Updater
    notes: list[str] = field(default_factory=list)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.updater.optimizers

    @property
    def phases(self) -> list:
        return self.updater.phases

    def loader(self, dataset: Dataset | None = None, batch_size: int | None = None, shuffle: bool = True,
               drop_last: bool = True, num_workers: int | None = None):
        dataset = self.train_set if dataset is None else dataset
        batch_size = batch_size or self.cfg.data.batch_size
        loader = build_loader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                              seed=self.cfg.train.seed,
                              num_workers=self.cfg.data.num_workers if num_workers is None else num_workers,
                              collate=self.task.collate, pin_memory=self.device.type == "cuda",
                              prefetch_factor=self.cfg.data.prefetch_factor)
        if len(loader) == 0:
            raise ValueError(f"batch size {batch_size} is larger than the {len(dataset)} training samples: "
                             "no full batch; lower data.batch_size")
        return loader

    def batches(self, dataset: Dataset | None = None, batch_size: int | None = None,
                fixed_epoch: bool = False) -> Iterator:
        """Training batches on the device, endlessly (epoch after epoch). `fixed_epoch` keeps epoch 0:
        the same samples with the same per-sample seeds (so the same random augmentation) every pass.
        close() the generator when done: it shuts the loader's workers down."""
        loader = self.loader(dataset, batch_size, drop_last=not fixed_epoch)
        epoch = 0
        try:
            while True:
                loader.sampler.set_epoch(0 if fixed_epoch else epoch)
                for batch, _, _ in loader:
                    if batch is not None:
                        yield self.task.to_device(batch, self.device, self.cfg.train.channels_last)
                epoch += 1
        finally:
            shutdown_workers(loader)

    def set_lr(self, lr: float) -> None:
        self.updater.set_lr(lr)

    def train_step(self, batch, step: int, stats=None) -> dict[str, float]:
        """One update of every due phase, as the trainer takes it (engine/update.py); `stats` (ActivationStats)
        records it. Returns the loss terms as floats (prefixed by the phase name when there are several) and
        "loss", their total."""
        self.model.train()
        if stats is not None:
            stats.begin_step(step)
        losses = self.updater.update(batch, step, observers=() if stats is None else (stats,))
        out = {k: float(v.detach().float()) for k, v in losses.items()}
        if stats is not None:
            stats.end_step(out)
        return out


def build_setup(cfg, device: str | None = None, augment: bool = True) -> TrainingSetup:
    """Everything a short training run of `cfg` needs, built through the config's Task."""
    task = task_for(cfg)
    notes = [] if augment else [f"augmentation off: {', '.join(disable_augmentation(cfg)) or 'nothing to turn off'}"]
    torch.manual_seed(cfg.train.seed)
    dev = select_device(device or cfg.train.device)
    train_set = task.build_dataset(cfg.data.train_split, train=True)
    model = task.build_model(train_set).to(dev)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return TrainingSetup(cfg, task, dev, train_set, model, Updater(task, model, dev, accumulate=1), notes)


def subset(dataset: Dataset, k: int, seed: int = 0) -> Subset:
    """`k` samples of `dataset` picked at random (fixed by `seed`)."""
    if k < 1:
        raise ValueError(f"the subset needs at least 1 sample, got {k}")
    if k > len(dataset):
        raise ValueError(f"asked for {k} samples, but the training split has only {len(dataset)}")
    g = torch.Generator().manual_seed(seed)
    return Subset(dataset, sorted(torch.randperm(len(dataset), generator=g)[:k].tolist()))

