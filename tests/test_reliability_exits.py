"""Every exit path ends the process: train.py and evaluate.py as real subprocesses, with 0, 1 and 2 DataLoader
workers, each under a timeout. An error while the workers are alive (a corrupt image in train, val or test, an
uncaught exception in validation, a full disk), a second and a third SIGINT/SIGTERM, and a failing rank under
torchrun must all end with the documented exit code and a one-line message, never a hang."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, read_jsonl, run_script, small_tmpfs, write_tiny_config

TIMEOUT = 600  # seconds: generous for busy machines (a run takes ~10 s on idle cores); a hang never ends
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    from visionzoo.datasets.write_shapes import write_image_folder

    root = tmp_path_factory.mktemp("shapes")
    # 32 training images (+1 corrupt one = 33 = 3 batches of 11): every image is read in the first epoch
    write_image_folder(root, image_size=32, counts={"train": 32, "val": 10, "test": 10}, seed=0, progress=False)
    return root


def _corrupt_copy(src: Path, dst: Path, split: str) -> Path:
    shutil.copytree(src, dst)
    folder = next(d for d in sorted((dst / split).iterdir()) if any(d.glob("*.png")))
    good = next(folder.glob("*.png")).read_bytes()
    (folder / "zz_truncated.png").write_bytes(good[: len(good) // 3])
    return dst


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, clean_root):
    """One tiny finished run to evaluate."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = write_tiny_config(tmp / "tiny.yaml", clean_root)
    run_dir = tmp / "run"
    proc = run_script("train.py", cfg, "train.epochs=1", "train.max_steps_per_epoch=1", "--run-dir", run_dir,
                      "--no-progress", timeout=TIMEOUT, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return run_dir


def _assert_clean_error(proc, code: int, *needles: str):
    assert proc.returncode == code, proc.stderr[-3000:]
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


# ---- an exception while the workers are alive ---------------------------------------------------------------
@pytest.mark.parametrize("workers", [0, 1, 2])
def test_corrupt_training_image_exits_with_its_name(tmp_path, clean_root, workers):
    root = _corrupt_copy(clean_root, tmp_path / "data", "train")
    cfg = write_tiny_config(tmp_path / "c.yaml", root)
    proc = run_script("train.py", cfg, f"data.num_workers={workers}", "data.batch_size=11", "train.epochs=1",
                      "--run-dir", tmp_path / "run", "--no-progress", timeout=TIMEOUT, env=ENV)
    _assert_clean_error(proc, 1, "error: ", "zz_truncated.png")


def test_corrupt_validation_image_exits_with_its_name(tmp_path, clean_root):
    root = _corrupt_copy(clean_root, tmp_path / "data", "val")
    cfg = write_tiny_config(tmp_path / "c.yaml", root)
    proc = run_script("train.py", cfg, "data.num_workers=2", "train.max_steps_per_epoch=1", "--run-dir",
                      tmp_path / "run", "--no-progress", timeout=TIMEOUT, env=ENV)
    _assert_clean_error(proc, 1, "error: ", "zz_truncated.png")


def test_uncaught_exception_in_validation_ends_the_process(tmp_path, clean_root):
    """An exception train.py has no message for (here a KeyError from validation) still ends the process:
    the persistent workers are released and stopped at exit."""
    cfg = write_tiny_config(tmp_path / "c.yaml", clean_root)
    proc = run_script("train.py", cfg, "data.num_workers=1", "train.max_steps_per_epoch=1",
                      "train.best_metric=no_such_metric", "--run-dir", tmp_path / "run", "--no-progress",
                      timeout=TIMEOUT, env=ENV)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "KeyError" in proc.stderr and "no_such_metric" in proc.stderr


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_corrupt_test_image_in_evaluate_exits_with_its_name(tmp_path, clean_root, trained_run, workers):
    root = _corrupt_copy(clean_root, tmp_path / "data", "test")
    proc = run_script("evaluate.py", trained_run, "--data", root, "--split", "test", "--workers", workers,
                      "--no-progress", timeout=TIMEOUT, env=ENV)
    _assert_clean_error(proc, 1, "error: ", "zz_truncated.png")


# ---- a full disk ----------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB file system (tmpfs); skipped where mounting is not allowed."""
    with small_tmpfs(tmp_path / "small_disk", "8m") as mount:
        yield mount


def test_full_disk_at_the_first_checkpoint_is_an_error_line(tmp_path, clean_root, small_disk):
    """resnet18's checkpoints (45 MB of weights) cannot fit on 8 MiB: refused before writing,
    with the file and the space needed, while a DataLoader worker is alive; no temporary file is left."""
    cfg = write_tiny_config(tmp_path / "c.yaml", clean_root)
    run_dir = small_disk / "run"
    proc = run_script("train.py", cfg, "data.num_workers=1", "train.max_steps_per_epoch=1", "--run-dir", run_dir,
                      "--no-progress", timeout=TIMEOUT, env=ENV)
    _assert_clean_error(proc, 1, "error: ", "not enough disk space", "MiB free")
    assert f"error: {run_dir}/" in proc.stderr and ".pt: not enough" in proc.stderr  # best.pt or last.pt
    assert not list(run_dir.glob("*.tmp"))


# ---- second and third signals ---------------------------------------------------------------------------------
class _Lines:
    """Collects a pipe's lines in a thread, so the test can wait for one without blocking on the pipe."""

    def __init__(self, pipe):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe):
        for line in pipe:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(text in line for line in self.lines):
                return True
            time.sleep(0.01)
        return False

    @property
    def text(self) -> str:
        return "".join(self.lines)


