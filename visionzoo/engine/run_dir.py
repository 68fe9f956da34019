"""The run directory: resolved config, provenance (command, git commit, versions) and the JSON-lines log.

Layout of runs/<name>/:
    config.yaml   resolved config (enough to rebuild the model and data)
    run.json      command line, git commit, package versions, device, start time
    log.jsonl     one JSON record per logged step / validation / epoch / event
    last.pt       full training state (model, optimizers, schedulers, scaler, EMA, RNG, position)
    best.pt       weights (and EMA weights) of the best validation epoch, with metrics
    tb/           TensorBoard events, when train.tensorboard is true
    .lock         the advisory lock of the process writing the run (pid and host of the holder)
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import yaml

from visionzoo.engine.checkpoint import atomic_write_text

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another live process is writing this run directory."""


class RunLock:
    """One writer per run directory: an advisory flock on `run_dir/.lock`, taken without waiting.

    The kernel drops the lock when its holder exits, however it dies (SIGKILL, a crash, a lost node's
    process), so a leftover .lock file never blocks a later run; the file only says who held it last.
    Advisory: it stops visionzoo processes (train.py, --resume) from writing the same run at once, not
    other programs. On network file systems without flock support the lock is a no-op."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLocked(f"{self.run_dir} is in use by another process ({holder or 'pid unknown'}): "
                                "one process at a time may write a run. Wait for it to finish or stop it, "
                                "or train into another --run-dir") from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):  # file system without locks
                return self
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {platform.node()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def git_commit(path: Path) -> dict | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("visionzoo", "torch", "torchvision", "numpy", "pillow", "safetensors", "pyyaml"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_run_files(run_dir: Path, config: dict, device: str, extra: dict | None = None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    info = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "argv": sys.argv,
        "cwd": os.getcwd(),
        "git": git_commit(Path(__file__).resolve().parent),
        "versions": package_versions(),
        "device": device,
        "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    runs_file = run_dir / "run.json"
    history = []
    if runs_file.is_file():  # a resumed run keeps the provenance of every invocation
        try:
            old = json.loads(runs_file.read_text())
            history = old.get("history", []) + [{k: v for k, v in old.items() if k != "history"}]
        except json.JSONDecodeError:
            pass
    atomic_write_text(runs_file, json.dumps({**info, "history": history}, indent=2))
    return info


class JsonlLogger:
    """Appends one JSON object per line to log.jsonl (and scalars to TensorBoard when enabled)."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard_dir: Path | None = None):
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # local: the optional 'tensorboard' extra
            except ImportError as e:
                raise RuntimeError(
                    "train.tensorboard is true but TensorBoard is not installed: pip install 'visionzoo[tensorboard]'"
                ) from e
            self.tb = SummaryWriter(str(tensorboard_dir))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
        if self.tb is not None and record.get("type") in ("train", "val", "epoch"):
            step = record.get("step", 0)
            for key, value in record.items():
                if key not in ("time", "step", "epoch", "type") and isinstance(value, (int, float)):
                    self.tb.add_scalar(f"{record['type']}/{key}", value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_log(path: Path) -> list[dict]:
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
    return records
