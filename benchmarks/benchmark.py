"""Training and inference speed of any registered model on synthetic data, in the spirit of timm's
benchmark.py: images/s and peak memory at a given batch size, input size and precision.

    python benchmarks/benchmark.py --model resnet50 --batch-size 256 --precision bf16 --channels-last
    python benchmarks/benchmark.py --model "resnet*" --input-size 224 --batch-size 8 --csv resnets.csv
    python benchmarks/benchmark.py --model mask_rcnn_resnet50_fpn --input-size 800 --batch-size 1 --mode infer

What is timed is the task's own code, so the figures are those of train.py and evaluate.py: a config for the
model is built with visionzoo.config.validate; the batch is task.synthetic_batch (random data shaped like the
task's collated batches, already on the device); a training step is task.training_losses for every phase of
task.update_phases (a GAN's discriminator and generator updates, each phase on its n-th steps), backward and
optimizer step, through the trainer's own Updater (SGD; fp16 with a GradScaler); inference is
task.eval_outputs under no_grad (a tracker follows one sequence of --batch-size frames, frame by frame).
Precision is torch.autocast (fp32 | bf16 | fp16). Input sizes: --input-size sets the side of the square
images (default: each model's registered input size); detectors get min_size = max_size = that side so they
process it unresized, generative models are built for it (image_size), tracking crops stay at 127 / 255 px
in training and the side is the frame size in inference. Weights are random unless --weights names some;
speed does not depend on them, except where outputs are filtered by score: a detector on noise images keeps
only a few detections (3 to 9 per image for the R18 variants at random init), so its per-detection work (mask
head, mask paste-back) is that of a sparse image.

Every model runs in a fresh child process (so models never share a memory high-water mark, allocator state or
compiled graphs); inference runs before training in that process. A model that fails is reported in its
rows' error column and the run goes on; the exit code is 0 when every row succeeded, 2 otherwise.

CSV columns (--csv; one row per model and mode):
  model, task, mode (train | infer), device, precision, channels_last, compile, batch_size, input_size, steps
  images_per_s   images per second: images per step / mean step time (tracking inference: frames per second)
  ms_per_step    mean wall time of a step over --steps timed steps, after --warmup untimed ones, the device
                 synchronised around each step
  peak_mem_mb    CUDA: torch.cuda.max_memory_allocated over the mode's steps (live tensors only; the caching
                 allocator reserves more). CPU: the child process's resident-set high-water mark (VmHWM in
                 /proc/self/status, reset through /proc/self/clear_refs before each mode): the whole process,
                 i.e. interpreter, torch, the model and memory the allocator kept from earlier steps
  peak_mem_kind  cuda_max_allocated | cpu_rss_hwm | cpu_rss_hwm_since_start (the mark could not be reset:
                 the train row then includes the inference peak)
  params_m       parameters in millions
  error          empty, or why the model failed ("ExceptionType: message")
"""
from __future__ import annotations

import argparse
import csv
import inspect
import json
import platform
import resource
import subprocess
import sys
import traceback
from pathlib import Path

import torch
import torchvision
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._throughput import step_seconds  # noqa: E402
from visionzoo.config import validate  # noqa: E402
from visionzoo.engine.evaluator import autocast_context  # noqa: E402
from visionzoo.engine.update import Updater  # noqa: E402
from visionzoo.registry import get_entry, list_models  # noqa: E402
from visionzoo.tasks import task_for  # noqa: E402

COLUMNS = ["model", "task", "mode", "device", "precision", "channels_last", "compile", "batch_size", "input_size",
           "steps", "images_per_s", "ms_per_step", "peak_mem_mb", "peak_mem_kind", "params_m", "error"]
AMP = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}
RESULT_MARK = "@@benchmark-result "  # the child's one line of JSON on stdout


# ---- model selection and config ----------------------------------------------------------------------------
def select_models(patterns: list[str], task: str | None) -> list[str]:
    """Registered names for names or fnmatch wildcards, in the order given (duplicates dropped)."""
    names: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            found = list_models(pattern, task=task)
            if not found:
                raise ValueError(f"--model {pattern!r} matches no registered model"
                                 + (f" of task {task!r}" if task else "") + "; see visionzoo.list_models()")
        else:
            entry = get_entry(pattern)  # an unknown name: ValueError with the closest names
            if task and entry.task != task:
                raise ValueError(f"--model {pattern!r} is a {entry.task} model, not {task}")
            found = [pattern]
        names += [n for n in found if n not in names]
    return names


