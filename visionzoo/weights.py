"""Finding, verifying, reading and applying weight files. Never unpickles.

Lookup order for `create_model(name, weights=W)`:
  1. W is an existing file path (.safetensors, or .pt/.pth read with torch.load(weights_only=True)),
     checked against the sha256 in the model card beside it (<stem>.json), when there is one;
  2. the repository's `weights/` folder:             weights/<model>.<W>.safetensors (or W as a file name);
  3. the user cache `$VISIONZOO_HOME/weights/` (default ~/.cache/visionzoo/weights), same names;
  4. W = "torchvision:<TAG>" for torchvision-compatible models: torchvision's official file in
     `$TORCH_HOME/hub/checkpoints/` (torch.hub.get_dir()), verified against the sha256 prefix in its name;
  5. W = "https://.../<file>[#sha256=HEX]": the file in the user cache under its own name;
  6. W = "hf-hub:ORG/NAME[@REV]": a Hugging Face Hub repository's model.safetensors and config.json.
Files missing for 4-6 are downloaded on first use and verified (see `visionzoo.hub`), unless
VISIONZOO_OFFLINE=1 (or HF_HUB_OFFLINE=1): then a missing file is an error naming the file, every place
searched and the URL.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model_weights

from visionzoo import hub
from visionzoo.weight_files import (  # noqa: F401  (re-exported: the public names of weights handling)
    REPO_WEIGHTS_DIR,
    TORCHVISION_PREFIX,
    WEIGHT_SUFFIXES,
    ResolvedWeights,
    WeightsError,
    card_path_for,
    checkpoint_card,
    read_card,
    read_state_dict,
    sha256_file,
    torch_hub_checkpoints_dir,
    user_cache_dir,
    verify_sha256,
)


def _torchvision_weight_enum(model_name: str, tv_name: str | None, tag: str):
    if tv_name is None:
        raise WeightsError(f"model {model_name!r} has no torchvision counterpart, so 'torchvision:{tag}' cannot apply")
    enum = get_model_weights(tv_name)
    if tag == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[tag]
    except KeyError:
        valid = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise WeightsError(f"torchvision has no weights {tag!r} for {tv_name}; valid tags: {valid}") from None


def resolve_weights(model_name: str, weights: str | os.PathLike, tv_name: str | None = None) -> ResolvedWeights:
    """Find a weight file for `model_name` following the documented lookup order."""
    spec = os.fspath(weights)
    if hub.is_url(spec):
        return hub.fetch_url(spec, model_name=model_name)
    if spec.startswith(hub.HF_HUB_PREFIX):
        return hub.resolve_hf_hub(model_name, spec)
    if spec.startswith(TORCHVISION_PREFIX):
        tag = spec[len(TORCHVISION_PREFIX):]
        w = _torchvision_weight_enum(model_name, tv_name, tag)
        filename = w.url.rsplit("/", 1)[-1]
        path = torch_hub_checkpoints_dir() / filename
        match = re.search(r"-([a-f0-9]{6,})\.", filename)
        downloaded = not path.is_file()
        if downloaded:
            hub.fetch_torchvision(path, w.url, match.group(1) if match else None, f"{tv_name}:{w.name}")
        meta = dict(w.meta)
        card = {
            "model": model_name,
            "tag": spec,
            "source": "torchvision",
            "url": w.url,
            "num_classes": len(meta.get("categories") or []) or None,
            "class_names": meta.get("categories"),
            "metrics": meta.get("_metrics", {}),
            "recipe": meta.get("recipe"),
        }
        transforms = w.transforms()
        for key in ("mean", "std"):
            if hasattr(transforms, key):
                card[key] = list(getattr(transforms, key))
        if hasattr(transforms, "crop_size"):
            card["input_size"] = [3, *([transforms.crop_size[0]] * 2)]
        return ResolvedWeights(path, "torchvision", spec, card, match.group(1) if match else None,
                               verified=downloaded and match is not None)

    searched: list[str] = []
    direct = Path(spec).expanduser()
    searched.append(str(direct))
    if direct.is_file():
        card = read_card(direct)
        return ResolvedWeights(direct, "path", None, card or checkpoint_card(direct), card.get("sha256"))

    looks_like_path = os.sep in spec or spec.endswith(WEIGHT_SUFFIXES)
    candidates = [spec] if spec.endswith(WEIGHT_SUFFIXES) else [f"{model_name}.{spec}.safetensors", spec]
    if not looks_like_path or spec.endswith(WEIGHT_SUFFIXES):
        for source, folder in (("repo", REPO_WEIGHTS_DIR), ("cache", user_cache_dir())):
            for fname in candidates:
                path = folder / Path(fname).name
                searched.append(str(path))
                if path.is_file():
                    card = read_card(path)
                    if card.get("model") not in (None, model_name):
                        raise WeightsError(
                            f"{path} is a {card.get('model')!r} weight file (per its model card), not {model_name!r}"
                        )
                    return ResolvedWeights(path, source, spec, card, card.get("sha256"))
    tried = "\n    ".join(dict.fromkeys(searched))
    raise WeightsError(
        f"weights {spec!r} for model {model_name!r} not found. Searched, in order:\n    {tried}\n"
        f"  Pass a file path, put <model>.<tag>.safetensors in {REPO_WEIGHTS_DIR} or {user_cache_dir()} "
        f"(set VISIONZOO_HOME to move the cache), or use 'torchvision:<TAG>' for torchvision's official files, "
        f"an https:// URL or 'hf-hub:ORG/NAME' (downloaded on first use)."
        + (f" Available: {', '.join(available_weights(model_name, tv_name))}" if available_weights(model_name, tv_name) else "")
    )


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrappers' prefixes (DDP's 'module.', torch.compile's '_orig_mod.')."""
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def apply_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], head_prefixes: tuple[str, ...], source: str
) -> list[str]:
    """Load `state` strictly, except that a class-count mismatch confined to the head re-initialises the
    head (with a warning). Returns the names of the replaced head tensors. Any other mismatch is an error
    listing every mismatched key and shape."""
    state = strip_prefixes(state)
    own = model.state_dict()
    # BatchNorm's num_batches_tracked is a step counter that older files (and files saved from frozen
    # BN) lack; load_state_dict fills it in, so its absence is not a mismatch.
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shape_mismatch = [k for k in own if k in state and own[k].shape != state[k].shape]
    in_head = lambda k: any(k.startswith(p) for p in head_prefixes)  # noqa: E731
    replaced = [k for k in shape_mismatch if in_head(k)]
    others = [k for k in shape_mismatch if not in_head(k)]
    if missing or unexpected or others:
        lines = [f"weights {source} do not fit {type(model).__name__}:"]
        lines += [f"  missing from the file: {k} {tuple(own[k].shape)}" for k in missing]
        lines += [f"  unexpected in the file: {k} {tuple(state[k].shape)}" for k in unexpected]
        lines += [
            f"  shape mismatch: {k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in others + replaced
        ]
        raise WeightsError("\n".join(lines))
    if replaced:
        for k in replaced:
            state.pop(k)
        warnings.warn(
            f"weights {source}: class count differs from the model's head; kept every other layer and "
            f"re-initialised the head ({', '.join(replaced)})",
            stacklevel=3,
        )
        model.load_state_dict(state, strict=False)
    else:
        model.load_state_dict(state, strict=not any(k.endswith("num_batches_tracked") for k in own if k not in state))
    return replaced


