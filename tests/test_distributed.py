"""Distributed training and evaluation with real 2-process torchrun runs (gloo on CPU): train.py and
evaluate.py under torchrun for a classification and a detection config, distributed evaluation equal to
single-process evaluation, DDP with 2 ranks of batch b equal to 1 rank of batch 2b, the gradient-averaging
path of two-player GANs, and resume with another world size."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ROOT, read_jsonl, run_script, write_tiny_config
from visionzoo.engine.checkpoint import atomic_save, load_checkpoint
from visionzoo.engine.data import EpochSampler

_PORT = [29600]


def torchrun(script: str, *args, nproc: int = 2, timeout: int = 600) -> subprocess.CompletedProcess:
    _PORT[0] += 1  # a fresh rendezvous port per run: a slow-closing earlier run must not be joined
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(_PORT[0]), str(ROOT / script), *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from visionzoo.datasets.write_shapes import write_image_folder

    root = tmp_path_factory.mktemp("shapes")
    # 27 test images: an odd count, so the two ranks get unequal shares and nothing may be padded
    write_image_folder(root, image_size=32, counts={"train": 64, "val": 16, "test": 27}, seed=0, progress=False)
    return root


# ---- sampler arithmetic (no processes) -------------------------------------------------------
def test_sampler_resume_at_another_world_size_sees_each_sample_once():
    size, batch = 40, 3
    full = EpochSampler(size, shuffle=True, seed=5)
    full.set_epoch(2)
    order = [i for i, _ in full]
    # 2 ranks consume 4 steps of batch 3 (24 samples), then 3 ranks go on from that sample
    first = []
    for rank in range(2):
        s = EpochSampler(size, shuffle=True, seed=5, rank=rank, world_size=2)
        s.set_epoch(2)
        first += [i for i, _ in s][: 4 * batch]
    rest = []
    for rank in range(3):
        s = EpochSampler(size, shuffle=True, seed=5, rank=rank, world_size=3)
        s.set_epoch(2, start=24)
        rest += [i for i, _ in s]
    assert sorted(first) == sorted(order[:24])
    assert set(rest) == set(order[24:]) and len(rest) == 18  # 16 left, padded to a multiple of 3


def test_mid_epoch_checkpoint_from_two_ranks_resumes_on_one(tmp_path, shapes_root):
    """A checkpoint written by 2 ranks after 3 steps of batch 8 (48 samples) resumes in one process at
    step 6 of its 8-step epoch, with the lr of that point of the schedule."""
    from visionzoo.config import load_config
    from visionzoo.training import build_trainer

    cfg_file = write_tiny_config(tmp_path / "tiny.yaml", shapes_root)
    cfg = load_config(cfg_file, ["data.batch_size=8", "train.ema.enabled=false", "train.epochs=2"])
    run = tmp_path / "run"
    trainer = build_trainer(cfg, run, show_progress=False)
    trainer.save_checkpoint()
    ckpt = load_checkpoint(run / "last.pt")
    ckpt.update(world_size=2, steps_per_epoch=4, epoch=1, batch_in_epoch=3, global_step=7, samples_in_epoch=48)
    atomic_save(ckpt, run / "last.pt")

    resumed = build_trainer(cfg, run, resume=run, show_progress=False)
    assert (resumed.pos.epoch, resumed.pos.batch_in_epoch, resumed.pos.global_step) == (1, 6, 14)
    assert resumed.resumed_geometry["world_size_before"] == 2 and resumed.resumed_geometry["step"] == 14
    scheduler = resumed.schedulers["main"]
    assert scheduler.last_epoch == 14
    assert resumed.current_lr() == pytest.approx(cfg.optim.lr * scheduler.lr_lambdas[0](14))
    sampler = resumed.train_loader.sampler
    sampler.set_epoch(1, start=resumed.pos.samples_in_epoch)
    assert len(sampler) == 64 - 48
    summary = resumed.fit()
    assert summary["steps"] == 16


# ---- real torchrun runs ----------------------------------------------------------------------
@pytest.mark.slow
def test_classification_torchrun_train_evaluate_and_resume_on_one_process(tmp_path, shapes_root):
    cfg = write_tiny_config(tmp_path / "tiny.yaml", shapes_root)
    run = tmp_path / "run"
    proc = torchrun("train.py", cfg, "train.epochs=1", "data.batch_size=8", "--run-dir", run, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1  # rank 0 speaks for both
    log = read_jsonl(run / "log.jsonl")
    start = log[0]
    assert start["world_size"] == 2 and start["steps_per_epoch"] == 4  # 64 samples / (2 ranks x 8)
    assert [r["epoch"] for r in log if r["type"] == "epoch"] == [1]  # written once, by rank 0
    assert load_checkpoint(run / "last.pt")["world_size"] == 2

    single_dir, multi_dir = tmp_path / "eval1", tmp_path / "eval2"
    proc = run_script("evaluate.py", run, "--split", "test", "--report", single_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun("evaluate.py", run, "--split", "test", "--report", multi_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((single_dir / "metrics.json").read_text())
    two = json.loads((multi_dir / "metrics.json").read_text())
    assert two["processes"] == 2 and two["num_samples"] == one["num_samples"] == 27
    assert two["metrics"]["confusion_matrix"] == one["metrics"]["confusion_matrix"]
    assert sum(map(sum, two["metrics"]["confusion_matrix"])) == 27  # no padded duplicates
    for key, value in one["scalars"].items():
        assert two["scalars"][key] == pytest.approx(value, rel=1e-9), key
    assert (multi_dir / "report.html").is_file()

    # resume the 2-process run in one process for a second epoch: same samples, steps on the new grid
    proc = run_script("train.py", "--resume", run, "train.epochs=2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_jsonl(run / "log.jsonl")
    resume = [r for r in log if r["type"] == "run" and r["event"] == "resume"][-1]
    assert resume["regridded"]["world_size_before"] == 2 and resume["world_size"] == 1
    assert resume["steps_per_epoch"] == 8 and resume["step"] == 8
    assert load_checkpoint(run / "last.pt")["global_step"] == 16


@pytest.mark.slow
def test_ddp_two_ranks_of_batch_b_equal_one_rank_of_batch_2b(tmp_path):
    """One SGD step of a model without BatchNorm or dropout (the MLP autoencoder): DDP's averaged gradient
    over 2 x 8 images equals the gradient over the same 16 images in one process."""
    cfg = tmp_path / "ae.yaml"
    cfg.write_text(f"""
