"""Run by torchrun (2 processes, gloo) from tests/test_tracking_metrics_distributed.py: each rank scores its
share of a fixed set of tracked sequences; after synchronize() every rank must hold the single-process result."""
import json
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from visionzoo.tasks.tracking.metrics import SequenceResult  # noqa: E402
from visionzoo.tasks.tracking.task import TrackingAccumulator  # noqa: E402


def sequences():
    """Five sequences of different lengths, with jittered predictions and a few cover == 0 frames."""
    rng = np.random.default_rng(0)
    for k in range(5):
        n = 8 + 3 * k
        gt = np.column_stack([rng.uniform(0, 50, n), rng.uniform(0, 50, n), rng.uniform(5, 30, (n, 2))])
        pred = gt + rng.normal(0, 3, gt.shape)
        pred[0] = gt[0]
        cover = rng.integers(0, 9, n)
        cover[0] = 8
        yield k, SequenceResult(f"seq{k}", pred, gt, cover, cover == 0, rng.uniform(0.01, 0.02, n), (100, 100))


def main():
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    acc = TrackingAccumulator()
    for k, result in sequences():
        if k % world == rank:
            acc.update(None, [result], [k])
    acc.synchronize()
    Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(acc.compute()))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
