"""Unit tests of the shared engine's pieces: sampling, schedules, checkpoints."""
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from visionzoo.config.schema import ScheduleConfig
from visionzoo.datasets.common import SkippedSample
from visionzoo.engine.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from visionzoo.engine.data import EpochSampler, SkipCollate
from visionzoo.engine.optim import lr_factor


def test_epoch_sampler_is_a_fixed_permutation_per_epoch_and_resumable():
    s = EpochSampler(10, shuffle=True, seed=3)
    s.set_epoch(0)
    first = list(s)
    assert sorted(i for i, _ in first) == list(range(10))
    assert list(s) == first  # same epoch, same order and seeds
    s.set_epoch(1)
    assert [i for i, _ in s] != [i for i, _ in first]
    s.set_epoch(0, start=4)
    assert list(s) == first[4:] and len(s) == 6


def test_epoch_sampler_splits_across_ranks_without_overlap():
    parts = []
    for rank in range(3):
        s = EpochSampler(10, shuffle=True, seed=0, rank=rank, world_size=3)
        s.set_epoch(2)
        parts.append([i for i, _ in s])
    assert all(len(p) == 4 for p in parts)  # padded to equal length
    assert set().union(*parts) == set(range(10))


def test_skip_collate_drops_and_reports_unreadable_samples():
    collate = SkipCollate()
    batch, skipped, indices = collate([(4, (torch.zeros(2), 1)), (7, SkippedSample("a.png", "truncated")),
                                       (9, (torch.ones(2), 0))])
    assert batch[0].shape == (2, 2) and batch[1].tolist() == [1, 0]
    assert skipped == [SkippedSample("a.png", "truncated")] and indices == [4, 9]
    assert collate([(0, SkippedSample("b.png", "x"))]) == (None, [SkippedSample("b.png", "x")], [])


@pytest.mark.parametrize("name,step,expected", [
    ("constant", 50, 1.0),
    ("step", 25, 0.1),           # step_size 2 epochs of 10 steps: decays at step 20
    ("multistep", 35, 0.01),     # milestones 1 and 3
    ("exponential", 20, 0.01),   # gamma per epoch
    ("cosine", 55, 0.5),         # halfway through 10..100
    ("polynomial", 100, 0.0),
])
def test_lr_schedules(name, step, expected):
    cfg = ScheduleConfig(name=name, warmup_epochs=1, warmup_factor=0.1, step_size=2, milestones=[1, 3],
                         gamma=0.1, power=0.9)
    assert lr_factor(step, cfg=cfg, steps_per_epoch=10, total_steps=100) == pytest.approx(expected, abs=1e-9)
    # linear warm-up over the first epoch
    assert lr_factor(0, cfg=cfg, steps_per_epoch=10, total_steps=100) == pytest.approx(0.1)
    assert lr_factor(5, cfg=cfg, steps_per_epoch=10, total_steps=100) == pytest.approx(0.55)


def test_cosine_floor():
    cfg = ScheduleConfig(name="cosine", min_lr_ratio=0.1)
    assert lr_factor(100, cfg=cfg, steps_per_epoch=10, total_steps=100) == pytest.approx(0.1)
    assert math.isclose(lr_factor(0, cfg=cfg, steps_per_epoch=10, total_steps=100), 1.0)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1)
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    atomic_save({"rng": state}, tmp_path / "c.pt")
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_atomic_save_keeps_previous_file_when_killed_midway(tmp_path):
    """A writer killed while saving leaves the old checkpoint intact and readable."""
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1, "w": torch.ones(3)}, path)
    script = (
        "import os, signal, torch, sys\n"
        "from visionzoo.engine import checkpoint as c\n"
        "real = torch.save\n"
        "def slow(obj, f):\n"
        "    f.write(b'partial garbage')\n"
        "    f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "c.torch.save = slow\n"
        f"c.atomic_save({{'epoch': 2}}, {str(path)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(path)["epoch"] == 1


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