def benchmark_config(name: str, input_size: int, args):
    """The validated config the model is benchmarked under (optimizers per update phase included)."""
    entry = get_entry(name)
    builder_args = inspect.signature(entry.builder).parameters
    kwargs = {}
    if "image_size" in builder_args:  # generative models are built for one image size
        kwargs["image_size"] = input_size
    if "min_size" in builder_args and "max_size" in builder_args:  # detectors resize inputs to min..max size
        kwargs.update(min_size=input_size, max_size=input_size)
    kwargs.update(args.model_kwargs)
    data: dict = {"input_size": input_size}
    if entry.default_input_size[0] == 1:  # one-channel models (ae_mlp, vae_mlp) take grayscale data
        data["params"] = {"grayscale": True}
    optim = {"name": "sgd", "lr": 1e-4, "momentum": 0.9, "weight_decay": 0.0}
    raw = {"task": entry.task,
           "model": {"name": name, "weights": args.weights, "num_classes": args.num_classes, "kwargs": kwargs},
           "data": data, "optim": optim,
           "train": {"device": args.device, "amp": AMP[args.precision], "channels_last": args.channels_last,
                     "compile": args.compile}}
    cfg = validate(raw, where=f"benchmark config of {name}")
    # Phases that update with their own optimizer (a GAN's generator and discriminator) get one over the
    # sub-module of that name, as configs/generative/*gan*.yaml define them.
    named = sorted({phase.optimizer for phase in task_for(cfg).update_phases()} - {"main"})
    if named:
        raw["optimizers"] = {n: {**optim, "params": n} for n in named}
        cfg = validate(raw, where=f"benchmark config of {name}")
    return cfg


# ---- measuring one model (in the child process) ------------------------------------------------------------
def reset_peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda_max_allocated"
    try:  # Linux: "5" resets the process's resident-set high-water mark to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        return "cpu_rss_hwm"
    except OSError:
        return "cpu_rss_hwm_since_start"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB elsewhere


def images_in(task, batch) -> int:
    # Tracking evaluation items are whole sequences, tracked frame by frame: count their frames.
    if isinstance(batch, list) and batch and hasattr(batch[0], "load_frame"):
        return sum(len(seq) for seq in batch)
    return task.batch_size_of(batch)


def measure(name: str, args) -> list[dict]:
    """Rows for `name` (one per mode), measured in this process; a failing mode gets its error in its row."""
    entry = get_entry(name)
    size = args.input_size or entry.default_input_size[-1]
    device = torch.device(args.device)
    modes = ["infer", "train"] if args.mode == "both" else [args.mode]
    base = {"model": name, "task": entry.task, "device": str(device), "precision": args.precision,
            "channels_last": args.channels_last, "compile": args.compile, "batch_size": args.batch_size,
            "input_size": size, "steps": args.steps}
    try:
        cfg = benchmark_config(name, size, args)
        task = task_for(cfg)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark is not False  # synthetic: one input shape
        torch.manual_seed(0)
        model = task.build_model(None).to(device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        forward_model = torch.compile(model) if cfg.train.compile else model
    except Exception as e:  # noqa: BLE001 (any failure is reported in the row, and the run goes on)
        return [{**base, "mode": mode, "error": f"{type(e).__name__}: {e}"} for mode in modes]
    params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)

    rows = []
    for mode in modes:
        row = {**base, "mode": mode, "params_m": params_m}
        try:
            batch = task.synthetic_batch(args.batch_size, size, device, train=mode == "train")
            batch = task.to_device(batch, device, cfg.train.channels_last)
            if mode == "train":
                step = training_step(task, model, forward_model, batch, device)
            else:
                model.eval()

                @torch.no_grad()
                def step(batch=batch):
                    with autocast_context(device, cfg.train.amp):
                        task.eval_outputs(forward_model, batch)
            row["peak_mem_kind"] = reset_peak_memory(device)
            times = step_seconds(step, args.steps, device, warmup=args.warmup)
            seconds = sum(times) / len(times)
            row.update(images_per_s=round(images_in(task, batch) / seconds, 3), ms_per_step=round(seconds * 1e3, 3),
                       peak_mem_mb=round(peak_memory_mb(device), 1))
        except Exception as e:  # noqa: BLE001
            if args.verbose:
                traceback.print_exc()
            row["error"] = f"{type(e).__name__}: {e}"
        rows.append(row)
        batch = step = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def training_step(task, model, forward_model, batch, device):
    """One optimisation step as the trainer takes it (engine/update.py's Updater, without the trainer's logging
    and bookkeeping, and without an lr schedule): every update phase due at this step, each with its optimizer;
    fp16 through a GradScaler."""
    model.train()
    updater = Updater(task, model, device)
    updater.forward_model = forward_model
    counter = {"step": 0}

    def step():
        updater.update(batch, counter["step"])
        counter["step"] += 1

    return step


