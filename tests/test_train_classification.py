"""End to end: real image files on disk -> train.py / evaluate.py as subprocesses, plus in-process
resume, signal and failure behaviour of the shared trainer."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.helpers import ROOT, read_jsonl, run_script, write_tiny_config
from visionzoo.config import load_config
from visionzoo.engine.checkpoint import load_checkpoint
from visionzoo.engine.hooks import HookBase, JsonLog
from visionzoo.engine.trainer import NonFiniteLoss
from visionzoo.training import build_trainer


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from visionzoo.datasets.write_shapes import write_image_folder

    root = tmp_path_factory.mktemp("shapes")
    write_image_folder(root, image_size=32, counts={"train": 96, "val": 40, "test": 40}, seed=0, progress=False)
    return root


@pytest.fixture
def tiny_cfg(tmp_path, shapes_root):
    return write_tiny_config(tmp_path / "tiny.yaml", shapes_root)


def _final_weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_train_then_evaluate_end_to_end(tmp_path, tiny_cfg):
    run_dir = tmp_path / "run"
    proc = run_script("train.py", tiny_cfg, "train.epochs=2", "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    for name in ("config.yaml", "run.json", "log.jsonl", "last.pt", "best.pt"):
        assert (run_dir / name).is_file(), name
    run = json.loads((run_dir / "run.json").read_text())
    assert run["versions"]["torch"] and "train.py" in run["command"]
    records = read_jsonl(run_dir / "log.jsonl")
    types = {r["type"] for r in records}
    assert {"run", "train", "val", "epoch", "checkpoint"} <= types
    train = [r for r in records if r["type"] == "train"]
    assert all({"loss", "lr", "images_per_s", "step", "epoch"} <= set(r) for r in train)
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]

    report_dir = tmp_path / "report"
    proc = run_script("evaluate.py", run_dir, "--report", report_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["num_samples"] == 40
    m = metrics["metrics"]
    assert 0 <= m["top1"] <= m["top5"] <= 1
    assert len(m["confusion_matrix"]) == 5 and sum(map(sum, m["confusion_matrix"])) == 40
    assert set(m["per_class"]) == {"circle", "hexagon", "square", "star", "triangle"}
    assert metrics["model"]["parameters"] == sum(p.numel() for p in torch.nn.Linear(512, 5).parameters()) + 11_176_512
    html = (report_dir / "report.html").read_text()
    assert "<img" in html and 'src="http' not in html

    proc = run_script("evaluate.py", "--compare", run_dir, run_dir)
    assert proc.returncode == 0, proc.stderr
    assert "top1" in proc.stdout and proc.stdout.count("run") >= 2


def test_resume_after_epoch_is_bit_identical(tmp_path, tiny_cfg):
    cfg = load_config(tiny_cfg, ["train.epochs=3"])
    build_trainer(cfg, tmp_path / "straight", show_progress=False).fit()

    build_trainer(cfg, tmp_path / "stopped", show_progress=False).fit(stop_after_epoch=1)
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["epoch"] == 1
    resumed = build_trainer(cfg, tmp_path / "stopped", resume=tmp_path / "stopped", show_progress=False)
    assert resumed.pos.epoch == 1
    resumed.fit()

    a, b = load_checkpoint(tmp_path / "straight/last.pt"), load_checkpoint(tmp_path / "stopped/last.pt")
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k} differs after resume"
    assert a["optimizers"]["main"]["state"][0]["momentum_buffer"].equal(
        b["optimizers"]["main"]["state"][0]["momentum_buffer"])
    assert a["global_step"] == b["global_step"]


def test_sigterm_writes_checkpoint_and_mid_epoch_resume_matches(tmp_path, tiny_cfg):
    args = [tiny_cfg, "train.epochs=3", "train.log_interval=1", "--no-progress"]
    straight = run_script("train.py", *args, "--run-dir", tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr

    run_dir = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, args), "--run-dir", str(run_dir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run_dir / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # stop it in the middle of epoch 2
        if log.is_file() and any(r["type"] == "train" and r["epoch"] == 2 for r in read_jsonl(log)):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Resume with: python train.py --resume" in stderr
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] >= 1 and ckpt["global_step"] < 18

    resumed = run_script("train.py", "--resume", run_dir, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _final_weights(tmp_path / "straight"), _final_weights(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_to_the_whole_process_group_still_writes_the_checkpoint(tmp_path, tiny_cfg):
    """A scheduler (or Ctrl-C) signals every process of the job, DataLoader workers included: the workers must
    leave the signal to the trainer, which finishes its step and writes a mid-epoch checkpoint."""
    run_dir = tmp_path / "group"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), str(tiny_cfg), "train.epochs=3",
                             "train.log_interval=1", "data.num_workers=1", "--no-progress", "--run-dir", str(run_dir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    log = run_dir / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.is_file() and any(r["type"] == "train" and r["epoch"] == 2 for r in read_jsonl(log)):
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "DataLoader worker" not in stderr
    ckpt = load_checkpoint(run_dir / "last.pt")
    assert ckpt["epoch"] == 1 and 0 < ckpt["batch_in_epoch"]  # stopped inside epoch 2, position saved


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny_cfg):
    # lr jumps by 1e12 after epoch 1: epoch 1 trains fine, epoch 2 diverges.
    cfg = load_config(tiny_cfg, ["train.epochs=3", "schedule.name=multistep", "schedule.milestones=[1]",
                                 "schedule.gamma=1.0e+12", "schedule.warmup_epochs=0", "train.grad_clip=null"])
    trainer = build_trainer(cfg, tmp_path / "nan", show_progress=False)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at epoch 2, step \d+, lr [0-9.e+]+: loss=(nan|inf)"):
        trainer.fit()
    assert load_checkpoint(tmp_path / "nan" / "last.pt")["epoch"] == 1
    errors = [r for r in read_jsonl(tmp_path / "nan" / "log.jsonl") if r["type"] == "error"]
    assert errors and "non-finite" in errors[0]["message"]


def test_corrupt_image_skip_or_error(tmp_path, shapes_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shapes_root, root)
    bad = root / "train" / "circle" / "zz_truncated.png"
    good = next((root / "train" / "circle").glob("*.png")).read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    cfg_file = write_tiny_config(tmp_path / "c.yaml", root)

    proc = run_script("train.py", cfg_file, "train.epochs=1", "--run-dir", tmp_path / "err", "--no-progress")
    assert proc.returncode == 1
    assert "zz_truncated.png" in proc.stderr and "Traceback" not in proc.stderr

    cfg = load_config(cfg_file, ["train.epochs=1", "data.on_corrupt=skip", "data.batch_size=98"])
    with pytest.raises(ValueError, match="larger than the training set"):
        build_trainer(cfg, tmp_path / "x", show_progress=False)
    cfg = load_config(cfg_file, ["train.epochs=1", "data.on_corrupt=skip", "data.batch_size=98",
                                 "data.batch_size=16"])
    build_trainer(cfg, tmp_path / "skip", show_progress=False).fit()
    warnings = [r for r in read_jsonl(tmp_path / "skip" / "log.jsonl") if r["type"] == "warning"]
    assert warnings and warnings[0]["skipped"] >= 1 and "zz_truncated.png" in warnings[0]["message"]


def test_cli_errors_are_clear(tmp_path, tiny_cfg):
    proc = run_script("train.py", tiny_cfg, "train.epoch=2")
    assert proc.returncode == 1 and "did you mean 'train.epochs'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_script("train.py", tiny_cfg, "data.root=/nonexistent/place")
    assert proc.returncode == 1 and "/nonexistent/place" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_script("evaluate.py", tmp_path / "not_a_run")
    assert proc.returncode == 1 and "not_a_run" in proc.stderr


def test_precision_layout_accumulation_and_optimizer_options(tmp_path, tiny_cfg):
    """bf16 autocast, channels_last, gradient accumulation, AdamW, step schedule, TensorBoard."""
    cfg = load_config(tiny_cfg, ["train.epochs=1", "train.amp=bf16", "train.channels_last=true",
                                 "train.accumulate=2", "optim.name=adamw", "optim.lr=0.001",
                                 "schedule.name=step", "schedule.step_size=1", "train.tensorboard=true",
                                 "train.ema.enabled=false"])
    trainer = build_trainer(cfg, tmp_path / "opts", show_progress=False)
    assert isinstance(trainer.optimizers["main"], torch.optim.AdamW)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    summary = trainer.fit()
    assert summary["steps"] == trainer.steps_per_epoch
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # 6 batches accumulated 2 at a time = 3 optimizer steps
    assert trainer.optimizers["main"].state[trainer.model.conv1.weight]["step"].item() == 3
    assert list((tmp_path / "opts" / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_layer_statistics_during_training_reach_the_log_and_the_report(tmp_path, tiny_cfg):
    run_dir = tmp_path / "run"
    # lr 2 with the config's gradient clipping: finite losses, but steps far larger than healthy
    proc = run_script("train.py", tiny_cfg, "train.epochs=1", "train.layer_stats_interval=2", "optim.lr=2.0",
                      "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "warning: step" in proc.stderr + proc.stdout
    records = read_jsonl(run_dir / "log.jsonl")
    stats = [r for r in records if r["type"] == "layer_stats"]
    assert stats and all(r["step"] % 2 == 0 for r in stats)
    first = stats[0]
    assert "conv1.weight" in first["params"] and first["params"]["conv1.weight"]["grad_norm"] > 0
    assert any("dead_fraction" in a for a in first["activations"].values())
    warnings = [r for r in records if r["type"] == "warning" and r.get("kind") == "update_high"]
    assert warnings and "lr is likely too high" in warnings[0]["message"]

    proc = run_script("evaluate.py", run_dir, "--report", tmp_path / "report", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Layer statistics during training" in html and "Dead ReLU units per layer" in html


@pytest.mark.slow
def test_fine_tune_from_a_published_file_records_where_it_started(tmp_path, tiny_cfg):
    """Stage 1 is published; stage 2 starts from that file (model.weights) and its card names the file, its
    hash and stage 1's training record, and its commands come first, so the shipped card tells the whole history."""
    from visionzoo.publish import main as publish_main
    from visionzoo.weights import sha256_file

    def train_evaluate_publish(name, *overrides):
        run_dir = tmp_path / name
        proc = run_script("train.py", tiny_cfg, "train.epochs=1", "train.max_steps_per_epoch=2", *overrides,
                          "--run-dir", run_dir, "--no-progress")
        assert proc.returncode == 0, proc.stderr
        proc = run_script("evaluate.py", run_dir, "--split", "val", "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert publish_main([str(run_dir), "--tag", name, "--out", str(tmp_path / "out"), "--dtype", "float32"]) == 0
        path = tmp_path / "out" / f"resnet18.{name}.safetensors"
        return path, json.loads(path.with_suffix(".json").read_text())

    first, first_card = train_evaluate_publish("stage1")
    assert first_card["trained"]["initial_weights"] is None
    second, second_card = train_evaluate_publish("stage2", f"model.weights={first}", "optim.lr=0.001")
    start = second_card["trained"]["initial_weights"]
    assert start["weights"] == str(first) and start["sha256"] == sha256_file(first)
    assert start["trained"] == first_card["trained"]
    assert second_card["reproduce"][:len(first_card["reproduce"])] == first_card["reproduce"]  # the whole chain
    assert second_card["sha256"] != first_card["sha256"]


def test_published_card_names_paths_in_the_checkout_and_its_data_folder_portably(tmp_path, shapes_root):
    """A run started in a clone, on data in ../shared beside it: the card's commands and config name them
    relative to the clone (what a user's clone of the repository has), not as this machine's absolute paths."""
    from visionzoo.publish import main as publish_main

    clone = tmp_path / "clone"
    (clone / "visionzoo").mkdir(parents=True)
    (clone / "pyproject.toml").write_text("")
    data = tmp_path / "shared" / "data" / "shapes"
    shutil.copytree(shapes_root, data)
    config = write_tiny_config(clone / "tiny.yaml", data)
    run_dir = clone / "runs" / "tiny"
    proc = run_script("train.py", config, "train.epochs=1", "train.max_steps_per_epoch=2", "--run-dir", run_dir,
                      "--overwrite", "--no-progress", cwd=clone)
    assert proc.returncode == 0, proc.stderr
    proc = run_script("evaluate.py", run_dir, "--split", "val", "--no-progress", cwd=clone)
    assert proc.returncode == 0, proc.stderr
    assert publish_main([str(run_dir), "--tag", "portable", "--out", str(clone / "weights"), "--dtype", "float32"]) == 0
    card = json.loads((clone / "weights" / "resnet18.portable.json").read_text())
    assert card["config"]["data"]["root"] == card["metrics"]["data_root"] == "../shared/data/shapes"
    assert card["reproduce"][0].startswith("python -m visionzoo.datasets.write_shapes ../shared/data/shapes ")
    assert card["reproduce"][1] == "python train.py tiny.yaml --run-dir runs/tiny"
    assert card["reproduce"][-1] == "python -m visionzoo.publish runs/tiny --tag portable --out weights"
    assert "--run-dir runs/tiny" in card["command"] and "--overwrite" not in card["command"]
    recorded = json.dumps({k: card[k] for k in ("command", "reproduce", "config", "metrics")})
    assert str(tmp_path) not in recorded


class _Recorder(HookBase):
    """Notes every hook point it is called at, and every record the run emits."""

    def __init__(self):
        self.points, self.records = [], []

    def __getattribute__(self, name):
        attr = object.__getattribute__(self, name)
        if name in ("before_train", "before_epoch", "before_step", "after_step", "after_epoch_steps",
                    "after_validation", "after_epoch", "after_train"):
            def noted(*args):
                object.__getattribute__(self, "points").append(name)
                return attr(*args)
            return noted
        return attr

    def write(self, record):
        self.records.append(record)


def test_hooks_see_the_documented_points_and_the_log_is_a_hook(tmp_path, tiny_cfg):
    cfg = load_config(tiny_cfg, ["train.epochs=1", "train.max_steps_per_epoch=2", "train.log_interval=1"])
    recorder = _Recorder()
    build_trainer(cfg, tmp_path / "logged", hooks=[recorder, JsonLog()]).fit()
    assert recorder.points == ["before_train", "before_epoch", "before_step", "after_step", "before_step",
                               "after_step", "after_epoch_steps", "after_validation", "after_epoch", "after_train"]
    written = read_jsonl(tmp_path / "logged" / "log.jsonl")
    assert [r["type"] for r in written] == [r["type"] for r in recorder.records]
    assert [r["type"] for r in written] == ["run", "train", "train", "val", "checkpoint", "epoch"]
    assert written[1]["step"] == 1 and written[2]["step"] == 2

    # without the log hook the run keeps its checkpoint but writes no log
    build_trainer(cfg, tmp_path / "quiet", hooks=[]).fit()
    assert (tmp_path / "quiet" / "last.pt").is_file() and not (tmp_path / "quiet" / "log.jsonl").exists()
