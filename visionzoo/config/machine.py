"""Config defaults that depend on the machine: `data.num_workers` (default: by machine) is the CPU cores per GPU
process, less one for the training process itself, between 1 and 8; 2 on a machine without a GPU."""
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
