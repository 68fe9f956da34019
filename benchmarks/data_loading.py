"""Data-loading speed of each family's training data: decode + augmentation items/s through the engine's loader
(the task's own dataset object, per-item seeding and collate, exactly what the trainer iterates), with 0 workers
(the main process alone, i.e. what one worker delivers) and with N worker processes; prints items/s and
items/s per worker. No model runs, so this is the ceiling the input pipeline puts on training speed.

    python benchmarks/data_loading.py                                       # every family, --workers 0 1 2
    python benchmarks/data_loading.py --family detection --workers 0 4 8 --batches 50
    python benchmarks/data_loading.py --family classification --root data/shapes     # data already on disk

Data: a small training split written to a temporary folder by visionzoo's shapes writers (see
benchmarks/_families.py: 64-px PNGs for classification, 32-px PNGs for generative, 128-px COCO scenes with masks
for detection, 128-px VOC scenes for segmentation, 256x192 GOT-10k sequences for tracking, where an item is an
exemplar/search crop pair), or your own with --root (one family, in its default config's layout). The
augmentation is each family's default config's.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._families import CONFIGS, FAMILIES, ITEM, existing_data_overrides, write_family_data  # noqa: E402
from visionzoo.config import load_config  # noqa: E402
from visionzoo.engine.data import build_loader  # noqa: E402
from visionzoo.tasks import task_for  # noqa: E402


def warmup_batches(cfg, workers: int) -> int:
    """Untimed batches: the first (it starts the workers) and those the workers prefetched meanwhile, which
    would otherwise arrive at no cost inside the timed window."""
    return 1 + cfg.data.prefetch_factor * workers


def loader_rate(task, dataset, cfg, batch: int, batches: int, workers: int) -> float:
    """Items/s over `batches` batches, in the steady state (after `warmup_batches`)."""
    loader = build_loader(dataset, batch_size=batch, shuffle=True, drop_last=True, seed=0, num_workers=workers,
                          collate=task.collate, pin_memory=False, prefetch_factor=cfg.data.prefetch_factor)
    batches_iter = iter(loader)
    for _ in range(warmup_batches(cfg, workers)):
        next(batches_iter)
    items, start = 0, time.perf_counter()
    for _ in range(batches):
        _, _, indices = next(batches_iter)
        items += len(indices)
    rate = items / (time.perf_counter() - start)
    del batches_iter, loader  # shuts the (persistent) workers down before the next setting starts its own
    return rate


def measure_family(family: str, args, tmp: Path) -> list[tuple[int, float]]:
    config = ROOT / CONFIGS[family][0]
    default = load_config(config)
    batch = args.batch or default.data.batch_size
    items = batch * (args.batches + warmup_batches(default, max(args.workers)))
    if args.root:
        overrides = existing_data_overrides(family, args.root, items)
    else:
        overrides = write_family_data(family, tmp / family, items)
    cfg = load_config(config, overrides + [f"data.batch_size={batch}", "data.val_split=null"])
    task = task_for(cfg)
    dataset = task.build_dataset(cfg.data.train_split, train=True)
    if len(dataset) < items:
        raise ValueError(f"{cfg.data.root}: the training split has {len(dataset)} items, fewer than the "
                         f"{items} that --batches {args.batches} x batch {batch} and the warm-up batches read")
    item = ITEM.get(family, "image")
    print(f"== {family}: {type(dataset).__name__} at {cfg.data.root} ({config.name}'s augmentation), batch {batch}, "
          f"{args.batches} timed batches", flush=True)
    rows = []
    for workers in args.workers:
        rate = loader_rate(task, dataset, cfg, batch, args.batches, workers)
        rows.append((workers, rate))
        print(f"  {workers} workers: {rate:9.1f} {item}s/s   {rate / max(workers, 1):9.1f} {item}s/s per worker"
              + ("  (main process)" if workers == 0 else ""), flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", nargs="+", choices=FAMILIES + ["all"], default=["all"])
    p.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="worker counts to measure")
    p.add_argument("--batch", type=int, help="batch size (default: each family's config's)")
    p.add_argument("--batches", type=int, default=20, help="timed batches per worker count")
    p.add_argument("--root", type=Path, help="read this data instead of writing shapes (one --family only)")
    args = p.parse_args(argv)
    families = FAMILIES if "all" in args.family else args.family
    if args.batches < 1 or (args.batch is not None and args.batch < 1) or min(args.workers) < 0:
        p.error("--batches and --batch must be >= 1 and --workers >= 0")
    if args.root and len(families) != 1:
        p.error("--root needs exactly one --family (the layout of the data is the family's)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads in the main process, 1 per worker", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            try:
                measure_family(family, args, Path(tmp))
            except (ValueError, OSError) as e:  # ConfigError and the datasets' errors name the file and value
                print(f"error: {family}: {e}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
