"""Tracking end to end: moving-shapes sequences written to disk in the GOT-10k layout -> train.py and
evaluate.py as subprocesses (SiamFC and SINT); training pairs; the evaluation path against the metrics
recomputed from the saved boxes; the real GOT-10k validation sequence through the reader and a tracker."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import ROOT, read_jsonl, run_script

GOT_SEQUENCE = ROOT.parent / "shared" / "data" / "GOT-10k_Val_000001"


@pytest.fixture(scope="module")
def seq_root(tmp_path_factory):
    from visionzoo.datasets.write_shapes_sequences import write_shapes_sequences

    root = tmp_path_factory.mktemp("shapes_seq")
    write_shapes_sequences(root, counts={"train": 3, "val": 2, "test": 2}, frames=10, size=(96, 72), seed=0,
                           progress=False)
    return root


def write_config(path: Path, root: Path, model: str, kwargs: dict, tracker: str = "{}", epochs: int = 2) -> str:
    path.write_text(f"""
_base_: {ROOT / 'configs/tracking/_base_.yaml'}
model: {{name: {model}, kwargs: {json.dumps(kwargs)}}}
data: {{root: {root}, batch_size: 4, num_workers: 0, params: {{pairs_per_epoch: 8, max_gap: 5}}}}
optim: {{name: sgd, lr: 0.01, momentum: 0.9, weight_decay: 5.0e-4}}
schedule: {{name: exponential, gamma: 0.5}}
train: {{epochs: {epochs}, log_interval: 1, eval_interval: {epochs}}}
eval: {{showcase_frames: 3, showcase_sequences: 1, tracker: {tracker}}}
""")
    return str(path)


def test_training_pairs_are_reproducible_and_put_the_target_where_the_crop_says(seq_root):
    from visionzoo.datasets.sequences import SequenceDataset
    from visionzoo.datasets.tracking_pairs import PairSettings, TrackingPairs, usable_frames

    seqs = SequenceDataset(seq_root, "train")
    pairs = TrackingPairs(list(seqs), PairSettings(pairs_per_epoch=6, max_gap=3), mean=(0.5,) * 3, std=(0.25,) * 3,
                          candidates=(4, 12, 0.7, 0.5))
    torch.manual_seed(7)
    a = pairs[0]
    torch.manual_seed(7)
    b = pairs[0]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["exemplar"].shape == (3, 127, 127) and a["search"].shape == (3, 255, 255)
    # exemplar: target centred with SiamFC's context (side = sqrt((w + p)(h + p)) -> 127 px)
    zx1, zy1, zx2, zy2 = a["exemplar_box"].tolist()
    assert abs((zx1 + zx2) / 2 - 63.5) < 1 and abs((zy1 + zy2) / 2 - 63.5) < 1
    # search: the same scale (the target's size agrees up to the stretch) and at most `shift` px off-centre
    sx1, sy1, sx2, sy2 = a["search_box"].tolist()
    assert abs((sx1 + sx2) / 2 - 127.5) <= 8.5 and abs((sy1 + sy2) / 2 - 127.5) <= 8.5
    labels = a["candidate_labels"]
    assert a["candidates"].shape == (16, 4) and labels.sum() == 4
    # frames of a pair are usable (visible) and at most max_gap apart
    rng = np.random.default_rng(0)
    for _ in range(50):
        s, z, x = pairs.pick(rng)
        usable = usable_frames(pairs.sequences[s], pairs.settings)
        assert z in usable and x in usable and abs(z - x) <= 3


@pytest.mark.slow
@pytest.mark.parametrize("model,kwargs,loss_key", [("siamfc_alexnet", {"width": 0.25}, "loss_logistic"),
                                                   ("sint_resnet18", {"trainable_layers": 3}, "loss_contrastive")])
def test_train_then_evaluate_with_report(tmp_path, seq_root, model, kwargs, loss_key):
    tracker = "{radii: 3, angles: 6}" if model == "sint_resnet18" else "{}"
    cfg = write_config(tmp_path / "cfg.yaml", seq_root, model, kwargs, tracker)
    run_dir = tmp_path / "run"
    proc = run_script("train.py", cfg, "--run-dir", run_dir, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = read_jsonl(run_dir / "log.jsonl")
    train = [r for r in log if r["type"] == "train"]
    assert len(train) == 4 and all(np.isfinite(r[loss_key]) for r in train)
    epoch = [r for r in log if r["type"] == "epoch"][-1]
    assert {"val_ao", "val_sr50", "val_success_auc", "val_precision_20", "val_fps"} <= set(epoch)

    proc = run_script("evaluate.py", run_dir, "--report", tmp_path / "report", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert result["split"] == "test" and result["num_samples"] == 2
    m = result["metrics"]
    assert m["num_sequences"] == 2 and m["num_frames"] == 20 and len(m["success_curve"]) == 21
    for key in ("ao", "sr50", "sr75", "success_auc", "precision_20"):
        assert 0.0 <= m[key] <= 1.0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Success and precision plots" in html and "Per-sequence results" in html and "best: " in html
    assert {row["name"] for row in m["per_sequence"]} == {"Shapes_Test_000001", "Shapes_Test_000002"}


@pytest.mark.slow
def test_evaluation_numbers_match_an_independent_recomputation(tmp_path, seq_root):
    """The tracker run by evaluate.py and the same tracker run here give the same boxes; AO recomputed with
    numpy alone from those boxes and the files on disk matches evaluate.py's."""
    from visionzoo.datasets.sequences import SequenceDataset
    from visionzoo.tracking import create_tracker, track_sequence

    cfg = write_config(tmp_path / "cfg.yaml", seq_root, "siamfc_alexnet", {"width": 0.25}, epochs=1)
    run_dir = tmp_path / "run"
    assert run_script("train.py", cfg, "--run-dir", run_dir, "--no-progress").returncode == 0
    proc = run_script("evaluate.py", run_dir, "--split", "val", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ao = json.loads((run_dir / "metrics_val.json").read_text())["metrics"]["ao"]

    tracker = create_tracker("siamfc_alexnet", weights=str(run_dir / "best.pt"), mean=(0.5,) * 3, std=(0.25,) * 3)
    ious = []
    for seq in SequenceDataset(seq_root, "val"):
        pred = track_sequence(tracker, seq, seq.boxes[0]).boxes
        gt = np.loadtxt(Path(seq.frames[0]).parent / "groundtruth.txt", delimiter=",")
        cover = np.loadtxt(Path(seq.frames[0]).parent / "cover.label")
        w_img, h_img = 96, 72
        for t in range(1, len(gt)):
            if cover[t] == 0:
                continue
            # the GOT-10k toolkit's rect_iou bounds both boxes to the image: x, y into [0, W] x [0, H], then
            # w, h into [0, W - x] x [0, H - y]; its union carries a float64 epsilon
            p, g = ([min(max(b[0], 0), w_img), min(max(b[1], 0), h_img), 0.0, 0.0] for b in (pred[t], gt[t]))
            p[2], p[3] = min(max(pred[t][2], 0), w_img - p[0]), min(max(pred[t][3], 0), h_img - p[1])
            g[2], g[3] = min(max(gt[t][2], 0), w_img - g[0]), min(max(gt[t][3], 0), h_img - g[1])
            iw = max(0.0, min(p[0] + p[2], g[0] + g[2]) - max(p[0], g[0]))
            ih = max(0.0, min(p[1] + p[3], g[1] + g[3]) - max(p[1], g[1]))
            inter = iw * ih
            ious.append(inter / (p[2] * p[3] + g[2] * g[3] - inter + np.finfo(float).eps))
    assert ao == pytest.approx(float(np.mean(ious)), abs=1e-9)

    # the 5-scale variant is a config: evaluate.py takes its eval section, and saves the result apart
    five = ROOT / "configs/tracking/siamfc_alexnet_shapes_5scale.yaml"
    proc = run_script("evaluate.py", run_dir, "--split", "val", "--eval-config", five, "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "metrics_val.json").read_text())["metrics"]["ao"] == ao  # untouched
    five_scale = json.loads((run_dir / "metrics_val_siamfc_alexnet_shapes_5scale.json").read_text())
    assert 0.0 <= five_scale["metrics"]["ao"] <= 1.0
    proc = run_script("evaluate.py", run_dir, "--split", "val", "--no-progress", "eval.tracker.scale_num=4")
    assert proc.returncode == 1 and "scale_num must be odd" in proc.stderr


def test_real_got10k_sequence_is_read_and_tracked():
    from visionzoo.datasets.sequences import read_got10k_sequence
    from visionzoo.tasks.tracking.metrics import SequenceResult, summarize
    from visionzoo.tracking import create_tracker, track_sequence

    if not GOT_SEQUENCE.is_dir():
        pytest.skip(f"needs {GOT_SEQUENCE} (the shared real-data folder beside the repository)")
    seq = read_got10k_sequence(GOT_SEQUENCE)
    assert len(seq) == 60 and seq.load_frame(0).shape == (720, 1280, 3)
    tracker = create_tracker("siamfc_alexnet", model_kwargs={"width": 0.25})  # untrained: this checks the plumbing at 1280x720
    result = track_sequence(tracker, _First(seq, 8), seq.boxes[0])
    assert result.boxes.shape == (8, 4) and np.isfinite(result.boxes).all()
    metrics = summarize([SequenceResult(seq.name, result.boxes, seq.boxes[:8], seq.cover[:8], seq.absent[:8],
                                        result.times, (1280, 720))])
    assert 0.0 <= metrics["ao"] <= 1.0 and metrics["fps"] > 0


class _First:
    def __init__(self, seq, n):
        self.seq, self.n = seq, n

    def __len__(self):
        return self.n

    def load_frame(self, i):
        return self.seq.load_frame(i)


def test_bad_tracking_config_values_are_named(tmp_path, seq_root):
    cfg = write_config(tmp_path / "cfg.yaml", seq_root, "siamfc_alexnet", {"width": 0.25}, "{scale_nmu: 5}")
    proc = run_script("train.py", cfg, "--run-dir", tmp_path / "run", "--no-progress")
    assert proc.returncode == 1 and "scale_nmu" in proc.stderr and "scale_num" in proc.stderr
    proc = run_script("train.py", cfg, "--run-dir", tmp_path / "run2", "--no-progress", "eval.tracker={}",
                      "data.params.max_gpa=3")
    assert proc.returncode == 1 and "max_gpa" in proc.stderr and "max_gap" in proc.stderr
