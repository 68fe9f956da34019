"""Task registry: each task package registers one Task object."""
from __future__ import annotations

import difflib

from visionzoo.tasks.base import Accumulator, Task, UpdatePhase

_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    import visionzoo.tasks.classification  # noqa: F401  (each task package registers itself)
    import visionzoo.tasks.detection  # noqa: F401
    import visionzoo.tasks.generative  # noqa: F401
    import visionzoo.tasks.segmentation  # noqa: F401
    import visionzoo.tasks.tracking  # noqa: F401

    if name not in _TASKS:
        close = difflib.get_close_matches(name, list(_TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {name!r}{hint} (registered: {', '.join(sorted(_TASKS))})")
    return _TASKS[name]


__all__ = ["Accumulator", "Task", "UpdatePhase", "get_task", "register_task"]
