"""benchmarks/gpu_smoke.py: its dry run on a CPU end to end (one family model, torchrun on gloo, the CUDA-only
tests, RESULTS.md's GPU commands parsed and their arguments checked), and its exit code on a failure."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT))
from benchmarks import gpu_smoke  # noqa: E402


def test_gpu_commands_come_from_results_md():
    commands = gpu_smoke.gpu_commands(ROOT / "benchmarks" / "RESULTS.md")
    assert len(commands) >= 5
    assert all(c.startswith("python benchmarks/") and "--device cuda" in c for c in commands)
    scripts = {c.split()[1] for c in commands}
    assert {"benchmarks/benchmark.py", "benchmarks/train_overhead.py", "benchmarks/tracking_speed.py"} <= scripts
    resnet50 = [c for c in commands if "--model resnet50 " in c]
    assert len(resnet50) == 2 and resnet50[1] == resnet50[0] + " --compile"  # the row's compiled figure


def test_dry_run_checks_the_arguments_of_each_command():
    gpu_smoke.arguments_parse(["benchmarks/benchmark.py", "--model", "resnet18", "--device", "cuda", "--steps", "2"])
    with pytest.raises(RuntimeError, match="arguments rejected .*--no-such-flag"):
        gpu_smoke.arguments_parse(["benchmarks/benchmark.py", "--model", "resnet18", "--no-such-flag"])
    with pytest.raises(RuntimeError, match="arguments rejected .*invalid choice"):
        gpu_smoke.arguments_parse(["benchmarks/benchmark.py", "--model", "resnet18", "--precision", "fp8"])


def test_cuda_only_tests_are_found():
    ids = gpu_smoke.cuda_only_tests()
    assert "tests/test_cuda_readiness.py::test_cuda_rng_state_round_trip" in ids
    assert all((ROOT / i.split("::")[0]).is_file() for i in ids)


def test_a_failing_check_gives_exit_code_1_and_the_table(monkeypatch, capsys):
    def broken(model_name, precision, device, compile_model=False):
        def check():
            raise RuntimeError(f"{model_name} {precision} broke")
        return check

    monkeypatch.setattr(gpu_smoke, "family_check", broken)
    assert gpu_smoke.main(["--device", "cpu", "--only", "families", "--models", "dcgan", "--precisions",
                           "fp32"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  families/dcgan/fp32" in out and "RuntimeError: dcgan fp32 broke" in out
    assert "0 passed, 1 failed, 0 skipped" in out


def test_dry_run_on_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--device", "cpu",
                           "--models", "dcgan", "--precisions", "bf16", "--skip", "compile", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {c["check"]: c for c in json.loads(out.read_text())["checks"]}
    assert checks["families/dcgan/bf16"]["status"] == "PASS"
    assert checks["torchrun/train.py"]["status"] == "PASS"
    assert checks["torchrun/collectives"]["status"] == "PASS"
    assert "gloo process group on cpu" in checks["torchrun/collectives"]["detail"]
    assert checks["tests/cuda-only"]["status"] in ("SKIP", "PASS")  # SKIP: no GPU; PASS on a GPU machine
    results = [c for name, c in checks.items() if name.startswith("results/")]
    assert len(results) >= 5
    assert all(c["status"] == "SKIP" and ("arguments parse" in c["detail"] or "weights/" in c["detail"])
               for c in results)
    # one line per check, then the table
    for name in checks:
        assert any(line.startswith(("PASS  " + name, "SKIP  " + name)) for line in done.stdout.splitlines())
    assert f"{sum(c['status'] == 'PASS' for c in checks.values())} passed, 0 failed" in done.stdout


@pytest.mark.parametrize("argv", [["--device", "cuda:0"]])
def test_cuda_requested_without_cuda_is_refused(argv, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gpu_smoke.main(argv + ["--only", "families"]) == 2
    assert "--device cpu for a dry run" in capsys.readouterr().err