_base_: {ROOT / 'configs/generative/ae_mlp_shapes.yaml'}
data: {{params: {{train_samples: 64, eval_samples: 16, grayscale: true}}, num_workers: 0, val_split: null}}
optim: {{name: sgd, lr: 0.5, momentum: 0.0}}
schedule: {{name: constant}}
train: {{epochs: 1, max_steps_per_epoch: 1, log_interval: 1}}
""")
    proc = torchrun("train.py", cfg, "data.batch_size=8", "--run-dir", tmp_path / "ddp", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_script("train.py", cfg, "data.batch_size=16", "--run-dir", tmp_path / "one", "--no-progress",
                      env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # and rank 0's half alone (what a DDP that dropped rank 1's gradient would give) must differ
    proc = run_script("train.py", cfg, "data.batch_size=8", "--run-dir", tmp_path / "half", "--no-progress",
                      env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, one = load_checkpoint(tmp_path / "ddp/last.pt"), load_checkpoint(tmp_path / "one/last.pt")
    half = load_checkpoint(tmp_path / "half/last.pt")
    assert ddp["global_step"] == one["global_step"] == 1
    for name, weight in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], weight, rtol=1e-5, atol=1e-6, msg=name)
    gap = max(float((half["model"][k] - w).abs().max()) for k, w in one["model"].items())
    assert gap > 1e-5  # ten times the tolerance of the equality above
    loss_ddp = next(r for r in read_jsonl(tmp_path / "ddp/log.jsonl") if r["type"] == "train")["loss"]
    loss_one = next(r for r in read_jsonl(tmp_path / "one/log.jsonl") if r["type"] == "train")["loss"]
    assert loss_ddp == pytest.approx(loss_one, rel=1e-5)  # logged loss is the mean over both ranks


@pytest.mark.slow
def test_gan_under_torchrun_keeps_both_players_identical_across_ranks(tmp_path):
    """GANs update two players in turn, so the trainer averages their gradients itself (no DDP wrapper);
    after training, both ranks must hold the same generator and discriminator."""
    cfg = tmp_path / "gan.yaml"
    cfg.write_text(f"""
