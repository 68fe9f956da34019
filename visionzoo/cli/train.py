"""Train any visionzoo model from a YAML config (`visionzoo train`, or `python train.py` in a checkout).

    visionzoo train configs/classification/resnet18_shapes.yaml                 # train
    visionzoo train classification/resnet18_shapes                              # a packaged config by name
    python train.py configs/classification/resnet18_shapes.yaml                 # the same, in a checkout
    python train.py configs/classification/resnet18_shapes.yaml train.epochs=3  # with overrides
    python train.py --resume runs/resnet18_shapes                               # continue a run
    torchrun --nproc_per_node=4 train.py configs/classification/resnet18_shapes.yaml   # 4 processes (DDP)

Reading order: parse arguments -> join the torchrun process group, if any -> load and validate the config
-> pick the run directory (rank 0 picks, the others follow) -> build the Trainer (the config's task and the
default hooks: EMA, best checkpoint, signals, layer statistics; visionzoo/training.py) -> fit -> print where
things went.
Exit codes: 0 done, 1 bad input (or a full disk, or a run directory another process holds), 3 non-finite
loss, 128+N stopped by signal N (checkpoint written after the first signal; a second one stops at once).
"""
from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
from pathlib import Path

from visionzoo.cli.configs import explain_missing_path, find_config
from visionzoo.config import ConfigError, apply_overrides, load_config, validate
from visionzoo.datasets.common import ImageReadError
from visionzoo.engine import distributed
from visionzoo.engine.checkpoint import DiskFullError, load_checkpoint, remove_stale_temp_files
from visionzoo.engine.data import error_text, release_workers
from visionzoo.engine.hooks import exit_now_on_signal
from visionzoo.engine.run_dir import RunLock, RunLocked
from visionzoo.engine.trainer import NonFiniteLoss, TrainingInterrupted
from visionzoo.training import build_trainer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config file, or a packaged config's name such as "
                                             "classification/resnet18_shapes (optional with --resume)")
    p.add_argument("overrides", nargs="*", help="config overrides KEY=VALUE, e.g. train.epochs=5 optim.lr=0.01")
    p.add_argument("--resume", metavar="RUN_DIR_OR_CKPT", help="continue from a run directory (its last.pt) or a checkpoint")
    p.add_argument("--run-dir", help="where to write the run (default: output.dir/output.name, made unique)")
    p.add_argument("--overwrite", action="store_true", help="reuse --run-dir even if it holds an earlier run")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (logs still go to log.jsonl)")
    return p.parse_intermixed_args(argv)


def resolve_config(args):
    if args.config and "=" in args.config:  # `train.py --resume RUN key=value`
        args.overrides.insert(0, args.config)
        args.config = None
    if args.config:
        config_file = find_config(args.config)
        return load_config(config_file, args.overrides), str(config_file)
    if not args.resume:
        raise ConfigError("give a config file, or --resume RUN_DIR to continue a run")
    resume = Path(args.resume)
    config_file = (resume if resume.is_dir() else resume.parent) / "config.yaml"
    if config_file.is_file():
        return load_config(config_file, args.overrides), str(config_file)
    ckpt = load_checkpoint(resume)  # a checkpoint outside its run directory carries its config
    return validate(apply_overrides(ckpt["config"], args.overrides), where=str(resume)), None


def choose_run_dir(args, cfg) -> Path:
    if args.resume:
        resume = Path(args.resume)
        return Path(args.run_dir) if args.run_dir else (resume if resume.is_dir() else resume.parent)
    if args.run_dir:
        run_dir = Path(args.run_dir)
        if (run_dir / "last.pt").exists() and not args.overwrite:
            raise ConfigError(f"{run_dir} already holds a run: pass --resume {run_dir} to continue it, "
                              "--overwrite to replace it, or another --run-dir")
        return run_dir
    base = Path(cfg.output.dir) / cfg.output.name
    run_dir, n = base, 1
    while run_dir.exists():  # never overwrite an earlier run by accident
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def claim_run_dir(args, run_dir: Path) -> RunLock:
    """Take the run directory's lock (refused at once if another process writes it), then clear what an
    earlier, killed process left: temporary checkpoint files, and with --overwrite the earlier run."""
    lock = RunLock(run_dir).acquire()
    if args.overwrite and not args.resume:
        for name in ("log.jsonl", "last.pt", "best.pt", "run.json"):
            (run_dir / name).unlink(missing_ok=True)
    remove_stale_temp_files(run_dir)
    return lock


def agreed_run_dir(args, cfg, is_main: bool, locks: list) -> Path:
    """Rank 0 picks the run directory (it may have to invent a new name) and locks it; every rank uses it."""
    choice = None
    if is_main:
        try:
            run_dir = choose_run_dir(args, cfg)
            locks.append(claim_run_dir(args, run_dir))
            choice = ("ok", str(run_dir))
        except (ConfigError, RunLocked) as e:
            choice = ("error", str(e))
    status, value = distributed.broadcast_object(choice)
    if status == "error":
        raise ConfigError(value)
    return Path(value)


def main(argv=None) -> int:
    args = parse_args(argv)
    info = distributed.env_world()
    say = print if info.is_main else (lambda *a, **k: None)  # one voice under torchrun
    locks: list[RunLock] = []
    cfg = trainer = None
    try:
        cfg, config_path = resolve_config(args)
        info, _ = distributed.init_from_env(cfg.train.device)
        run_dir = agreed_run_dir(args, cfg, info.is_main, locks)
        trainer = build_trainer(cfg, run_dir, resume=args.resume, show_progress=not args.no_progress,
                                config_path=config_path)  # the config's task, with the default hooks
        processes = f", {info.world_size} processes" if info.enabled else ""
        say(f"run directory: {run_dir}  (device {trainer.device}{processes}, {len(trainer.train_set)} training "
            "samples)", flush=True)
        summary = trainer.fit()
    except (ConfigError, FileNotFoundError, ValueError, ImageReadError, DiskFullError) as e:
        message = explain_missing_path(e, cfg) if isinstance(e, FileNotFoundError) else error_text(e)
        print(f"error: {message}" + (f" (rank {info.rank})" if info.enabled else ""), file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        say(str(e), file=sys.stderr)
        return e.exit_code
    except NonFiniteLoss as e:
        say(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as e:  # a second signal during training (StoppedNow), or Ctrl-C before it began
        for sig in (signal.SIGINT, signal.SIGTERM):  # one more ends the process on the spot
            signal.signal(sig, exit_now_on_signal)
        say(str(e) or "stopped by SIGINT before training started", file=sys.stderr)
        return getattr(e, "exit_code", 128 + signal.SIGINT)
    finally:
        # Free the model (DDP's reducer holds the process group) before the group is destroyed: left to the
        # interpreter's exit, gloo's threads were torn down after the peer had gone, and the process aborted.
        trainer = None
        gc.collect()
        distributed.shutdown()
        for lock in locks:
            lock.release()
        release_workers()  # the process is leaving: its exit may stop the workers (SIGTERM), which is no failure
    say(json.dumps(summary))
    evaluate = "visionzoo evaluate" if sys.argv and sys.argv[0].startswith("visionzoo") else "python evaluate.py"
    say(f"done. Evaluate with: {evaluate} {run_dir} --report {run_dir / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
