"""Distributed segmentation evaluation with a real 2-process torchrun (gloo): summed confusion matrices,
gathered per-image IoUs and worst images equal the single-process result."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_two_process_synchronize_equals_one_process(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "distributed"))
    from segmentation_sync import batches

    from visionzoo.tasks.segmentation.task import SegmentationAccumulator

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", str(ROOT / "tests/distributed/segmentation_sync.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    single = SegmentationAccumulator(4, list("abcd"), with_crf=True, keep_examples=0, keep_worst=3)
    for indices, masks, outputs in batches():
        single.update((None, masks, [(9, 11)] * 2), outputs, indices)
    expected = json.loads(json.dumps(single.compute(), default=float))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["metrics"]["confusion_matrix"] == expected["confusion_matrix"]
        for key in ("mean_iou", "crf_mean_iou", "pixel_accuracy", "fw_iou", "crf_fw_iou"):
            assert got["metrics"][key] == pytest.approx(expected[key])
        assert {int(k): v for k, v in got["per_image"].items()} == pytest.approx(single.meters["plain"].per_image_iou)
        expected_worst = [(iou, index) for iou, index, _ in single.worst["plain"].items()]
        assert [int(index) for _, index in got["worst"]] == [index for _, index in expected_worst]
        assert [iou for iou, _ in got["worst"]] == pytest.approx([iou for iou, _ in expected_worst])
