"""A non-editable `pip install .` into a fresh venv outside the checkout works on its own: it lists models, loads
a torchvision-compatible file, trains a packaged config by name, and finds the shipped weights in the user
cache once `visionzoo weights copy` has put them there.

The venv sees the system's site-packages (so torch is not installed again) and the package is built without
build isolation and without dependencies, so the test needs no network. The source copy the wheel is built
from is deleted before anything runs, so nothing can come from a checkout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc


def test_non_editable_install_in_a_fresh_venv(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "configs", source / "configs", ignore=ignore)
    shutil.copytree(ROOT / "visionzoo", source / "visionzoo", symlinks=True, ignore=ignore)  # configs link kept

    venv = tmp_path / "venv"
    # --without-pip: the venv uses the system's pip and setuptools (ensurepip's older setuptools would shadow them)
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp_path, os.environ)
    python, command = venv / "bin" / "python", venv / "bin" / "visionzoo"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "VISIONZOO_PROGRESS")}
    env.update(VISIONZOO_HOME=str(tmp_path / "home"), VISIONZOO_OFFLINE="1", OMP_NUM_THREADS="1",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    _run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-input", "-q", source],
         tmp_path, env)
    shutil.rmtree(source)  # the installed package must stand on its own
    work = tmp_path / "work"
    work.mkdir()

    models = json.loads(_run([command, "models", "--json"], work, env).stdout)
    assert {"resnet18", "faster_rcnn_resnet18_fpn", "siamfc_alexnet"} <= {m["name"] for m in models}

    # the installed copy is the one imported; the shipped weights are not in it; a file saved from
    # torchvision's own model loads strict and gives torchvision's outputs
    check_torchvision = """
import torch, torchvision, visionzoo
from safetensors.torch import save_file
from visionzoo.weights import WeightsError
print(visionzoo.__file__)
try:
    visionzoo.create_model("resnet18", weights="shapes")
    raise SystemExit("the shipped weights were found before they were copied")
except WeightsError as e:
    assert "not found" in str(e), e
torch.manual_seed(0)
reference = torchvision.models.resnet18(num_classes=7).eval()
save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, "tv.safetensors")
model = visionzoo.create_model("resnet18", weights="tv.safetensors").eval()
x = torch.randn(2, 3, 64, 64)
with torch.no_grad():
    assert model.pretrained_cfg["num_classes"] == 7
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
print("same outputs")
"""
    printed = _run([python, "-c", check_torchvision], work, env).stdout.splitlines()
    assert Path(printed[0]).is_relative_to(venv), printed[0]  # not the checkout's editable install
    assert printed[-1] == "same outputs"

    # a packaged config by name, on tiny data written by the command itself, for one step
    _run([command, "data", "shapes", "data/shapes", "--train", "8", "--val", "4", "--test", "2", "--size", "32",
          "--no-progress"], work, env)
    _run([command, "train", "classification/resnet18_shapes", "train.epochs=1", "train.max_steps_per_epoch=1",
          "data.batch_size=4", "data.num_workers=0", "data.input_size=32", "--run-dir", "run"], work, env)
    run_info = json.loads((work / "run" / "run.json").read_text())
    assert Path(run_info["config_file"]).is_relative_to(venv)
    assert (work / "run" / "last.pt").is_file()

    # the shipped weights: not there after the install; found in the user cache once copied from a checkout
    lookup = "import visionzoo; m = visionzoo.create_model('resnet18', weights='shapes'); print(m.pretrained_cfg['source'])"
    no_folder = subprocess.run([command, "weights", "copy"], cwd=work, env=env, capture_output=True, text=True,
                               timeout=600)
    assert no_folder.returncode == 1 and "--from" in no_folder.stderr
    if not (ROOT / "weights" / "resnet18.shapes.safetensors").is_file():
        pytest.skip("the cache part needs weights/resnet18.shapes.safetensors")
    _run([command, "weights", "copy", "--from", ROOT / "weights", "resnet18.shapes"], work, env)
    assert _run([python, "-c", lookup], work, env).stdout.strip() == "cache"
