"""`create_model`: the one entry point that builds any registered model, optionally with weights."""
from __future__ import annotations

import difflib
import inspect
import os
from typing import Tuple

import torch
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


# create_model's own keywords, suggested for a misspelt one (weight= -> weights=) next to the builder's.
OWN_KWARGS = ("weights", "num_classes", "stn")


def _check_kwargs(name: str, builder, kwargs: dict) -> None:
    params = inspect.signature(builder).parameters
    valid = [p for p in params if p != "num_classes"]
    for key in kwargs:
        if key not in params or key == "num_classes":
            close = difflib.get_close_matches(key, list(OWN_KWARGS) + valid, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise TypeError(
                f"create_model({name!r}): unknown keyword argument {key!r}.{hint} "
                f"Valid keywords: {', '.join(valid) or '(none)'} (and create_model's own: {', '.join(OWN_KWARGS)})"
            )


def _first_conv_channels(module: nn.Module) -> int | None:
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def _check_image_batch(module: nn.Module, args: tuple) -> None:
    """The entry check of a classifier's or segmenter's forward: one line naming what was expected instead of
    a stack from deep inside torch. Valid inputs pass untouched."""
    if not args:
        return
    x = args[0]
    name = (getattr(module, "pretrained_cfg", None) or {}).get("model") or type(module).__name__
    channels = _first_conv_channels(module)
    expected = (f"a float tensor (N, {channels or 'C'}, H, W), scaled to [0, 1] and normalised by the weights' "
                "mean and std (model.pretrained_cfg)")
    if not isinstance(x, torch.Tensor):
        if isinstance(x, (str, os.PathLike, list, tuple)) or type(x).__module__.split(".")[0] in ("PIL", "numpy"):
            raise TypeError(f"{name}: expected {expected}; got {type(x).__name__}. For images in any form "
                            "(paths, PIL images, arrays) use visionzoo.Classifier or visionzoo.Segmenter")
        return  # a tracing proxy or the like: the model itself decides
    got = f"dtype {str(x.dtype).replace('torch.', '')} and shape {tuple(x.shape)}"
    if x.ndim != 4:
        fix = ". Add the batch dimension: x[None]" if x.ndim == 3 else ""
        raise ValueError(f"{name}: expected {expected}; got {got}{fix}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected {expected}; got {got}. Convert with x.float() / 255, then normalise")
    if channels is not None and x.shape[1] != channels:
        fix = ". It looks channels-last (N, H, W, C): use x.permute(0, 3, 1, 2)" if x.shape[3] == channels else ""
        raise ValueError(f"{name}: expected {expected}; got {got}{fix}")


def check_image_batch(module: nn.Module, args: Tuple[torch.Tensor]) -> None:
    """Forward pre-hook of the zoo's classifiers and segmenters (see _check_image_batch). Skipped while
    scripting, tracing, compiling or exporting, so exported graphs and compiled code are unchanged; typed so
    that torch.jit.script accepts it."""
    if not torch.jit.is_scripting():
        if not (torch.jit.is_tracing() or _compiling()):
            _check_image_batch(module, args)
    return None


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and (compiler.is_compiling()
                                          or getattr(compiler, "is_exporting", lambda: False)()))


def create_model(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    weights: None (random init), a file path, a tag of a shipped/cached file ("shapes"),
        "torchvision:<TAG>" for torchvision's official files, an "https://.../<file>[#sha256=HEX]" URL or
        "hf-hub:ORG/NAME[@REV]"; the last three download on first use (`visionzoo.hub`), verified.
        See `visionzoo.weights` for the lookup order.
    num_classes: head size; defaults to the weights' class count, else the model's default.
    The model gets a `pretrained_cfg` dict (class names, input size, normalisation, source) when
    weights are loaded.
    """
    entry = get_entry(name)
    # `stn` (a spatial transformer in front of a classifier, visionzoo/models/stn.py) wraps any builder.
    stn_given, stn_config = "stn" in kwargs, kwargs.pop("stn", None)
    _check_kwargs(name, entry.builder, kwargs)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
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
    if entry.task in ("classification", "segmentation"):  # one image batch in: a light check at the entry
        model.register_forward_pre_hook(check_image_batch)
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
