"""The run directory: resolved config, provenance (command, git commit, versions) and the JSON-lines log.

Layout of runs/<name>/:
    config.yaml   resolved config (enough to rebuild the model and data)
    run.json      command line, git commit, package versions, device, start time
    log.jsonl     one JSON record per logged step / validation / epoch / event
    last.pt       full training state (model, optimizers, schedulers, scaler, EMA, RNG, position)
    best.pt       weights (and EMA weights) of the best validation epoch, with metrics
    tb/           TensorBoard events, when train.tensorboard is true
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import yaml


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
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
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
    runs_file.write_text(json.dumps({**info, "history": history}, indent=2))
    return info


class JsonlLogger:
    """Appends one JSON object per line to log.jsonl (and scalars to TensorBoard when enabled)."""

    def __init__(self, path: Path, enabled: bool = True, tensorboard_dir: Path | None = None):
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
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
