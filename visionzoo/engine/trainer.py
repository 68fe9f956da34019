"""The shared trainer loop. It knows no task and no diagnostic: the entry point hands it the Task object
(datasets, losses, metrics) and a list of hooks (engine/hooks.py: EMA, best checkpoint, signals, the JSON-lines
log, the progress bar, the validation line; the diagnostics' layer statistics); one update is
engine/update.py's Updater. The trainer owns what every run needs: devices, data loaders, the position in the
run, the records it emits (`log`; hooks write them), checkpoints, resume and the agreements that keep
torchrun's ranks in step.

Under torchrun every rank runs this same code on its share of each epoch; rank 0 alone emits records and
writes checkpoints. `data.batch_size` is per process, so the global batch is
batch_size x world size (the lr is not rescaled for you)."""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from visionzoo.config import to_dict
from visionzoo.engine import distributed
from visionzoo.engine.backends import configure_backends
from visionzoo.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    atomic_save,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from visionzoo.engine.data import build_loader, sample_seed
from visionzoo.engine.distributed import select_device
from visionzoo.engine.evaluator import evaluate, make_eval_loader
from visionzoo.engine.hooks import EmaHook, HookBase, ProgressBar, StoppedNow, exit_now_on_signal
from visionzoo.engine.run_dir import write_run_files
from visionzoo.engine.update import Updater

__all__ = ["CHECKPOINT_FORMAT", "NonFiniteLoss", "Position", "StoppedNow", "Trainer", "TrainingInterrupted",
           "exit_now_on_signal", "select_device"]


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
    samples_in_epoch: int = 0  # samples of `epoch` consumed by all ranks together (resume at another world size)


