"""Shared helpers for the end-to-end tests: small real datasets on disk and subprocess runs."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TINY_CONFIG = """
_base_: {base}
model: {{name: resnet18}}
data:
  root: {root}
  input_size: 32
  mean: [0.5, 0.5, 0.5]
  std: [0.25, 0.25, 0.25]
  crop_pct: 1.0
  batch_size: 16
  num_workers: 0
  augment: {{scale: [0.6, 1.0], hflip: 0.5}}
optim: {{lr: 0.05, weight_decay: 5.0e-4}}
schedule: {{name: cosine, warmup_epochs: 0.5}}
train: {{epochs: 2, log_interval: 2, grad_clip: 5.0, ema: {{enabled: true, decay: 0.9}}}}
loss: {{label_smoothing: 0.1}}
"""


IN_MEMORY_SHAPES_CONFIG = """
_base_: {base}
model: {{name: resnet18}}
data:
  dataset: shapes
  params: {{num_samples: {samples}, image_size: 32}}
  input_size: 32
  mean: [0.5, 0.5, 0.5]
  std: [0.25, 0.25, 0.25]
  crop_pct: 1.0
  batch_size: {batch}
  num_workers: 0
  val_split: null
optim: {{name: adamw, lr: {lr}, weight_decay: 0.0}}
output: {{dir: {runs}}}
"""


def write_in_memory_shapes_config(path: Path, samples: int = 64, batch: int = 16, lr: float = 0.002) -> Path:
    """A resnet18 config on shapes rendered in memory (no files), without validation; runs go under path's folder."""
    path.write_text(IN_MEMORY_SHAPES_CONFIG.format(
        base=ROOT / "configs/classification/_base_.yaml", samples=samples, batch=batch,
        lr=f"{lr:.1e}",  # PyYAML reads 1.0e-09 as a float, 1e-09 as a string
        runs=path.parent / "runs"))
    return path


def write_tiny_config(path: Path, data_root: Path) -> Path:
    path.write_text(TINY_CONFIG.format(base=ROOT / "configs/classification/_base_.yaml", root=data_root))
    return path


def run_script(script: str, *args, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str):
    """A real file system of `size` (tmpfs, e.g. "4m") mounted at `mount` for a full-disk test; needs the
    right to mount (root): skips elsewhere."""
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
