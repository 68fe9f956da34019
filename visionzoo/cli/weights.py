"""`visionzoo weights`: which weights are found, and putting them where `create_model` looks.

    visionzoo weights list [MODEL]                   # tags per model and where each file is
    visionzoo weights where                          # the user cache folder ($VISIONZOO_HOME/weights)
    visionzoo weights copy --from CHECKOUT/weights   # copy shipped files (and cards) into the user cache
    visionzoo weights copy resnet18.shapes fcn4s_resnet18   # only these (a model name takes all its tags)
    visionzoo weights get MODEL WEIGHTS              # find (or fetch) weights as create_model would; print the path

An installed package has no weights/ folder of its own: `copy` from a clone's weights/ puts the shipped files
into the user cache, where `create_model(name, weights="shapes")` then finds them. Each file is checked
against the sha256 in its model card before it is copied, and written under a temporary name first.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from visionzoo.hub import install_from_checkout
from visionzoo.registry import get_entry, list_models
from visionzoo.weights import (
    REPO_WEIGHTS_DIR,
    WeightsError,
    available_weights,
    resolve_weights,
    user_cache_dir,
    verify_sha256,
)


def _selected(folder: Path, names: list[str]) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not names:
        return files
    chosen = []
    for name in names:
        match = [f for f in files if f.name in (name, f"{name}.safetensors") or f.name.startswith(f"{name}.")
                 and f.name.count(".") == 2 and f.name.split(".")[0] == name]
        if not match:
            have = ", ".join(f.name[: -len(".safetensors")] for f in files) or "(none)"
            raise WeightsError(f"no weights {name!r} in {folder}; it holds: {have}")
        chosen += [m for m in match if m not in chosen]
    return chosen


def copy_into_cache(source: Path, names: list[str] | None = None, dest: Path | None = None,
                    log=print) -> list[Path]:
    """Copy the selected weight files and their model cards from `source` (a clone's weights/ folder) into the
    user cache through visionzoo.hub.install_from_checkout: each verified against its card's sha256 first and
    renamed into place, a file already there with the right hash left as it is. Returns the cached paths."""
    source, dest = Path(source).expanduser(), Path(dest) if dest else user_cache_dir()
    if not source.is_dir():
        raise WeightsError(f"weights folder not found: {source} (give a clone's weights/ folder with --from)")
    done = []
    for weights_file in _selected(source, list(names or [])):
        target = dest / weights_file.name
        before = target.stat().st_mtime_ns if target.is_file() else None
        model, tag = weights_file.name.split(".")[:2]
        install_from_checkout(model, tag, source=source, dest_dir=dest)
        # install_from_checkout leaves an identical cached file untouched, so an unchanged mtime means it was there
        log(f"already in the cache: {target}" if before == target.stat().st_mtime_ns
            else f"copied {weights_file.name} -> {target}")
        done.append(target)
    return done


def list_weights(model: str | None) -> list[dict]:
    rows = []
    for name in [model] if model else list_models():
        for tag, info in available_weights(name, get_entry(name).torchvision_name).items():
            if info.get("source") == "torchvision" and not (model or info.get("present")):
                continue  # torchvision's tags are listed for one model, or when their file is on disk
            rows.append({"model": name, "weights": tag, **info})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("list", help="weights found, per model")
    s.add_argument("model", nargs="?", help="one model (also lists torchvision's tags for it)")
    s.add_argument("--json", action="store_true")
    sub.add_parser("where", help="print the user cache folder")
    s = sub.add_parser("copy", help="copy weights and cards from a folder into the user cache")
    s.add_argument("names", nargs="*", help="MODEL.TAG or MODEL (all its tags); default: every file in the folder")
    s.add_argument("--from", dest="source", type=Path, default=None,
                   help=f"folder holding <model>.<tag>.safetensors and .json (default: {REPO_WEIGHTS_DIR})")
    s = sub.add_parser("get", help="find (or, where supported, download) weights for a model; print the path")
    s.add_argument("model")
    s.add_argument("weights", help="a tag (shapes), a file, torchvision:TAG, or a URL")
    args = p.parse_args(argv)
    try:
        if args.action == "where":
            print(user_cache_dir())
        elif args.action == "list":
            rows = list_weights(args.model)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    where = r["file"] if r.get("source") != "torchvision" else (
                        f"{r['file']} ({'present' if r.get('present') else 'not downloaded'})")
                    print(f"{r['model']:<26} {r['weights']:<28} {r['source']:<11} {where}")
                if not rows:
                    print(f"no weights found in {REPO_WEIGHTS_DIR} or {user_cache_dir()}; "
                          "`visionzoo weights copy --from CLONE/weights` puts the shipped ones into the cache",
                          file=sys.stderr)
        elif args.action == "copy":
            source = args.source or REPO_WEIGHTS_DIR
            if args.source is None and not source.is_dir():
                raise WeightsError(f"this installation has no weights folder ({source}): give one with "
                                   "--from CLONE/weights (a clone of the repository holds the shipped files)")
            copied = copy_into_cache(source, args.names)
            print(f"{len(copied)} weight file(s) in {user_cache_dir()}")
        elif args.action == "get":
            entry = get_entry(args.model)
            resolved = resolve_weights(args.model, args.weights, entry.torchvision_name)
            verify_sha256(resolved)
            print(resolved.path)
    except (WeightsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
