"""Steady memory over a stream of images: evaluate.py (its main, in this process) over an image folder and the
predictors called once per image keep no per-image state. The benchmark (benchmarks/memory_streaming.py) runs the
same code over 10,000 images and prints the curve; here fewer images, and the RSS growth after warm-up must stay
under a bound far below what keeping even a small part of each image would cost."""
from __future__ import annotations

import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT))
memory = pytest.importorskip("benchmarks.memory_streaming")

N_IMAGES = 1200
N_PREDICTOR_IMAGES = 300
# Keeping each 32x32 input tensor would add 12 KiB per image: 9.8 MiB over evaluate's last 840 images, 2.8 MiB over
# a predictor's last 240; the bound leaves room for allocator noise only (flat curves measure 0.0-0.5 MiB).
MAX_GROWTH_MIB = 2.0


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    if not memory.Path("/proc/self/statm").is_file():
        pytest.skip("needs /proc/self/statm (Linux) to read the resident set size")
    root = tmp_path_factory.mktemp("stream")
    return root, memory.write_images(root / "data", N_IMAGES)


def test_evaluate_memory_is_steady_over_a_stream(stream, one_thread):
    root, images = stream
    run_dir = memory.make_run(root / "run", root / "data")
    curve = memory.evaluate_curve(run_dir, workers=0)
    assert len(curve) >= 10, curve
    assert memory.growth(curve, memory.EVALUATE_WARMUP) < MAX_GROWTH_MIB, curve[:: max(1, len(curve) // 20)]


@pytest.mark.parametrize("part", ["classifier", "segmenter", "tracker"])
def test_predictor_memory_is_steady_over_a_stream(stream, one_thread, part):
    _, images = stream
    curve = memory.predictor_curve(part, images[:N_PREDICTOR_IMAGES], every=30)
    assert memory.growth(curve) < MAX_GROWTH_MIB, curve