@pytest.mark.parametrize("sig,count,workers,to_group", [
    (signal.SIGINT, 2, 0, False),
    (signal.SIGINT, 3, 2, True),  # Ctrl-C in a terminal: the whole process group, workers included
    (signal.SIGTERM, 2, 1, True),  # a scheduler's scancel / kill of the job
    (signal.SIGTERM, 3, 0, False),
], ids=["sigint-twice-w0", "sigint-thrice-w2-group", "sigterm-twice-w1-group", "sigterm-thrice-w0"])
def test_second_and_third_signal_stop_at_once(tmp_path, clean_root, sig, count, workers, to_group):
    cfg = write_tiny_config(tmp_path / "c.yaml", clean_root)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), str(cfg), "train.epochs=1000", "train.log_interval=1",
         f"data.num_workers={workers}", "--no-progress", "--run-dir", str(run_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **ENV})
    out, err = _Lines(proc.stdout), _Lines(proc.stderr)
    send = (lambda s: os.killpg(proc.pid, s)) if to_group else proc.send_signal
    try:
        log = run_dir / "log.jsonl"
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and not (log.is_file() and any(r["type"] == "train" for r in read_jsonl(log))):
            time.sleep(0.05)
        send(sig)
        assert out.wait_for(f"received {sig.name}", 60), out.text + err.text
        for _ in range(count - 1):  # the first was handled: these arrive while it finishes its step
            send(sig)
            time.sleep(0.002)
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out.thread.join(5)
    err.thread.join(5)
    assert proc.returncode == 128 + sig, err.text[-3000:]
    assert f"stopped at once by a second {sig.name}" in err.text or f"received {sig.name} again" in err.text, \
        err.text[-3000:]
    assert "Traceback" not in err.text, err.text[-3000:]
    assert not list(run_dir.glob("*.tmp"))
    time.sleep(0.2)  # no worker outlives the main process
    leftover = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not leftover, [Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else pid
                          for pid in leftover]


# ---- torchrun -------------------------------------------------------------------------------------------------
def test_torchrun_rank_error_ends_every_process(tmp_path, clean_root):
    """Two gloo processes with a worker each; a corrupt image fails one rank: the job ends, naming the file."""
    root = _corrupt_copy(clean_root, tmp_path / "data", "train")
    cfg = write_tiny_config(tmp_path / "c.yaml", root)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    port = 29700 + os.getpid() % 200
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
         str(ROOT / "train.py"), str(cfg), "data.num_workers=1", "data.batch_size=8", "--run-dir",
         str(tmp_path / "run"), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode != 0
    assert "error: " in proc.stderr and "zz_truncated.png" in proc.stderr, proc.stderr[-3000:]
