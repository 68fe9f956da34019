"""Smoke test for a CUDA machine: does every GPU code path run, in a few minutes?

    python benchmarks/gpu_smoke.py                       # on the GPU (under 8 minutes on one H100/H200)
    python benchmarks/gpu_smoke.py --device cpu          # dry run on a CPU (the GPU-only parts are skipped)
    python benchmarks/gpu_smoke.py --only families torchrun --precisions bf16

Groups of checks (--only / --skip take their names):
  families  one training step (SGD, fp16 through a GradScaler, EMA update) and one evaluation batch of a model
            of every family (classification, detection, segmentation, tracking, generative) in each of
            --precisions, channels_last, on the task's synthetic batches; detectors must return float32 boxes
            under bf16/fp16. On CUDA, torch.cuda.set_sync_debug_mode("warn") counts the host-device syncs of
            each training step (reported, not failed: some are by design, e.g. fp16's inf check).
  compile   the same for resnet18 under torch.compile (bf16).
  torchrun  a 1-process torchrun of train.py on a small shapes ImageFolder (bf16, EMA, channels_last on CUDA),
            and a 1-process group's collectives (NCCL on CUDA, gloo on CPU): all-reduce, buffer broadcast,
            the gloo control group's background all-reduce.
  tests     the test functions marked "needs CUDA" in tests/ (pytest; skipped if it is not installed).
  results   the GPU commands of benchmarks/RESULTS.md ("GPU goals" section), each with --results-timeout;
            on a CPU only their arguments are checked (the command with --help).

No file of weights/ is needed: models start from random weights (commands that name shipped weights are
skipped when the file is absent, saying so), and checks that need a package that is not installed
(pycocotools, pytest) are skipped, saying which. One line per check as it finishes, a table at the end,
and the exit code is 1 when any check failed (0 otherwise). --json writes the results for RESULTS.md.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from argparse import Namespace
from pathlib import Path

import torch
import torch.distributed as dist
import torchvision

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchmarks.benchmark as bench  # noqa: E402
from benchmarks._families import write_family_data  # noqa: E402
from visionzoo.engine import distributed  # noqa: E402
from visionzoo.engine.ema import ModelEma  # noqa: E402
from visionzoo.engine.evaluator import autocast_context  # noqa: E402
from visionzoo.registry import get_entry  # noqa: E402
from visionzoo.tasks import task_for  # noqa: E402
from visionzoo.tasks.generative.features import FeatureExtractor  # noqa: E402

GROUPS = ["families", "compile", "torchrun", "tests", "results"]
# One model or more per family, at sizes that keep a step short; batch sizes per family.
FAMILY_MODELS = {
    "resnet18": (64, 8),
    "faster_rcnn_resnet18_fpn": (256, 2),
    "mask_rcnn_resnet18_fpn": (256, 2),
    "fast_rcnn_resnet18_fpn": (256, 2),
    "fcn8s_resnet18": (128, 4),
    "siamfc_alexnet": (255, 4),
    "sint_resnet18": (255, 2),
    "dcgan": (32, 8),
    "vae_conv": (32, 8),
}
STATUS = ("PASS", "FAIL", "SKIP")


class Skip(Exception):
    """A check that cannot run here; the message says why."""


# ---- reporting -------------------------------------------------------------------------------------------------
class Report:
    def __init__(self):
        self.rows: list[dict] = []

    def run(self, name: str, fn) -> dict:
        start = time.perf_counter()
        try:
            detail = fn() or ""
            status = "PASS"
        except Skip as e:
            status, detail = "SKIP", str(e)
        except Exception as e:  # noqa: BLE001 (every failure is reported and the run goes on)
            status, detail = "FAIL", f"{type(e).__name__}: {e}"
            if os.environ.get("GPU_SMOKE_TRACEBACKS"):
                traceback.print_exc()
        row = {"check": name, "status": status, "seconds": round(time.perf_counter() - start, 2), "detail": detail}
        self.rows.append(row)
        print(f"{status}  {name}  ({row['seconds']:.1f} s)  {detail}", flush=True)
        return row

    def table(self) -> str:
        width = max([len(r["check"]) for r in self.rows] + [5])
        lines = [f"{'check':{width}s}  status  seconds  detail", "-" * (width + 40)]
        for r in self.rows:
            detail = r["detail"] if len(r["detail"]) <= 100 else r["detail"][:97] + "..."
            lines.append(f"{r['check']:{width}s}  {r['status']:6s}  {r['seconds']:7.1f}  {detail}")
        counts = {s: sum(r["status"] == s for r in self.rows) for s in STATUS}
        lines.append(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
        return "\n".join(lines)


def missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def weights_file(model: str, tag: str = "shapes") -> Path:
    return ROOT / "weights" / f"{model}.{tag}.safetensors"


# ---- families and compile ---------------------------------------------------------------------------------------
def random_fid_extractor():
    """A FID feature extractor on random weights (ResNet-18 body): the evaluation path runs without weights/."""
    class RandomResNetFeatures(FeatureExtractor):
        name, dim = "resnet18 random weights (smoke test only)", 512

        def __init__(self):
            super().__init__((64, 64))
            net = torchvision.models.resnet18(weights=None)
            net.fc = torch.nn.Identity()
            self.model = net.eval().requires_grad_(False)

        def _features(self, images):
            return self.model(images)

    return RandomResNetFeatures()


def family_check(model_name: str, precision: str, device: torch.device, compile_model: bool = False):
    size, batch_size = FAMILY_MODELS[model_name]
    entry = get_entry(model_name)

    def check():
        if entry.task == "detection" and missing("pycocotools"):
            raise Skip("detection needs pycocotools (not installed)")
        if device.type == "cpu" and precision == "fp16" and entry.task == "detection":
            raise Skip("fp16 autocast of torchvision's detection ops is CUDA-only")
        args = Namespace(model_kwargs={}, weights=None, num_classes=None, device=str(device), precision=precision,
                         channels_last=True, compile=compile_model)
        cfg = bench.benchmark_config(model_name, size, args)
        task = task_for(cfg)
        if entry.capabilities.generative_kind == "gan" and not weights_file("resnet18").is_file():
            cfg.eval.fid_features = random_fid_extractor()  # the default extractor's file is in weights/
        torch.manual_seed(0)
        model = task.build_model(None).to(device).to(memory_format=torch.channels_last)
        forward_model = torch.compile(model) if compile_model else model
        ema = ModelEma(model, 0.999)
        batch = task.synthetic_batch(batch_size, size, device, train=True)
        batch = task.to_device(batch, device, True)
        step = bench.training_step(task, model, forward_model, batch, device)
        syncs = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            debug = torch.cuda.get_sync_debug_mode() if device.type == "cuda" else None
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
                ema.update_parameters(model)
            finally:
                if device.type == "cuda":
                    torch.cuda.set_sync_debug_mode(debug)
            syncs = sum("synchroniz" in str(w.message) for w in caught)
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise RuntimeError(f"non-finite parameters after one step: {bad[:3]}")
        if not all(torch.isfinite(t).all() for t in ema.module.state_dict().values() if t.is_floating_point()):
            raise RuntimeError("non-finite EMA weights")
        # evaluation, as evaluate.py runs it (the EMA's weights)
        eval_batch = task.to_device(task.synthetic_batch(batch_size, size, device, train=False), device, True)
        ema.module.eval()
        with torch.no_grad(), autocast_context(device, cfg.train.amp):
            outputs = task.eval_outputs(ema.module, eval_batch)
        detail = f"train+eval ok, {syncs} host-device sync(s) in the training step"
        if entry.task == "detection":
            dtypes = {str(o["boxes"].dtype) for o in outputs}
            if dtypes != {"torch.float32"}:
                raise RuntimeError(f"detection boxes under {precision} are {dtypes}, expected float32")
            detail += ", boxes float32"
        if device.type == "cuda":
            detail += f", peak {torch.cuda.max_memory_allocated(device) / 2 ** 20:.0f} MB"
            torch.cuda.reset_peak_memory_stats(device)
        return detail

    return check


# ---- torchrun ---------------------------------------------------------------------------------------------------
def torchrun_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", *args]


def torchrun_train_check(device: torch.device, workdir: Path, timeout: float):
    def check():
        overrides = write_family_data("classification", workdir / "data", 64)
        amp = "bf16" if device.type == "cuda" else "none"
        run = workdir / "torchrun_run"
        cmd = torchrun_command(str(ROOT / "train.py"), str(ROOT / "configs/classification/resnet18_shapes.yaml"),
                               "--run-dir", str(run), "--no-progress", *overrides, "train.epochs=1",
                               "train.max_steps_per_epoch=3", "data.batch_size=8", "data.input_size=32",
                               f"data.num_workers={2 if device.type == 'cuda' else 0}", "data.val_split=null",
                               f"train.device={device.type}", f"train.amp={amp}", "train.ema.enabled=true",
                               f"train.channels_last={str(device.type == 'cuda').lower()}")
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            raise RuntimeError(f"exit code {done.returncode}: {last_line(done.stderr)}")
        if not (run / "last.pt").is_file():
            raise RuntimeError(f"no checkpoint written in {run}")
        return f"train.py under torchrun ({amp}, EMA), checkpoint written"

    return check


def collectives_check(device: torch.device, timeout: float):
    def check():
        cmd = torchrun_command(str(Path(__file__).resolve()), "--collectives-child", "--device", str(device))
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if done.returncode != 0:
            raise RuntimeError(f"exit code {done.returncode}: {last_line(done.stderr)}")
        return last_line(done.stdout)

    return check


def collectives_child(device_spec: str) -> None:
    """Run by torchrun (1 process): the process group train.py uses, and the collectives of the trainer."""
    info, device = distributed.init_from_env(device_spec)
    if not dist.is_initialized():  # train.py stays out of torch.distributed at world size 1; the check does not
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, **({"device_id": device} if device.type == "cuda" else {}))
    backend = dist.get_backend()
    value = torch.arange(4, dtype=torch.float32, device=device)
    dist.all_reduce(value)
    buffers = [torch.ones(3, device=device), torch.zeros(2, dtype=torch.int64, device=device)]
    distributed.broadcast_tensors(buffers, src=0)
    group = distributed.control_group()
    flags = torch.tensor([0, 1], dtype=torch.int64)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group, async_op=True).wait()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    ok = value.tolist() == [0.0, 1.0, 2.0, 3.0] and flags.tolist() == [0, 1]
    print(f"{backend} process group on {device}: all_reduce, broadcast_tensors, gloo control group "
          f"{'ok' if ok else 'WRONG'}", flush=True)
    dist.destroy_process_group()
    sys.exit(0 if ok else 1)


# ---- tests ------------------------------------------------------------------------------------------------------
CUDA_MARK = re.compile(r"@pytest\.mark\.skipif\(\s*not torch\.cuda\.is_available\(\)")


def cuda_only_tests() -> list[str]:
    """Node ids of the test functions decorated with skipif(not torch.cuda.is_available())."""
    ids = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if CUDA_MARK.search(line):
                for follow in lines[i + 1:i + 6]:
                    m = re.match(r"\s*def (test_\w+)", follow)
                    if m:
                        ids.append(f"tests/{path.name}::{m.group(1)}")
                        break
    return ids


def tests_check(device: torch.device, timeout: float):
    def check():
        if missing("pytest"):
            raise Skip("pytest is not installed")
        ids = cuda_only_tests()
        if not ids:
            raise Skip("no CUDA-only tests found in tests/")
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *ids],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        summary = last_line(done.stdout)
        if done.returncode != 0:
            raise RuntimeError(f"pytest exit code {done.returncode}: {summary}")
        if device.type != "cuda":
            raise Skip(f"{len(ids)} CUDA-only tests, skipped without a GPU ({summary})")
        return f"{len(ids)} CUDA-only tests: {summary}"

    return check


# ---- results ----------------------------------------------------------------------------------------------------
def gpu_commands(results: Path) -> list[str]:
    """The commands of RESULTS.md's "GPU goals" section (backticked `python benchmarks/...` with --device cuda),
    plus the compiled variant that its ResNet-50 row asks for."""
    text = results.read_text()
    start = text.find("## GPU goals")
    if start < 0:
        return []
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    commands = []
    for cmd in re.findall(r"`(python benchmarks/[^`]+)`", section):
        if "--device cuda" in cmd and cmd not in commands:
            commands.append(cmd)
            if "add `--compile`" in section and "--model resnet50 " in cmd and "--compile" not in cmd:
                commands.append(cmd + " --compile")
    return commands


def results_check(cmd: str, device: torch.device, timeout: float, outputs: dict):
    def check():
        argv = shlex.split(cmd)
        if "--weights" in argv:
            tag = argv[argv.index("--weights") + 1]
            script = Path(argv[1]).stem
            if tag == "shapes" and script == "tracking_speed" and not weights_file("siamfc_alexnet").is_file():
                raise Skip(f"needs {weights_file('siamfc_alexnet').relative_to(ROOT)} (weights/ not here)")
        argv[0] = sys.executable
        if device.type != "cuda":  # a dry run: do the arguments parse? (in this process: no second torch import)
            arguments_parse(argv[1:])
            raise Skip("needs CUDA; arguments parse")
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        outputs[cmd] = {"returncode": done.returncode, "stdout": done.stdout[-6000:], "stderr": done.stderr[-3000:]}
        if done.returncode != 0:
            raise RuntimeError(f"exit code {done.returncode}: {last_line(done.stderr) or last_line(done.stdout)}")
        return last_line(done.stdout)

    return check


class _Parsed(Exception):
    """Raised by the patched ArgumentParser.parse_args once a script's arguments have parsed."""


