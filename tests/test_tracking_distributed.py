"""Distributed tracking evaluation with a real 2-process torchrun (gloo): the sequences tracked on each rank
are gathered, so every rank's AO / success / precision equal the single-process numbers."""
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT


@pytest.mark.slow
def test_two_process_synchronize_equals_one_process(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "distributed"))
    from tracking_sync import sequences

    from visionzoo.tasks.tracking.task import TrackingAccumulator

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29519", str(ROOT / "tests/distributed/tracking_sync.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = TrackingAccumulator()
    for k, result in sequences():
        single.update(None, [result], [k])
    expected = json.loads(json.dumps(single.compute()))
    assert expected["num_sequences"] == 5
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert [r["name"] for r in got["per_sequence"]] == [r["name"] for r in expected["per_sequence"]]
        for key in ("ao", "sr50", "sr75", "success_auc", "precision_20", "fps", "num_frames"):
            assert got[key] == pytest.approx(expected[key])
