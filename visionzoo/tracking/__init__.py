"""Single-object trackers built on the zoo's Siamese models, with one API:

    tracker = visionzoo.create_tracker("siamfc_alexnet", weights="shapes")
    tracker.init(frame0, (x, y, w, h))
    box, score = tracker.update(frame1)
    result = visionzoo.track_sequence(tracker, frames, init_box)   # boxes (N, 4), fps

The tracker kind follows the model's registry family (siamfc -> SiamFCTracker, sint -> SINTTracker);
its inference parameters come from the weights' model card (the config's `eval.tracker` section the
model was evaluated with), overridden by keyword arguments. `compat="siamfc-pytorch"` loads a checkpoint
of that project (e.g. its `siamfc_alexnet_e50.pth`) and tracks with its conventions (SiamFCPytorchTracker).
"""
from __future__ import annotations

import dataclasses

from visionzoo.factory import create_model
from visionzoo.models.siamfc import load_siamfc_pytorch
from visionzoo.registry import get_entry, list_models
from visionzoo.tracking.base import Tracker, TrackResult, track_sequence
from visionzoo.tracking.siamfc import SiamFCParams, SiamFCTracker
from visionzoo.tracking.siamfc_pytorch import SiamFCPytorchTracker
from visionzoo.tracking.sint import SINTParams, SINTTracker

TRACKERS = {"siamfc": (SiamFCTracker, SiamFCParams), "sint": (SINTTracker, SINTParams)}
COMPAT = ("siamfc-pytorch",)  # checkpoints of other projects that create_tracker(compat=...) reads


def tracker_params(family: str, values: dict | None):
    """The tracker parameter dataclass for `family`, from a dict; an unknown key is an error naming it."""
    try:
        _, params_cls = TRACKERS[family]
    except KeyError:
        raise ValueError(f"no tracker for model family {family!r} (trackers: {', '.join(TRACKERS)})") from None
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(params_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {family} tracker parameter(s) {unknown}; known: {sorted(known)}")
    return params_cls(**values)


def build_tracker(model, kind: str, params: dict | None = None, **kwargs) -> Tracker:
    """The tracker of `kind` (a model's declared `tracker_kind`: "siamfc" or "sint") around an already built
    model (what evaluation does during training)."""
    settings = tracker_params(kind, params)  # raises for an unknown kind or parameter
    return TRACKERS[kind][0](model, settings, **kwargs)


def create_tracker(name: str, weights: str | None = None, *, device="cpu", mean=None, std=None,
                   model_kwargs: dict | None = None, compat: str | None = None, **params) -> Tracker:
    """A tracker around the registered tracking model `name` (optionally with weights); `model_kwargs` go to
    the model builder (e.g. width=0.25), `params` override the tracker's inference parameters (e.g. the
    5-scale search: `**vars(SiamFCParams.five_scale())`). `compat="siamfc-pytorch"`: `weights` is a
    checkpoint of that project for `siamfc_alexnet`, tracked with its conventions (see
    visionzoo.tracking.siamfc_pytorch)."""
    entry = get_entry(name)
    if entry.task != "tracking":
        raise ValueError(f"{name!r} is a {entry.task} model, not a tracker; trackers: "
                         f"{', '.join(n for n in _tracking_models())}")
    if compat is not None:
        return _compat_tracker(name, weights, compat, device=device, mean=mean, std=std,
                               model_kwargs=model_kwargs, params=params)
    model = create_model(name, weights=weights, **(model_kwargs or {}))
    card = getattr(model, "pretrained_cfg", {}) or {}
    card_params = (((card.get("config") or {}).get("eval") or {}).get("tracker") or {})
    return build_tracker(model, entry.capabilities.tracker_kind, {**card_params, **params}, device=device,
                         mean=mean or card.get("mean") or (0.485, 0.456, 0.406),
                         std=std or card.get("std") or (0.229, 0.224, 0.225))


def _compat_tracker(name: str, weights, compat: str, *, device, mean, std, model_kwargs, params) -> Tracker:
    if compat not in COMPAT:
        raise ValueError(f"compat={compat!r} is not known; one of: {', '.join(COMPAT)}")
    if name != "siamfc_alexnet":
        raise ValueError(f"compat='siamfc-pytorch' loads siamfc_alexnet checkpoints, not {name!r}")
    if not weights:
        raise ValueError("compat='siamfc-pytorch' needs weights=PATH to that project's checkpoint "
                         "(e.g. siamfc_alexnet_e50.pth)")
    ignored = [k for k, v in (("mean", mean), ("std", std), ("model_kwargs", model_kwargs)) if v]
    bounds = sorted({"min_scale", "max_scale"} & set(params))
    if ignored or bounds:
        raise ValueError(f"compat='siamfc-pytorch' takes raw 0-255 input with the paper's network and does not "
                         f"bound the target size: {', '.join(ignored + bounds)} cannot be set")
    settings = tracker_params("siamfc", params)
    return SiamFCPytorchTracker(load_siamfc_pytorch(weights), settings, device=device)


def _tracking_models() -> list[str]:
    return list_models(task="tracking")


__all__ = ["SINTParams", "SINTTracker", "SiamFCParams", "SiamFCPytorchTracker", "SiamFCTracker", "TrackResult",
           "Tracker", "build_tracker", "create_tracker", "track_sequence", "tracker_params"]
