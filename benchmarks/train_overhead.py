"""Shared trainer vs a plain PyTorch loop, for every family: same model, data, batch, optimizers and update
phases, in one process, alternating rounds; prints each model's median throughput ratio trainer/plain and its
range (goal: >= 0.97, i.e. at most 3 % overhead).

    python benchmarks/train_overhead.py                                   # every family
    python benchmarks/train_overhead.py --family detection generative --steps 10 --rounds 5
    python benchmarks/train_overhead.py --config configs/detection/mask_rcnn_r18_shapes.yaml
    python benchmarks/train_overhead.py --config configs/classification/resnet20_cifar10.yaml --own-data --workers 1
    python benchmarks/train_overhead.py --config configs/detection/faster_rcnn_r18_pennfudan.yaml --own-data --steps 4

Default configs (the shipped recipes, benchmarks/_families.py): resnet18 (classification), faster_rcnn_resnet18_fpn
(detection), fcn8s_resnet18 (segmentation), siamfc_alexnet (tracking), dcgan and vae_conv (generative).

Data: a small training split written to a temporary folder by visionzoo's shapes writers (ImageFolder PNGs for
classification and generative, COCO scenes for detection, VOC scenes for segmentation, GOT-10k sequences for
tracking), read through the same dataset object (same decoding and transforms.v2 augmentation) by both loops.
The plain loop is what one writes by hand around the update: a DataLoader over that dataset with the task's
collate, task.to_device, then the same engine Updater the trainer steps (task.training_losses for each update
phase due, a GAN's discriminator then generator, backward, optimizer step), on a model of its own. The ratio
isolates what the trainer adds around the update: seeded resumable sampling, the skip-aware collate, loss
bookkeeping, the finite-loss check, logging, tqdm, hooks, the LR schedule. Both loops run without channels_last,
autocast, EMA and gradient clipping, so they do the same arithmetic.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._families import CONFIGS, FAMILIES, ITEM, write_family_data  # noqa: E402
from benchmarks._throughput import sync  # noqa: E402
from visionzoo.config import load_config, load_yaml_with_bases  # noqa: E402
from visionzoo.engine.trainer import Trainer  # noqa: E402
from visionzoo.engine.update import Updater  # noqa: E402
from visionzoo.training import build_trainer  # noqa: E402


def plain_round(task, updater: Updater, loader, device, steps: int) -> float:
    """`steps` batches of the hand-written loop around the update, as items/s."""
    updater.model.train()
    items, start = 0, time.perf_counter()
    for i, batch in enumerate(loader):
        if i == steps:
            break
        batch = task.to_device(batch, device, False)
        updater.update(batch, i)
        items += task.batch_size_of(batch)
    sync(device)
    return items / (time.perf_counter() - start)


def trainer_round(trainer: Trainer) -> float:
    """One capped epoch of the shared trainer (the same code path train.py runs), as items/s."""
    # a fresh epoch each round (new permutation, position 0); the other position fields keep their defaults
    trainer.pos = type(trainer.pos)(epoch=trainer.pos.epoch + 1, global_step=trainer.pos.global_step)
    start = time.perf_counter()
    trainer.train_epoch()
    sync(trainer.device)
    return trainer.steps_per_epoch * trainer.cfg.data.batch_size / (time.perf_counter() - start)


def config_family(path: Path) -> str:
    task = load_yaml_with_bases(path).get("task")
    if task not in FAMILIES:
        raise ValueError(f"{path}: task {task!r} is not one of {', '.join(FAMILIES)}")
    return task


def compare(config: Path, family: str, args, tmp: Path) -> dict:
    """Alternating trainer / plain-loop rounds for one config; returns its summary."""
    batch = args.batch or load_config(config).data.batch_size
    # --own-data: the config's own data (a real data set such as MNIST or CIFAR-10) instead of written shapes
    data_overrides = [] if args.own_data else write_family_data(family, tmp / "data" / config.stem, batch * args.steps)
    cfg = load_config(config, data_overrides + [
        f"data.batch_size={batch}", f"data.num_workers={args.workers}", "data.val_split=null",
        f"train.max_steps_per_epoch={args.steps}", "train.epochs=1000", "train.ema.enabled=false",
        "train.channels_last=false", "train.grad_clip=null", "train.amp=none", f"train.device={args.device}",
    ])
    torch.manual_seed(0)
    trainer = build_trainer(cfg, tmp / "runs" / config.stem, show_progress=not args.no_progress)
    task, device = trainer.task, trainer.device
    updater = Updater(task, task.build_model(trainer.train_set).to(device), device)  # no lr schedule
    loader = DataLoader(trainer.train_set, batch_size=batch, shuffle=True, drop_last=True, num_workers=args.workers,
                        collate_fn=task.collate, persistent_workers=args.workers > 0)
    item = ITEM.get(family, "image")
    print(f"== {family}: {cfg.model.name} ({config.relative_to(ROOT) if config.is_relative_to(ROOT) else config}), "
          f"batch {batch}, {args.steps} steps per round, {args.workers} workers, {device}", flush=True)
    # warm-up: allocator, thread pools, first-iteration costs
    trainer_round(trainer)
    plain_round(task, updater, loader, device, args.steps)
    ratios = []
    for r in range(args.rounds):
        a = trainer_round(trainer)
        b = plain_round(task, updater, loader, device, args.steps)
        ratios.append(a / b)
        print(f"  round {r + 1}: trainer {a:8.2f} {item}s/s   plain loop {b:8.2f} {item}s/s   ratio {a / b:.3f}",
              flush=True)
    median = statistics.median(ratios)
    print(f"  {cfg.model.name}: median throughput ratio trainer/plain = {median:.3f} "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} rounds)", flush=True)
    return {"family": family, "model": cfg.model.name, "median": median, "min": min(ratios), "max": max(ratios)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", nargs="+", choices=FAMILIES + ["all"], default=["all"])
    p.add_argument("--config", nargs="+", type=Path, help="configs to measure instead of the families' defaults")
    p.add_argument("--batch", type=int, help="batch size (default: each config's data.batch_size)")
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--own-data", action="store_true",
                   help="read each config's own data.root (e.g. CIFAR-10) instead of writing shapes data")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars in the trainer's rounds")
    args = p.parse_args(argv)
    if args.steps < 1 or args.rounds < 1 or (args.batch is not None and args.batch < 1):
        p.error("--steps, --rounds and --batch must be >= 1")
    try:
        if args.config:
            jobs = [(path.resolve(), config_family(path)) for path in args.config]
        else:
            families = FAMILIES if "all" in args.family else args.family
            jobs = [(ROOT / c, f) for f in families for c in CONFIGS[f]]
    except (ValueError, OSError) as e:  # ConfigError is a ValueError; a missing config an OSError
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for config, family in jobs:
            try:
                results.append(compare(config, family, args, Path(tmp)))
            except ValueError as e:
                print(f"error: {config}: {e}", file=sys.stderr)
                return 1
    print("\nsummary: median throughput ratio trainer/plain loop (goal >= 0.97)")
    for r in results:
        print(f"  {r['family']:15s} {r['model']:26s} {r['median']:.3f}  (range {r['min']:.3f}-{r['max']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
