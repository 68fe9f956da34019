"""Evaluate a trained model and write metrics.json and a self-contained report.html.

    python evaluate.py runs/resnet18_shapes --report runs/resnet18_shapes/report
    python evaluate.py weights/resnet18.shapes.safetensors --data data/shapes --split test
    python evaluate.py --compare runs/a runs/b runs/c
    torchrun --nproc_per_node=2 evaluate.py runs/resnet18_shapes   # split the data, reduce the metrics

The target is a run directory (its best.pt, else last.pt), a trainer checkpoint, or a weights file with
its model card. Metrics and report sections come from the config's task.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import torch

from visionzoo.cli.configs import find_config
from visionzoo.config import ConfigError, apply_overrides, deep_merge, load_yaml_with_bases, to_dict, validate
from visionzoo.datasets.common import ImageReadError
from visionzoo.engine import distributed
from visionzoo.engine.checkpoint import CheckpointError, DiskFullError
from visionzoo.engine.data import error_text, release_workers
from visionzoo.engine.evaluator import evaluate, make_eval_loader
from visionzoo.engine.run_dir import read_log
from visionzoo.engine.targets import (
    apply_eval_options,
    build_target_model,
    latest_metrics,
    load_target,
    pick_split,
)
from visionzoo.profile import count_parameters, gflops
from visionzoo.reports.compare import compare_runs, format_table
from visionzoo.retrieval.runner import run_retrieval
from visionzoo.tasks import task_for


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="run directory, checkpoint (.pt) or weights (.safetensors)")
    p.add_argument("--data", help="dataset root to evaluate on (default: the config's data.root)")
    p.add_argument("--split", help="split to evaluate (default: the config's test split if present, else val)")
    p.add_argument("--report", metavar="OUT_DIR", help="write metrics.json and report.html into OUT_DIR")
    p.add_argument("--batch-size", type=int, help="evaluation batch size")
    p.add_argument("--workers", type=int, help="data-loading workers")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--compare", nargs="+", metavar="RUN", help="print one table comparing these runs")
    p.add_argument("--eval-config", metavar="YAML",
                   help="take the eval section from this config (e.g. SiamFC's 5-scale variant); results are "
                        "saved as metrics_<split>_<config stem>.json")
    p.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE for this evaluation, e.g. eval.crf=false")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--fallback-best", action="store_true",
                   help="if the checkpoint is corrupt (fails its checksum), evaluate its run's best.pt instead")
    p.add_argument("--retrieval", action="store_true", help="image retrieval instead: search the --gallery-split "
                   "for each image of --split by feature similarity; recall@k, precision@k, mAP (same class = relevant)")
    p.add_argument("--gallery-split", help="retrieval: the split indexed as gallery (default: the train split)")
    p.add_argument("--layer", help="retrieval: feature layer, a torchvision feature-extraction node name "
                                   "(default: the pooled penultimate features)")
    p.add_argument("--pool", choices=["avg", "max", "gem"], help="retrieval: pooling of the layer (default: avg)")
    return p.parse_intermixed_args(argv)  # overrides may follow options


def load_target_or_best(args):
    """The target; with --fallback-best, its run's best.pt when the target checkpoint is corrupt."""
    try:
        return load_target(args.target)
    except CheckpointError as e:
        path = Path(args.target)
        best = path.parent / "best.pt"
        if path.is_dir() or path.name == "best.pt" or not best.is_file():
            raise
        if not getattr(args, "fallback_best", False):
            raise CheckpointError(f"{e}. Pass --fallback-best to evaluate {best} instead") from None
        print(f"warning: {e}; evaluating {best} instead (--fallback-best)", file=sys.stderr)
        return load_target(best)


