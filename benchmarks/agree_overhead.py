"""Step time of the trainer under torchrun with the per-step stop/NaN agreement blocking (the former way) and
in the background (read one step later), on the same Trainer in alternating rounds.

    torchrun --nproc_per_node=2 benchmarks/agree_overhead.py --steps 60 --rounds 6

Runs on gloo (CPU) or NCCL (GPUs: --device cuda); resnet18 on 32-px shapes rendered in memory (no files).
Rank 0 prints the median step time of each mode, their difference and the time spent inside the agreement.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from visionzoo.config import load_config  # noqa: E402
from visionzoo.engine import distributed  # noqa: E402
from visionzoo.engine.trainer import Position  # noqa: E402
from visionzoo.training import build_trainer  # noqa: E402


def blocking_agree(self, stop_signal, finite):
    """The former Trainer._agree: one blocking all-reduce per step."""
    flags = torch.tensor([stop_signal or 0, 0 if finite else 1], dtype=torch.int64)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.control_group)
    return (int(flags[0]) or None), not bool(flags[1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60, help="steps per round and mode")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8, help="per process")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    info, device = distributed.init_from_env(args.device)
    if not info.enabled:
        sys.exit("run under torchrun with at least 2 processes (torchrun --nproc_per_node=2 ...)")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / "configs/classification/resnet18_shapes.yaml", [
            "data.dataset=shapes", "data.params={num_samples: 4096, image_size: 32}", "data.input_size=32",
            "data.crop_pct=1.0", f"data.batch_size={args.batch_size}", "data.num_workers=0", "data.val_split=null",
            f"train.device={args.device}", f"train.max_steps_per_epoch={args.steps}", "train.epochs=1000",
            "train.log_interval=1000000", "train.ema.enabled=false"])
        trainer = build_trainer(cfg, Path(tmp) / "run", show_progress=False)
        original = type(trainer)._agree
        inside = {"blocking": [], "background": []}
        times = {"blocking": [], "background": []}

        def timed(fn, key):
            def agree(stop_signal, finite):
                t0 = time.perf_counter()
                out = fn(trainer, stop_signal, finite)
                inside[key].append(time.perf_counter() - t0)
                return out
            return agree

        trainer.train_epoch()  # warm-up
        trainer.pos = Position(trainer.pos.epoch + 1, 0, trainer.pos.global_step, 0)
        for r in range(args.rounds):
            for key in (("blocking", "background") if r % 2 == 0 else ("background", "blocking")):
                trainer._agree = timed(blocking_agree if key == "blocking" else original, key)
                dist.barrier()
                t0 = time.perf_counter()
                trainer.train_epoch()
                times[key].append((time.perf_counter() - t0) / args.steps)
                trainer.pos = Position(trainer.pos.epoch + 1, 0, trainer.pos.global_step, 0)
        if info.is_main:
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            agree_ms = {k: statistics.median(v) * 1e3 for k, v in inside.items()}
            print(f"world size {info.world_size} ({dist.get_backend()}), {args.rounds} rounds x {args.steps} steps, "
                  f"batch {args.batch_size} per process")
            for k in times:
                print(f"{k:10s}: {med[k]:8.2f} ms/step (rounds: {', '.join(f'{t * 1e3:.1f}' for t in times[k])}); "
                      f"median time inside _agree {agree_ms[k]:.3f} ms")
            print(f"difference: {med['blocking'] - med['background']:+.2f} ms/step "
                  f"({(med['blocking'] - med['background']) / med['blocking'] * 100:+.1f} %)")
    distributed.shutdown()


if __name__ == "__main__":
    main()