def head_num_classes(state: dict[str, torch.Tensor], head_prefixes: tuple[str, ...]) -> int | None:
    """The class count implied by a state dict's head bias (or weight), if the head is found."""
    for prefix in head_prefixes:
        for key in (prefix + "bias", prefix + "weight"):
            if key in state:
                return int(state[key].shape[0])
    return None


def available_weights(model_name: str, tv_name: str | None = None) -> dict[str, dict]:
    """Weights this model can load without a path: model cards in the repo and the user cache, and
    torchvision's official tags (with whether the file is present locally)."""
    out: dict[str, dict] = {}
    for source, folder in (("repo", REPO_WEIGHTS_DIR), ("cache", user_cache_dir())):
        if not folder.is_dir():
            continue
        for card_file in sorted(folder.glob(f"{model_name}.*.json")):
            try:
                card = json.loads(card_file.read_text())
            except json.JSONDecodeError:
                continue
            tag = card.get("tag") or card_file.stem.split(".", 1)[1]
            out.setdefault(tag, {"source": source, "file": str(card_file.with_suffix(".safetensors")),
                                 "metrics": card.get("metrics", {}), "num_classes": card.get("num_classes")})
    if tv_name:
        for w in get_model_weights(tv_name):
            filename = w.url.rsplit("/", 1)[-1]
            out[TORCHVISION_PREFIX + w.name] = {
                "source": "torchvision",
                "file": filename,
                "url": w.url,
                "present": (torch_hub_checkpoints_dir() / filename).is_file(),
                "metrics": dict(w.meta.get("_metrics", {})),
                "num_classes": len(w.meta.get("categories") or []),
            }
    return out
