"""Segmentation speed: inference throughput of our fcn_resnet50 against torchvision's own fcn_resnet50 at the
same input size (same weights, alternating rounds, median ratio); the small variants' training step and
inference rate at the shapes config's size; and what the dense CRF adds per image.

    python benchmarks/segmentation_speed.py                   # CPU defaults: 256 px, batch 1, 4 rounds
    python benchmarks/segmentation_speed.py --device cuda --size 520 --batch 8 --rounds 10

Goal: ratio ours / torchvision >= 0.98 (the same network, so anything below is overhead we added).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import visionzoo  # noqa: E402
from benchmarks._throughput import compare, images_per_second, median_seconds  # noqa: E402
from visionzoo.inference.crf import DenseCRF  # noqa: E402


def inference_ratio(args, device) -> float:
    ours = visionzoo.create_model("fcn_resnet50")
    theirs = torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=21,
                                                           aux_loss=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours, theirs = ours.to(device).eval(), theirs.to(device).eval()
    images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    return compare(f"fcn_resnet50 inference at {args.size}px, batch {args.batch}, {device}:", ours, theirs, images,
                   iters=args.iters, rounds=args.rounds, device=device)


def small_variants(args, device) -> None:
    print(f"small variants at 128 px, 6 classes, {device}: training step (batch {args.train_batch}) and inference")
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.train_batch, 3, 128, 128, generator=g).to(device)
    masks = torch.randint(0, 6, (args.train_batch, 128, 128), generator=g).to(device)
    for name in ("fcn8s_resnet18", "fcn_resnet18"):
        model = visionzoo.create_model(name, num_classes=6).to(device).train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)

        def step(model=model, optimizer=optimizer):
            loss = torch.nn.functional.cross_entropy(model(images)["out"], masks, ignore_index=255)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        median = median_seconds(step, args.train_steps, device)
        rate = images_per_second(model.eval(), images, args.train_steps, device)
        print(f"  {name:16s} train {median * 1000:8.1f} ms/step {args.train_batch / median:7.1f} img/s   "
              f"inference {rate:7.1f} img/s")


@torch.no_grad()
def crf_cost(args, device) -> None:
    print(f"DenseCRF (5 iterations), one image, {device}:")
    g = torch.Generator().manual_seed(0)
    for classes, (h, w), radius in ((6, (128, 128), 5), (21, (375, 500), 5), (21, (375, 500), 7)):
        logits = torch.randn(1, classes, h, w, generator=g).to(device)
        rgb = (torch.rand(1, 3, h, w, generator=g) * 255).to(device)
        crf = DenseCRF(iterations=5, window_radius=radius)
        median = median_seconds(lambda crf=crf, logits=logits, rgb=rgb: crf(logits, rgb), 3, device)
        print(f"  {classes:2d} classes, {w}x{h}, window radius {radius}: {median * 1000:8.1f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=256, help="square input side of the fcn_resnet50 comparison")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=2, help="timed forward passes per round")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--skip-small", action="store_true")
    p.add_argument("--skip-crf", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")
    if not args.skip_inference:
        inference_ratio(args, device)
    if not args.skip_small:
        small_variants(args, device)
    if not args.skip_crf:
        crf_cost(args, device)


if __name__ == "__main__":
    main()
