"""visionzoo.export: ONNX / TorchScript / torch.export round trips checked against PyTorch, the JSON card,
the CLI, and the clear errors for what cannot be exported."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import visionzoo
from tests.helpers import ROOT, write_tiny_config
from visionzoo.export import ExportError, build_spec, check_export, export, load_model

ort = pytest.importorskip("onnxruntime", reason="pip install 'visionzoo[export]'")
pytest.importorskip("onnxscript", reason="pip install 'visionzoo[export]'")

pytestmark = pytest.mark.usefixtures("one_thread")

RESNET = ROOT / "weights/resnet18.shapes.safetensors"
FCN = ROOT / "weights/fcn4s_resnet18.shapes.safetensors"
FASTER = ROOT / "weights/faster_rcnn_resnet18_fpn.shapes.safetensors"


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _quiet_log(*_):
    pass


def test_onnx_classifier_with_shipped_weights_and_dynamic_batch(tmp_path):
    out = tmp_path / "resnet18.onnx"
    card = export(str(RESNET), "onnx", out=out, dynamic_batch=True, log=_quiet_log)  # the card's 64 px
    assert out.is_file()
    saved = json.loads((tmp_path / "resnet18.onnx.json").read_text())
    assert saved == json.loads(json.dumps(card))
    assert saved["class_names"] == ["circle", "hexagon", "square", "star", "triangle"]
    assert saved["mean"] == [0.5] * 3 and saved["std"] == [0.25] * 3 and saved["input_size"] == [3, 64, 64]
    assert saved["input_names"] == ["images"] and saved["output_names"] == ["logits"]
    assert saved["opset"] >= 11 and saved["dynamic_batch"] is True
    assert [s["images"][0] for s in saved["check"]["inputs"]] == [2, 3]  # checked at two batch sizes
    assert 0 <= saved["check"]["max_abs_diff"]["logits"] < 1e-4

    # An independent run: another batch size than the export saw, against the model built by create_model.
    session = _session(out)
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a symbolic batch axis
    model = visionzoo.create_model("resnet18", weights="shapes").eval()
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x).numpy()
    (got,) = session.run(None, {"images": x.numpy()})
    assert got.shape == (5, 5)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_onnx_segmenter_names_its_outputs(tmp_path):
    out = tmp_path / "fcn.onnx"
    card = export(str(FCN), "onnx", out=out, input_size=[64], log=_quiet_log)
    assert card["output_names"] == ["out"] and card["input_size"] == [3, 64, 64]
    session = _session(out)
    assert [o.name for o in session.get_outputs()] == ["out"]
    model = visionzoo.create_model("fcn4s_resnet18", weights="shapes").eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(x)["out"].numpy()
    (got,) = session.run(None, {"images": x.numpy()})
    assert got.shape == (1, 6, 64, 64) and np.abs(expected).max() > 0.1  # trained: not the zero-initialised head
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_onnx_detector_at_128_px(tmp_path):
    out = tmp_path / "faster.onnx"
    card = export(str(FASTER), "onnx", out=out, log=_quiet_log)
    assert card["exporter"].startswith("torch.onnx (TorchScript-based")  # dynamo stops at torchvision's NMS
    assert card["input_size"] == [3, 128, 128] and card["class_names"][0] == "__background__"
    assert set(card["check"]["max_abs_diff"]) == {"boxes", "labels", "scores"}
    assert any(o["boxes"][0] > 0 for o in card["check"]["outputs"])  # the check compared real detections

    from visionzoo.datasets.write_shapes_scenes import make_scene

    image, instances, _ = make_scene(7, image_size=128)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()
    model = visionzoo.create_model("faster_rcnn_resnet18_fpn", weights="shapes").eval()
    with torch.no_grad():
        expected = model([x])[0]
    boxes, labels, scores = _session(out).run(None, {"image": x.numpy()})
    assert len(instances) > 0 and len(boxes) > 0  # a real scene with real detections, not an empty check
    assert boxes.shape == tuple(expected["boxes"].shape)
    np.testing.assert_array_equal(labels, expected["labels"].numpy())
    np.testing.assert_allclose(boxes, expected["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(scores, expected["scores"].numpy(), atol=1e-4)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_round_trip_from_a_run_directory(tmp_path):
    from visionzoo.config import load_yaml_with_bases, to_dict, validate
    from visionzoo.engine.checkpoint import atomic_save

    run = tmp_path / "run"
    run.mkdir()
    config = write_tiny_config(run / "config.yaml", tmp_path / "data")
    cfg = validate(load_yaml_with_bases(config))
    model = visionzoo.create_model("resnet18", num_classes=3).eval()
    meta = {"class_names": ["a", "b", "c"], "input_size": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}
    atomic_save({"format": "visionzoo-checkpoint-v1", "model": model.state_dict(), "ema": {},
                 "config": to_dict(cfg), "meta": meta}, run / "best.pt")

    out = tmp_path / "run.torchscript.pt"
    card = export(str(run), "torchscript", out=out, batch=2, log=_quiet_log)
    assert card["class_names"] == ["a", "b", "c"] and card["input_size"] == [3, 32, 32] and card["batch"] == 2
    assert card["source"].endswith("best.pt")
    loaded = torch.jit.load(str(out))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-4)


def test_torch_export_round_trip_of_a_gan_generator(tmp_path):
    out = tmp_path / "dcgan.pt2"
    card = export("dcgan", "export", out=out, weights="shapes", dynamic_batch=True, log=_quiet_log)
    assert card["part"] == "generator" and card["input_names"] == ["z"] and card["latent_dim"] == 100
    program = torch.export.load(str(out)).module()
    gan = visionzoo.create_model("dcgan", weights="shapes").eval()
    z = torch.randn(7, 100, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(program(z), gan.generator(z), atol=1e-5, rtol=1e-4)


def test_conditional_vae_decoder_exports_with_labels(tmp_path):
    out = tmp_path / "cvae.onnx"
    torch.manual_seed(0)
    card = export("cvae_conv", "onnx", out=out, batch=3, log=_quiet_log)
    assert card["input_names"] == ["z", "labels"] and card["source"] == "random init"
    torch.manual_seed(0)
    vae = visionzoo.create_model("cvae_conv").eval()  # the same random init as the exported one
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([4, 0, 2])
    with torch.no_grad():
        expected = vae.decode(z, y).numpy()
    (got,) = _session(out).run(None, {"z": z.numpy(), "labels": y.numpy()})
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # the labels condition the output far beyond the export's numerical error
        label_effect = np.abs(expected - vae.decode(z, torch.tensor([1, 1, 1])).numpy()).max()
    assert label_effect > max(1e-5, 100 * np.abs(got - expected).max())


def test_the_check_fails_when_the_file_differs_from_pytorch(tmp_path):
    out = tmp_path / "r.torchscript.pt"
    export(str(RESNET), "torchscript", out=out, input_size=[32], check=False, log=_quiet_log)
    assert json.loads((tmp_path / "r.torchscript.pt.json").read_text())["check"] is None
    loaded = load_model(str(RESNET))
    spec = build_spec(loaded, input_size=[32])
    assert check_export(spec, "torchscript", out, 1e-4, 1e-3, "resnet18")["max_abs_diff"]["logits"] < 1e-4
    spec.reference = lambda x: (loaded.model(x) + 0.01,)
    with pytest.raises(ExportError, match=r"output 'logits' of the torchscript file differs from PyTorch by up to 0\.01"):
        check_export(spec, "torchscript", out, 1e-4, 1e-3, "resnet18")


def test_a_failed_check_removes_the_file(tmp_path, monkeypatch):
    import visionzoo.export as vz_export

    def offset_reference(*args, **kwargs):
        spec = build_spec(*args, **kwargs)
        reference = spec.reference
        spec.reference = lambda *x: tuple(t + 1.0 for t in reference(*x))
        return spec

    monkeypatch.setattr(vz_export, "build_spec", offset_reference)
    out = tmp_path / "bad.torchscript.pt"
    with pytest.raises(ExportError, match=r"differs from PyTorch by up to 1 .*was removed"):
        export(str(RESNET), "torchscript", out=out, input_size=[32], log=_quiet_log)
    assert not out.exists() and not (tmp_path / "bad.torchscript.pt.json").exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "resnet18", "fmt": "tflite"}, r"--format 'tflite': expected one of onnx, torchscript, export"),
    ({"target": "weights/missing.safetensors"}, r"weights/missing\.safetensors: no such weights file"),
    ({"target": "resnet81"}, r"neither a weights file, a run directory nor a registered model name.*resnet18"),
    ({"target": str(FASTER), "batch": 2}, r"one image per call"),
    ({"target": "dcgan", "input_size": [32]}, r"--input-size does not apply: its exported part takes latents"),
    ({"target": str(RESNET), "weights": "shapes"}, r"--weights goes with a registered model name"),
    ({"target": "dcgan", "fmt": "export", "out": "gen.onnx"}, r"must end in \.pt2"),
])
def test_clear_errors(kwargs, message, tmp_path):
    kwargs = {"out": tmp_path / "x.onnx", **kwargs}
    with pytest.raises((ExportError, FileNotFoundError), match=message):
        export(log=_quiet_log, **kwargs)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "visionzoo.export", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_cli_exports_and_prints_the_differences(tmp_path):
    out = tmp_path / "r18.torchscript.pt"
    proc = _cli(RESNET, "--format", "torchscript", "--out", out, "--input-size", "32", "--dynamic-batch")
    assert proc.returncode == 0, proc.stderr
    assert "logits: max abs diff" in proc.stdout and "check passed on 2 input(s)" in proc.stdout
    card = json.loads((tmp_path / "r18.torchscript.pt.json").read_text())
    assert card["input_size"] == [3, 32, 32] and card["exporter"] == "torch.jit.trace"
    assert card["check"]["max_abs_diff"]["logits"] < 1e-4
    assert torch.jit.load(str(out))(torch.zeros(3, 3, 32, 32)).shape == (3, 5)


@pytest.mark.slow
def test_cli_unexportable_model_is_one_clear_error(tmp_path):
    proc = _cli("faster_rcnn_resnet18_fpn", "--format", "export", "--out", tmp_path / "det.pt2",
                "--input-size", "128")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: faster_rcnn_resnet18_fpn cannot be exported to torch.export:")
    assert "NMS" in proc.stderr and "use --format onnx" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr) < 1500  # no graph dumps, no deep traceback
    assert not (tmp_path / "det.pt2").exists()
