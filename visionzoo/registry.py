"""The model registry: one `register_model` decorator, wildcard `list_models`, and `model_info`.

Every architecture file registers small builder functions here together with the data that
describes them (task, family, default input size, which parameters form the classifier head, the
official weight files they can load, and what the model can do: its `Capabilities`, which the tasks ask
instead of matching family names). `visionzoo.factory.create_model` builds from it.

The registry holds no model code: importing the `visionzoo` package imports `visionzoo.models`, whose
architecture files fill it.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

import torch

from visionzoo.profile import count_parameters, gflops
from visionzoo.weights import available_weights

_MODELS: dict[str, ModelEntry] = {}

TASKS = ("classification", "detection", "segmentation", "tracking", "generative")
GENERATIVE_KINDS = ("autoencoder", "vae", "gan")
TRACKER_KINDS = ("siamfc", "sint")


@dataclass(frozen=True)
class Capabilities:
    """What a model can do, declared where it is registered; tasks ask these rather than the family name,
    so a new architecture with the same abilities needs no change in the task code."""

    needs_proposals: bool = False  # detection: takes region proposals with the images (Fast R-CNN)
    predicts_masks: bool = False  # detection: predicts instance masks as well as boxes (Mask R-CNN)
    tracker_kind: Optional[Literal["siamfc", "sint"]] = None  # tracking: which visionzoo.tracking tracker runs it
    # tracking: embeds candidate boxes of a frame (SINT's RoI embeddings, trained with a contrastive loss on
    # two forward calls per update) instead of scoring a whole search image against an exemplar
    embeds_candidate_boxes: bool = False
    generative_kind: Optional[Literal["autoencoder", "vae", "gan"]] = None  # generative: which task class trains it
    conditional: bool = False  # generative: takes a class label (class count from the data)
    denoising: bool = False  # autoencoder: trained on corrupted inputs


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
    capabilities: Capabilities = field(default_factory=Capabilities)


def register_model(
    *,
    task: str,
    family: str,
    input_size: tuple[int, int, int] = (3, 224, 224),
    num_classes: int | None = 1000,
    head: tuple[str, ...] = (),
    torchvision_name: str | None = None,
    capabilities: Capabilities | None = None,
    **extra,
):
    """Decorator that registers a builder function under its own name; `capabilities` declares what the model
    can do (what the task may ask of it), `extra` any other metadata (e.g. a GAN's critic steps)."""
    if task not in TASKS:
        raise ValueError(f"register_model: unknown task {task!r}; expected one of {TASKS}")
    capabilities = capabilities or Capabilities()
    if task == "generative" and capabilities.generative_kind not in GENERATIVE_KINDS:
        raise ValueError(f"register_model: a generative model declares capabilities.generative_kind, one of "
                         f"{GENERATIVE_KINDS}")
    if task == "tracking" and capabilities.tracker_kind not in TRACKER_KINDS:
        raise ValueError(f"register_model: a tracking model declares capabilities.tracker_kind, one of "
                         f"{TRACKER_KINDS}")

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
            capabilities=capabilities,
        )
        return fn

    return decorate


def get_entry(name: str) -> ModelEntry:
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown model {name!r}.{hint} visionzoo.list_models() lists all {len(_MODELS)} registered models."
        ) from None


def capabilities(name: str) -> Capabilities:
    """What the registered model `name` declares it can do."""
    return get_entry(name).capabilities


def list_models(pattern: str | None = None, task: str | None = None) -> list[str]:
    """Registered model names, sorted; `pattern` is an fnmatch wildcard ("resnet*", "vgg1?_bn")."""
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
    entry = get_entry(name)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):
        model = entry.builder(**kwargs)
    return count_parameters(model), gflops(model, entry.default_input_size)


def model_info(name: str) -> dict:
    """Task, family, parameters, GFLOPs (multiply-adds at the default input size), default input size,
    and the weights available for this model with their measured metrics."""
    entry = get_entry(name)
    params, flops = count_parameters_and_flops(name, entry.default_num_classes)
    return {
        "name": name,
        "task": entry.task,
        "family": entry.family,
        "description": entry.description,
        "parameters": params,
        "gflops": None if flops is None else round(flops, 4),
        "default_input_size": list(entry.default_input_size),
        "default_num_classes": entry.default_num_classes,
        "weights": available_weights(name, entry.torchvision_name),
    }
