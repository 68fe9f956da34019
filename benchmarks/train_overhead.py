"""Shared trainer vs a plain PyTorch loop: same model, data, batch and optimizer, in one process,
alternating rounds, printing the throughput ratio (goal >= 0.95 on CPU).

    python benchmarks/train_overhead.py [--model resnet18] [--size 64] [--batch 64] [--steps 25] [--rounds 5]

The data are shapes written to disk in ImageFolder layout and read through the same dataset object
(same decoding and transforms.v2 augmentation) by both loops, so the ratio isolates what the trainer
adds: seeded resumable sampling, the skip-aware collate, loss bookkeeping, logging, tqdm, LR schedule.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from visionzoo.config import load_config  # noqa: E402
from visionzoo.datasets.write_shapes import write_image_folder  # noqa: E402
from visionzoo.engine.optim import build_optimizer  # noqa: E402
from visionzoo.engine.trainer import Trainer  # noqa: E402
from visionzoo.factory import create_model  # noqa: E402


def plain_round(model, optimizer, loader, steps: int, label_smoothing: float) -> float:
    model.train()
    images_seen, start = 0, time.perf_counter()
    for i, (images, targets) in enumerate(loader):
        if i == steps:
            break
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), targets, label_smoothing=label_smoothing)
        loss.backward()
        optimizer.step()
        images_seen += images.shape[0]
    return images_seen / (time.perf_counter() - start)


def trainer_round(trainer: Trainer) -> float:
    """One capped epoch of the shared trainer (the same code path train.py runs), as images/s."""
    trainer.pos.epoch += 1  # a fresh epoch each round: new permutation, position 0
    trainer.pos.batch_in_epoch = 0
    start = time.perf_counter()
    trainer.train_epoch()
    elapsed = time.perf_counter() - start
    return trainer.steps_per_epoch * trainer.cfg.data.batch_size / elapsed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs/classification/resnet18_shapes.yaml"))
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=25, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--data", help="ImageFolder root (default: shapes written to a temporary folder)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        data_root = args.data or write_image_folder(
            Path(tmp) / "shapes", image_size=args.size,
            counts={"train": args.batch * args.steps, "val": 0, "test": 0}, progress=False) and Path(tmp) / "shapes"
        cfg = load_config(args.config, [
            f"model.name={args.model}", f"data.root={data_root}", f"data.input_size={args.size}",
            f"data.batch_size={args.batch}", f"data.num_workers={args.workers}", "data.val_split=null",
            f"train.max_steps_per_epoch={args.steps}", "train.epochs=1000", "train.ema.enabled=false",
            "train.channels_last=false",  # the plain loop runs NCHW; compare like with like
        ])
        torch.manual_seed(0)
        trainer = Trainer(cfg, Path(tmp) / "run", show_progress=True)
        model = create_model(args.model, num_classes=len(trainer.train_set.classes))
        optimizer = build_optimizer(model, cfg.optim)
        loader = DataLoader(trainer.train_set, batch_size=args.batch, shuffle=True, drop_last=True,
                            num_workers=args.workers, persistent_workers=args.workers > 0)
        smoothing = cfg.loss.label_smoothing
        # warm-up: allocator, thread pools, first-iteration costs
        trainer_round(trainer)
        plain_round(model, optimizer, loader, args.steps, smoothing)
        ratios = []
        for r in range(args.rounds):
            a = trainer_round(trainer)
            b = plain_round(model, optimizer, loader, args.steps, smoothing)
            ratios.append(a / b)
            print(f"round {r + 1}: trainer {a:7.1f} img/s   plain loop {b:7.1f} img/s   ratio {a / b:.3f}", flush=True)
    print(f"{args.model} @ {args.size}px, batch {args.batch}, {args.workers} workers, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads: median throughput ratio trainer/plain = {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
