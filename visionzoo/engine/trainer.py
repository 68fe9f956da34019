"""The shared trainer. It knows nothing about any task: datasets, losses and metrics come from the
Task object named by the config; the trainer owns devices, precision, optimisation, schedules, EMA,
logging, checkpoints, resume, signals and distributed data parallelism.

Under torchrun every rank runs this same code on its share of each epoch; rank 0 alone writes logs,
checkpoints and progress bars. `data.batch_size` is per process, so the global batch is
batch_size x world size (the lr is not rescaled for you)."""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from visionzoo.config import to_dict
from visionzoo.engine import distributed
from visionzoo.engine.backends import configure_backends
from visionzoo.engine.checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from visionzoo.engine.console import epoch_summary, progress_bar
from visionzoo.engine.data import build_loader, release_workers, sample_seed
from visionzoo.engine.ema import ModelEma
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


class StoppedNow(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: stop at once, without finishing the step or writing a checkpoint."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


def exit_now_on_signal(signum, frame):
    """Signal handler once the process is already stopping: one more signal ends it on the spot."""
    os.write(2, f"received {signal.Signals(signum).name} again: exiting now\n".encode())
    # os._exit skips the exit hooks that stop the DataLoader workers; left alone they would outlive this process
    # until their watchdog notices (seconds later), so they go first
    for child in multiprocessing.active_children():
        child.kill()
    os._exit(128 + signum)


class NonFiniteLoss(Exception):
    """A loss became NaN or inf; the last good checkpoint is kept untouched."""


@dataclass
class Position:
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # batches of `epoch` already consumed
    global_step: int = 0  # batches consumed over the whole run
    samples_in_epoch: int = 0  # samples of `epoch` consumed by all ranks together (resume at another world size)


def select_device(spec: str) -> torch.device:
    """`spec` (auto, cpu, cuda, cuda:1) for this process; under torchrun, the GPU of its LOCAL_RANK."""
    return distributed.device_for(spec, distributed.current())


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Mean of every rank's gradients, in one flat all-reduce. For tasks that DistributedDataParallel cannot
    wrap (several forwards per update, or players updated in turn); a parameter without a gradient on some
    rank contributes zeros, so every rank reduces the same buffer."""
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size
    for p, g in zip(params, torch._utils._unflatten_dense_tensors(flat, grads)):
        if p.grad is None:
            p.grad = g
        else:
            p.grad.copy_(g)


class Trainer:
    def __init__(self, cfg, run_dir: str | Path, resume: str | Path | None = None, show_progress: bool = True,
                 config_path: str | None = None):
        self.cfg, self.task = cfg, get_task(cfg.task)
        self.run_dir = Path(run_dir)
        self.show_progress = show_progress
        self.config_path = config_path
        self.device = select_device(cfg.train.device)
        dist_info = distributed.current()
        self.rank, self.world_size = dist_info.rank, dist_info.world_size
        self.is_main = dist_info.is_main
        self.control_group = distributed.control_group() if self.world_size > 1 else None
        torch.manual_seed(cfg.train.seed)
        self.backend_settings = configure_backends(cfg, self.device, self.task)  # TF32, cuDNN autotuning

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
            if self.device.type != "cuda":
                raise ValueError("train.sync_batchnorm = true needs CUDA devices: PyTorch's SyncBatchNorm does "
                                 "not run on CPU. Set train.sync_batchnorm=false for gloo runs on CPU")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward_model = model
        self.ddp = None  # the DistributedDataParallel wrapper, when the task's updates allow one
        self.phases = self.task.update_phases(cfg)
        if self.world_size > 1:
            if self.task.one_forward_per_update(cfg) and len(self.phases) == 1:
                self.ddp = torch.nn.parallel.DistributedDataParallel(
                    model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                    find_unused_parameters=cfg.train.find_unused_parameters)
                self.forward_model = self.ddp
            else:  # same weights everywhere to start with; gradients are then averaged by average_gradients
                for tensor in list(model.parameters()) + list(model.buffers()):
                    dist.broadcast(tensor.data, src=0)
        if cfg.train.compile:
            players = self._players()
            if players:  # the task calls each player itself (a GAN), never the model: compile them in place
                for player in players:
                    player.compile()
            else:
                self.forward_model = torch.compile(self.forward_model)
        self._seed_rank_stream(0)

        # optimisation
        optim_cfgs = cfg.optimizers or {"main": cfg.optim}
        self.optimizers = {name: build_optimizer(model, oc, f"optimizers.{name}" if cfg.optimizers else "optim")
                           for name, oc in optim_cfgs.items()}
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
            self.ema = ModelEma(model, cfg.train.ema.decay)

        self.pos = Position()
        self.best: dict | None = None
        self.best_metric = cfg.train.best_metric or self.task.primary_metric_for(cfg)
        self.stop_signal: int | None = None
        self.stopping_now = False  # a second signal arrived
        self.skipped_this_epoch: list = []
        self.resumed_geometry: dict | None = None
        self._nonfinite: tuple[int, str] | None = None  # (step, loss terms) of a NaN/inf this rank saw
        self._pending_agreement = None  # (work, flags) of the all-reduce _agree started last step
        if resume is not None:
            self._restore(Path(resume))

        # per-layer statistics (dead ReLUs, saturation, gradient norms, update ratios) on rank 0, every n-th step
        self.layer_stats = None
        self._warned_layers: set = set()
        if cfg.train.layer_stats_interval > 0 and self.is_main:
            from visionzoo.diagnostics.stats import ActivationStats

            self.layer_stats = ActivationStats(interval=cfg.train.layer_stats_interval).attach(model)

        self.logger = JsonlLogger(self.run_dir / "log.jsonl", enabled=self.is_main,
                                  tensorboard_dir=self.run_dir / "tb" if cfg.train.tensorboard else None)
        if self.is_main:
            write_run_files(self.run_dir, to_dict(cfg), str(self.device),
                            {"config_file": config_path, "resumed_from": str(resume) if resume else None})

    def _players(self) -> list[torch.nn.Module]:
        """The sub-modules that tasks with several update phases train in turn (a GAN's generator and
        discriminator: `optimizers.<name>.params`); empty for a model updated as a whole."""
        if len(self.phases) < 2:
            return []
        paths = {self.cfg.optimizers[p.optimizer].params for p in self.phases if p.optimizer in self.cfg.optimizers}
        return [self.model.get_submodule(path) for path in sorted(paths) if path]

    # ---- checkpoints ------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else {},
            "ema_n_averaged": torch.tensor(self.ema.n_averaged if self.ema else 0),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "epoch": self.pos.epoch,
            "batch_in_epoch": self.pos.batch_in_epoch,
            "global_step": self.pos.global_step,
            "samples_in_epoch": self.pos.samples_in_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "world_size": self.world_size,
            "best": self.best,
            "config": to_dict(self.cfg),
            "meta": self.meta,
        }

    def save_checkpoint(self, name: str = "last.pt") -> Path:
        path = self.run_dir / name
        self._sync_buffers()
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
                self.ema.n_averaged = int(ckpt["ema_n_averaged"])
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
        set_rng_state(ckpt["rng"])  # rank 0's generators
        self._seed_rank_stream(ckpt["global_step"])
        old_world = int(ckpt.get("world_size", 1))
        samples = int(ckpt.get("samples_in_epoch", ckpt["batch_in_epoch"] * self.cfg.data.batch_size * old_world))
        self.pos = Position(ckpt["epoch"], ckpt["batch_in_epoch"], ckpt["global_step"], samples)
        old_steps = int(ckpt.get("steps_per_epoch", self.steps_per_epoch))
        self.resumed_geometry = None
        if old_world != self.world_size or old_steps != self.steps_per_epoch:
            self._regrid_position(old_world, old_steps)
        if self.pos.batch_in_epoch >= self.steps_per_epoch:
            self.pos = Position(self.pos.epoch + 1, 0, self.pos.global_step, 0)
        self.best = ckpt.get("best")

    def _seed_rank_stream(self, step: int) -> None:
        """Same initial weights on every rank, but their own random stream afterwards: with one seed, every
        rank would draw the same dropout masks, GAN latents and VAE noise."""
        if self.world_size > 1 and self.rank > 0:
            torch.manual_seed(sample_seed(self.cfg.train.seed, self.rank, step))

    def _regrid_position(self, old_world: int, old_steps: int) -> None:
        """Resume at another world size (or batch size): the epoch's permutation is global, so the run goes on
        from the same sample; step counts and the lr schedule are moved to the new steps-per-epoch grid."""
        global_batch = self.cfg.data.batch_size * self.world_size
        batch_in_epoch = self.pos.samples_in_epoch // global_batch
        global_step = self.pos.epoch * self.steps_per_epoch + batch_in_epoch
        self.resumed_geometry = {"world_size_before": old_world, "world_size": self.world_size,
                                 "steps_per_epoch_before": old_steps, "steps_per_epoch": self.steps_per_epoch,
                                 "step_before": self.pos.global_step, "step": global_step}
        self.pos = Position(self.pos.epoch, batch_in_epoch, global_step, self.pos.samples_in_epoch)
        updates = global_step // self.cfg.train.accumulate
        for scheduler in self.schedulers.values():
            scheduler.last_epoch = updates
            lrs = [base * fn(updates) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
            for group, lr in zip(scheduler.optimizer.param_groups, lrs):
                group["lr"] = lr
            scheduler._last_lr = lrs

    # ---- signals ----------------------------------------------------------------------------
    def _install_signal_handlers(self):
        previous = {}

        def handler(signum, frame):
            if self.stop_signal is not None:  # second signal: stop now, without waiting for the workers
                self.stopping_now = True
                release_workers()  # the workers may now die of the same signal
                for sig in (signal.SIGINT, signal.SIGTERM):  # a third one, while unwinding, ends the process
                    signal.signal(sig, exit_now_on_signal)
                last = self.run_dir / "last.pt"
                saved = (f"the last checkpoint ({last}) is kept; resume with: python train.py --resume {self.run_dir}"
                         if last.is_file() else "no checkpoint was written yet")
                raise StoppedNow(f"stopped at once by a second {signal.Signals(signum).name} at epoch "
                                 f"{self.pos.epoch + 1}, step {self.pos.global_step}: this step is not saved; "
                                 f"{saved}", signum)
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
                         "world_size": self.world_size, "steps_per_epoch": self.steps_per_epoch,
                         "train_samples": len(self.train_set),
                         **({"regridded": self.resumed_geometry} if self.resumed_geometry else {})})
        start = time.time()
        first_epoch = self.pos.epoch  # the ETA counts the epochs of this process only
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
                    if self.is_main:  # one line per validation: metrics, best so far, ETA
                        per_epoch = (time.time() - start) / max(self.pos.epoch + 1 - first_epoch, 1)
                        tqdm.write(epoch_summary(self.pos.epoch + 1, cfg.train.epochs, record, self.best, per_epoch))
                if self.is_main:
                    self._after_epoch()
                    self._report_layer_warnings()
                self.pos = Position(self.pos.epoch + 1, 0, self.pos.global_step, 0)
                self.save_checkpoint()
                self.logger.log(record)
                if self.stop_signal is not None and self.pos.epoch < cfg.train.epochs:
                    self._interrupted()
                if stop_after_epoch is not None and self.pos.epoch >= stop_after_epoch:
                    break
        finally:
            if not self.stopping_now:  # after a second signal, a third one must still end the process at once
                self._restore_signal_handlers(previous)
            if self.layer_stats is not None:
                self.layer_stats.detach()
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
        self._sync_buffers()
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

    def _sync_buffers(self) -> None:
        """BatchNorm statistics (and the EMA's copies of them) drift apart across ranks: each rank updates them
        from its own batches, and even DDP broadcasts them only at the start of a forward, so after the last
        step they differ. Validation and checkpoints use rank 0's, everywhere."""
        if self.world_size > 1:
            buffers = list(self.model.buffers())
            if self.ema is not None:
                buffers += list(self.ema.module.buffers())
            distributed.broadcast_tensors(buffers, src=0)

    def _agree(self, stop_signal: int | None, finite: bool) -> tuple[int | None, bool]:
        """Every rank must stop at the same step, or the others wait forever in the next all-reduce: a signal
        or a non-finite loss seen by any rank counts for all. The tiny gloo all-reduce runs in the background
        and is read one step later (a blocking one would hold every step until the slowest rank arrives), so
        the answer is the previous step's; `_settle_agreement` closes it at the end of the epoch."""
        if self.world_size == 1:
            return stop_signal, finite
        flags = torch.tensor([stop_signal or 0, 0 if finite else 1], dtype=torch.int64)
        work = dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.control_group, async_op=True)
        previous, self._pending_agreement = self._pending_agreement, (work, flags)
        if previous is None:
            return None, True
        previous[0].wait()
        return (int(previous[1][0]) or None), not bool(previous[1][1])

    def _settle_agreement(self) -> None:
        """End of an epoch's loop under torchrun: drop the background agreement and agree once more, blocking,
        on what each rank knows now, so that all validate, save and stop (or raise) together."""
        if self._pending_agreement is not None:
            self._pending_agreement[0].wait()
            self._pending_agreement = None
        flags = torch.tensor([self.stop_signal or 0, 0 if self._nonfinite is None else 1], dtype=torch.int64)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self.control_group)
        if int(flags[0]):
            self.stop_signal = int(flags[0])
        if flags[1]:
            self._raise_nonfinite()

    def _global_means(self, sums: dict, counts: dict) -> dict[str, float]:
        """Loss means over all ranks (one all-reduce, at the log interval only: it syncs with the device)."""
        keys = sorted(sums)
        if self.world_size > 1 and keys:
            packed = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64, device=self.device)
                                  for k in keys] + [torch.tensor(float(counts[k]), dtype=torch.float64,
                                                                 device=self.device) for k in keys])
            dist.all_reduce(packed)
            packed = packed.tolist()
            return {k: packed[i] / max(packed[len(keys) + i], 1) for i, k in enumerate(keys)}
        return {k: float(sums[k]) / counts[k] for k in keys}

    def _gather_skipped(self) -> list:
        if self.world_size == 1:
            return self.skipped_this_epoch
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, self.skipped_this_epoch)
        return [s for part in gathered for s in part]

    def train_epoch(self) -> dict:
        cfg, task, device = self.cfg, self.task, self.device
        log_interval = cfg.train.log_interval
        check_every_step = device.type == "cpu"  # reading a CPU scalar costs no device sync
        sampler = self.train_loader.sampler
        sampler.set_epoch(self.pos.epoch, start=self.pos.samples_in_epoch)
        self.model.train()
        self.skipped_this_epoch = []
        sums: dict[str, torch.Tensor] = {}
        window_sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}  # per term: phases that run every n-th batch report on their own steps
        window_counts: dict[str, int] = {}
        window_images, window_start, window_batches = 0, time.time(), 0
        epoch_images, epoch_start = 0, time.time()
        bar = progress_bar(total=self.steps_per_epoch, initial=self.pos.batch_in_epoch, unit="batch",
                           desc=f"epoch {self.pos.epoch + 1}/{cfg.train.epochs}", every=log_interval,
                           disable=not (self.show_progress and self.is_main))
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
                    self._check_finite(losses, collective=False)
                window_images += n_images
                epoch_images += n_images
                window_batches += 1
            self.pos.batch_in_epoch += 1
            self.pos.global_step += 1
            self.pos.samples_in_epoch += cfg.data.batch_size * self.world_size
            bar.update(1)
            stop = self.stop_signal
            if self.world_size > 1:  # a signal counts once every rank knows it (one step later)
                stop, finite = self._agree(self.stop_signal, self._nonfinite is None)
                if not finite:
                    self._raise_nonfinite()
                if stop is not None:
                    self.stop_signal = stop
            if self.pos.global_step % log_interval == 0 and window_batches:
                means = self._global_means(window_sums, window_counts)
                if not check_every_step:
                    self._check_finite(means)
                elapsed = max(time.time() - window_start, 1e-9)
                rate = window_images * self.world_size / elapsed
                lr = self.current_lr()
                self.logger.log({"type": "train", "epoch": self.pos.epoch + 1, "step": self.pos.global_step,
                                 "lr": lr, **means, "images_per_s": round(rate, 2)})
                bar.set_postfix(loss=f"{means['loss']:.4f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
                window_sums, window_counts, window_images, window_batches, window_start = {}, {}, 0, 0, time.time()
            if stop is not None:
                break
        bar.close()
        if self.world_size > 1:
            self._settle_agreement()
        skipped = self._gather_skipped()
        if skipped:
            names = ", ".join(sorted({s.path for s in skipped})[:10])
            msg = (f"epoch {self.pos.epoch + 1}: skipped {len(skipped)} unreadable sample(s) "
                   f"(data.on_corrupt=skip): {names}")
            if self.is_main:
                tqdm.write("warning: " + msg)
            self.logger.log({"type": "warning", "epoch": self.pos.epoch + 1, "message": msg,
                             "skipped": len(skipped)})
        seconds = time.time() - epoch_start
        stats = {f"train_{k}": v for k, v in self._global_means(sums, counts).items()}
        stats.update({"seconds": round(seconds, 2),
                      "images_per_s": round(epoch_images * self.world_size / max(seconds, 1e-9), 2),
                      "lr": self.current_lr(), "skipped": len(skipped)})
        return stats

    def _train_step(self, batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        accumulate = cfg.train.accumulate
        window_end = (self.pos.batch_in_epoch + 1) % accumulate == 0 or self.pos.batch_in_epoch + 1 == self.steps_per_epoch
        window_start = self.pos.batch_in_epoch % accumulate == 0
        all_losses: dict[str, torch.Tensor] = {}
        stepped = False
        stats = self.layer_stats if self.layer_stats is not None and window_end else None
        if stats is not None:
            stats.begin_step(self.pos.global_step)
        for phase in self.phases:
            if self.pos.global_step % phase.every:
                continue
            optimizer = self.optimizers[phase.optimizer]
            if window_start:
                self.model.zero_grad(set_to_none=True)
            # DDP all-reduces gradients in its backward hooks; inside an accumulation window only the last one needs to
            sync = contextlib.nullcontext() if self.ddp is None or window_end else self.ddp.no_sync()
            with sync:
                with autocast_context(self.device, cfg.train.amp):
                    losses = self.task.training_losses(self.forward_model, batch, phase, cfg)
                if "loss" not in losses:
                    raise KeyError(f"task {self.task.name!r} returned no 'loss' term for phase {phase.name!r}")
                self.scaler.scale(losses["loss"] / accumulate).backward()
            prefix = "" if len(self.phases) == 1 else f"{phase.name}_"
            all_losses.update({prefix + k: v for k, v in losses.items()})
            if window_end:
                if self.world_size > 1 and self.ddp is None:
                    average_gradients([p for g in optimizer.param_groups for p in g["params"]], self.world_size)
                if cfg.train.grad_clip:
                    self.scaler.unscale_(optimizer)
                    params = [p for g in optimizer.param_groups for p in g["params"]]
                    torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
                if stats is not None:
                    stats.after_backward(optimizer)
                self.scaler.step(optimizer)
                if stats is not None:
                    stats.after_optimizer_step()
                self.schedulers[phase.optimizer].step()
                stepped = True
        if stepped:
            self.scaler.update()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        if len(self.phases) > 1 and "loss" not in all_losses:
            all_losses["loss"] = sum(v.detach() for k, v in all_losses.items() if k.endswith("_loss"))
        if stats is not None:
            record = stats.end_step({k: v.detach() for k, v in all_losses.items()})
            if record is not None:
                self.logger.log({"type": "layer_stats", "epoch": self.pos.epoch + 1, **record})
        return all_losses

    def _report_layer_warnings(self) -> None:
        """New threshold crossings of the layer statistics, once each, to the console and the log."""
        if self.layer_stats is None:
            return
        for w in self.layer_stats.warnings():
            if (w["layer"], w["kind"]) in self._warned_layers:
                continue
            self._warned_layers.add((w["layer"], w["kind"]))
            tqdm.write(f"warning: step {w['step']}: {w['message']}")
            self.logger.log({"type": "warning", "epoch": self.pos.epoch + 1, "step": w["step"],
                             "message": w["message"], "layer": w["layer"], "kind": w["kind"]})

    def _check_finite(self, losses: dict, collective: bool = True) -> None:
        """Stop on a NaN/inf loss. `collective=False`: only this rank looked, so under torchrun the stop waits
        for the end-of-step agreement, where every rank raises together."""
        values = {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}
        if all(math.isfinite(v) for v in values.values()):
            return
        self._nonfinite = (self.pos.global_step + 1, ", ".join(f"{k}={v:.6g}" for k, v in values.items()))
        if collective or self.world_size == 1:
            self._raise_nonfinite()

    def _raise_nonfinite(self) -> None:
        step, terms = self._nonfinite or (self.pos.global_step, f"on another rank than rank {self.rank}")
        msg = (f"non-finite loss at epoch {self.pos.epoch + 1}, step {step}, "
               f"lr {self.current_lr():.6g}: {terms}. Training stopped; the last good checkpoint "
               f"({self.run_dir / 'last.pt'}) is unchanged. Try a lower optim.lr, train.grad_clip, or amp=none.")
        self.logger.log({"type": "error", "epoch": self.pos.epoch + 1, "step": step, "message": msg})
        raise NonFiniteLoss(msg)

    def current_lr(self) -> float:
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])
