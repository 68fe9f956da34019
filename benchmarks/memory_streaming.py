"""Memory over a long stream of images: evaluate.py over an image folder, and the predictors (Classifier,
Segmenter, Detector, a SiamFC tracker) called once per image. Prints the resident set size (RSS) as images go
by; a steady pipeline shows a flat curve after warm-up (allocator pools, the first batches), a leak a line
that keeps rising.

    python benchmarks/memory_streaming.py                                   # 10,000 images, every part
    python benchmarks/memory_streaming.py --images 2000 --parts evaluate classifier --every 250

Data: N 32-px shapes PNGs written to a temporary folder (visionzoo's shapes writer). Models have random
weights: memory does not depend on what they learnt. evaluate.py runs in this process (its main function,
on a run directory holding a freshly initialised resnet18 best.pt), with RSS sampled every 50 ms alongside;
its curve is over time, which is proportional to images with one loader process (--workers 0).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import visionzoo.cli.evaluate as cli  # noqa: E402
from visionzoo.config import load_config, to_dict  # noqa: E402
from visionzoo.datasets.write_shapes import write_image_folder  # noqa: E402
from visionzoo.engine.checkpoint import atomic_save  # noqa: E402
from visionzoo.engine.run_dir import write_run_files  # noqa: E402
from visionzoo.factory import create_model  # noqa: E402
from visionzoo.predict import Classifier, Detector, Segmenter  # noqa: E402
from visionzoo.tracking import create_tracker  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
PARTS = ("evaluate", "classifier", "segmenter", "detector", "tracker")


def rss_mib() -> float:
    """This process's resident set size, in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except OSError:
        import resource  # local: Unix only, and needed only where /proc is missing

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_images(root: Path, n: int) -> list[Path]:
    write_image_folder(root, image_size=32, counts={"train": 0, "val": 0, "test": n}, seed=0, progress=False)
    return sorted((root / "test").rglob("*.png"))


def make_run(run_dir: Path, data_root: Path) -> Path:
    """A run directory evaluate.py accepts: config.yaml and a best.pt of a freshly initialised resnet18."""
    cfg = load_config(ROOT / "configs/classification/resnet18_shapes.yaml",
                      [f"data.root={data_root}", "data.input_size=32", "data.crop_pct=1.0", "data.num_workers=0",
                       "data.batch_size=64", "train.device=cpu"])
    classes = sorted(p.name for p in (data_root / "test").iterdir())
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=len(classes))
    write_run_files(run_dir, to_dict(cfg), "cpu")
    atomic_save({"format": "visionzoo-checkpoint-v1", "model": model.state_dict(), "ema": {}, "metrics": {},
                 "epoch": 1, "global_step": 0, "config": to_dict(cfg),
                 "meta": {"class_names": classes, "input_size": [3, 32, 32]}}, run_dir / "best.pt")
    return run_dir


def evaluate_curve(run_dir: Path, workers: int = 0, interval: float = 0.05) -> list[tuple[float, float]]:
    """(seconds, RSS MiB) while evaluate.py's main evaluates the run's test split in this process, restricted to
    its loop over the images (main also builds the model before it and counts FLOPs and writes files after it)."""
    samples: list[tuple[float, float]] = []
    done = threading.Event()
    start = time.time()
    loop = {}
    real_evaluate = cli.evaluate

    def timed_evaluate(*args, **kwargs):
        loop["start"] = time.time() - start
        try:
            return real_evaluate(*args, **kwargs)
        finally:
            loop["end"] = time.time() - start

    def sample():
        while not done.is_set():
            samples.append((time.time() - start, rss_mib()))
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cli.evaluate = timed_evaluate
    try:
        code = cli.main([str(run_dir), "--split", "test", "--workers", str(workers), "--no-progress"])
    finally:
        cli.evaluate = real_evaluate
        done.set()
        thread.join()
    if code != 0:
        raise RuntimeError(f"evaluate.py exited with {code}")
    return [(t - loop["start"], m) for t, m in samples if loop["start"] <= t <= loop["end"]]


def predictor_curve(part: str, images: list[Path], every: int) -> list[tuple[int, float]]:
    """(images done, RSS MiB) while one predictor is called on each image in turn."""
    torch.manual_seed(0)
    if part == "classifier":
        model = Classifier(create_model("resnet18", num_classes=5), input_size=32, crop_pct=1.0)
        call = model.predict
    elif part == "segmenter":
        model = Segmenter(create_model("fcn8s_resnet18", num_classes=6))
        call = model.predict
    elif part == "detector":
        model = Detector(create_model("faster_rcnn_resnet18_fpn", num_classes=6, min_size=64, max_size=64),
                         score_threshold=0.0)
        call = model.predict
    elif part == "tracker":
        tracker = create_tracker("siamfc_alexnet", model_kwargs={"width": 0.25})
        frame0 = np.asarray(Image.open(images[0]).convert("RGB"))
        tracker.init(frame0, np.array([8.0, 8.0, 16.0, 16.0]))

        def call(path):
            return tracker.update(np.asarray(Image.open(path).convert("RGB")))
    else:
        raise ValueError(f"unknown part {part!r}; one of {', '.join(PARTS)}")
    curve = [(0, rss_mib())]
    for i, path in enumerate(images, 1):
        call(str(path))
        if i % every == 0 or i == len(images):
            curve.append((i, rss_mib()))
    return curve


def growth(curve, warmup: float = 0.2) -> float:
    """The highest RSS after `warmup` of the curve's x range minus the RSS at that point, in MiB (a leak
    keeps rising; a steady pipeline stays flat once its pools and first batches are allocated)."""
    after = [m for x, m in curve if x >= warmup * curve[-1][0]]
    return max(after) - after[0]


# evaluate.py's curve is over time, and its first batches allocate the model's activations and pools
EVALUATE_WARMUP = 0.3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--every", type=int, default=1000, help="predictors: print RSS every this many images")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--workers", type=int, default=0, help="evaluate.py's data-loading workers")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        images = write_images(tmp / "data", args.images)
        print(f"wrote {len(images)} images in {time.time() - t0:.1f} s; RSS {rss_mib():.1f} MiB", flush=True)
        for part in args.parts:
            t0 = time.time()
            if part == "evaluate":
                curve = evaluate_curve(make_run(tmp / "run", tmp / "data"), args.workers)
                step = max(1, len(curve) // 10)
                points = curve[::step] + ([curve[-1]] if curve[-1] not in curve[::step] else [])
                print(f"\nevaluate.py, {len(images)} images, {args.workers} workers (seconds: RSS MiB)")
                print("  " + "  ".join(f"{s:.1f}s: {m:.1f}" for s, m in points))
            else:
                curve = predictor_curve(part, images, args.every)
                print(f"\n{part}, one image per call (images: RSS MiB)")
                print("  " + "  ".join(f"{n}: {m:.1f}" for n, m in curve))
            warmup = EVALUATE_WARMUP if part == "evaluate" else 0.2
            print(f"  growth after the first {warmup:.0%}: {growth(curve, warmup):+.1f} MiB; "
                  f"{time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
