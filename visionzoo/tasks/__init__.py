"""Task registry: each task package registers its Task class (`get_task(name)`: the class, whose config sections
and metric direction need no config); `task_for(cfg)` is the task object built for a config (for `generative`,
the task class of the model's kind), which holds it."""
from __future__ import annotations

import difflib

from visionzoo.tasks.base import Accumulator, Task, UpdatePhase

_TASKS: dict[str, type[Task]] = {}


def register_task(task: type[Task]) -> type[Task]:
    _TASKS[task.name] = task
    return task


# Each task package registers itself when imported, calling register_task: so they come after it.
import visionzoo.tasks.classification  # noqa: E402,F401
import visionzoo.tasks.detection  # noqa: E402,F401
import visionzoo.tasks.generative  # noqa: E402,F401
import visionzoo.tasks.segmentation  # noqa: E402,F401
import visionzoo.tasks.tracking  # noqa: E402,F401


def get_task(name: str) -> type[Task]:
    """The Task class registered as `name`: what a config's sections are typed by, before any task is built."""
    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {name!r}{hint} (registered: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]


def task_for(cfg) -> Task:
    """The task object for `cfg`, bound to it: get_task(cfg.task).for_config(cfg), an instance of the registered
    class, or for a task that is several of the class of the config's model (generative: AutoencoderTask,
    VAETask or GANTask by the model's declared kind)."""
    return get_task(cfg.task).for_config(cfg)


__all__ = ["Accumulator", "Task", "UpdatePhase", "get_task", "register_task", "task_for"]
