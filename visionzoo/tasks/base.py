"""What a task tells the shared engine. The engine calls only these methods; everything a task knows
(datasets, losses, metrics, report sections) lives in its own package under visionzoo/tasks/."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate

from visionzoo.datasets.registry import split_exists
from visionzoo.factory import create_model
from visionzoo.registry import get_entry


@dataclass
class EmptySection:
    """A config section the task does not use (no keys allowed)."""


@dataclass(frozen=True)
class UpdatePhase:
    """One optimizer update per batch: `optimizer` names an entry of cfg.optimizers ("main" when the
    config has a single `optim`). `every` > 1 runs it on every n-th batch only (n critic steps per
    generator step)."""

    name: str = "main"
    optimizer: str = "main"
    every: int = 1


def checked_class_names(class_names, num_classes: int) -> list[str]:
    """`class_names` as strings ("0", "1", ... when None), checked to be `num_classes` distinct names."""
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names given for num_classes = {num_classes}")
    if len(set(class_names)) != num_classes:
        dupes = sorted({c for c in class_names if class_names.count(c) > 1})
        raise ValueError(f"duplicate class names: {dupes}")
    return class_names


def check_trained_classes(dataset, class_names, split: str, root, skip: int = 0) -> None:
    """Evaluation data must have the classes the model was trained on (`class_names`; None: not known).
    `skip` leading names (detection's background) are left out of the message."""
    if class_names is not None and list(class_names) != list(dataset.classes):
        raise ValueError(f"split {split!r} of {root} has classes {list(dataset.classes)[skip:]}, but the model "
                         f"was trained on {list(class_names)[skip:]}")


def images_to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images


class Accumulator:
    """Collects a task's evaluation outputs batch by batch; `state_tensors` are summed across ranks."""

    def update(self, batch, outputs, indices: list[int]) -> None:
        """`indices` are the dataset positions of the batch's samples."""
        raise NotImplementedError

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError

    def state_tensors(self) -> list[torch.Tensor]:
        return []

    def load_state_tensors(self, tensors: list[torch.Tensor]) -> None:
        pass

    def synchronize(self) -> None:
        """Combine every rank's state (distributed evaluation): by default the sum of `state_tensors`.
        Accumulators whose metrics are not sums (COCO AP) gather their raw outputs instead."""
        tensors = self.state_tensors()
        # NCCL reduces CUDA tensors only; state kept on the CPU goes there and back
        on_gpu = torch.distributed.get_backend() == "nccl"
        reduced = [t.cuda() if on_gpu else t for t in tensors]
        for t in reduced:
            torch.distributed.all_reduce(t)
        self.load_state_tensors([r.to(t.device) for r, t in zip(reduced, tensors)])


class Task:
    """A task bound to one config (`self.cfg`): `task_for(cfg)` builds it. What needs no config (`name`, the
    config sections' dataclasses, `primary_metric`, `higher_is_better`) is readable on the class, which is what
    `get_task(name)` returns."""

    name: str = ""
    loss_config: type = EmptySection
    eval_config: type = EmptySection
    augment_config: type = EmptySection
    primary_metric: str = "loss"  # picks the best checkpoint when train.best_metric is not set
    higher_is_better: bool = False

    def __init__(self, cfg):
        self.cfg = cfg

    @classmethod
    def for_config(cls, cfg) -> Task:
        """The task object for `cfg`: an instance of this class, except for a task that is several (generative:
        one class per kind of model, chosen by the model's declared capabilities)."""
        return cls(cfg)

    # ---- data -------------------------------------------------------------------------------
    def build_dataset(self, split: str, train: bool, class_names: list[str] | None = None) -> Dataset:
        """The data set `cfg.data.dataset` (looked up in visionzoo.datasets.registry) for `split`; `class_names`
        are those the model was trained on (evaluation data must have the same classes, in the same order)."""
        raise NotImplementedError

    def split_exists(self, split: str) -> bool:
        """Whether the config's data hold `split` (evaluate.py picks the test split, else val): the data set's
        fixed splits, its own test, or a folder data.root/<split>."""
        return split_exists(self.name, self.cfg.data, split)

    def collate(self, samples):
        return default_collate(samples)

    def to_device(self, batch, device: torch.device, channels_last: bool):
        raise NotImplementedError

    def batch_size_of(self, batch) -> int:
        raise NotImplementedError

    # ---- model ------------------------------------------------------------------------------
    def build_model(self, train_set: Dataset | None) -> nn.Module:
        """The config's model; the class count defaults to the training set's `classes`."""
        cfg = self.cfg
        num_classes = cfg.model.num_classes
        if num_classes is None and train_set is not None and hasattr(train_set, "classes"):
            num_classes = len(train_set.classes)
        return create_model(cfg.model.name, weights=cfg.model.weights, num_classes=num_classes, **cfg.model.kwargs)

    def model_meta(self, dataset: Dataset | None) -> dict:
        """What travels with the weights (class names, input size, normalisation)."""
        return {}

    # ---- training ---------------------------------------------------------------------------
    def update_phases(self) -> list[UpdatePhase]:
        return [UpdatePhase()]

    def one_forward_per_update(self) -> bool:
        """Whether each update is one forward and one backward through the whole model. Only then can the
        trainer wrap it in DistributedDataParallel under torchrun; otherwise (a model called twice per step,
        players updated in turn) the trainer averages gradients across ranks itself."""
        return True

    def training_losses(self, model: nn.Module, batch, phase: UpdatePhase) -> dict[str, torch.Tensor]:
        """Loss terms for one phase; the engine back-propagates the entry "loss"."""
        raise NotImplementedError

    # ---- evaluation -------------------------------------------------------------------------
    def new_accumulator(self, dataset: Dataset) -> Accumulator:
        raise NotImplementedError

    def eval_outputs(self, model: nn.Module, batch):
        """Forward pass for evaluation; returns what the accumulator's update() takes."""
        raise NotImplementedError

    def higher_is_better_for(self, metric: str) -> bool:
        return self.higher_is_better

    def after_epoch(self, model: nn.Module, epoch: int, run_dir: Path, dataset: Dataset) -> None:
        """Called on the main process after each epoch (model in eval mode, no grad): a task may write
        per-epoch artefacts into run_dir (the generative task's fixed-noise samples)."""

    def scalar_metrics(self, metrics: dict) -> dict[str, float]:
        return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def write_report(self, out_path: Path, *, metrics, dataset, accumulator, model, model_summary, log_records,
                     run_info, title) -> Path:
        raise NotImplementedError

    # ---- benchmarks -------------------------------------------------------------------------
    def synthetic_batch(self, batch_size: int, image_size: int, device, train: bool = True):
        """Random data shaped like `to_device(collate(samples))` for the config's model, on `device`:
        the batch `training_losses` takes (`train=True`) or the one `eval_outputs` takes (`train=False`).
        Used by benchmarks/benchmark.py to time the task's own code paths without reading files."""
        raise NotImplementedError(f"task {self.name!r} has no synthetic_batch(): benchmarks/benchmark.py cannot "
                                  f"make data for its models; implement it in visionzoo/tasks/{self.name}/task.py")


def model_num_classes(cfg) -> int | None:
    """cfg.model.num_classes, else the registered model's default class count."""
    return cfg.model.num_classes or get_entry(cfg.model.name).default_num_classes
