"""What training and evaluation print: progress bars on a terminal, plain lines elsewhere, one line per epoch.

On a terminal the progress is a tqdm bar. When stderr is not a terminal (a log file, a scheduler's capture)
a bar would write a carriage-return update per step into the file, so instead a plain line is printed every
`every` steps (and at the end). VISIONZOO_PROGRESS=bar|plain|off overrides the choice.
"""
from __future__ import annotations

import math
import os
import sys
import time

from tqdm.auto import tqdm

PROGRESS_ENV = "VISIONZOO_PROGRESS"


def progress_mode() -> str:
    """'bar' on a terminal, 'plain' otherwise; VISIONZOO_PROGRESS overrides (bar, plain or off)."""
    mode = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if mode in ("bar", "plain", "off"):
        return mode
    return "bar" if getattr(sys.stderr, "isatty", lambda: False)() else "plain"


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(max(seconds, 0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PlainProgress:
    """The part of tqdm's interface the engine uses, printing a plain line every `every` steps."""

    def __init__(self, iterable=None, *, total: int | None = None, desc: str = "", initial: int = 0,
                 every: int | None = None, file=None):
        self.iterable = iterable
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:  # an iterable without a length
                total = None
        if every is None:  # about ten lines per pass
            every = max(10, total // 10) if total else 50
        self.total, self.desc, self.n, self.every = total, desc, initial, max(1, int(every))
        self.start_n, self.start, self.postfix, self.file = initial, time.time(), {}, file
        self.last_printed = initial

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n % self.every == 0 or (self.total is not None and self.n == self.total):
            self._print()

    def _print(self) -> None:
        if self.n == self.last_printed:
            return
        self.last_printed = self.n
        elapsed = time.time() - self.start
        done = self.n - self.start_n
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "")]
        if self.total:
            remaining = (self.total - self.n) * elapsed / done if done else float("nan")
            parts.append(f"{100 * self.n / self.total:.0f}%, {format_seconds(elapsed)} elapsed, "
                         f"ETA {format_seconds(remaining)}")
        else:
            parts.append(f"{format_seconds(elapsed)} elapsed")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        print("  ".join(parts), file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.n > self.start_n:
            self._print()


def progress_bar(iterable=None, *, total: int | None = None, desc: str = "", disable: bool = False,
                 initial: int = 0, every: int | None = None, **tqdm_kwargs):
    """A tqdm bar on a terminal, a PlainProgress elsewhere (see the module doc), nothing when `disable`."""
    mode = "off" if disable else progress_mode()
    if mode == "plain":
        return PlainProgress(iterable, total=total, desc=desc, initial=initial, every=every)
    return tqdm(iterable, total=total, desc=desc, initial=initial, disable=mode == "off", dynamic_ncols=True,
                **tqdm_kwargs)


def epoch_summary(epoch: int, epochs: int, record: dict, best: dict | None, seconds_per_epoch: float,
                  max_metrics: int = 6) -> str:
    """One line after a validation: the epoch's training loss and validation metrics (the best-model metric
    first), the best so far, the time per epoch and the ETA of the remaining epochs."""
    metric = (best or {}).get("metric")
    val = {k[4:]: v for k, v in record.items() if k.startswith("val_") and isinstance(v, (int, float))}
    names = ([metric] if metric in val else []) + [k for k in val if k != metric]
    shown = [f"val_{k} {val[k]:.4g}" for k in names[:max_metrics]]
    if "train_loss" in record:
        shown.insert(0, f"train_loss {record['train_loss']:.4g}")
    line = f"epoch {epoch}/{epochs}: " + ", ".join(shown)
    if best:
        line += f" | best val_{best['metric']} {best['value']:.4g} (epoch {best['epoch']})"
    remaining = max(epochs - epoch, 0)
    line += f" | {format_seconds(seconds_per_epoch)}/epoch, ETA {format_seconds(seconds_per_epoch * remaining)}"
    return line
