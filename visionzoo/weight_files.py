"""Weight files on disk: where they live, their model cards and checksums, and reading their tensors without
unpickling anything. The lowest layer of weights handling: `hub` (downloads) and `weights` (lookup by
name, applying to a model) both build on it."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
TORCHVISION_PREFIX = "torchvision:"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


class WeightsError(ValueError):
    """Weights could not be found, verified, read or applied; the message says what and where."""


def user_cache_dir() -> Path:
    home = os.environ.get("VISIONZOO_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "visionzoo")
    return Path(home) / "weights"


def torch_hub_checkpoints_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass
class ResolvedWeights:
    """A weight file on disk and what is known about it (its model card, if any)."""

    path: Path
    source: str  # "path", "repo", "cache", "torchvision", "url" or "hf-hub"
    tag: str | None = None
    card: dict = field(default_factory=dict)
    expected_sha256: str | None = None  # full hex digest or prefix
    verified: bool = False  # True when the sha256 was already checked (by the download that just wrote it)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def card_path_for(weight_path: Path) -> Path:
    return weight_path.with_suffix(".json")


def read_card(weight_path: Path) -> dict:
    card_file = card_path_for(weight_path)
    if not card_file.is_file():
        return {}
    try:
        return json.loads(card_file.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(f"model card {card_file} is not valid JSON: {e}") from e


def verify_sha256(resolved: ResolvedWeights) -> None:
    expected = resolved.expected_sha256
    if not expected or resolved.verified:
        return
    actual = sha256_file(resolved.path)
    if not actual.startswith(expected.lower()):
        raise WeightsError(
            f"{resolved.path}: sha256 mismatch (expected {expected}..., file has {actual}); "
            "the file is corrupt or not the one its name/model card says. Delete it and fetch it again."
        )


def checkpoint_card(path: Path) -> dict:
    """A trainer checkpoint's config and meta as a model card (so its architecture keywords, e.g. a
    narrower width, rebuild the right model); {} for anything else. Never unpickles objects."""
    if path.suffix not in (".pt", ".pth"):
        return {}
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # read_state_dict reports unreadable or unsafe files with the full explanation
        return {}
    if not (isinstance(obj, dict) and isinstance(obj.get("config"), dict)):
        return {}
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    return {**meta, "config": obj["config"]}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a safetensors file, or from a .pt/.pth file WITHOUT unpickling arbitrary objects.

    Trainer checkpoints (a dict with a 'model' entry) are accepted too; an EMA copy is preferred.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:  # safetensors raises its own error types, which differ across versions
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path}: refused to load: the file contains pickled Python objects other than tensors, which could "
            f"run arbitrary code. visionzoo only reads plain state dicts (torch.load(weights_only=True)) and "
            f"safetensors files. Details: {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, OSError, EOFError) as e:
        raise WeightsError(f"{path}: not a readable PyTorch weight file ({e})") from e
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj.get("ema") if isinstance(obj.get("ema"), dict) and obj.get("ema") else obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict (parameter name -> tensor), found {type(obj).__name__}")
    return obj
