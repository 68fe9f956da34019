"""The model registry: one `register_model` decorator, wildcard `list_models`, and `model_info`.

Every architecture file registers small builder functions here together with the data that
describes them (task, family, default input size, which parameters form the classifier head, and
the official weight files they can load). `visionzoo.factory.create_model` builds from it.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import dataclass, field
from typing import Callable

import torch

_MODELS: dict[str, ModelEntry] = {}

TASKS = ("classification", "detection", "segmentation", "tracking", "generative")


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model builder."""

    name: str
    builder: Callable[..., torch.nn.Module]
    task: str
    family: str
    default_input_size: tuple[int, int, int]
    default_num_classes: int | None
    # Parameter-name prefixes of the class-dependent head; replaced when weights have another class count.
    head_prefixes: tuple[str, ...] = ()
    # Name of the torchvision builder whose official weight files this model loads unchanged.
    torchvision_name: str | None = None
    description: str = ""
    extra: dict = field(default_factory=dict)


def register_model(
    *,
    task: str,
    family: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int | None = 1000,
    head: tuple[str, ...] = (),
    torchvision_name: str | None = None,
    **extra,
):
    """Decorator that registers a builder function under its own name."""
    if task not in TASKS:
        raise ValueError(f"register_model: unknown task {task!r}; expected one of {TASKS}")

    def decorate(fn: Callable[..., torch.nn.Module]):
        name = fn.__name__
        if name in _MODELS:
            raise ValueError(f"register_model: a model named {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        _MODELS[name] = ModelEntry(
            name=name,
            builder=fn,
            task=task,
            family=family,
            default_input_size=tuple(input_size),
            default_num_classes=num_classes,
            head_prefixes=tuple(head),
            torchvision_name=torchvision_name,
            description=doc[0] if doc else "",
            extra=dict(extra),
        )
        return fn

    return decorate


def _ensure_models_imported() -> None:
    # Importing the package runs every architecture file's @register_model.
    import visionzoo.models  # noqa: F401


def get_entry(name: str) -> ModelEntry:
    _ensure_models_imported()
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} visionzoo.list_models() lists all {len(_MODELS)} registered models."
        ) from None


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered model names, sorted; `pattern` is an fnmatch wildcard ("resnet*", "vgg1?_bn")."""
    _ensure_models_imported()
    if task is not None and task not in TASKS:
        raise ValueError(f"list_models: unknown task {task!r}; expected one of {TASKS}")
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if task:
        names = [n for n in names if _MODELS[n].task == task]
    return names


@functools.lru_cache(maxsize=None)  # noqa: UP033 (functools.cache needs Python 3.9+; kept explicit)
def count_parameters_and_flops(name: str, num_classes: int | None) -> tuple[int, float | None]:
    """Parameter count and multiply-add GFLOPs at the default input size (torchvision's convention).
    The model is built on the meta device, so nothing is allocated or computed for real."""
    from visionzoo.profile import count_parameters, gflops

    entry = get_entry(name)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):
        model = entry.builder(**kwargs)
    return count_parameters(model), gflops(model, entry.default_input_size)


def model_info(name: str) -> dict:
    """Task, family, parameters, GFLOPs (multiply-adds at the default input size), default input size,
    and the weights available for this model with their measured metrics."""
    from visionzoo.weights import available_weights

    entry = get_entry(name)
    params, gflops = count_parameters_and_flops(name, entry.default_num_classes)
    return {
        "name": name,
        "task": entry.task,
        "family": entry.family,
        "description": entry.description,
        "parameters": params,
        "gflops": None if gflops is None else round(gflops, 4),
        "default_input_size": list(entry.default_input_size),
        "default_num_classes": entry.default_num_classes,
        "weights": available_weights(name),
    }
