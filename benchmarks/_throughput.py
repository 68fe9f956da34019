"""Timing shared by the benchmarks: images/s of a model, and a fair comparison of two models on the same
inputs (alternating rounds, so drifts in machine speed hit both equally; median ratio)."""
from __future__ import annotations

import statistics
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def images_per_second(model, images, iters: int, device, batch_size: int | None = None) -> float:
    """`images`: what the model takes (a batch tensor or a list of images); counted as `batch_size`
    images per call (default len(images))."""
    model(images)  # warm-up (allocator, cudnn autotune)
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        model(images)
    sync(device)
    return iters * (batch_size or len(images)) / (time.perf_counter() - start)


def step_seconds(fn, steps: int, device, warmup: int = 1) -> list[float]:
    """Wall time of each of `steps` calls of `fn()` (the device synchronised around each), after `warmup`
    untimed calls (allocator, cuDNN autotuning, torch.compile)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn, steps: int, device, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `steps` calls, after `warmup` calls."""
    return statistics.median(step_seconds(fn, steps, device, warmup))


def compare(title: str, ours, theirs, images, *, iters: int, rounds: int, device) -> float:
    """Print both models' median images/s and the median ratio ours / torchvision; return the ratio."""
    rates = {"ours": [], "torchvision": []}
    for r in range(rounds):
        order = [("ours", ours), ("torchvision", theirs)]
        for name, model in order if r % 2 == 0 else order[::-1]:
            rates[name].append(images_per_second(model, images, iters, device))
    ratios = [a / b for a, b in zip(rates["ours"], rates["torchvision"])]
    print(title)
    for name, values in rates.items():
        print(f"  {name:12s} median {statistics.median(values):8.2f} img/s  "
              f"(range {min(values):.2f}..{max(values):.2f}, {len(values)} rounds)")
    ratio = statistics.median(ratios)
    print(f"  ratio ours/torchvision: median {ratio:.3f} (range {min(ratios):.3f}..{max(ratios):.3f}); goal >= 0.98")
    return ratio
