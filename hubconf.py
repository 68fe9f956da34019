"""torch.hub entry points: torch.hub.load(REPO_DIR, "resnet18", source="local", weights="shapes").

One entry point per registered model; each takes create_model's keywords (weights, num_classes, ...).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from visionzoo import create_model as _create_model  # noqa: E402
from visionzoo import list_models as _list_models  # noqa: E402

dependencies = ["torch", "torchvision", "safetensors", "yaml"]


def _entry_point(name):
    def build(weights=None, **kwargs):
        return _create_model(name, weights=weights, **kwargs)

    build.__name__ = name
    build.__doc__ = f"visionzoo model {name!r}: create_model({name!r}, weights=..., num_classes=..., ...)"
    return build


for _name in _list_models():
    globals()[_name] = _entry_point(_name)
