"""`create_model`: the one entry point that builds any registered model, optionally with weights."""
from __future__ import annotations

import difflib
import inspect
import os

from torch import nn

from visionzoo.models.stn import SpatialTransformerClassifier, attach_stn
from visionzoo.registry import get_entry
from visionzoo.weights import (
    WeightsError,
    apply_state_dict,
    head_num_classes,
    read_state_dict,
    resolve_weights,
    strip_prefixes,
    verify_sha256,
)

# Builder keywords that only initialise weights: irrelevant (and skipped) when a full weight file is loaded.
INIT_ONLY_KWARGS = ("backbone_weights",)


def _check_kwargs(name: str, builder, kwargs: dict) -> None:
    params = inspect.signature(builder).parameters
    valid = [p for p in params if p != "num_classes"]
    for key in kwargs:
        if key not in params or key == "num_classes":
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise TypeError(
                f"create_model({name!r}): unknown keyword argument {key!r}.{hint} "
                f"Valid keywords: {', '.join(valid) or '(none)'}"
            )


def create_model(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    weights: None (random init), a file path, a tag of a shipped/cached file ("shapes"), or
        "torchvision:<TAG>" for torchvision's official files. See `visionzoo.weights` for the lookup order.
    num_classes: head size; defaults to the weights' class count, else the model's default.
    The model gets a `pretrained_cfg` dict (class names, input size, normalisation, source) when
    weights are loaded.
    """
    entry = get_entry(name)
    # `stn` (a spatial transformer in front of a classifier, visionzoo/models/stn.py) wraps any builder.
    stn_given, stn_config = "stn" in kwargs, kwargs.pop("stn", None)
    _check_kwargs(name, entry.builder, kwargs)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"create_model({name!r}): num_classes must be a positive integer, got {num_classes!r}")

    resolved = state = None
    if weights is not None:
        resolved = resolve_weights(name, weights, entry.torchvision_name)
        verify_sha256(resolved)
        state = read_state_dict(resolved.path)
    if num_classes is None:
        if state is not None:
            num_classes = resolved.card.get("num_classes") or head_num_classes(
                state, entry.head_prefixes + tuple(f"classifier.{p}" for p in entry.head_prefixes))
        num_classes = num_classes or entry.default_num_classes

    build_kwargs = dict(kwargs)
    if resolved is not None:
        # Architecture keywords the weights were trained with (detectors' min_size, anchor sizes...) come
        # from the model card's config unless given here; backbone_weights is moot once all weights load.
        card_kwargs = ((resolved.card.get("config") or {}).get("model") or {}).get("kwargs") or {}
        valid = set(inspect.signature(entry.builder).parameters)
        for k, v in card_kwargs.items():
            if k in valid and k not in build_kwargs and k not in INIT_ONLY_KWARGS:
                build_kwargs[k] = v
        if not stn_given:
            stn_config = card_kwargs.get("stn")
    if num_classes is not None:
        build_kwargs["num_classes"] = num_classes
    model = attach_stn(entry.builder(**build_kwargs), stn_config, model_name=name, task=entry.task)
    load_into, head_prefixes = model, entry.head_prefixes
    if isinstance(model, SpatialTransformerClassifier):
        if state is not None and not any(k.startswith("classifier.") for k in strip_prefixes(state)):
            load_into = model.classifier  # plain classifier weights; the STN starts at the identity
        else:
            head_prefixes = tuple(f"classifier.{p}" for p in entry.head_prefixes)
    model.pretrained_cfg = {
        "model": name,
        "task": entry.task,
        "num_classes": num_classes,
        "input_size": list(entry.default_input_size),
    }
    if state is not None:
        try:
            replaced = apply_state_dict(load_into, state, head_prefixes, source=str(resolved.path))
        except WeightsError:
            raise
        card = resolved.card
        model.pretrained_cfg.update(
            {
                "weights": str(weights),
                "file": str(resolved.path),
                "source": resolved.source,
                "class_names": None if replaced else card.get("class_names"),
                "head_replaced": bool(replaced),
            }
        )
        for key in ("input_size", "mean", "std", "interpolation", "crop_pct", "metrics", "config"):
            if key in card:
                model.pretrained_cfg[key] = card[key]
    return model
