"""Shared trainer vs a plain PyTorch loop for the generative family (dcgan and vae_conv): same model, data,
batch and optimizers, in one process, alternating rounds, printing the throughput ratio (goal >= 0.95).

    python benchmarks/generative_overhead.py [--models dcgan vae_conv] [--batch 64] [--steps 30] [--rounds 5]

Both loops read the same dataset object (shapes rendered on the fly, 32 px). The plain loops are what one
would write by hand: the pytorch/examples DCGAN loop (D step on real and fake, then the non-saturating G step)
and the VAE's negative-ELBO step. The ratio isolates what the trainer adds on top: update phases, seeded
resumable sampling, loss bookkeeping, logging, tqdm and the LR schedule.
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

from benchmarks.train_overhead import trainer_round  # noqa: E402
from visionzoo.config import load_config  # noqa: E402
from visionzoo.engine.optim import build_optimizer  # noqa: E402
from visionzoo.engine.trainer import Trainer  # noqa: E402

CONFIGS = {"dcgan": "configs/generative/dcgan_shapes.yaml", "vae_conv": "configs/generative/vae_conv_shapes.yaml"}


def plain_gan_step(gan, opt_g, opt_d, x):
    z = torch.randn(x.shape[0], gan.latent_dim)
    fake = gan.generator(z)
    opt_d.zero_grad(set_to_none=True)
    real_logits, fake_logits = gan.discriminator(x), gan.discriminator(fake.detach())
    loss_d = (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
              + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    logits = gan.discriminator(fake)
    F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)).backward()
    opt_g.step()


def plain_vae_step(vae, opt, x):
    opt.zero_grad(set_to_none=True)
    vae(vae.prepare_data(x))["loss"].backward()
    opt.step()


def plain_round(step, loader, steps: int) -> float:
    images, start = 0, time.perf_counter()
    for i, (x, *_rest) in enumerate(loader):
        if i == steps:
            break
        step(x)
        images += x.shape[0]
    return images / (time.perf_counter() - start)


def compare(name: str, batch: int, steps: int, rounds: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(ROOT / CONFIGS[name], [
            f"data.batch_size={batch}", f"data.num_workers={workers}", "data.val_split=null",
            f"data.params.train_samples={batch * steps}", f"train.max_steps_per_epoch={steps}", "train.epochs=1000"])
        torch.manual_seed(0)
        trainer = Trainer(cfg, Path(tmp) / "run", show_progress=True)
        model = trainer.task.build_model(cfg, trainer.train_set)
        model.train()
        if name == "dcgan":
            opt_g = build_optimizer(model, cfg.optimizers["generator"])
            opt_d = build_optimizer(model, cfg.optimizers["discriminator"])

            def step(x):
                plain_gan_step(model, opt_g, opt_d, x)
        else:
            opt = build_optimizer(model, cfg.optim)

            def step(x):
                plain_vae_step(model, opt, x)
        loader = DataLoader(trainer.train_set, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                            persistent_workers=workers > 0)
        trainer_round(trainer)  # warm-up: allocator, thread pools, first-iteration costs
        plain_round(step, loader, steps)
        ratios = []
        for r in range(rounds):
            a = trainer_round(trainer)
            b = plain_round(step, loader, steps)
            ratios.append(a / b)
            print(f"{name} round {r + 1}: trainer {a:7.1f} img/s   plain loop {b:7.1f} img/s   ratio {a / b:.3f}",
                  flush=True)
    median = statistics.median(ratios)
    print(f"{name} @ 32px, batch {batch}, {workers} workers, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads: median throughput ratio trainer/plain = {median:.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f})", flush=True)
    return median


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, default=0)
    args = p.parse_args(argv)
    for name in args.models:
        compare(name, args.batch, args.steps, args.rounds, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