def run_evaluation(args) -> dict:
    target = load_target_or_best(args)
    cfg = target.cfg
    if args.eval_config or args.overrides:
        data = to_dict(cfg)
        if args.eval_config:
            data["eval"] = deep_merge(data.get("eval") or {}, load_yaml_with_bases(find_config(args.eval_config)).get("eval") or {})
        cfg = validate(apply_overrides(data, list(args.overrides)), where=args.eval_config or "overrides")
    task = task_for(cfg)
    apply_eval_options(cfg, data=args.data, batch_size=args.batch_size, workers=args.workers, device=args.device)
    info, device = distributed.init_from_env(cfg.train.device)
    split = pick_split(task, args.split)
    class_names = target.meta.get("class_names")
    dataset = task.build_dataset(split, train=False, class_names=class_names)
    model = build_target_model(target, cfg).to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_eval_loader(task, dataset, device, info.rank, info.world_size)
    start = time.time()
    metrics, accumulator, skipped = evaluate(task, model, loader, device, desc=f"evaluate {split}",
                                             show_progress=not args.no_progress and info.is_main)
    seconds = time.time() - start
    if not info.is_main:  # every rank holds the reduced metrics; rank 0 writes them
        return {}
    input_size = target.meta.get("input_size") or [3, cfg.data.input_size, cfg.data.input_size]
    summary = {
        "name": cfg.model.name, "task": cfg.task, "parameters": count_parameters(model),
        "gflops": gflops(model, input_size), "input_size": input_size, "weights": str(target.weights),
    }
    result = {
        "target": str(args.target), "command": _invocation() + " " + " ".join(getattr(args, "argv", [])),
        "split": split, "data_root": cfg.data.root, "num_samples": len(dataset), "processes": info.world_size,
        "skipped_files": [s.path for s in skipped], "seconds": round(seconds, 2),
        "images_per_s": round(len(dataset) / max(seconds, 1e-9), 2), "model": summary,
        "scalars": task.scalar_metrics(metrics), "metrics": metrics,
    }
    print(json.dumps({"split": split, **result["scalars"]}))
    for message in metrics.get("warnings") or []:
        print(f"warning: {message}", file=sys.stderr)
    if target.run_dir is not None:
        variant = f"_{Path(args.eval_config).stem}" if args.eval_config else ""
        (target.run_dir / f"metrics_{split}{variant}.json").write_text(json.dumps(result, indent=2))
    if args.report:
        out = Path(args.report)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        run_info = None
        log_records = []
        if target.run_dir is not None:
            log_records = read_log(target.run_dir / "log.jsonl")
            run_file = target.run_dir / "run.json"
            run_info = json.loads(run_file.read_text()) if run_file.is_file() else {}
            run_info.pop("history", None)
        run_info = {**(run_info or {}), "config": to_dict(cfg), "evaluated": {"split": split, "root": cfg.data.root},
                    "run_dir": str(target.run_dir) if target.run_dir is not None else None}
        report = task.write_report(
            out / "report.html", metrics=metrics, dataset=dataset, accumulator=accumulator, model=model.cpu(),
            model_summary=summary, log_records=log_records, run_info=run_info,
            title=f"{cfg.model.name} on {Path(cfg.data.root).name if cfg.data.root else cfg.data.dataset} ({split})")
        print(f"report: {report}")
    return result


def _invocation() -> str:
    """How this evaluation was started, for the command recorded in the metrics (and model cards)."""
    return "visionzoo evaluate" if sys.argv and sys.argv[0].startswith("visionzoo") else "python evaluate.py"


def compare(runs: list[str]) -> None:
    entries = []
    for run in runs:
        run_dir = Path(run)
        metrics = latest_metrics(run_dir) if run_dir.is_dir() else None
        if metrics is None:
            raise FileNotFoundError(f"{run}: no metrics_<split>.json yet; run `python evaluate.py {run}` first")
        m = metrics["model"]
        entries.append({"name": run_dir.name, "metrics": metrics["scalars"],
                        "info": {"model": m["name"], "params": m["parameters"], "split": metrics["split"]}})
    header, rows = compare_runs(entries)
    print(format_table(header, rows))


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded in metrics json: how it was evaluated
    try:
        if args.compare:
            compare(([args.target] if args.target else []) + args.compare)
            return 0
        if not args.target:
            print("error: give a run directory or weights file to evaluate (or --compare RUN ...)", file=sys.stderr)
            return 2
        if args.retrieval:
            run_retrieval(args)
        else:
            run_evaluation(args)
    except (ConfigError, FileNotFoundError, ValueError, ImageReadError, DiskFullError) as e:
        print(f"error: {error_text(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped by SIGINT: the evaluation did not finish", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        distributed.shutdown()
        release_workers()  # the process is leaving: its exit may stop the workers, which is no failure
    return 0


if __name__ == "__main__":
    sys.exit(main())
