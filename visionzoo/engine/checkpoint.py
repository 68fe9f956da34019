"""Atomic checkpoints: written to a temporary file in the same folder, fsynced, then renamed over the
old one (and the folder fsynced), so a crash or Ctrl-C at any moment leaves the previous checkpoint readable.

Each checkpoint carries a checksum of its tensors, checked on load: a flipped byte is an error naming the
file instead of silently different weights. A full disk is a DiskFullError naming the file and the space needed;
the free space is checked before writing, since the old file stays until the new one is complete (two copies)."""
from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FORMAT = "visionzoo-checkpoint-v1"  # the "format" entry of training checkpoints and best.pt
CHECKSUM_KEY = "checksum"
TEMP_SUFFIX = ".tmp"
# what atomic writes leave behind when killed mid-write: <name>.<random>.tmp (tempfile.mkstemp)
_TEMP_NAME = re.compile(r"^(?P<name>.+\.(pt|pth|yaml|json))\.[A-Za-z0-9_]{8}\.tmp$")
_SPACE_MARGIN = 1 << 20  # bytes of slack over the tensor payload (pickled structure, zip headers)


class CheckpointError(ValueError):
    """A checkpoint file is empty, unreadable, or fails its checksum; the message names the file."""


class DiskFullError(OSError):
    """No room to write a file; the message names the file and the space needed."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable (the new directory entry reaches the disk)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync directories
        pass
    finally:
        os.close(fd)


def _walk_tensors(obj, key: str = ""):
    if torch.is_tensor(obj):
        yield key, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            if not (key == "" and k == CHECKSUM_KEY):
                yield from _walk_tensors(obj[k], f"{key}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk_tensors(v, f"{key}/{i}")


def tensor_checksum(obj) -> str:
    """blake2b over every tensor's name, dtype, shape and bytes (fast enough to run at every save and load)."""
    h = hashlib.blake2b(digest_size=16)
    for key, t in _walk_tensors(obj):
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def payload_bytes(obj) -> int:
    return sum(t.numel() * t.element_size() for _, t in _walk_tensors(obj))


def _raise_if_full(error: BaseException, path: Path, needed: int) -> None:
    """Re-raise a failed write as DiskFullError when it ran out of space. torch.save's zip writer may replace
    the OSError (ENOSPC) by a RuntimeError of its own, so the exception's context chain is searched."""
    full = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    seen, e = set(), error
    while e is not None and id(e) not in seen and not (isinstance(e, OSError) and e.errno in full):
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    if e is not None:
        free = shutil.disk_usage(path.parent).free
        raise DiskFullError(f"{path}: disk full while writing: it needs about {_mb(needed)}, "
                            f"{_mb(free)} free on that disk") from error


def _atomic_write(path: Path, write, needed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise DiskFullError(f"{path}: not enough disk space to write it: it needs about {_mb(needed)}, "
                            f"{_mb(free)} free on that disk (the old file is kept until the new one is complete, "
                            "so there must be room for both)")
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, Exception):
            _raise_if_full(e, path, needed)
        raise


def atomic_save(obj, path: str | Path) -> None:
    """torch.save to `path` atomically; a dict gets a checksum of its tensors (checked by load_checkpoint)."""
    path = Path(path)
    if isinstance(obj, dict):
        obj = {**obj, CHECKSUM_KEY: {"algorithm": "blake2b-128", "tensors": tensor_checksum(obj)}}
    _atomic_write(path, lambda f: torch.save(obj, f), payload_bytes(obj) + _SPACE_MARGIN)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace a small text file (config.yaml, run.json) atomically: readers see the old or the new one."""
    data = text.encode()
    _atomic_write(Path(path), lambda f: f.write(data), len(data) + 4096)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete what killed atomic writes left in `folder` (call only while holding the folder's run lock)."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if _TEMP_NAME.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents (tensors and plain containers only, never pickled objects), its checksum verified."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes): the write that made it did not finish")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint (corrupt, or not plain tensors/containers): "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if isinstance(ckpt, dict) and CHECKSUM_KEY in ckpt:
        stored = ckpt.pop(CHECKSUM_KEY)
        expected = stored.get("tensors") if isinstance(stored, dict) else None
        if expected != tensor_checksum(ckpt):
            raise CheckpointError(f"{path}: checkpoint is corrupt: its tensors do not match the checksum written "
                                  "with them (a changed byte on disk or in transfer)")
    return ckpt


def rng_state() -> dict:
    """Every RNG the training loop touches, in a form torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # Only the device this process uses: a resume may see fewer GPUs (another node, a
        # CUDA_VISIBLE_DEVICES subset), and each rank owns exactly one.
        state["cuda"] = torch.cuda.get_rng_state(torch.cuda.current_device())
    return state


def set_rng_state(state: dict) -> None:
    version, *rest = state["python"]
    random.setstate((version, tuple(rest[0]), rest[1]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_state = state["cuda"]
        if isinstance(cuda_state, (list, tuple)):  # older checkpoints: one state per visible GPU at save time
            if not cuda_state:
                return
            cuda_state = cuda_state[min(torch.cuda.current_device(), len(cuda_state) - 1)]
        torch.cuda.set_rng_state(cuda_state, torch.cuda.current_device())