def arguments_parse(argv: list[str]) -> None:
    """Parse the arguments of script `argv[0]` as its own argparse parser does, without running the script:
    it runs as __main__ (in this process: no second torch import) with ArgumentParser.parse_args patched to
    stop right after a successful parse. An unknown option or a bad value fails as on the command line."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    saved = sys.argv
    sys.argv = [str(ROOT / argv[0]), *argv[1:]]
    err = io.StringIO()
    argparse.ArgumentParser.parse_args = parse_and_stop
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            runpy.run_path(str(ROOT / argv[0]), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as e:
        raise RuntimeError(f"arguments rejected (exit code {e.code}): {last_line(err.getvalue())}") from None
    finally:
        argparse.ArgumentParser.parse_args = original
        sys.argv = saved
    raise RuntimeError(f"{argv[0]} finished without parsing arguments with argparse")


def last_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else ""


# ---- main -------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a dry run")
    p.add_argument("--only", nargs="+", choices=GROUPS, help="run only these groups of checks")
    p.add_argument("--skip", nargs="+", choices=GROUPS, default=[], help="leave these groups out")
    p.add_argument("--precisions", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32", "bf16", "fp16"])
    p.add_argument("--models", nargs="+", choices=list(FAMILY_MODELS), default=list(FAMILY_MODELS),
                   help="the family models to check (default: all)")
    p.add_argument("--timeout", type=float, default=300, help="seconds for each subprocess (torchrun, pytest)")
    p.add_argument("--results-timeout", type=float, default=240, help="seconds for each RESULTS.md command")
    p.add_argument("--results-budget", type=float, default=330,
                   help="seconds for all RESULTS.md commands together; later ones are skipped once it is spent")
    p.add_argument("--json", type=Path, help="write every check (and the RESULTS.md commands' output) here")
    p.add_argument("--collectives-child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.collectives_child:
        collectives_child(args.device)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda but CUDA is not available here; use --device cpu for a dry run", file=sys.stderr)
        return 2
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    groups = [g for g in (args.only or GROUPS) if g not in args.skip]
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run: GPU-only checks skip)"
    print(f"gpu_smoke: {what}, torch {torch.__version__}, groups {' '.join(groups)}", flush=True)
    report, outputs = Report(), {}
    with tempfile.TemporaryDirectory(prefix="gpu_smoke_") as tmp:
        workdir = Path(tmp)
        if "families" in groups:
            for model_name in args.models:
                for precision in args.precisions:
                    report.run(f"families/{model_name}/{precision}", family_check(model_name, precision, device))
        if "compile" in groups:
            report.run("compile/resnet18/bf16", family_check("resnet18", "bf16", device, compile_model=True))
        if "torchrun" in groups:
            report.run("torchrun/train.py", torchrun_train_check(device, workdir, args.timeout))
            report.run("torchrun/collectives", collectives_check(device, args.timeout))
        if "tests" in groups:
            report.run("tests/cuda-only", tests_check(device, args.timeout))
        if "results" in groups:
            start = time.perf_counter()
            for i, cmd in enumerate(gpu_commands(ROOT / "benchmarks" / "RESULTS.md"), 1):
                left = args.results_budget - (time.perf_counter() - start)
                if device.type == "cuda" and left < 10:
                    report.run(f"results/{i}", lambda cmd=cmd: (_ for _ in ()).throw(
                        Skip(f"--results-budget spent; not run: {cmd}")))
                    continue
                timeout = min(args.results_timeout, max(left, 10))
                print(f"results/{i}: {cmd}", flush=True)
                report.run(f"results/{i}", results_check(cmd, device, timeout, outputs))
    print()
    print(report.table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "what": what, "torch": torch.__version__,
                                         "checks": report.rows, "results_outputs": outputs}, indent=2))
    return 1 if any(r["status"] == "FAIL" for r in report.rows) else 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
