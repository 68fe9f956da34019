"""Task registry: each task package registers one Task object (`get_task(name)`); `task_for(cfg)` is the
object that handles a config (for `generative`, the task class of the model's kind)."""
from __future__ import annotations

import difflib

from visionzoo.tasks.base import Accumulator, Task, UpdatePhase

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


# Each task package registers itself when imported, calling register_task: so they come after it.
import visionzoo.tasks.classification  # noqa: E402,F401
import visionzoo.tasks.detection  # noqa: E402,F401
import visionzoo.tasks.generative  # noqa: E402,F401
import visionzoo.tasks.segmentation  # noqa: E402,F401
import visionzoo.tasks.tracking  # noqa: E402,F401


def get_task(name: str) -> Task:
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {name!r}{hint} (registered: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]


def task_for(cfg) -> Task:
    """The task object for `cfg`: get_task(cfg.task), narrowed to the config's model where the task is several
    (generative: AutoencoderTask, VAETask or GANTask by the model's declared kind)."""
    return get_task(cfg.task).for_config(cfg)


__all__ = ["Accumulator", "Task", "UpdatePhase", "get_task", "register_task", "task_for"]
