"""Trainer hooks: what a training run does around its steps besides stepping (averaging the weights,
stopping on a signal, keeping the best checkpoint, the JSON-lines log, the progress bar, a line per
validation) plugs into the trainer here, so the trainer's loop stays short and entry points choose what
runs (the layer statistics hook lives with the diagnostics and is handed in by them).

The manner of detectron2's HookBase: a hook gets `self.trainer` at `attach` (after the model and its
optimizers exist, before a resume) and is called at fixed points of `Trainer.fit`, in list order:

    attach, before_train,
    [before_epoch, [before_step, (after_backward, after_optimizer_step)*, after_step]*, after_epoch_steps,
     after_validation, after_epoch]*,
    after_train (always, also when training stops on an error).

Besides, `write(record)` receives every record the run emits (rank 0 only; `Trainer.log`): the log hook
writes them to log.jsonl, the progress bar shows the training loss from them."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time

from tqdm.auto import tqdm

from visionzoo.config import to_dict
from visionzoo.engine.checkpoint import CHECKPOINT_FORMAT, atomic_save
from visionzoo.engine.console import epoch_summary, progress_bar
from visionzoo.engine.data import release_workers
from visionzoo.engine.ema import ModelEma
from visionzoo.engine.run_dir import JsonlLogger


class HookBase:
    """No-op at every point; subclasses override what they need. `trainer` is set by `attach`."""

    trainer = None

    def attach(self, trainer) -> None:
        self.trainer = trainer

    def before_train(self) -> None: ...

    def before_epoch(self) -> None: ...

    def before_step(self) -> None: ...

    def after_backward(self, optimizer) -> None:
        """Between backward (and clipping) and the optimizer step, at the end of an accumulation window."""

    def after_optimizer_step(self) -> None: ...

    def after_step(self, losses: dict) -> None: ...

    def after_epoch_steps(self) -> None:
        """After the epoch's last step, before validation."""

    def write(self, record: dict) -> None:
        """A record of the run ("run", "train", "val", "epoch", "checkpoint", "warning", "error", ...)."""

    def after_validation(self, metrics: dict) -> None: ...

    def after_epoch(self) -> None:
        """On every rank, after validation, before the epoch's checkpoint."""

    def after_train(self) -> None: ...


class EmaHook(HookBase):
    """An exponential moving average of the weights, updated after every optimizer step; the trainer
    validates, checkpoints and publishes it (`trainer.ema`)."""

    def __init__(self, decay: float):
        self.decay = decay
        self.ema: ModelEma | None = None

    def attach(self, trainer) -> None:
        super().attach(trainer)
        self.ema = ModelEma(trainer.model, self.decay)

    def after_step(self, losses: dict) -> None:
        if self.trainer.updater.stepped:
            self.ema.update_parameters(self.trainer.model)


class BestCheckpoint(HookBase):
    """best.pt: the weights of the validation with the best `trainer.best_metric` so far."""

    def after_validation(self, metrics: dict) -> None:
        t = self.trainer
        value = metrics.get(t.best_metric)
        if value is None:
            raise KeyError(f"train.best_metric = {t.best_metric!r} is not among the metrics {sorted(metrics)}")
        better = t.best is None or (value > t.best["value"] if t.task.higher_is_better_for(t.best_metric)
                                    else value < t.best["value"])
        if better:
            t.best = {"metric": t.best_metric, "value": value, "epoch": t.pos.epoch + 1}
            if t.is_main:
                atomic_save({"format": CHECKPOINT_FORMAT, "model": t.model.state_dict(),
                             "ema": t.ema.module.state_dict() if t.ema else {}, "metrics": metrics,
                             "epoch": t.pos.epoch, "global_step": t.pos.global_step,
                             "config": to_dict(t.cfg), "meta": t.meta}, t.run_dir / "best.pt")


class ValidationLine(HookBase):
    """One console line per validation (rank 0): the metrics, the best so far and the time left. Put it
    after BestCheckpoint, whose best it shows."""

    def attach(self, trainer) -> None:
        super().attach(trainer)
        self.before_train()

    def before_train(self) -> None:
        self.start, self.first_epoch = time.time(), self.trainer.pos.epoch  # the ETA counts this process's epochs

    def after_validation(self, metrics: dict) -> None:
        t = self.trainer
        if t.is_main:
            per_epoch = (time.time() - self.start) / max(t.pos.epoch + 1 - self.first_epoch, 1)
            record = {**t.epoch_record, **{f"val_{k}": v for k, v in metrics.items()}}
            tqdm.write(epoch_summary(t.pos.epoch + 1, t.cfg.train.epochs, record, t.best, per_epoch))


