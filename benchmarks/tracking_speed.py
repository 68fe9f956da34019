"""Tracking speed at the published input sizes: frames per second of each tracker's update() (SiamFC:
a 127-px exemplar and three (or five) 255-px search crops per frame, 17x17 response upsampled to 272;
SINT: one 255-px search crop and its polar candidates), on frames of a real size (the GOT-10k
validation sequence's 1280x720 when present, else 640x360 noise), plus the network alone.

    python benchmarks/tracking_speed.py                      # CPU
    python benchmarks/tracking_speed.py --device cuda        # the lent GPU (the SiamFC paper: 86 fps, 2016 GPU)

Prints fps as medians over rounds and the ratio to the paper's 86 fps for SiamFC 3-scale.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import visionzoo  # noqa: E402
from benchmarks._throughput import sync  # noqa: E402
from visionzoo.datasets.sequences import read_got10k_sequence  # noqa: E402
from visionzoo.tracking import SiamFCParams  # noqa: E402

PAPER_FPS = 86.0  # SiamFC 3-scale, NVIDIA GeForce GTX Titan X (Bertinetto et al. 2016)
GOT_SEQUENCE = ROOT.parent / "shared" / "data" / "GOT-10k_Val_000001"


def load_frames(n: int) -> tuple[list[np.ndarray], np.ndarray]:
    if GOT_SEQUENCE.is_dir():
        seq = read_got10k_sequence(GOT_SEQUENCE)
        return [seq.load_frame(i) for i in range(min(n, len(seq)))], seq.boxes[0]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(n)], np.array([300, 150, 60, 40.0])


def tracker_fps(tracker, frames, box, rounds: int, device) -> list[float]:
    rates = []
    for _ in range(rounds):
        tracker.init(frames[0], box)
        sync(device)
        start = time.perf_counter()
        for frame in frames[1:]:
            tracker.update(frame)
        sync(device)
        rates.append((len(frames) - 1) / (time.perf_counter() - start))
    return rates


@torch.no_grad()
def network_fps(model, device, scales: int, rounds: int, iters: int) -> float:
    """SiamFC's network alone per frame: embed `scales` 255-px crops and correlate (no crops, no upsampling)."""
    kernel = model.embed(torch.rand(1, 3, 127, 127, device=device))
    search = torch.rand(scales, 3, 255, 255, device=device)
    rates = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            model.correlate(kernel, model.embed(search))
        sync(device)
        rates.append(iters / (time.perf_counter() - start))
    return statistics.median(rates)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--weights", default=None, help="weights tag for both trackers (default: random init)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    frames, box = load_frames(args.frames)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"frames {frames[0].shape[1]}x{frames[0].shape[0]}, {len(frames) - 1} updates x {args.rounds} rounds")
    results = {}
    for label, name, params in (("SiamFC 3-scale", "siamfc_alexnet", {}),
                                ("SiamFC 5-scale", "siamfc_alexnet", vars(SiamFCParams.five_scale())),
                                ("SINT (ResNet-18)", "sint_resnet18", {})):
        tracker = visionzoo.create_tracker(name, weights=args.weights, device=device, **params)
        tracker_fps(tracker, frames[:3], box, 1, device)  # warm-up (cuDNN autotuning, allocator)
        rates = tracker_fps(tracker, frames, box, args.rounds, device)
        results[label] = statistics.median(rates)
        print(f"  {label:18s} {results[label]:8.1f} fps  (rounds: {', '.join(f'{r:.1f}' for r in rates)})")
    model = visionzoo.create_model("siamfc_alexnet").to(device).eval()
    net = network_fps(model, device, 3, args.rounds, 10)
    print(f"  SiamFC network only (3 x 255 px + correlation): {net:.1f} frames/s")
    print(f"ratio SiamFC 3-scale / paper's {PAPER_FPS:.0f} fps: {results['SiamFC 3-scale'] / PAPER_FPS:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
