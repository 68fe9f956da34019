"""Detection speed: inference throughput of our faster_rcnn_resnet50_fpn against torchvision's own
fasterrcnn_resnet50_fpn at the same input size (same weights, alternating rounds, median ratio), and the
training step time of the small variants at their shapes-config settings.

    python benchmarks/detection_speed.py                      # CPU defaults: 512 px, 2 images, 6 rounds
    python benchmarks/detection_speed.py --device cuda --size 800 --batch 8 --rounds 10

Goal: ratio ours / torchvision >= 0.98 (the same network, so anything below is overhead we added).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import visionzoo  # noqa: E402
from benchmarks._throughput import compare, median_seconds  # noqa: E402
from visionzoo.config import load_config  # noqa: E402


def inference_ratio(args, device) -> None:
    ours = visionzoo.create_model("faster_rcnn_resnet50_fpn", min_size=args.size, max_size=args.size)
    # What torchvision's fasterrcnn_resnet50_fpn builds when given its COCO weights (frozen BatchNorm); built
    # without weights it would use trainable BatchNorm, a different network to time.
    body = torchvision.models.resnet50(weights=None, norm_layer=torchvision.ops.FrozenBatchNorm2d)
    theirs = torchvision.models.detection.FasterRCNN(_resnet_fpn_extractor(body, 3), num_classes=91,
                                                     min_size=args.size, max_size=args.size)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours, theirs = ours.to(device).eval(), theirs.to(device).eval()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, args.size, args.size, generator=g).to(device) for _ in range(args.batch)]
    compare(f"faster_rcnn_resnet50_fpn inference at {args.size}px, batch {args.batch}, {device}:", ours, theirs,
            images, iters=args.iters, rounds=args.rounds, device=device)


def training_steps(args, device) -> None:
    print(f"small variants, training step (shapes configs' settings, batch {args.train_batch} of 128 px, {device}):")
    g = torch.Generator().manual_seed(0)
    for config in ("faster_rcnn_r18_shapes", "mask_rcnn_r18_shapes", "fast_rcnn_r18_shapes"):
        cfg = load_config(ROOT / f"configs/detection/{config}.yaml")
        kwargs = {k: v for k, v in cfg.model.kwargs.items() if k != "backbone_weights"}
        model = visionzoo.create_model(cfg.model.name, num_classes=6, **kwargs).to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
        images, targets, proposals = [], [], []
        for _ in range(args.train_batch):
            images.append(torch.rand(3, 128, 128, generator=g).to(device))
            xy = torch.rand(3, 2, generator=g) * 80
            boxes = torch.cat([xy, xy + 16 + torch.rand(3, 2, generator=g) * 30], 1).to(device)
            target = {"boxes": boxes, "labels": torch.tensor([1, 2, 3], device=device)}
            if cfg.model.name.startswith("mask"):
                masks = torch.zeros(3, 128, 128, dtype=torch.uint8, device=device)
                for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
                    masks[k, y1:y2, x1:x2] = 1
                target["masks"] = masks
            targets.append(target)
            jitter = torch.randn(60, 4, generator=g).to(device) * 4
            proposals.append((boxes.repeat(20, 1) + jitter).clamp(0, 127))

        def step(model=model, images=images, targets=targets, proposals=proposals, optimizer=optimizer):
            if getattr(model, "needs_proposals", False):
                losses = model(images, targets, proposals=proposals)
            else:
                losses = model(images, targets)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()

        median = median_seconds(step, args.train_steps, device)
        print(f"  {cfg.model.name:26s} {median * 1000:8.1f} ms/step  {args.train_batch / median:7.2f} img/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=512, help="min_size = max_size of the R50 comparison")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--iters", type=int, default=2, help="timed forward passes per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--skip-inference", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}")
    if not args.skip_inference:
        inference_ratio(args, device)
    if not args.skip_training:
        training_steps(args, device)


if __name__ == "__main__":
    main()
