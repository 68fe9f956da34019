"""Learning-rate range test (Smith 2017, "Cyclical learning rates", section 3.3; the fastai lr_find recipe).

The lr grows exponentially from `start_lr` to `end_lr` over `steps` training steps of a fresh model; the
loss, smoothed by a bias-corrected exponential moving average, is recorded against the lr. The sweep stops
once the smoothed loss exceeds `diverge` x its best value (or becomes NaN). Two readings of the curve:

- steepest descent: the lr where the smoothed loss falls fastest per decade of lr (before its minimum);
- minimum / 10: one decade below the lr of the lowest smoothed loss (the loss is already about to rise there).

The suggestion is the steepest point when the curve has a clear descent, else min/10. Nothing is saved to
disk but the outputs asked for; the model trained during the sweep is thrown away.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from visionzoo.diagnostics.common import build_setup
from visionzoo.reports.figures import new_figure


@dataclass
class LRFinderResult:
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggested_lr: float | None
    steepest_lr: float | None
    min_loss_lr: float | None  # lr of the lowest smoothed loss (divide by 10 to use it)
    stopped_early: bool  # divergence (or a NaN) stopped the sweep before end_lr
    stop_reason: str
    start_lr: float
    end_lr: float
    steps: int
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.suggested_lr is None:
            return f"no lr suggested: {self.stop_reason}"
        return (f"suggested lr {self.suggested_lr:.3g} (steepest descent {_fmt(self.steepest_lr)}, "
                f"minimum/10 {_fmt(self.min_loss_lr and self.min_loss_lr / 10)}); {self.stop_reason}")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def lr_schedule(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    if not (start_lr > 0 and end_lr > start_lr):
        raise ValueError(f"the sweep needs 0 < start_lr < end_lr, got start_lr={start_lr:g}, end_lr={end_lr:g}")
    if steps < 2:
        raise ValueError(f"the sweep needs at least 2 steps, got {steps}")
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / (steps - 1))


def suggest_lr(lrs, smoothed, skip_start: int = 3,
               min_drop: float = 0.05) -> tuple[float | None, float | None, float | None, str]:
    """(suggested, steepest, min_loss_lr, note) from a recorded sweep. The slope is a least-squares line
    against log10(lr) over a sliding window (a tenth of the points before the minimum, at least 3), which a
    single noisy step cannot dominate; the steepest lr is the window's centre (geometric mean). Points before
    `skip_start`, where the moving average is still warming up, are left out. A fall of the smoothed loss under
    `min_drop` of its starting value is within the noise of a short sweep: then the suggestion is minimum/10."""
    lrs, smoothed = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    finite = np.isfinite(smoothed)
    if finite.sum() < 2:
        return None, None, None, "fewer than 2 finite losses were recorded"
    lrs, smoothed = lrs[finite], smoothed[finite]
    i_min = int(np.argmin(smoothed))
    min_lr = float(lrs[i_min])
    start = min(skip_start, max(0, i_min - 3))
    if i_min - start < 2:
        return None, None, min_lr, "the loss was lowest at the very start of the sweep: lower --start-lr"
    x, y = np.log10(lrs[start:i_min + 1]), smoothed[start:i_min + 1]
    w = max(3, len(x) // 10)
    slopes = [np.polyfit(x[i:i + w], y[i:i + w], 1)[0] for i in range(len(x) - w + 1)]
    i_steep = int(np.argmin(slopes))
    steepest = float(10 ** x[i_steep:i_steep + w].mean())
    drop = float(smoothed[start] - smoothed[i_min])
    if slopes[i_steep] >= 0 or drop <= min_drop * max(abs(float(smoothed[start])), 1e-12):
        return min_lr / 10, None, min_lr, (f"the loss hardly fell during the sweep ({smoothed[start]:.4g} -> "
                                           f"{smoothed[i_min]:.4g}): the suggestion (minimum/10) is weak; sweep more "
                                           "steps or a narrower range")
    return steepest, steepest, min_lr, ""


def lr_range_test(step_fn: Callable[[], float], set_lr: Callable[[float], None], *, start_lr: float = 1e-7,
                  end_lr: float = 10.0, steps: int = 100, smooth: float = 0.9, diverge: float = 4.0,
                  min_steps_before_stop: int = 5, progress: bool = True) -> LRFinderResult:
    """Run the sweep: for each lr, `set_lr(lr)` then `step_fn()` (one training step, returning its loss).

    `smooth` is the EMA factor of the loss (fastai's 0.98 suits sweeps of several hundred steps; 0.9 keeps the
    lag of a 100-step sweep to a few points). The sweep stops when the smoothed loss exceeds `diverge` x the
    best smoothed loss so far (after `min_steps_before_stop` steps), or on a non-finite loss."""
    if not 0 <= smooth < 1:
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    if diverge <= 1:
        raise ValueError(f"diverge must be > 1, got {diverge}")
    schedule = lr_schedule(start_lr, end_lr, steps)
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    stopped, reason = False, f"swept the whole range {start_lr:.3g} to {end_lr:.3g}"
    started = time.time()
    bar = tqdm(schedule, desc="lr range test", unit="step", dynamic_ncols=True, disable=not progress)
    for i, lr in enumerate(bar):
        set_lr(float(lr))
        loss = float(step_fn())
        lrs.append(float(lr))
        losses.append(loss)
        if not math.isfinite(loss):
            smoothed.append(math.nan)
            stopped, reason = True, f"the loss became {loss} at lr {lr:.3g} (step {i + 1}): stopped"
            break
        avg = smooth * avg + (1 - smooth) * loss
        value = avg / (1 - smooth ** (i + 1))  # bias correction: the EMA starts at 0
        smoothed.append(value)
        best = min(best, value)
        bar.set_postfix(lr=f"{lr:.2e}", loss=f"{value:.4g}")
        if i + 1 >= min_steps_before_stop and value > diverge * best:
            stopped = True
            reason = (f"diverged at lr {lr:.3g} (step {i + 1}): smoothed loss {value:.4g} > {diverge:g} x best "
                      f"{best:.4g}; stopped")
            break
    bar.close()
    suggested, steepest, min_lr, note = suggest_lr(lrs, smoothed)
    result = LRFinderResult(lrs, losses, smoothed, suggested, steepest, min_lr, stopped, reason, start_lr, end_lr,
                            steps, round(time.time() - started, 2))
    if note:
        result.notes.append(note)
    if not stopped:
        result.notes.append("the loss did not diverge within the range: a higher --end-lr shows where it does")
    return result


def lr_find_config(cfg, *, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100, smooth: float = 0.9,
                   diverge: float = 4.0, device: str | None = None, progress: bool = True) -> LRFinderResult:
    """The range test on a config's task, data, model and optimizer(s). With several optimizers (a GAN's two
    players) every optimizer gets the same lr and the recorded loss is the sum of the phases' losses."""
    setup = build_setup(cfg, device=device, augment=True)
    batches = setup.batches()
    step = 0

    def step_fn() -> float:
        nonlocal step
        losses = setup.train_step(next(batches), step)
        step += 1
        return losses["loss"]

    try:
        result = lr_range_test(step_fn, setup.set_lr, start_lr=start_lr, end_lr=end_lr, steps=steps, smooth=smooth,
                               diverge=diverge, progress=progress)
    finally:
        batches.close()  # stops the loader's workers
    result.notes[:0] = setup.notes
    if len(setup.optimizers) > 1:
        result.notes.append(f"{len(setup.optimizers)} optimizers ({', '.join(setup.optimizers)}) swept together; "
                            "the loss is the sum of the phases' losses (adversarial losses need not fall)")
    if cfg.train.grad_clip:
        result.notes.append(f"gradients clipped at train.grad_clip = {cfg.train.grad_clip:g}, as in training")
    return result


