"""The registry of data sets: each names the task it serves, the builder that makes it, and its parameters
(`data.params`) as a dataclass with typed fields and defaults.

    @register_dataset("coco", task="detection", params=COCOParams)
    def build_coco(cfg, split, params, **task_kwargs): ...

    entry = get_dataset("detection", cfg.data.dataset)    # unknown: the error lists the task's names
    params = entry.parse_params(cfg.data.params)          # unknown key / wrong type: the error names it

Each data set has its own params dataclass holding exactly the keys it reads: a key of another data set (VOC's
`year` for Penn-Fudan) is an error naming the key, the data set, its keys and the data sets that have it. The keys every data set of a task
reads sit in a base dataclass the data sets' own extend; `typed_params` falls back to it for a config whose
data set is not registered (a benchmark's synthetic batches).

A task registers its data sets where it builds them (the builder needs the task's transforms); the registry
itself knows no task code, so `data.dataset` and `data.params` are checked one way for every task.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Optional

from visionzoo.strict import ConfigError, params_from_dict

__all__ = ["DatasetEntry", "NoParams", "dataset_names", "get_dataset", "register_dataset", "split_exists",
           "typed_params"]


@dataclass
class NoParams:
    """A data set that takes no `data.params`."""


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    task: str
    builder: Callable
    params: type  # dataclass of the data set's `data.params`
    # Splits the data set always has (carved from official files, not folders under data.root); None: folders.
    splits: Optional[tuple[str, ...]] = None
    # has_split(root, params, split): whether data.root holds `split` when that is not a folder root/<split>
    has_split: Optional[Callable] = None
    description: str = ""

    def parse_params(self, values: dict):
        """`data.params` as this data set's params dataclass (defaults filled in); a key it does not read is an
        error naming the key, this data set and its keys (and the data sets of the task that have it)."""
        values, names = dict(values or {}), self.param_names()
        what = f"parameter of the {self.task} data set {self.name!r}"
        unknown = [k for k in values if k not in names]
        if unknown:  # another data set's key: say whose (the closest-name hint would mislead)
            others = [e.name for e in _DATASETS.get(self.task, {}).values() if unknown[0] in e.param_names()]
            if others:
                raise ConfigError(f"data.params.{unknown[0]} is not a {what}; it is a key of {_quoted_list(others)} "
                                  f"(known: {', '.join(names)})")
        return params_from_dict(self.params, values, "data.params.", what)

    def param_defaults(self) -> dict:
        return asdict(self.params())

    def param_names(self) -> list[str]:
        return [f.name for f in fields(self.params)]


_DATASETS: dict[str, dict[str, DatasetEntry]] = {}  # task -> name -> entry, in registration order


def register_dataset(name: str, *, task: str, params: type = NoParams, splits: tuple[str, ...] | None = None,
                     has_split: Callable | None = None):
    """Decorator registering `builder` as data set `name` of `task`, with `params` typing its `data.params`.
    `splits`: the splits it always has; `has_split(root, params, split)`: how to tell whether root holds a split
    (default: a folder root/<split>)."""

    def decorate(builder: Callable) -> Callable:
        entries = _DATASETS.setdefault(task, {})
        if name in entries:
            raise ValueError(f"register_dataset: {task} already has a data set named {name!r}")
        doc = (builder.__doc__ or "").strip().splitlines()
        entries[name] = DatasetEntry(name=name, task=task, builder=builder, params=params,
                                     splits=None if splits is None else tuple(splits), has_split=has_split,
                                     description=doc[0] if doc else "")
        return builder

    return decorate


def split_exists(task: str, data, split: str) -> bool:
    """Whether the data (a config's `data` section) hold `split`: the data set's fixed splits, else its own
    test, else a folder data.root/<split> (also for a data set not registered: its error comes when it is built)."""
    entry = _DATASETS.get(task, {}).get(data.dataset)
    if entry is not None and entry.splits is not None:
        return split in entry.splits
    if not data.root:
        return True
    if entry is not None and entry.has_split is not None:
        return bool(entry.has_split(Path(data.root), entry.parse_params(data.params), split))
    return (Path(data.root) / split).is_dir()


def typed_params(task: str, data, base: type):
    """`data.params` of a config's `data` section, typed by its data set's params dataclass; for a data set not
    registered for `task` (a benchmark's synthetic batches), by `base`: the keys every data set of the task reads."""
    entry = _DATASETS.get(task, {}).get(data.dataset)
    if entry is not None:
        return entry.parse_params(data.params)
    return params_from_dict(base, dict(data.params or {}), "data.params.", f"{task} data parameter")


def dataset_names(task: str) -> list[str]:
    """The data sets registered for `task`, in registration order."""
    return list(_DATASETS.get(task, {}))


def _quoted_list(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def get_dataset(task: str, name: str) -> DatasetEntry:
    """The entry of data set `name` of `task`; an unknown name is an error listing the task's data sets."""
    try:
        return _DATASETS[task][name]
    except KeyError:
        raise ValueError(f"data.dataset = {name!r} is not a {task} dataset; expected "
                         f"{_quoted_list(dataset_names(task))}") from None
