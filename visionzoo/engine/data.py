"""Data loading shared by every task: reproducible, resumable, worker-independent sampling.

Each sample gets its own random seed from (run seed, epoch, index). The dataset applies its random
augmentation under that seed, so a sample is augmented identically whatever the worker count, and a
run resumed mid-epoch sees exactly the batches the uninterrupted run would have seen.
"""
from __future__ import annotations

import atexit
import functools
import math
import multiprocessing
import multiprocessing.util  # registers multiprocessing's own exit handler before ours (atexit runs LIFO)
import os
import signal
import threading

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from visionzoo.datasets.common import SkippedSample


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint32)[0])


class SeededDataset(Dataset):
    """Wraps a dataset so that item (index, seed) is produced under torch.manual_seed(seed); returns
    (index, sample) so that the collate can report which dataset items a batch holds."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        # Only the CPU generator: data pipelines draw nothing on accelerators, and torch.manual_seed would also
        # queue lazy CUDA/XPU/MTIA seeding, each recording a Python stack (about 1 ms per item, measured).
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(seed)
        try:
            return index, self.dataset[index]
        finally:
            generator.set_state(state)


class EpochSampler(Sampler):
    """Yields (index, seed) pairs: a permutation fixed by (seed, epoch), split across ranks like
    DistributedSampler (padded to equal length, rank r takes every world_size-th item from r).

    `start` counts the samples of the epoch that all ranks together have consumed: the permutation does not
    depend on the world size, so a run resumed mid-epoch, even with another number of processes, goes on
    with exactly the samples not yet seen. (torch's DistributedSampler has no such offset, and its items
    carry no per-sample seed, hence this class.)"""

    def __init__(self, size: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1 & 0xFFFFFFFF))
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        order = order[self.start :]
        if self.world_size > 1:
            if self.pad and order:
                total = math.ceil(len(order) / self.world_size) * self.world_size
                order = (order * math.ceil(total / len(order)))[:total]
            order = order[self.rank :: self.world_size]
        return order

    def __iter__(self):
        for index in self._indices():
            yield index, sample_seed(self.seed, self.epoch, index)

    def __len__(self) -> int:
        return len(self._indices())


class SkipCollate:
    """Takes (index, sample) pairs, drops SkippedSample markers (unreadable files in on_corrupt=skip
    mode) and reports them. Returns (batch or None, list of SkippedSample, dataset indices of the batch)."""

    def __init__(self, collate=default_collate):
        self.collate = collate

    def __call__(self, items):
        good = [(i, s) for i, s in items if not isinstance(s, SkippedSample)]
        skipped = [s for _, s in items if isinstance(s, SkippedSample)]
        batch = self.collate([s for _, s in good]) if good else None
        return batch, skipped, [i for i, _ in good]


class WorkerRelease:
    """A flag in shared memory that the main process raises when it is done with its DataLoader workers.

    Workers must outlive a SIGINT/SIGTERM sent to the whole process group (Ctrl-C, a scheduler, `pkill -f`): the
    main process finishes its step and writes a checkpoint first, and a worker that died of the signal would crash
    it. But the main process itself stops leftover workers with SIGTERM, in the DataLoader's shutdown and in
    multiprocessing's exit handler, which then waits for them: a worker that ignored every SIGTERM made every
    error exit hang. So a worker ignores SIGTERM only until the main process is exiting (an atexit hook, which runs
    before multiprocessing's) or releases them itself."""

    def __init__(self):
        self.flag = multiprocessing.RawValue("b", 0)

    def release(self) -> None:
        self.flag.value = 1

    def released(self) -> bool:
        return bool(self.flag.value)


_release: WorkerRelease | None = None


def worker_release() -> WorkerRelease:
    """The process-wide release flag, created (and hooked to the interpreter's exit) on first use."""
    global _release
    if _release is None or _release.released():
        _release = WorkerRelease()
        atexit.register(_release.release)
    return _release


def release_workers() -> None:
    """Lets this process's DataLoader workers die of the next SIGTERM (the main process is giving up on them).
    Their deaths are then no failure: the DataLoader's SIGCHLD check, whose error would follow the message the
    process is leaving with, goes back to the default."""
    if _release is not None:
        _release.release()
    if hasattr(signal, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


def worker_signals(release: WorkerRelease, worker_id: int) -> None:
    """DataLoader worker init: SIGINT goes to the main process only; SIGTERM is ignored until the main process
    releases its workers, then it ends the worker as usual."""

    def on_sigterm(signum, frame):
        if release.released():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    default_hook = threading.excepthook

    def quiet_once_released(args):
        # A batch's file descriptors travel through a server thread in this worker; when the main process stops
        # mid-transfer (a second signal), that thread's connection breaks. Not an error once it gave up on us.
        if release.released() and issubclass(args.exc_type, (EOFError, ConnectionError, OSError)):
            return
        default_hook(args)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    threading.excepthook = quiet_once_released


def build_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, drop_last: bool, seed: int,
                 num_workers: int, collate, pin_memory: bool, prefetch_factor: int = 2,
                 rank: int = 0, world_size: int = 1) -> DataLoader:
    sampler = EpochSampler(len(dataset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                           pad=shuffle)
    extra = {}
    if num_workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor, "worker_init_fn": functools.partial(worker_signals, worker_release())}
    return DataLoader(
        SeededDataset(dataset),
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        collate_fn=SkipCollate(collate),
        pin_memory=pin_memory,
        **extra,
    )


def error_text(e: BaseException) -> str:
    """The message of `e`, without the worker's traceback that a DataLoader worker's exception carries."""
    text = str(e)
    if "\nOriginal Traceback" not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    name = type(e).__module__ + "." + type(e).__qualname__ + ": "
    return last[len(name):] if last.startswith(name) else last