# ---- the parent: one child process per model --------------------------------------------------------------
def child_command(name: str, args) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--model", name, "--mode", args.mode,
           "--batch-size", str(args.batch_size), "--precision", args.precision, "--device", args.device,
           "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.input_size:
        cmd += ["--input-size", str(args.input_size)]
    if args.num_classes:
        cmd += ["--num-classes", str(args.num_classes)]
    if args.weights:
        cmd += ["--weights", args.weights]
    if args.model_kwargs:
        cmd += ["--model-kwargs", *(f"{k}={json.dumps(v)}" for k, v in args.model_kwargs.items())]
    for flag in ("channels_last", "compile", "verbose"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    return cmd


def run_child(name: str, args) -> list[dict]:
    modes = ["infer", "train"] if args.mode == "both" else [args.mode]
    entry = get_entry(name)
    failed = {"model": name, "task": entry.task, "device": args.device, "precision": args.precision,
              "channels_last": args.channels_last, "compile": args.compile, "batch_size": args.batch_size,
              "input_size": args.input_size or entry.default_input_size[-1], "steps": args.steps}
    try:
        done = subprocess.run(child_command(name, args), capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return [{**failed, "mode": m, "error": f"TimeoutExpired: no result after --timeout {args.timeout} s"}
                for m in modes]
    if args.verbose and done.stderr:
        sys.stderr.write(done.stderr)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    lines = [x for x in done.stderr.strip().splitlines() if x.strip()]
    why = lines[-1].strip() if lines else f"the child process exited with code {done.returncode} and no output"
    return [{**failed, "mode": m, "error": f"child process failed (exit code {done.returncode}): {why}"}
            for m in modes]


def describe_machine(device: torch.device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = platform.processor() or platform.machine()
        cpuinfo = Path("/proc/cpuinfo")
        if cpuinfo.is_file():
            what = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                         if line.startswith("model name")), what)
    return (f"device {device} ({what}), torch {torch.__version__}, torchvision {torchvision.__version__}, "
            f"{torch.get_num_threads()} CPU threads")


def format_row(row: dict) -> str:
    head = f"{row['model']:26s} {row['mode']:5s}"
    if row.get("error"):
        return f"{head}  FAILED  {row['error']}"
    return (f"{head} {row['images_per_s']:10.2f} img/s {row['ms_per_step']:10.1f} ms/step  peak "
            f"{row['peak_mem_mb']:8.1f} MB ({row['peak_mem_kind']})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", required=True, help="model names or fnmatch wildcards (quote them)")
    p.add_argument("--task", help="keep only models of this task (with wildcards)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--input-size", type=int, help="square image side (default: each model's registered size)")
    p.add_argument("--num-classes", type=int, help="class count (default: each model's registered count)")
    p.add_argument("--weights", help="weights to load (a tag such as shapes, torchvision:COCO_V1, or a file; "
                                     "default: random init)")
    p.add_argument("--model-kwargs", nargs="+", default=[], metavar="KEY=VALUE",
                   help="builder keywords for every model, values in YAML (fpn_channels=128 representation_size=512)")
    p.add_argument("--precision", choices=list(AMP), default="fp32", help="torch.autocast precision")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mode", choices=["train", "infer", "both"], default="both")
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    p.add_argument("--csv", type=Path, help="write the rows to this CSV file")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per model before it is reported failed")
    p.add_argument("--verbose", action="store_true", help="show the child processes' stderr and tracebacks")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key in ("batch_size", "steps"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.input_size is not None and args.input_size < 8:
        p.error(f"--input-size must be >= 8, got {args.input_size}")
    model_kwargs = {}
    for item in args.model_kwargs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--model-kwargs {item!r}: expected KEY=VALUE")
        model_kwargs[key] = yaml.safe_load(value)
    args.model_kwargs = model_kwargs
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(RESULT_MARK + json.dumps(measure(args.model[0], args)), flush=True)
        return 0
    try:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
        names = select_models(args.model, args.task)
    except (ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(describe_machine(device))
    print(f"{len(names)} model(s), batch {args.batch_size}, {args.precision}"
          f"{', channels_last' if args.channels_last else ''}{', compiled' if args.compile else ''}, "
          f"{args.warmup} warm-up + {args.steps} timed steps per mode", flush=True)
    out = None
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        out = args.csv.open("w", newline="")
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
    failures = 0
    try:
        for name in names:
            for row in run_child(name, args):
                row = {k: row.get(k, "") for k in COLUMNS}
                failures += bool(row["error"])
                print(format_row(row), flush=True)
                if out:
                    writer.writerow(row)
                    out.flush()  # a long run keeps what it measured so far
    finally:
        if out:
            out.close()
    if args.csv:
        print(f"wrote {args.csv}")
    if failures:
        print(f"{failures} row(s) failed: see the error column", file=sys.stderr)
    return 2 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