class JsonLog(HookBase):
    """Every record of the run, one JSON object per line, in <run dir>/log.jsonl (rank 0), and with
    `tensorboard` the scalars of the train, val and epoch records in <run dir>/tb. Put it last, so that it
    closes after the hooks that write in their own after_train."""

    def __init__(self, tensorboard: bool = False):
        self.tensorboard = tensorboard
        self.logger: JsonlLogger | None = None

    def attach(self, trainer) -> None:
        super().attach(trainer)
        self.logger = JsonlLogger(trainer.run_dir / "log.jsonl", enabled=trainer.is_main,
                                  tensorboard_dir=trainer.run_dir / "tb" if self.tensorboard else None)

    def write(self, record: dict) -> None:
        self.logger.log(record)

    def after_train(self) -> None:
        self.logger.close()


class ProgressBar(HookBase):
    """Each epoch's progress on rank 0: a bar on a terminal, a plain line every train.log_interval steps
    elsewhere (engine/console.py), with the loss, lr and speed of the last "train" record. With this hook
    the trainer's validations show their progress too."""

    bar = None

    def before_epoch(self) -> None:
        t = self.trainer
        self.shown = t.pos.batch_in_epoch
        self.bar = progress_bar(total=t.steps_per_epoch, initial=self.shown, unit="batch",
                                desc=f"epoch {t.pos.epoch + 1}/{t.cfg.train.epochs}",
                                every=t.cfg.train.log_interval, disable=not t.is_main)

    def _show(self, batches_done: int) -> None:
        # the position, not a count of steps: skipped batches (data.on_corrupt=skip) run no step
        self.bar.update(batches_done - self.shown)
        self.shown = batches_done

    def after_step(self, losses: dict) -> None:
        self._show(self.trainer.pos.batch_in_epoch + 1)  # the trainer counts this step after its hooks

    def write(self, record: dict) -> None:
        if record.get("type") == "train" and self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.3g}",
                                 img_s=f"{record['images_per_s']:.0f}")

    def after_epoch_steps(self) -> None:
        self._show(self.trainer.pos.batch_in_epoch)
        self.bar.close()
        self.bar = None

    def after_train(self) -> None:
        if self.bar is not None:  # stopped inside an epoch
            self.bar.close()


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
    children = multiprocessing.active_children()
    for child in children:
        child.kill()
    for child in children:  # reaped here: left to init, they would linger as zombies of this process group
        child.join(timeout=1.0)
    os._exit(128 + signum)


class SignalHook(HookBase):
    """SIGINT/SIGTERM: the first one finishes the step, and the trainer writes a checkpoint and stops; a
    second one stops at once (StoppedNow), and a third, while unwinding, ends the process."""

    def before_train(self) -> None:
        self.previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self.handler)
            except ValueError:  # not the main thread
                pass

    def handler(self, signum, frame):
        t = self.trainer
        if t.stop_signal is not None:  # second signal: stop now, without waiting for the workers
            t.stopping_now = True
            release_workers()  # the workers may now die of the same signal
            for sig in (signal.SIGINT, signal.SIGTERM):  # a third one, while unwinding, ends the process
                signal.signal(sig, exit_now_on_signal)
            last = t.run_dir / "last.pt"
            saved = (f"the last checkpoint ({last}) is kept; resume with: python train.py --resume {t.run_dir}"
                     if last.is_file() else "no checkpoint was written yet")
            raise StoppedNow(f"stopped at once by a second {signal.Signals(signum).name} at epoch "
                             f"{t.pos.epoch + 1}, step {t.pos.global_step}: this step is not saved; "
                             f"{saved}", signum)
        t.stop_signal = signum
        tqdm.write(f"received {signal.Signals(signum).name}: finishing this step, then writing a checkpoint "
                   "(send again to stop immediately)")

    def after_train(self) -> None:
        if not self.trainer.stopping_now:  # after a second signal, a third one must still end the process at once
            for sig, h in self.previous.items():
                signal.signal(sig, h)
