"""The `visionzoo` command: dispatch, configs by name, the data / weights / models / predict commands, and the
console output of training when stdout is not a terminal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from visionzoo.cli import main

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"
pytestmark = pytest.mark.usefixtures("one_thread")


def _needs(*names: str) -> None:
    for name in names:
        if not (WEIGHTS / name).is_file():
            pytest.skip(f"needs {WEIGHTS / name}")


def test_usage_and_unknown_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "evaluate", "predict", "export", "diagnose", "publish", "models", "weights", "data"):
        assert f"  {command} " in out
    assert main(["trian"]) == 2
    assert "Did you mean `visionzoo train`" in capsys.readouterr().err
    assert main(["data", "shapez"]) == 2
    assert "Did you mean 'shapes'" in capsys.readouterr().err


def test_models_and_packaged_configs(capsys):
    assert main(["models", "resnet1*", "--task", "classification", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"resnet18", "resnet101"} <= set(rows) and rows["resnet18"]["task"] == "classification"
    if (WEIGHTS / "resnet18.shapes.safetensors").is_file():
        assert "shapes" in rows["resnet18"]["weights"]
    assert main(["models", "--configs", "--json"]) == 0
    names = json.loads(capsys.readouterr().out)
    assert "classification/resnet18_shapes" in names and not any("_base_" in n for n in names)
    assert main(["models", "resnt18"]) == 1
    assert "Did you mean: resnet18" in capsys.readouterr().err


def test_a_missing_config_suggests_the_closest_existing_ones(capsys, tmp_path):
    assert main(["train", "classification/resnet18_shape", "--run-dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "config file not found: classification/resnet18_shape" in err
    assert "Did you mean: classification/resnet18_shapes" in err
    assert not (tmp_path / "r").exists()


def test_a_relative_data_root_says_where_it_was_resolved(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "classification/resnet18_shapes", "--run-dir", str(tmp_path / "run"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "data.root 'data/shapes' is relative" in err
    assert f"resolved against the current directory {tmp_path}" in err
    assert "visionzoo data shapes data/shapes" in err


def test_train_a_packaged_config_by_name_with_plain_progress_and_epoch_lines(tmp_path):
    """The real command in a subprocess whose output is a pipe (as under a scheduler): a plain progress line,
    no carriage returns, and after the validation one line with the metrics, the best so far and the ETA."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("VISIONZOO_PROGRESS", None)
    data = tmp_path / "shapes"
    proc = subprocess.run([sys.executable, "-m", "visionzoo", "data", "shapes", str(data), "--train", "10", "--val",
                           "6", "--test", "2", "--size", "32", "--no-progress"], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(list((data / "val").rglob("*.png"))) == 6
    proc = subprocess.run(
        [sys.executable, "-m", "visionzoo", "train", "classification/resnet18_shapes", f"data.root={data}",
         "train.epochs=2", "train.max_steps_per_epoch=1", "data.batch_size=4", "data.num_workers=0",
         "data.input_size=32", "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\r" not in proc.stderr and "\r" not in proc.stdout
    assert "epoch 1/2: 1/1  100%" in proc.stderr  # the plain progress line of the only step
    epoch_lines = [line for line in proc.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert "val_top1 " in epoch_lines[0] and "| best val_top1 " in epoch_lines[0] and "/epoch, ETA " in epoch_lines[0]
    assert epoch_lines[1].endswith("ETA 0s")
    assert (tmp_path / "run" / "last.pt").is_file()
    run_info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_info["config_file"].endswith("classification/resnet18_shapes.yaml")
    assert "visionzoo train classification/resnet18_shapes data.root=" in run_info["command"]
    assert f"Evaluate with: visionzoo evaluate {tmp_path / 'run'}" in proc.stdout


def test_weights_copy_into_the_user_cache_and_lookup_from_there(tmp_path, monkeypatch, capsys):
    _needs("resnet18.shapes.safetensors")
    import visionzoo.weights as vzw
    from visionzoo.weights import resolve_weights

    monkeypatch.setenv("VISIONZOO_HOME", str(tmp_path / "home"))
    assert main(["weights", "copy", "--from", str(WEIGHTS), "resnet18.shapes"]) == 0
    cached = tmp_path / "home" / "weights" / "resnet18.shapes.safetensors"
    assert cached.is_file() and cached.with_suffix(".json").is_file()
    assert main(["weights", "copy", "--from", str(WEIGHTS), "resnet18"]) == 0
    assert "already in the cache" in capsys.readouterr().out
    monkeypatch.setattr(vzw, "REPO_WEIGHTS_DIR", tmp_path / "no_checkout")  # as in an installed package
    found = resolve_weights("resnet18", "shapes")
    assert found.source == "cache" and found.path == cached
    # a file that does not match its card's sha256 is refused and nothing reaches the cache
    bad = tmp_path / "bad"
    bad.mkdir()
    card = json.loads((WEIGHTS / "resnet18.shapes.json").read_text())
    (bad / "resnet18.other.safetensors").write_bytes(b"not the weights")
    (bad / "resnet18.other.json").write_text(json.dumps(card))
    assert main(["weights", "copy", "--from", str(bad)]) == 1
    assert "differs from its model card" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "home" / "weights").iterdir()) == [
        "resnet18.shapes.json", "resnet18.shapes.safetensors"]
    assert main(["weights", "copy", "--from", str(bad), "vgg16"]) == 1
    assert "no weights 'vgg16'" in capsys.readouterr().err


def _shapes_images(folder: Path, n: int = 3) -> list:
    from visionzoo.datasets.shapes import ShapesClassification

    folder.mkdir(parents=True)
    data = ShapesClassification("test", num_samples=n)
    for i in range(n):
        data[i][0].save(folder / f"{i}.png")
    return [data[i][1] for i in range(n)]


def test_predict_classifies_a_folder_into_json_and_drawn_images(tmp_path, capsys):
    _needs("resnet18.shapes.safetensors")
    _shapes_images(tmp_path / "imgs" / "sub")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert main(["predict", "resnet18", "--weights", "shapes", str(tmp_path / "imgs"), "--out", str(out),
                 "--top-k", "2", "--quiet"]) == 1  # one unreadable file: reported, skipped, exit code 1
    assert "broken.png" in capsys.readouterr().err
    saved = json.loads((out / "predictions.json").read_text())
    assert saved["task"] == "classification" and len(saved["predictions"]) == 3
    from visionzoo.predict import Classifier

    clf = Classifier("resnet18", weights="shapes", top_k=2)
    for record in saved["predictions"]:
        expected = clf(record["file"])
        assert record["labels"] == expected.labels
        np.testing.assert_allclose(record["scores"], expected.scores, atol=1e-6)
        assert Path(record["drawn"]).is_file() and Path(record["drawn"]).parent == out / "imgs" / "sub"


def test_predict_detects_segments_and_tracks(tmp_path, capsys):
    _needs("faster_rcnn_resnet18_fpn.shapes.safetensors", "fcn4s_resnet18.shapes.safetensors",
           "siamfc_alexnet.shapes.safetensors")
    from PIL import Image

    from visionzoo.datasets.shapes import ShapeSpec, render_scene

    image, _ = render_scene([ShapeSpec("circle", 64, 64, 30, 0.0, (220, 40, 40))], 128, np.random.default_rng(0))
    image.save(tmp_path / "scene.png")
    for model, key in (("faster_rcnn_resnet18_fpn", "boxes"), ("fcn4s_resnet18", "present")):
        out = tmp_path / model
        assert main(["predict", model, "--weights", "shapes", str(tmp_path / "scene.png"), "--out", str(out),
                     "--quiet"]) == 0, capsys.readouterr().err
        record = json.loads((out / "predictions.json").read_text())["predictions"][0]
        assert key in record and Path(record["drawn"]).is_file()
    record = json.loads((tmp_path / "fcn4s_resnet18" / "predictions.json").read_text())["predictions"][0]
    mask = np.asarray(Image.open(record["mask"]))
    assert mask.shape == (128, 128) and record["present"] and sum(record["present"].values()) == 128 * 128
    # tracking: a GOT-10k sequence written by the data command, started from its first ground-truth box
    seqs = tmp_path / "seq"
    assert main(["data", "shapes-sequences", str(seqs), "--train", "0", "--val", "0", "--test", "1", "--frames", "4",
                 "--size", "96", "--no-progress"]) == 0
    capsys.readouterr()
    sequence = next(p for p in (seqs / "test").iterdir() if p.is_dir())
    out = tmp_path / "track"
    assert main(["predict", "siamfc_alexnet", "--weights", "shapes", str(sequence), "--out", str(out), "--quiet"]) == 0
    record = json.loads((out / "predictions.json").read_text())["predictions"][0]
    boxes = np.loadtxt(out / sequence.name / "boxes.txt", delimiter=",")
    first = np.loadtxt(sequence / "groundtruth.txt", delimiter=",")[0]
    assert boxes.shape == (4, 4) and np.allclose(boxes[0], first, atol=0.01) and record["frames"] == 4
    assert len(list((out / sequence.name).glob("*.png"))) == 4
    # a folder of plain frames needs --init-box
    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted(sequence.glob("*.jpg"))[:2]:
        (frames / f.name).write_bytes(f.read_bytes())
    assert main(["predict", "siamfc_alexnet", "--weights", "shapes", str(frames), "--out", str(out)]) == 1
    assert "--init-box" in capsys.readouterr().err
    assert main(["predict", "siamfc_alexnet", "--weights", "shapes", str(frames), "--out", str(out), "--quiet",
                 "--init-box", ",".join(str(v) for v in first)]) == 0


def test_data_list_names_writers_and_config_roots(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "shapes-sequences" in out
    assert "classification/resnet18_shapes" in out and "[missing: visionzoo data shapes data/shapes]" in out
