"""GPU defaults: TF32 and cuDNN autotuning.

- `train.tf32` (default true): float32 matrix products and convolutions may use TF32 tensor cores on
  Ampere and later GPUs (about 10 bits of mantissa in the products, float32 range and accumulation). This
  is what makes `amp: none` fast; set false for IEEE float32 everywhere.
- `train.cudnn_benchmark` (default null = by task): cuDNN times its algorithms for each new input shape
  and keeps the fastest. A win when every batch has the same shape (classification, generative models,
  tracking crops), a loss when shapes vary from batch to batch (detection and segmentation images keep
  their own sizes), where each new shape is timed again.
(`data.num_workers`' default, also by machine, is the config's: visionzoo/config/machine.py.)
"""
from __future__ import annotations

import torch


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