def lr_figure(result: LRFinderResult, title: str = "Learning-rate range test"):
    fig = new_figure(7, 4.2)
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.losses, color="#bbbbbb", linewidth=0.8, label="loss")
    ax.plot(result.lrs, result.smoothed, color="#1f77b4", linewidth=1.8, label="smoothed loss")
    ax.set_xscale("log")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # the smoothed curve sets the range: a raw spike at divergence would flatten the rest
        lo, hi = min(finite), max(finite)
        if finite[0] > 0:  # the divergence at the end may climb far: show up to 1.5 x the starting loss
            hi = min(hi, 1.5 * max(finite[0], lo))
        margin = 0.08 * (hi - lo) + 1e-12
        ax.set_ylim(lo - margin, hi + margin)
    if result.steepest_lr:
        ax.axvline(result.steepest_lr, color="#d62728", linestyle="--", label=f"steepest {result.steepest_lr:.2g}")
    if result.min_loss_lr:
        ax.axvline(result.min_loss_lr / 10, color="#2ca02c", linestyle=":",
                   label=f"minimum/10 {result.min_loss_lr / 10:.2g}")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def save_lr_find(result: LRFinderResult, out_dir: str | Path, title: str = "Learning-rate range test") -> dict:
    """Write lr_find.json and lr_find.png into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lr_find.json").write_text(json.dumps(result.to_dict(), indent=2, allow_nan=True))
    fig = lr_figure(result, title)
    fig.savefig(out / "lr_find.png", dpi=110)
    return {"json": out / "lr_find.json", "png": out / "lr_find.png"}
