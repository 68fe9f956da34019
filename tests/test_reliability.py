"""Reliability promises below the process level: one writer per run directory, no litter, checksummed
checkpoints, hostile folders and hostile values refused with a message naming the file, line or key."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, small_tmpfs, write_tiny_config
from visionzoo.config import ConfigError, load_config
from visionzoo.engine.checkpoint import (
    CheckpointError,
    DiskFullError,
    atomic_save,
    load_checkpoint,
    remove_stale_temp_files,
)
from visionzoo.engine.run_dir import RunLock, RunLocked, write_run_files

BASE = ROOT / "configs/classification/resnet18_shapes.yaml"


# ---- one writer per run directory -------------------------------------------------------------------------
def _hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run's lock (as a running train.py does)."""
    code = ("import sys, time; from visionzoo.engine.run_dir import RunLock; "
            f"RunLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    from visionzoo.cli.train import main

    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir)
    try:
        with pytest.raises(RunLocked, match=rf"in use by another process \(pid {holder.pid} on host "
                                            rf"{platform.node()}\)"):
            RunLock(run_dir).acquire()
        # train.py into the held directory: refused before any data is read
        cfg = write_tiny_config(tmp_path / "c.yaml", tmp_path / "no_data_needed")
        start = time.time()
        assert main([str(cfg), "--run-dir", str(run_dir), "--no-progress"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"pid {holder.pid}" in err and time.time() - start < 30
        # --resume of a run another process holds
        (run_dir / "config.yaml").write_text(cfg.read_text())
        assert main(["--resume", str(run_dir), "--no-progress"]) == 1
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # the holder died without unlocking (SIGKILL): the lock went with it, the .lock file left behind is harmless
    assert (run_dir / ".lock").is_file()
    with RunLock(run_dir) as lock:
        assert lock.fd is not None
        assert f"pid {os.getpid()}" in (run_dir / ".lock").read_text()


# ---- no litter ------------------------------------------------------------------------------------------------
def test_stale_temporary_files_are_removed_when_the_run_is_claimed(tmp_path):
    from argparse import Namespace

    from visionzoo.cli.train import claim_run_dir

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    atomic_save({"w": torch.ones(3)}, run_dir / "last.pt")
    stale = [run_dir / "last.pt.k3j_x9zq.tmp", run_dir / "best.pt.abcdefgh.tmp", run_dir / "run.json.a1b2c3d4.tmp"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    keep = [run_dir / "notes.tmp", run_dir / "last.pt"]
    keep[0].write_text("mine")
    lock = claim_run_dir(Namespace(overwrite=False, resume=str(run_dir)), run_dir)
    lock.release()
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert remove_stale_temp_files(tmp_path / "missing") == []


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB file system (tmpfs); skipped where mounting is not allowed."""
    with small_tmpfs(tmp_path / "small_disk", "4m") as mount:
        yield mount


def test_full_disk_keeps_the_old_files_and_names_the_space_needed(small_disk, monkeypatch):
    run_dir = small_disk / "run"
    write_run_files(run_dir, {"task": "classification"}, "cpu")
    atomic_save({"w": torch.zeros(256 * 1024)}, run_dir / "last.pt")  # 1 MiB
    old_config, old_ckpt = (run_dir / "config.yaml").read_text(), (run_dir / "last.pt").read_bytes()
    (small_disk / "filler").write_bytes(b"\0" * (2 * 2**20 + 600_000))  # leaves about 0.3 MiB

    # the pre-check: 2 MiB of tensors + margin do not fit into what is left
    with pytest.raises(DiskFullError, match=r"last\.pt: not enough disk space .* needs about 3\.0 MiB, 0\.\d MiB free"):
        atomic_save({"w": torch.zeros(512 * 1024)}, run_dir / "last.pt")
    # the kernel's ENOSPC in the middle of the write (the disk filled up after the check)
    import shutil

    from visionzoo.engine import checkpoint

    real = shutil.disk_usage
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: real(p)._replace(free=2**40))
    with pytest.raises(DiskFullError, match=r"last\.pt: disk full while writing: it needs about 2\.5 MiB"):
        atomic_save({"w": torch.zeros(128 * 1024 * 3)}, run_dir / "last.pt")
    with pytest.raises(DiskFullError, match=r"config\.yaml: disk full while writing"):
        write_run_files(run_dir, {"task": "classification", "pad": "x" * 3_000_000}, "cpu")
    assert (run_dir / "config.yaml").read_text() == old_config
    assert (run_dir / "last.pt").read_bytes() == old_ckpt
    assert not list(run_dir.glob("*.tmp"))


def test_run_files_are_replaced_atomically(tmp_path):
    run_dir = tmp_path / "run"
    write_run_files(run_dir, {"a": 1}, "cpu")
    write_run_files(run_dir, {"a": 2}, "cpu")
    assert json.loads((run_dir / "run.json").read_text())["history"][0]["device"] == "cpu"
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml", "run.json"]


# ---- checksums ------------------------------------------------------------------------------------------------
def test_a_flipped_byte_in_a_checkpoint_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "last.pt"
    weights = torch.arange(1 << 18, dtype=torch.float32)
    atomic_save({"model": {"w": weights}, "epoch": 3}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], weights)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10  # inside the tensor's bytes: torch.load alone would read it without complaint
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path}: checkpoint is corrupt"):
        load_checkpoint(path)
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"{path}: checkpoint file is empty \(0 bytes\)"):
        load_checkpoint(path)


def test_evaluate_falls_back_to_best_only_when_asked(tmp_path, capsys, one_thread):
    from visionzoo.cli.evaluate import main as evaluate_main
    from visionzoo.datasets.write_shapes import write_image_folder
    from visionzoo.training import build_trainer

    root = tmp_path / "data"
    write_image_folder(root, image_size=32, counts={"train": 16, "val": 8, "test": 8}, seed=0, progress=False)
    cfg = load_config(write_tiny_config(tmp_path / "c.yaml", root), ["train.epochs=1", "train.max_steps_per_epoch=1"])
    run_dir = tmp_path / "run"
    build_trainer(cfg, run_dir, show_progress=False).fit()
    last = run_dir / "last.pt"
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x01
    last.write_bytes(bytes(data))

    assert evaluate_main([str(last), "--split", "test", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {last}: checkpoint is corrupt") and "--fallback-best" in err
    assert evaluate_main([str(last), "--split", "test", "--no-progress", "--fallback-best"]) == 0
    out = capsys.readouterr()
    assert f"evaluating {run_dir / 'best.pt'} instead" in out.err and '"top1"' in out.out


# ---- hostile folders ------------------------------------------------------------------------------------------
def _png(path: Path, value: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (value, value, value)).save(path)


def _image_folder(root: Path, per_class: int = 3) -> Path:
    for c in ("circle", "square"):
        for i in range(per_class):
            _png(root / c / f"{i}.png", i)
    return root


def test_image_folder_link_loops_are_not_followed(tmp_path):
    from visionzoo.datasets.folder import ImageFolderDataset

    root = _image_folder(tmp_path / "train")
    (root / "circle" / "up").symlink_to("..")  # back to the split folder: would relabel every class as circle
    (root / "square" / "sub").mkdir()
    (root / "square" / "sub" / "again").symlink_to("../..")  # a second loop, one level deeper
    (root / "square" / "sub" / "self").symlink_to(".")
    ds = ImageFolderDataset(root)
    assert len(ds) == 6 and ds.targets == [0, 0, 0, 1, 1, 1]


def test_image_folder_refuses_links_leaving_the_root_unless_allowed(tmp_path):
    from visionzoo.datasets.folder import ImageFolderDataset

    root = _image_folder(tmp_path / "train")
    _png(tmp_path / "elsewhere" / "secret.png")
    (root / "circle" / "outside").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"circle/outside: symbolic link to .*elsewhere, outside the dataset folder"):
        ImageFolderDataset(root)
    assert len(ImageFolderDataset(root, allow_external_links=True)) == 7
    (root / "circle" / "outside").unlink()
    (root / "square" / "x.png").symlink_to(tmp_path / "elsewhere" / "secret.png")  # a file link, too
    with pytest.raises(ValueError, match=r"square/x\.png: symbolic link"):
        ImageFolderDataset(root)


@pytest.mark.parametrize("link", [False, True])
def test_a_fifo_named_like_an_image_is_refused_not_opened(tmp_path, link):
    from visionzoo.datasets.folder import ImageFolderDataset

    root = _image_folder(tmp_path / "train")
    fifo = root / "circle" / "x.png"
    if link:
        os.mkfifo(root / "circle" / ".pipe")
        fifo.symlink_to(".pipe")
    else:
        os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"circle/x\.png: a FIFO \(named pipe\), not an image file"):
        ImageFolderDataset(root)


def _got(d: Path, boxes: list[str], absence: list[int] | None = None) -> Path:
    for i in range(len(boxes)):
        _png(d / f"{i + 1:08d}.jpg")
    (d / "groundtruth.txt").write_text("\n".join(boxes) + "\n")
    if absence is not None:
        (d / "absence.label").write_text("\n".join(map(str, absence)) + "\n")
    return d


def test_sequence_readers_refuse_fifos_and_outside_links_and_skip_loops(tmp_path):
    from visionzoo.datasets.sequences import SequenceDataset, read_got10k_sequence, read_otb_sequence

    d = _got(tmp_path / "val" / "GOT-10k_Val_000001", ["1,2,3,4", "1,2,3,4"])
    assert len(read_got10k_sequence(d)) == 2
    os.mkfifo(d / "00000003.jpg")
    (d / "groundtruth.txt").write_text("1,2,3,4\n" * 3)
    with pytest.raises(ValueError, match=r"00000003\.jpg: a FIFO \(named pipe\) named like a frame"):
        read_got10k_sequence(d)
    (d / "00000003.jpg").unlink()
    (d / "groundtruth.txt").write_text("1,2,3,4\n" * 2)

    (tmp_path / "val" / "up").symlink_to("..")  # a loop in the dataset folder
    assert SequenceDataset(tmp_path, "val").names == ["GOT-10k_Val_000001"]

    otb = tmp_path / "otb" / "Box"
    _png(tmp_path / "elsewhere" / "0001.jpg")
    (otb / "img").mkdir(parents=True)
    (otb / "img" / "0001.jpg").symlink_to(tmp_path / "elsewhere" / "0001.jpg")
    (otb / "groundtruth_rect.txt").write_text("1,1,2,2\n")
    with pytest.raises(ValueError, match=r"img/0001\.jpg: symbolic link to .*outside"):
        read_otb_sequence(otb)
    assert len(read_otb_sequence(otb, allow_external_links=True)) == 1


# ---- hostile values -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line,absence,message", [
    ("1e308,2,3,4", None, r"line 2: value beyond 1e\+07 pixels in '1e308,2,3,4'"),
    ("1,2,1e308,4", None, r"line 2: value beyond"),
    ("nan,nan,nan,nan", [0, 0, 0], r"line 2: NaN box in a frame whose labels say the target is visible"),
])
def test_got10k_hostile_boxes_name_file_and_line(tmp_path, line, absence, message):
    from visionzoo.datasets.sequences import read_got10k_sequence

    d = _got(tmp_path / "GOT-10k_Val_000001", ["1,2,3,4", line, "1,2,3,4"], absence)
    with pytest.raises(ValueError, match=rf"groundtruth\.txt, {message}"):
        read_got10k_sequence(d)


def test_got10k_nan_box_on_an_absent_frame_is_fine(tmp_path):
    from visionzoo.datasets.sequences import read_got10k_sequence

    d = _got(tmp_path / "GOT-10k_Val_000001", ["1,2,3,4", "nan,nan,nan,nan", "1,2,3,4"], [0, 1, 0])
    assert read_got10k_sequence(d).absent.tolist() == [False, True, False]


def test_coco_nan_box_says_nan(tmp_path):
    from visionzoo.datasets.coco import load_coco_json

    ann = {"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
           "categories": [{"id": 1, "name": "thing"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
                           {"id": 9, "image_id": 1, "category_id": 1, "bbox": [1, float("nan"), 2, 2]}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(ann))  # json writes NaN, which JSON readers (Python's included) accept
    with pytest.raises(ValueError, match=r"instances\.json: annotations\[1\] \(id 9\) key 'bbox' holds NaN"):
        load_coco_json(path)


@pytest.mark.parametrize("override,key", [
    ("loss.label_smoothing=1.0", "loss.label_smoothing"),
    ("loss.label_smoothing=-0.1", "loss.label_smoothing"),
    ("schedule.warmup_epochs=-1", "schedule.warmup_epochs"),
    ("optim.momentum=.nan", "optim.momentum"),
    ("optim.betas=[0.9, .nan]", "optim.betas"),
    ("optim.weight_decay=-0.0001", "optim.weight_decay"),
    ("train.seed=-1", "train.seed"),
    ("optim.lr=.inf", "optim.lr"),
])
def test_hostile_config_values_are_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"'{key}' = .* is invalid: expected"):
        load_config(BASE, [override])


def test_unknown_model_kwarg_is_an_error_line(tmp_path, capsys):
    from visionzoo.cli.train import main

    with pytest.raises(ConfigError, match=r"'model\.kwargs': .*unknown keyword argument 'widht'"):
        load_config(BASE, ["model.kwargs={widht: 2}"])
    assert main([str(BASE), "model.kwargs={widht: 2}", "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "widht" in err and "Traceback" not in err


def test_yaml_alias_bomb_is_refused_quickly(tmp_path):
    """A 'billion laughs' config under a key that takes any mapping: 9 levels of 9 aliases = 387 million strings
    once expanded. PyYAML itself shares the aliased lists, but every later step that copies the config (saving
    config.yaml, to_dict) expands them and exhausts memory; the loader refuses the file up front."""
    lines = ["task: classification", "model: {name: resnet18}", "data:", "  params:",
             '    a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    start = time.time()
    with pytest.raises(ConfigError, match=r"bomb\.yaml: invalid YAML: aliases expand the document to more than "
                                          r"1,000,000 nodes"):
        load_config(bomb)
    assert time.time() - start < 30
    recursive = tmp_path / "loop.yaml"
    recursive.write_text("task: classification\ndata: {params: &p {again: *p}}\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml: .*(recursive|found undefined alias)"):
        load_config(recursive)


def test_ordinary_aliases_still_work(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"_base_: {BASE}\ndata: {{mean: &m [0.5, 0.5, 0.5], std: *m}}\n")
    assert load_config(cfg).data.std == [0.5, 0.5, 0.5]


def test_checksum_survives_bfloat16_and_empty_tensors(tmp_path):
    path = tmp_path / "x.pt"
    obj = {"a": torch.randn(3, dtype=torch.bfloat16), "b": torch.empty(0), "c": [torch.tensor(True)],
           "n": np.int64(3).item()}
    atomic_save(obj, path)
    back = load_checkpoint(path)
    assert torch.equal(back["a"], obj["a"]) and back["b"].numel() == 0 and "checksum" not in back
