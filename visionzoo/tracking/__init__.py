"""Single-object trackers built on the zoo's Siamese models, with one API:

    tracker = visionzoo.create_tracker("siamfc_alexnet", weights="shapes")
    tracker.init(frame0, (x, y, w, h))
    box, score = tracker.update(frame1)
    result = visionzoo.track_sequence(tracker, frames, init_box)   # boxes (N, 4), fps

The tracker kind follows the model's registry family (siamfc -> SiamFCTracker, sint -> SINTTracker);
its inference parameters come from the weights' model card (the config's `eval.tracker` section the
model was evaluated with), overridden by keyword arguments.
"""
from __future__ import annotations

import dataclasses

from visionzoo.tracking.base import Tracker, TrackResult, track_sequence
from visionzoo.tracking.siamfc import SiamFCParams, SiamFCTracker
from visionzoo.tracking.sint import SINTParams, SINTTracker

TRACKERS = {"siamfc": (SiamFCTracker, SiamFCParams), "sint": (SINTTracker, SINTParams)}


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


def build_tracker(model, family: str, params: dict | None = None, **kwargs) -> Tracker:
    """The tracker of `family` around an already built model (what evaluation does during training)."""
    settings = tracker_params(family, params)  # raises for an unknown family or parameter
    return TRACKERS[family][0](model, settings, **kwargs)


def create_tracker(name: str, weights: str | None = None, *, device="cpu", mean=None, std=None,
                   model_kwargs: dict | None = None, **params) -> Tracker:
    """A tracker around the registered tracking model `name` (optionally with weights); `model_kwargs` go to
    the model builder (e.g. width=0.25), `params` override the tracker's inference parameters (e.g. the
    5-scale search: `**vars(SiamFCParams.five_scale())`)."""
    from visionzoo.factory import create_model
    from visionzoo.registry import get_entry

    entry = get_entry(name)
    if entry.task != "tracking":
        raise ValueError(f"{name!r} is a {entry.task} model, not a tracker; trackers: "
                         f"{', '.join(n for n in _tracking_models())}")
    model = create_model(name, weights=weights, **(model_kwargs or {}))
    card = getattr(model, "pretrained_cfg", {}) or {}
    card_params = (((card.get("config") or {}).get("eval") or {}).get("tracker") or {})
    return build_tracker(model, entry.family, {**card_params, **params}, device=device,
                         mean=mean or card.get("mean") or (0.485, 0.456, 0.406),
                         std=std or card.get("std") or (0.229, 0.224, 0.225))


def _tracking_models() -> list[str]:
    from visionzoo.registry import list_models

    return list_models(task="tracking")


__all__ = ["SINTParams", "SINTTracker", "SiamFCParams", "SiamFCTracker", "TrackResult", "Tracker",
           "build_tracker", "create_tracker", "track_sequence", "tracker_params"]