@dataclass
class LossMeter:
    """Running sums of the loss terms over a log window or an epoch, with a count per term (phases that run
    every n-th batch report on their own steps), and the images and batches seen."""

    sums: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    images: int = 0
    batches: int = 0
    start: float = field(default_factory=time.time)

    def add(self, losses: dict, n_images: int) -> None:
        for k, v in losses.items():
            v = v.detach().float()
            self.sums[k] = self.sums.get(k, 0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.images += n_images
        self.batches += 1


class Trainer:
    def __init__(self, task, run_dir: str | Path, hooks: list[HookBase] = (), resume: str | Path | None = None,
                 config_path: str | None = None):
        """`task`: the Task object built for the run's config (visionzoo.tasks.task_for), which holds it."""
        cfg = task.cfg
        self.cfg, self.task, self.run_dir, self.config_path = cfg, task, Path(run_dir), config_path
        self.device = select_device(cfg.train.device)
        dist_info = distributed.current()
        self.rank, self.world_size, self.is_main = dist_info.rank, dist_info.world_size, dist_info.is_main
        self.control_group = distributed.control_group() if self.world_size > 1 else None
        torch.manual_seed(cfg.train.seed)
        self.backend_settings = configure_backends(cfg, self.device, task)  # TF32, cuDNN autotuning
        self._build_data()
        self.model = self._build_model()
        self.updater = Updater(task, self.model, self.device, self.steps_per_epoch // cfg.train.accumulate,
                               cfg.train.epochs)
        self.updater.distribute(self.world_size)
        self._seed_rank_stream(0)

        self.pos = Position()
        self.best: dict | None = None  # BestCheckpoint keeps it; checkpoints carry it
        self.best_metric = cfg.train.best_metric or task.primary_metric
        self.stop_signal: int | None = None  # set by SignalHook
        self.stopping_now = False  # a second signal arrived
        self.skipped_this_epoch: list = []
        self.resumed_geometry: dict | None = None
        self.window_end = True  # whether the step being run ends an accumulation window
        self.epoch_record: dict = {}  # the epoch's record as far as it goes (for after_validation)
        self._nonfinite: tuple[int, str] | None = None  # (step, loss terms) of a NaN/inf this rank saw
        self._pending_agreement = None  # (work, flags) of the all-reduce _agree started last step
        self.hooks = list(hooks)
        for hook in self.hooks:
            hook.attach(self)
        self.ema = next((h.ema for h in self.hooks if isinstance(h, EmaHook)), None)
        self.show_progress = any(isinstance(h, ProgressBar) for h in self.hooks)  # validation's bar too
        if resume is not None:
            self._restore(Path(resume))
        if self.is_main:
            write_run_files(self.run_dir, to_dict(cfg), str(self.device),
                            {"config_file": config_path, "resumed_from": str(resume) if resume else None})

    def _build_data(self) -> None:
        cfg, task = self.cfg, self.task
        self.train_set = task.build_dataset(cfg.data.train_split, train=True)
        self.meta = task.model_meta(self.train_set)
        self.val_set = None
        if cfg.data.val_split:
            self.val_set = task.build_dataset(cfg.data.val_split, train=False, class_names=self.meta.get("class_names"))
        self.train_loader = build_loader(
            self.train_set, batch_size=cfg.data.batch_size, shuffle=True, drop_last=True, seed=cfg.train.seed,
            num_workers=cfg.data.num_workers, collate=task.collate, pin_memory=self.device.type == "cuda",
            prefetch_factor=cfg.data.prefetch_factor, rank=self.rank, world_size=self.world_size)
        if len(self.train_loader) == 0:
            raise ValueError(f"data.batch_size = {cfg.data.batch_size} is larger than the training set "
                             f"({len(self.train_set)} samples): no full batch to train on")
        self.val_loader = None if self.val_set is None else make_eval_loader(
            task, self.val_set, self.device, self.rank, self.world_size)
        self.steps_per_epoch = len(self.train_loader)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)

    def _build_model(self) -> torch.nn.Module:
        cfg = self.cfg
        model = self.task.build_model(self.train_set).to(self.device)
        if cfg.train.sync_batchnorm and self.world_size > 1:
            if self.device.type != "cuda":
                raise ValueError("train.sync_batchnorm = true needs CUDA devices: PyTorch's SyncBatchNorm does "
                                 "not run on CPU. Set train.sync_batchnorm=false for gloo runs on CPU")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    # the update's parts, under the names they had when the trainer built them itself
    optimizers = property(lambda self: self.updater.optimizers)
    schedulers = property(lambda self: self.updater.schedulers)
    scaler = property(lambda self: self.updater.scaler)
    phases = property(lambda self: self.updater.phases)
    forward_model = property(lambda self: self.updater.forward_model)
    ddp = property(lambda self: self.updater.ddp)

    def _call(self, point: str, *args) -> None:
        for hook in self.hooks:
            getattr(hook, point)(*args)

    def log(self, record: dict) -> None:
        """Emit a record of the run to the hooks (rank 0): the log hook writes it to log.jsonl."""
        if self.is_main:
            self._call("write", record)

    # ---- checkpoints ------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else {},
            "ema_n_averaged": torch.tensor(self.ema.n_averaged if self.ema else 0),
            **self.updater.state_dict(),  # optimizers, schedulers, scaler
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
            self.log({"type": "checkpoint", "file": name, "epoch": self.pos.epoch, "step": self.pos.global_step})
        return path

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
        self.updater.load_state_dict(ckpt, path)
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
        self.updater.move_schedules(global_step // self.cfg.train.accumulate)

    # ---- training ---------------------------------------------------------------------------
    def fit(self, stop_after_epoch: int | None = None) -> dict:
        """Train until cfg.train.epochs (or after epoch `stop_after_epoch`, 1-based, as if the job ended)."""
        start = time.time()
        try:
            self._call("before_train")
            self.log({"type": "run", "event": "start" if self.pos.global_step == 0 else "resume",
                      "epoch": self.pos.epoch, "step": self.pos.global_step, "device": str(self.device),
                      "world_size": self.world_size, "steps_per_epoch": self.steps_per_epoch,
                      "train_samples": len(self.train_set),
                      **({"regridded": self.resumed_geometry} if self.resumed_geometry else {})})
            while self.pos.epoch < self.cfg.train.epochs:
                self._run_epoch()
                if stop_after_epoch is not None and self.pos.epoch >= stop_after_epoch:
                    break
        finally:
            self._call("after_train")
        return {"epochs": self.pos.epoch, "steps": self.pos.global_step, "seconds": round(time.time() - start, 2),
                "best": self.best, "run_dir": str(self.run_dir)}

    def _run_epoch(self) -> None:
        """One epoch: train, validate when due, the epoch's hooks, checkpoint and log record; a signal stops
        the run here with TrainingInterrupted (mid-epoch, or between epochs)."""
        cfg = self.cfg
        epoch_stats = self.train_epoch()
        if self.stop_signal is not None and self.pos.batch_in_epoch < self.steps_per_epoch:
            self._interrupted()  # mid-epoch: save the position and stop
        record = {"type": "epoch", "epoch": self.pos.epoch + 1, "step": self.pos.global_step, **epoch_stats}
        self.epoch_record = record
        if self.val_loader is not None and ((self.pos.epoch + 1) % cfg.train.eval_interval == 0
                                            or self.pos.epoch + 1 == cfg.train.epochs):
            record.update({f"val_{k}": v for k, v in self.validate().items()})
        if self.is_main:
            self._task_after_epoch()
        self._call("after_epoch")
        self.pos = Position(self.pos.epoch + 1, 0, self.pos.global_step, 0)
        self.save_checkpoint()
        self.log(record)
        if self.stop_signal is not None and self.pos.epoch < cfg.train.epochs:
            self._interrupted()

    def _interrupted(self):
        self.save_checkpoint()
        name = signal.Signals(self.stop_signal).name
        raise TrainingInterrupted(
            f"stopped by {name} at epoch {self.pos.epoch + 1}, step {self.pos.global_step}; "
            f"checkpoint written to {self.run_dir / 'last.pt'}.\n"
            f"Resume with: python train.py --resume {self.run_dir}", 128 + self.stop_signal)

    @property
    def eval_model(self) -> torch.nn.Module:
        """What validation, best.pt and the task's per-epoch artefacts use: the EMA when there is one."""
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def _task_after_epoch(self) -> None:
        model = self.eval_model
        was_training = model.training
        model.eval()
        self.task.after_epoch(model, self.pos.epoch + 1, self.run_dir, self.val_set or self.train_set)
        model.train(was_training)

    def validate(self) -> dict:
        self._sync_buffers()
        metrics, _, _ = evaluate(self.task, self.eval_model, self.val_loader, self.device,
                                 desc="validate", show_progress=self.show_progress and self.is_main)
        scalars = self.task.scalar_metrics(metrics)
        for message in metrics.get("warnings") or []:  # e.g. a GAN whose samples collapsed
            self.warn(message)
        self.log({"type": "val", "epoch": self.pos.epoch + 1, "step": self.pos.global_step, **scalars})
        self._call("after_validation", scalars)
        return scalars

    def warn(self, message: str, **fields) -> None:
        """A warning of this epoch: on rank 0's console, and in the log."""
        if self.is_main:
            tqdm.write(f"warning: epoch {self.pos.epoch + 1}: {message}")
        self.log({"type": "warning", "epoch": self.pos.epoch + 1, "message": message, **fields})

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
        cfg = self.cfg
        check_every_step = self.device.type == "cpu"  # reading a CPU scalar costs no device sync
        self.train_loader.sampler.set_epoch(self.pos.epoch, start=self.pos.samples_in_epoch)
        self.model.train()
        self.skipped_this_epoch = []
        epoch, window = LossMeter(), LossMeter()
        self._call("before_epoch")
        for batch, skipped, _ in self.train_loader:
            if self.pos.batch_in_epoch >= self.steps_per_epoch:
                break
            self.skipped_this_epoch.extend(skipped)
            if batch is not None:
                batch = self.task.to_device(batch, self.device, cfg.train.channels_last)
                n_images = self.task.batch_size_of(batch)
                losses = self.run_step(batch)
                window.add(losses, n_images)
                epoch.add(losses, n_images)
                if check_every_step:
                    self._check_finite(losses, collective=False)
            self.pos.batch_in_epoch += 1
            self.pos.global_step += 1
            self.pos.samples_in_epoch += cfg.data.batch_size * self.world_size
            stop = self._agreed_stop()
            if self.pos.global_step % cfg.train.log_interval == 0 and window.batches:
                self._log_window(window, check_finite=not check_every_step)
                window = LossMeter()
            if stop is not None:
                break
        self._call("after_epoch_steps")
        if self.world_size > 1:
            self._settle_agreement()
        return self._epoch_stats(epoch)

    def run_step(self, batch) -> dict[str, torch.Tensor]:
        """One batch: the hooks around one Updater.update at the current position."""
        i, accumulate = self.pos.batch_in_epoch, self.cfg.train.accumulate
        self.window_end = (i + 1) % accumulate == 0 or i + 1 == self.steps_per_epoch
        self._call("before_step")
        losses = self.updater.update(batch, self.pos.global_step, window_start=i % accumulate == 0,
                                     window_end=self.window_end, observers=self.hooks)
        self._call("after_step", losses)
        return losses

    def _agreed_stop(self) -> int | None:
        """The stop signal every rank acts on now: this process's own, or under torchrun what the ranks agreed
        (a signal counts once every rank knows it, one step later)."""
        if self.world_size == 1:
            return self.stop_signal
        stop, finite = self._agree(self.stop_signal, self._nonfinite is None)
        if not finite:
            self._raise_nonfinite()
        if stop is not None:
            self.stop_signal = stop
        return stop

    def _log_window(self, window: LossMeter, check_finite: bool) -> None:
        """The "train" record of the last log_interval steps (loss means over all ranks, lr, speed)."""
        means = self._global_means(window.sums, window.counts)  # a collective: every rank computes it
        if check_finite:
            self._check_finite(means)
        rate = window.images * self.world_size / max(time.time() - window.start, 1e-9)
        self.log({"type": "train", "epoch": self.pos.epoch + 1, "step": self.pos.global_step,
                  "lr": self.current_lr(), **means, "images_per_s": round(rate, 2)})

    def _epoch_stats(self, epoch: LossMeter) -> dict:
        skipped = self._gather_skipped()
        if skipped:
            names = ", ".join(sorted({s.path for s in skipped})[:10])
            msg = (f"epoch {self.pos.epoch + 1}: skipped {len(skipped)} unreadable sample(s) "
                   f"(data.on_corrupt=skip): {names}")
            if self.is_main:
                tqdm.write("warning: " + msg)
            self.log({"type": "warning", "epoch": self.pos.epoch + 1, "message": msg, "skipped": len(skipped)})
        seconds = time.time() - epoch.start
        stats = {f"train_{k}": v for k, v in self._global_means(epoch.sums, epoch.counts).items()}
        stats.update({"seconds": round(seconds, 2),
                      "images_per_s": round(epoch.images * self.world_size / max(seconds, 1e-9), 2),
                      "lr": self.current_lr(), "skipped": len(skipped)})
        return stats

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
        self.log({"type": "error", "epoch": self.pos.epoch + 1, "step": step, "message": msg})
        raise NonFiniteLoss(msg)

    def current_lr(self) -> float:
        return self.updater.current_lr()
