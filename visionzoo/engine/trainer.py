"""The shared trainer. It knows nothing about any task: datasets, losses and metrics come from the
Task object named by the config; the trainer owns devices, precision, optimisation, schedules, EMA,
logging, checkpoints, resume and signals."""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from visionzoo.config import to_dict
from visionzoo.engine.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from visionzoo.engine.data import build_loader
from visionzoo.engine.evaluator import autocast_context, evaluate, make_eval_loader
from visionzoo.engine.optim import build_optimizer, build_scheduler
from visionzoo.engine.run_dir import JsonlLogger, write_run_files
from visionzoo.tasks import get_task

CHECKPOINT_FORMAT = "visionzoo-checkpoint-v1"


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM: a checkpoint was written; `exit_code` is 128 + signal number."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(Exception):
    """A loss became NaN or inf; the last good checkpoint is kept untouched."""


@dataclass
class Position:
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    global_step: int = 0  # batches consumed over the whole run


def select_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device = {spec!r} but CUDA is not available on this machine")
    return device


class Trainer:
    def __init__(self, cfg, run_dir: str | Path, resume: str | Path | None = None, show_progress: bool = True,
                 config_path: str | None = None):
        self.cfg, self.task = cfg, get_task(cfg.task)
        self.run_dir = Path(run_dir)
        self.show_progress = show_progress
        self.config_path = config_path
        self.device = select_device(cfg.train.device)
        self.rank, self.world_size = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            self.rank, self.world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        self.is_main = self.rank == 0
        torch.manual_seed(cfg.train.seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark

        # data
        self.train_set = self.task.build_dataset(cfg, cfg.data.train_split, train=True)
        meta = self.task.model_meta(cfg, self.train_set)
        self.val_set = None
        if cfg.data.val_split:
            self.val_set = self.task.build_dataset(cfg, cfg.data.val_split, train=False,
                                                   class_names=meta.get("class_names"))
        self.meta = meta
        self.train_loader = build_loader(
            self.train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True, seed=cfg.train.seed,
            num_workers=cfg.data.num_workers, collate=self.task.collate, pin_memory=self.device.type == "cuda",
            prefetch_factor=cfg.data.prefetch_factor, rank=self.rank, world_size=self.world_size)
        if len(self.train_loader) == 0:
            raise ValueError(f"data.batch_size = {cfg.data.batch_size} is larger than the training set "
                             f"({len(self.train_set)} samples): no full batch to train on")
        self.val_loader = None if self.val_set is None else make_eval_loader(
            self.task, cfg, self.val_set, self.device, self.rank, self.world_size)
        self.steps_per_epoch = len(self.train_loader)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)

        # model
        model = self.task.build_model(cfg, self.train_set).to(self.device)
        if cfg.train.sync_batchnorm and self.world_size > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward_model = model
        if self.world_size > 1:
            self.forward_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.train.compile:
            self.forward_model = torch.compile(self.forward_model)

        # optimisation
        optim_cfgs = cfg.optimizers or {"main": cfg.optim}
        self.optimizers = {name: build_optimizer(model, oc, f"optimizers.{name}" if cfg.optimizers else "optim")
                           for name, oc in optim_cfgs.items()}
        self.phases = self.task.update_phases(cfg)
        for phase in self.phases:
            if phase.optimizer not in self.optimizers:
                raise ValueError(f"task {self.task.name!r} updates with optimizer {phase.optimizer!r}, but the config "
                                 f"defines {sorted(self.optimizers)}: add optimizers.{phase.optimizer}")
        if len(self.phases) > 1 and cfg.train.accumulate > 1:
            raise ValueError("train.accumulate > 1 is not supported for tasks with several update phases")
        updates_per_epoch = self.steps_per_epoch // cfg.train.accumulate
        self.schedulers = {
            name: build_scheduler(opt, cfg.schedule, updates_per_epoch, cfg.train.epochs)
            for name, opt in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        self.ema = None
        if cfg.train.ema.enabled:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema.decay), use_buffers=True)

        self.pos = Position()
        self.best: dict | None = None
        self.best_metric = cfg.train.best_metric or self.task.primary_metric_for(cfg)
        self.stop_signal: int | None = None
        self.skipped_this_epoch: list = []
        if resume is not None:
            self._restore(Path(resume))

        self.logger = JsonlLogger(self.run_dir / "log.jsonl", enabled=self.is_main,
                                  tensorboard_dir=self.run_dir / "tb" if cfg.train.tensorboard else None)
        if self.is_main:
            write_run_files(self.run_dir, to_dict(cfg), str(self.device),
                            {"config_file": config_path, "resumed_from": str(resume) if resume else None})

    # ---- checkpoints ------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else {},
            "ema_n_averaged": self.ema.n_averaged if self.ema else torch.zeros(()),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "epoch": self.pos.epoch,
            "batch_in_epoch": self.pos.batch_in_epoch,
            "global_step": self.pos.global_step,
            "best": self.best,
            "config": to_dict(self.cfg),
            "meta": self.meta,
        }

    def save_checkpoint(self, name: str = "last.pt") -> Path:
        path = self.run_dir / name
        if self.is_main:
            atomic_save(self._state(), path)
            self.logger.log({"type": "checkpoint", "file": name, "epoch": self.pos.epoch,
                             "step": self.pos.global_step})
        return path

    def _save_best(self, metrics: dict) -> None:
        atomic_save({"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                     "ema": self.ema.module.state_dict() if self.ema else {}, "metrics": metrics,
                     "epoch": self.pos.epoch, "global_step": self.pos.global_step,
                     "config": to_dict(self.cfg), "meta": self.meta}, self.run_dir / "best.pt")

    def _restore(self, path: Path) -> None:
        if path.is_dir():
            path = path / "last.pt"
        ckpt = load_checkpoint(path)
        if ckpt.get("format") != CHECKPOINT_FORMAT or "optimizers" not in ckpt:
            raise ValueError(f"{path}: not a visionzoo training checkpoint (use it as model.weights instead)")
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            if ckpt["ema"]:
                self.ema.module.load_state_dict(ckpt["ema"])
                self.ema.n_averaged.copy_(ckpt["ema_n_averaged"])
            else:
                self.ema.module.load_state_dict(ckpt["model"])
        missing = set(self.optimizers) ^ set(ckpt["optimizers"])
        if missing:
            raise ValueError(f"{path}: checkpoint optimizers {sorted(ckpt['optimizers'])} do not match the config's "
                             f"{sorted(self.optimizers)}")
        for k, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][k])
            self.schedulers[k].load_state_dict(ckpt["schedulers"][k])
        self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.pos = Position(ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["global_step"])
        if self.pos.batch_in_epoch >= self.steps_per_epoch:
            self.pos = Position(self.pos.epoch + 1, 0, self.pos.global_step)
        self.best = ckpt.get("best")

    # ---- signals ----------------------------------------------------------------------------
    def _install_signal_handlers(self):
        previous = {}

        def handler(signum, frame):
            if self.stop_signal is not None:  # second signal: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum
            tqdm.write(f"received {signal.Signals(signum).name}: finishing this step, then writing a checkpoint "
                       "(send again to stop immediately)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return previous

    @staticmethod
    def _restore_signal_handlers(previous):
        for sig, h in previous.items():
            signal.signal(sig, h)

    # ---- training ---------------------------------------------------------------------------
    def fit(self, stop_after_epoch: int | None = None) -> dict:
        """Train until cfg.train.epochs (or after epoch `stop_after_epoch`, 1-based, as if the job ended)."""
        cfg = self.cfg
        previous = self._install_signal_handlers()
        self.logger.log({"type": "run", "event": "start" if self.pos.global_step == 0 else "resume",
                         "epoch": self.pos.epoch, "step": self.pos.global_step, "device": str(self.device),
                         "steps_per_epoch": self.steps_per_epoch, "train_samples": len(self.train_set)})
        start = time.time()
        try:
            while self.pos.epoch < cfg.train.epochs:
                epoch_stats = self.train_epoch()
                if self.stop_signal is not None and self.pos.batch_in_epoch < self.steps_per_epoch:
                    self._interrupted()  # mid-epoch: save the position and stop
                record = {"type": "epoch", "epoch": self.pos.epoch + 1, "step": self.pos.global_step, **epoch_stats}
                if self.val_loader is not None and ((self.pos.epoch + 1) % cfg.train.eval_interval == 0
                                                    or self.pos.epoch + 1 == cfg.train.epochs):
                    metrics = self.validate()
                    record.update({f"val_{k}": v for k, v in metrics.items()})
                if self.is_main:
                    self._after_epoch()
                self.pos = Position(self.pos.epoch + 1, 0, self.pos.global_step)
                self.save_checkpoint()
                self.logger.log(record)
                if self.stop_signal is not None and self.pos.epoch < cfg.train.epochs:
                    self._interrupted()
                if stop_after_epoch is not None and self.pos.epoch >= stop_after_epoch:
                    break
        finally:
            self._restore_signal_handlers(previous)
            self.logger.close()
        summary = {"epochs": self.pos.epoch, "steps": self.pos.global_step, "seconds": round(time.time() - start, 2),
                   "best": self.best, "run_dir": str(self.run_dir)}
        return summary

    def _interrupted(self):
        self.save_checkpoint()
        name = signal.Signals(self.stop_signal).name
        raise TrainingInterrupted(
            f"stopped by {name} at epoch {self.pos.epoch + 1}, step {self.pos.global_step}; "
            f"checkpoint written to {self.run_dir / 'last.pt'}.\n"
            f"Resume with: python train.py --resume {self.run_dir}", 128 + self.stop_signal)

    @torch.no_grad()
    def _after_epoch(self) -> None:
        model = self.ema.module if self.ema is not None else self.model
        was_training = model.training
        model.eval()
        self.task.after_epoch(model, self.cfg, self.pos.epoch + 1, self.run_dir, self.val_set or self.train_set)
        model.train(was_training)

    def validate(self) -> dict:
        model = self.ema.module if self.ema is not None else self.model
        metrics, _, _ = evaluate(self.task, model, self.val_loader, self.cfg, self.device,
                                 desc="validate", show_progress=self.show_progress and self.is_main)
        scalars = self.task.scalar_metrics(metrics)
        for message in metrics.get("warnings") or []:  # e.g. a GAN whose samples collapsed
            if self.is_main:
                tqdm.write(f"warning: epoch {self.pos.epoch + 1}: {message}")
            self.logger.log({"type": "warning", "epoch": self.pos.epoch + 1, "message": message})
        self.logger.log({"type": "val", "epoch": self.pos.epoch + 1, "step": self.pos.global_step, **scalars})
        value = scalars.get(self.best_metric)
        if value is None:
            raise KeyError(f"train.best_metric = {self.best_metric!r} is not among the metrics {sorted(scalars)}")
        better = self.best is None or (value > self.best["value"] if self.task.higher_is_better_for(self.best_metric)
                                       else value < self.best["value"])
        if better:
            self.best = {"metric": self.best_metric, "value": value, "epoch": self.pos.epoch + 1}
            if self.is_main:
                self._save_best(scalars)
        return scalars

    def train_epoch(self) -> dict:
        cfg, task, device = self.cfg, self.task, self.device
        log_interval = cfg.train.log_interval
        check_every_step = device.type == "cpu"  # reading a CPU scalar costs no device sync
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.pos.epoch, start=self.pos.batch_in_epoch * cfg.data.batch_size)
        self.model.train()
        self.skipped_this_epoch = []
        sums: dict[str, torch.Tensor] = {}
        window_sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # per term: phases that run every n-th batch report on their own steps
        window_counts: dict[str, int] = {}
        window_images, window_start, window_batches = 0, time.time(), 0
        epoch_images, epoch_start = 0, time.time()
        bar = tqdm(total=self.steps_per_epoch, initial=self.pos.batch_in_epoch, unit="batch", dynamic_ncols=True,
                   desc=f"epoch {self.pos.epoch + 1}/{cfg.train.epochs}", disable=not (self.show_progress and self.is_main))
        for batch, skipped, _ in self.train_loader:
            if self.pos.batch_in_epoch >= self.steps_per_epoch:
                break
            self.skipped_this_epoch.extend(skipped)
            if batch is not None:
                batch = task.to_device(batch, device, cfg.train.channels_last)
                n_images = task.batch_size_of(batch)
                losses = self._train_step(batch)
                for k, v in losses.items():
                    v = v.detach().float()
                    window_sums[k] = window_sums.get(k, 0) + v
                    sums[k] = sums.get(k, 0) + v
                    window_counts[k] = window_counts.get(k, 0) + 1
                    counts[k] = counts.get(k, 0) + 1
                if check_every_step:
                    self._check_finite(losses)
                window_images += n_images
                epoch_images += n_images
                window_batches += 1
            self.pos.batch_in_epoch += 1
            self.pos.global_step += 1
            bar.update(1)
            if self.pos.global_step % log_interval == 0 and window_batches:
                means = {k: float(v) / window_counts[k] for k, v in window_sums.items()}
                if not check_every_step:
                    self._check_finite(means)
                elapsed = max(time.time() - window_start, 1e-9)
                rate = window_images / elapsed
                lr = self.current_lr()
                self.logger.log({"type": "train", "epoch": self.pos.epoch + 1, "step": self.pos.global_step,
                                 "lr": lr, **means, "images_per_s": round(rate, 2)})
                bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
                window_sums, window_counts, window_images, window_batches, window_start = {}, {}, 0, 0, time.time()
            if self.stop_signal is not None:
                break
        bar.close()
        if self.skipped_this_epoch:
            names = ", ".join(sorted({s.path for s in self.skipped_this_epoch})[:10])
            msg = (f"epoch {self.pos.epoch + 1}: skipped {len(self.skipped_this_epoch)} unreadable sample(s) "
                   f"(data.on_corrupt=skip): {names}")
            tqdm.write("warning: " + msg)
            self.logger.log({"type": "warning", "epoch": self.pos.epoch + 1, "message": msg,
                             "skipped": len(self.skipped_this_epoch)})
        seconds = time.time() - epoch_start
        stats = {f"train_{k}": float(v) / counts[k] for k, v in sums.items()}
        stats.update({"seconds": round(seconds, 2), "images_per_s": round(epoch_images / max(seconds, 1e-9), 2),
                      "lr": self.current_lr(), "skipped": len(self.skipped_this_epoch)})
        return stats

    def _train_step(self, batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        accumulate = cfg.train.accumulate
        window_end = (self.pos.batch_in_epoch + 1) % accumulate == 0 or self.pos.batch_in_epoch + 1 == self.steps_per_epoch
        window_start = self.pos.batch_in_epoch % accumulate == 0
        all_losses: dict[str, torch.Tensor] = {}
        stepped = False
        for phase in self.phases:
            if self.pos.global_step % phase.every:
                continue
            optimizer = self.optimizers[phase.optimizer]
            if window_start:
                self.model.zero_grad(set_to_none=True)
            with autocast_context(self.device, cfg.train.amp):
                losses = self.task.training_losses(self.forward_model, batch, phase, cfg)
            if "loss" not in losses:
                raise KeyError(f"task {self.task.name!r} returned no 'loss' term for phase {phase.name!r}")
            self.scaler.scale(losses["loss"] / accumulate).backward()
            prefix = "" if len(self.phases) == 1 else f"{phase.name}_"
            all_losses.update({prefix + k: v for k, v in losses.items()})
            if window_end:
                if cfg.train.grad_clip:
                    self.scaler.unscale_(optimizer)
                    params = [p for g in optimizer.param_groups for p in g["params"]]
                    torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                self.scaler.step(optimizer)
                self.schedulers[phase.optimizer].step()
                stepped = True
        if stepped:
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        if len(self.phases) > 1 and "loss" not in all_losses:
            all_losses["loss"] = sum(v.detach() for k, v in all_losses.items() if k.endswith("_loss"))
        return all_losses

    def _check_finite(self, losses: dict) -> None:
        values = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
        if all(math.isfinite(v) for v in values.values()):
            return
        terms = ", ".join(f"{k}={v:.6g}" for k, v in values.items())
        msg = (f"non-finite loss at epoch {self.pos.epoch + 1}, step {self.pos.global_step + 1}, "
               f"lr {self.current_lr():.6g}: {terms}. Training stopped; the last good checkpoint "
               f"({self.run_dir / 'last.pt'}) is unchanged. Try a lower optim.lr, train.grad_clip, or amp=none.")
        self.logger.log({"type": "error", "epoch": self.pos.epoch + 1, "step": self.pos.global_step + 1,
                         "message": msg})
        raise NonFiniteLoss(msg)

    def current_lr(self) -> float:
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])
