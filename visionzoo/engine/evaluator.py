"""The shared evaluation loop: no task knowledge beyond the Task interface."""
from __future__ import annotations

import contextlib

import torch

from visionzoo.engine.console import progress_bar
from visionzoo.engine.data import build_loader


def autocast_context(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_eval_loader(task, dataset, device: torch.device, rank: int = 0, world_size: int = 1):
    """The evaluation loader of `dataset` under the task's config (its batch size, workers, seed)."""
    cfg = task.cfg
    return build_loader(
        dataset,
        batch_size=cfg.data.eval_batch_size or cfg.data.batch_size,
        shuffle=False,
        drop_last=False,
        seed=cfg.train.seed,
        num_workers=cfg.data.num_workers,
        collate=task.collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=cfg.data.prefetch_factor,
        rank=rank,
        world_size=world_size,
    )


@torch.no_grad()
def evaluate(task, model, loader, device: torch.device, desc: str = "eval", show_progress: bool = True):
    """Run `model` over `loader` and return (metrics dict, accumulator, skipped samples)."""
    cfg = task.cfg
    was_training = model.training
    model.eval()
    accumulator = task.new_accumulator(loader.dataset.dataset)
    skipped_all = []
    for batch, skipped, indices in progress_bar(loader, desc=desc, leave=False, disable=not show_progress):
        skipped_all.extend(skipped)
        if batch is None:
            continue
        batch = task.to_device(batch, device, cfg.train.channels_last)
        with autocast_context(device, cfg.train.amp):
            outputs = task.eval_outputs(model, batch)
        accumulator.update(batch, outputs, indices)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        accumulator.synchronize()
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, skipped_all)
        skipped_all = [s for part in gathered for s in part]
    model.train(was_training)
    return accumulator.compute(), accumulator, skipped_all