_base_: {ROOT / 'configs/generative/dcgan_shapes.yaml'}
model: {{kwargs: {{image_size: 32, g_width: 8, d_width: 8, latent_dim: 16}}}}
data: {{input_size: 32, batch_size: 8, num_workers: 0, params: {{train_samples: 64, eval_samples: 16}},
        val_split: null}}
train: {{epochs: 1, max_steps_per_epoch: 3, log_interval: 1}}
""")
    proc = torchrun("tests/distributed/trainer_sync.py", cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["params"] == pytest.approx(ranks[1]["params"], rel=1e-6)
    assert ranks[0]["steps"] == ranks[1]["steps"] == 3
    assert ranks[0]["changed"] and ranks[1]["changed"]
    assert ranks[0]["latents"] != ranks[1]["latents"]  # each rank draws its own noise


@pytest.mark.slow
def test_sint_under_torchrun_averages_gradients_of_its_two_forward_calls(tmp_path):
    """SINT embeds query and candidates in two calls per update, which one DDP wrapper cannot sync."""
    from visionzoo.datasets.write_shapes_sequences import write_shapes_sequences

    root = tmp_path / "seq"
    write_shapes_sequences(root, counts={"train": 2, "val": 1, "test": 1}, frames=8, size=(96, 72), seed=0,
                           progress=False)
    cfg = tmp_path / "sint.yaml"
    cfg.write_text(f"""
_base_: {ROOT / 'configs/tracking/_base_.yaml'}
model: {{name: sint_resnet18, kwargs: {{trainable_layers: 3}}}}
data: {{root: {root}, batch_size: 2, num_workers: 0, val_split: null, params: {{pairs_per_epoch: 8, max_gap: 5}}}}
optim: {{name: sgd, lr: 0.01, momentum: 0.9}}
train: {{epochs: 1, max_steps_per_epoch: 2, log_interval: 1}}
""")
    proc = torchrun("tests/distributed/trainer_sync.py", cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["params"] == pytest.approx(ranks[1]["params"], rel=1e-6)
    assert ranks[0]["steps"] == 2 and ranks[0]["changed"]


@pytest.mark.slow
def test_detection_torchrun_train_and_distributed_coco_equals_single(tmp_path):
    from visionzoo.datasets.write_shapes_scenes import write_coco_scenes

    root = tmp_path / "scenes"
    write_coco_scenes(root, image_size=128, counts={"train": 8, "val": 2, "test": 11}, seed=7, progress=False)
    cfg = tmp_path / "det.yaml"
    cfg.write_text(f"""
_base_: {ROOT / 'configs/detection/faster_rcnn_r18_shapes.yaml'}
model: {{kwargs: {{backbone_weights: null, min_size: 64, max_size: 64, fpn_channels: 32, representation_size: 64,
                  box_batch_size_per_image: 16}}}}
data: {{root: {root}, batch_size: 2, eval_batch_size: 2, num_workers: 0}}
train: {{epochs: 1, max_steps_per_epoch: 2, log_interval: 1, eval_interval: 1}}
""")
    proc = torchrun("train.py", cfg, "--run-dir", tmp_path / "run", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_jsonl(tmp_path / "run/log.jsonl")
    assert [r["step"] for r in log if r["type"] == "train"] == [1, 2]
    assert "val_bbox_AP" in next(r for r in log if r["type"] == "epoch")

    # the shipped detector, so that the detections are many and real: gathered before COCO evaluation
    weights = ROOT / "weights/faster_rcnn_resnet18_fpn.shapes.safetensors"
    args = [weights, "--data", root, "--split", "test", "--no-progress"]
    proc = run_script("evaluate.py", *args, "--report", tmp_path / "one", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun("evaluate.py", *args, "--report", tmp_path / "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((tmp_path / "one/metrics.json").read_text())["scalars"]
    two = json.loads((tmp_path / "two/metrics.json").read_text())["scalars"]
    names = [f"bbox_{n}" for n in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")]
    assert one["bbox_AP50"] > 0.5
    for name in names:
        assert two[name] == pytest.approx(one[name], abs=1e-12), name
