"""Run by torchrun (2 processes, gloo) from tests/test_segmentation_distributed.py: each rank scores its
share of a fixed set of predictions; after synchronize() every rank must hold the single-process result."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from visionzoo.tasks.segmentation.task import SegmentationAccumulator  # noqa: E402


def batches():
    g = torch.Generator().manual_seed(0)
    for b in range(6):
        masks = torch.randint(0, 4, (2, 9, 11), generator=g)
        masks[:, :2] = 255  # ignore rows
        preds = torch.where(torch.rand(2, 9, 11, generator=g) < 0.7, masks.clamp(max=3),
                            torch.randint(0, 4, (2, 9, 11), generator=g))
        yield [2 * b, 2 * b + 1], masks, {"plain": preds, "crf": preds.flip(-1)}


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    acc = SegmentationAccumulator(4, list("abcd"), with_crf=True, keep_examples=0, keep_worst=3)
    for k, (indices, masks, outputs) in enumerate(batches()):
        if k % world == rank:
            acc.update((None, masks, [(9, 11)] * 2), outputs, indices)
    acc.synchronize()
    metrics = acc.compute()
    out = {"metrics": metrics, "per_image": {str(k): v for k, v in acc.meters["plain"].per_image_iou.items()},
           "worst": [(iou, index) for iou, index, _ in acc.worst["plain"].items()]}
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(out, default=float))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
