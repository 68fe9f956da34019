"""Process groups for torchrun: one process per GPU (NCCL) or per CPU slot (gloo).

`torchrun --nproc_per_node=N train.py CONFIG` sets RANK, WORLD_SIZE and LOCAL_RANK; train.py and
evaluate.py call `init_from_env` first and `shutdown` last. A plain `python train.py` is world size 1
and never touches torch.distributed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world() -> DistInfo:
    """What torchrun (or any launcher using its variables) says about this process."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as e:
        raise ValueError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers (as torchrun sets them): {e}") from None
    return DistInfo(rank, world, local)


def device_for(spec: str, info: DistInfo) -> torch.device:
    """The device of this process: under torchrun each process takes the GPU of its LOCAL_RANK."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"train.device = {spec!r} but CUDA is not available on this machine")
        if info.enabled:
            if device.index is not None:
                raise ValueError(f"train.device = {spec!r} names one GPU, but torchrun started {info.world_size} "
                                 "processes: use train.device=cuda (or auto); each process takes the GPU of its "
                                 "LOCAL_RANK")
            if info.local_rank >= torch.cuda.device_count():
                raise ValueError(f"LOCAL_RANK {info.local_rank} but this machine has {torch.cuda.device_count()} "
                                 "GPU(s): start at most that many processes per node")
            device = torch.device("cuda", info.local_rank)
        elif device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def select_device(spec: str) -> torch.device:
    """`spec` (auto, cpu, cuda, cuda:1) for this process; under torchrun, the GPU of its LOCAL_RANK."""
    return device_for(spec, current())


def init_from_env(device_spec: str = "auto", timeout_minutes: float = 30) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (NCCL for GPUs, gloo on CPU) and pick this rank's device."""
    info = env_world()
    device = device_for(device_spec, info)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes), **kwargs)
    return info, device


def current() -> DistInfo:
    """Rank and world size of an initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def control_group():
    """A gloo group for small CPU-side agreements (stop signals, non-finite losses): NCCL only moves CUDA
    tensors, and going through the GPU for two flags would add a device sync to every step."""
    if dist.get_backend() == "gloo":
        return dist.group.WORLD
    return dist.new_group(backend="gloo")


def broadcast_object(obj, src: int = 0):
    """`obj` from rank `src` on every rank (e.g. the run directory rank 0 chose)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensors(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite `tensors` on every rank with rank `src`'s, in one broadcast per (device, dtype) group."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for group in groups.values():
        flat = torch._utils._flatten_dense_tensors([t.data for t in group])
        dist.broadcast(flat, src=src)
        for t, value in zip(group, torch._utils._unflatten_dense_tensors(flat, group)):
            t.data.copy_(value)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
