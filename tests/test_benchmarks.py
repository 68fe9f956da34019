"""The benchmark suite: each task's synthetic batch goes through the task's own training and evaluation code,
benchmark.py measures models of every task in child processes and writes its CSV, train_overhead.py and
data_loading.py run end to end on data written by the shapes writers. No timing thresholds: only that every
rate is a positive number and that failures are reported, not raised."""
from __future__ import annotations

import argparse
import csv
import math
import re

import pytest
import torch

from tests.helpers import run_script

# one model per task, plus the detection and tracking models whose batches carry extra fields
SYNTHETIC_CASES = [
    ("resnet18", 32),
    ("faster_rcnn_resnet18_fpn", 64),
    ("mask_rcnn_resnet18_fpn", 64),
    ("fast_rcnn_resnet18_fpn", 64),
    ("fcn8s_resnet18", 32),
    ("siamfc_alexnet", 48),
    ("sint_resnet18", 48),
    ("dcgan", 32),
    ("vae_conv", 32),
]


def bench_args(**kw) -> argparse.Namespace:
    from benchmarks.benchmark import parse_args

    args = parse_args(["--model", "x", "--device", "cpu", "--batch-size", "2", "--steps", "1", "--warmup", "0"])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


@pytest.mark.parametrize("name,size", SYNTHETIC_CASES)
def test_synthetic_batch_goes_through_the_task_code(name, size, one_thread):
    from benchmarks.benchmark import benchmark_config, images_in
    from visionzoo.tasks import task_for
    from visionzoo.tasks.base import model_num_classes

    cfg = benchmark_config(name, size, bench_args())
    task = task_for(cfg)
    torch.manual_seed(0)
    model = task.build_model(None)

    # training: every update phase gives a finite loss whose backward reaches the model's parameters
    model.train()
    batch = task.synthetic_batch(2, size, "cpu", train=True)
    assert task.batch_size_of(batch) == 2
    if cfg.task == "detection":
        images, targets = batch
        assert [tuple(im.shape) for im in images] == [(3, size, size)] * 2
        assert all(0 <= t["labels"].min() and t["labels"].max() < model_num_classes(cfg) for t in targets)
        assert all((t["boxes"][:, 2:] > t["boxes"][:, :2]).all() for t in targets)
        assert all(("masks" in t) == name.startswith("mask") for t in targets)
        if name.startswith("fast_rcnn"):  # as many proposals as the training top-k, each at least a pixel wide
            proposals = targets[0]["proposals"]
            assert proposals.shape == (cfg.data.params.get("proposal_top_k_train", 2000), 4)
            assert (proposals[:, 2:] >= proposals[:, :2] + 1).all() and proposals.max() <= size
    phases = task.update_phases()
    assert len(phases) == (2 if name == "dcgan" else 1)
    for phase in phases:
        model.zero_grad(set_to_none=True)
        losses = task.training_losses(model, batch, phase)
        assert torch.isfinite(losses["loss"]), losses
        losses["loss"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    # evaluation: what the task's accumulator takes
    model.eval()
    batch = task.synthetic_batch(2, size, "cpu", train=False)
    with torch.no_grad():
        outputs = task.eval_outputs(model, batch)
    if cfg.task == "classification":
        assert outputs.shape == (2, model_num_classes(cfg))
    elif cfg.task == "detection":
        assert len(outputs) == 2 and all({"boxes", "scores", "labels"} <= set(o) for o in outputs)
    elif cfg.task == "segmentation":
        assert outputs["plain"].shape == (2, size, size)
    elif cfg.task == "tracking":  # one sequence of batch_size frames, tracked frame by frame
        assert images_in(task, batch) == 2 and batch[0].load_frame(0).shape == (size, size, 3)
        (result,) = outputs
        assert result.pred.shape == (2, 4) and result.gt.shape == (2, 4)
        assert result.pred[0].tolist() == pytest.approx(result.gt[0].tolist())  # frame 0 is the given box
    else:
        accumulator = task.new_accumulator(None)
        assert accumulator is not None and outputs is not None


def test_synthetic_batch_of_the_base_task_names_the_task():
    from visionzoo.tasks.base import Task

    task = Task(None)
    task.name = "newtask"
    with pytest.raises(NotImplementedError, match="newtask.*visionzoo/tasks/newtask/task.py"):
        task.synthetic_batch(2, 32, "cpu")


def test_model_selection_and_failures_reported_in_the_row(one_thread):
    from benchmarks.benchmark import measure, select_models

    assert select_models(["fcn[48]s_resnet18", "resnet18", "fcn8s_resnet18"], None) == \
        ["fcn4s_resnet18", "fcn8s_resnet18", "resnet18"]
    with pytest.raises(ValueError, match="matches no registered model"):
        select_models(["nothing_like_this*"], None)
    with pytest.raises(ValueError, match="unknown model"):
        select_models(["resnet19"], None)
    with pytest.raises(ValueError, match="is a classification model, not detection"):
        select_models(["resnet18"], "detection")
    # builder keywords from the command line (YAML values) reach the model's config, after the size-derived ones
    from benchmarks.benchmark import benchmark_config, parse_args

    args = parse_args(["--model", "x", "--model-kwargs", "fpn_channels=128", "anchor_sizes=[16, 32]", "max_size=80"])
    assert args.model_kwargs == {"fpn_channels": 128, "anchor_sizes": [16, 32], "max_size": 80}
    kwargs = benchmark_config("faster_rcnn_resnet18_fpn", 64, args).model.kwargs
    assert kwargs == {"min_size": 64, "max_size": 80, "fpn_channels": 128, "anchor_sizes": [16, 32]}
    with pytest.raises(SystemExit):
        parse_args(["--model", "x", "--model-kwargs", "fpn_channels"])
    # dcgan is built for 28, 32 or 64 px: at 48 both modes fail, with the builder's message in the error column
    rows = measure("dcgan", bench_args(input_size=48, mode="both"))
    assert [r["mode"] for r in rows] == ["infer", "train"]
    assert all(r["error"].startswith("ValueError") and "48" in r["error"] for r in rows)


@pytest.mark.slow
def test_benchmark_script_writes_one_row_per_model_and_mode(tmp_path):
    from benchmarks.benchmark import COLUMNS

    out = tmp_path / "bench.csv"
    proc = run_script("benchmarks/benchmark.py", "--model", "fcn[48]s_resnet18", "resnet18",
                      "faster_rcnn_resnet18_fpn", "siamfc_alexnet", "dcgan", "--input-size", "32",
                      "--batch-size", "2", "--steps", "1", "--warmup", "0", "--device", "cpu", "--csv", out,
                      env={"OMP_NUM_THREADS": "1"}, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with out.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    tasks = {"fcn4s_resnet18": "segmentation", "fcn8s_resnet18": "segmentation", "resnet18": "classification",
             "faster_rcnn_resnet18_fpn": "detection", "siamfc_alexnet": "tracking", "dcgan": "generative"}
    assert sorted((r["model"], r["mode"]) for r in rows) == sorted((m, mode) for m in tasks
                                                                   for mode in ("infer", "train"))
    for r in rows:
        assert r["error"] == "", r
        assert r["task"] == tasks[r["model"]]
        assert (r["device"], r["precision"], r["batch_size"], r["input_size"]) == ("cpu", "fp32", "2", "32")
        for key in ("images_per_s", "ms_per_step", "peak_mem_mb", "params_m"):
            value = float(r[key])
            assert math.isfinite(value) and value > 0, (key, r)
        assert r["peak_mem_kind"] in ("cpu_rss_hwm", "cpu_rss_hwm_since_start")
    assert f"wrote {out}" in proc.stdout


@pytest.mark.slow
def test_train_overhead_runs_the_generative_family(tmp_path):
    proc = run_script("benchmarks/train_overhead.py", "--family", "generative", "--steps", "1", "--rounds", "1",
                      "--batch", "2", "--no-progress", env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for model in ("dcgan", "vae_conv"):  # the GAN's two update phases and the VAE, on 32-px PNGs
        match = re.search(rf"generative\s+{model}\s+([0-9.]+)\s+\(range ([0-9.]+)-([0-9.]+)\)", proc.stdout)
        assert match, proc.stdout
        assert all(float(v) > 0 for v in match.groups())


@pytest.mark.slow
def test_data_loading_prints_rates_per_worker_count():
    proc = run_script("benchmarks/data_loading.py", "--family", "detection", "--workers", "0", "1", "--batch", "2",
                      "--batches", "2", env={"OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rates = re.findall(r"(\d) workers:\s+([0-9.]+) images/s\s+([0-9.]+) images/s per worker", proc.stdout)
    assert [w for w, _, _ in rates] == ["0", "1"], proc.stdout
    assert all(float(total) > 0 and float(per) > 0 for _, total, per in rates)


def test_data_loading_and_train_overhead_report_bad_input(tmp_path, capsys):
    from benchmarks import data_loading, train_overhead

    assert data_loading.main(["--family", "detection", "--root", str(tmp_path / "none"), "--batches", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: detection:") and str(tmp_path / "none") in err
    assert train_overhead.main(["--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err


def _photo_like(size: int = 32, seed: int = 0):
    """A smooth colour image with a few edges: what JPEG codes with some, not total, loss."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    channels = [np.sin(2 * np.pi * (f * x + g * y) + p) for f, g, p in rng.uniform(0.5, 3, (3, 3))]
    pixels = (np.stack(channels, -1) * 80 + 128).clip(0, 255)
    pixels[size // 4: size // 2, size // 3: 2 * size // 3] = rng.integers(0, 256, 3)  # a sharp-edged patch
    return Image.fromarray(pixels.astype(np.uint8))


def test_jpeg_ablation_pass_moves_the_coding_grid():
    from benchmarks.jpeg_ablation import jpeg_pass, psnr

    clean = _photo_like()
    once = jpeg_pass(clean)
    assert once.size == clean.size and 25 < psnr(clean, once) < 60  # quality 75 loses something, not all
    again_on_grid, again_shifted = jpeg_pass(once), jpeg_pass(once, shift=3)
    assert again_shifted.size == clean.size
    # on the old grid a second pass nearly reproduces the first; a shifted one codes new blocks and loses more
    assert psnr(once, again_shifted) < psnr(once, again_on_grid) - 3
    assert psnr(clean, clean) == float("inf")


def test_jpeg_ablation_writes_the_same_layout_losslessly(tmp_path):
    from PIL import Image

    from benchmarks.jpeg_ablation import jpeg_pass, main, psnr

    src, dst = tmp_path / "src", tmp_path / "dst"
    for i, name in enumerate(["train/cat/0000.jpg", "train/dog/0000.jpg", "test/cat/0000.jpg"]):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        _photo_like(seed=i).save(src / name, quality=75, subsampling=2)
    proc = run_script("benchmarks/jpeg_ablation.py", src, dst, "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*.png"))
    assert written == ["test/cat/0000.png", "train/cat/0000.png", "train/dog/0000.png"]
    with Image.open(src / "train/dog/0000.jpg") as original, Image.open(dst / "train/dog/0000.png") as coded:
        assert psnr(coded, jpeg_pass(original.convert("RGB"), shift=3)) == float("inf")  # stored as coded
    match = re.search(r"mean PSNR ([0-9.]+) dB", proc.stdout)
    assert match and 20 < float(match.group(1)) < 60, proc.stdout

    with pytest.raises(SystemExit):  # dst must differ from src
        main([str(src), str(src)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no images"):
        main([str(tmp_path / "empty"), str(tmp_path / "out"), "--no-progress"])
