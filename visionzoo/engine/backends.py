"""GPU defaults: TF32, cuDNN autotuning and the number of data-loading workers.

- `train.tf32` (default true): float32 matrix products and convolutions may use TF32 tensor cores on
  Ampere and later GPUs (about 10 bits of mantissa in the products, float32 range and accumulation). This
  is what makes `amp: none` fast; set false for IEEE float32 everywhere.
- `train.cudnn_benchmark` (default null = by task): cuDNN times its algorithms for each new input shape
  and keeps the fastest. A win when every batch has the same shape (classification, generative models,
  tracking crops), a loss when shapes vary from batch to batch (detection and segmentation images keep
  their own sizes), where each new shape is timed again.
- `data.num_workers` (default: by machine): the CPU cores per GPU process, less one for the training
  process itself, between 1 and 8; 2 on a machine without a GPU.
"""
from __future__ import annotations

import os

import torch

MAX_DEFAULT_WORKERS = 8


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask of a container or a batch job, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_num_workers(cores: int | None = None, gpus: int | None = None,
                        processes_per_node: int | None = None) -> int:
    """Loader workers per training process: the node's cores shared among its processes (torchrun's
    LOCAL_WORLD_SIZE, else one per GPU), one core kept for the process itself, at least 1 and at most 8."""
    gpus = torch.cuda.device_count() if gpus is None else gpus
    if gpus == 0:
        return 2  # CPU training: the model needs the cores more than the loader does
    cores = cpu_cores() if cores is None else cores
    if processes_per_node is None:
        processes_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0")) or gpus
    return max(1, min(MAX_DEFAULT_WORKERS, cores // max(1, processes_per_node) - 1))


def cudnn_benchmark_for(cfg, task) -> bool:
    """`train.cudnn_benchmark`, or when null: off for tasks whose inputs change size between batches."""
    if cfg.train.cudnn_benchmark is not None:
        return bool(cfg.train.cudnn_benchmark)
    return not getattr(task, "variable_input_size", False)


def configure_backends(cfg, device: torch.device, task) -> dict:
    """Apply the TF32 and cuDNN settings for a run on `device`; returns what was set (for the run log).
    On a CPU nothing changes: these switches only concern CUDA kernels."""
    settings = {"tf32": bool(cfg.train.tf32), "cudnn_benchmark": cudnn_benchmark_for(cfg, task)}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = settings["tf32"]
        torch.backends.cudnn.allow_tf32 = settings["tf32"]
        torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]
    return settings
