"""Turn a finished run into a shipped weight file: fp16 safetensors plus a JSON model card.

    python -m visionzoo.publish runs/resnet18_shapes --tag shapes --out weights

The card records the model name, the resolved config, class names, input size and normalisation,
the metrics measured by evaluate.py (run it first), the file's sha256 and the commands that
reproduce it. `create_model(name, weights=tag)` then finds the file (see visionzoo.weights).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from visionzoo.config import to_dict
from visionzoo.engine.targets import latest_metrics, load_target
from visionzoo.hub import push_to_hub
from visionzoo.registry import get_entry
from visionzoo.weights import WeightsError, read_state_dict, resolve_weights, sha256_file, strip_prefixes


def _data_commands(cfg) -> list[str]:
    """The command that writes the training data, when it is one of the embedded shapes datasets."""
    root = Path(cfg.data.root or "")
    for meta_name, module, extra in (("shapes_meta.json", "write_shapes", ()),
                                     ("scenes_meta.json", "write_shapes_scenes", ("max_objects",)),
                                     ("segmentation_meta.json", "write_shapes_segmentation", ("max_objects",))):
        meta = root / meta_name
        if cfg.data.root and meta.is_file():
            m = json.loads(meta.read_text())
            flags = [f"--{k} {v}" for k, v in m.get("counts", {}).items()]
            flags += [f"--{k.replace('_', '-')} {m[k]}" for k in extra if k in m]
            return [f"python -m visionzoo.datasets.{module} {cfg.data.root} --size {m.get('image_size')} "
                    f"{' '.join(flags)} --seed {m.get('seed')}".replace("  ", " ")]
    meta = root / "sequences_meta.json"
    if cfg.data.root and meta.is_file():
        m = json.loads(meta.read_text())
        counts = " ".join(f"--{k} {v}" for k, v in m.get("counts", {}).items())
        width, height = m.get("size", [0, 0])
        return [f"python -m visionzoo.datasets.write_shapes_sequences {cfg.data.root} {counts} "
                f"--frames {m.get('frames')} --size {width}x{height} --seed {m.get('seed')}"]
    return []


def _training_seconds(run_dir: Path) -> float | None:
    """Wall time of the training epochs in the run's log (resumed runs included)."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    seconds = [r["seconds"] for r in records if r.get("type") == "epoch" and "seconds" in r]
    return round(sum(seconds), 1) if seconds else None


def _training_curve(run_dir: Path) -> list[dict]:
    """Per epoch: cumulative training seconds and the validation figures, i.e. the time-to-accuracy curve."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return []
    curve, total = [], 0.0
    for line in log.read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("type") == "epoch" and "seconds" in record:
            total += record["seconds"]
            val = {k: round(v, 5) for k, v in record.items() if k.startswith("val_") and isinstance(v, float)}
            curve.append({"epoch": record.get("epoch"), "seconds": round(total, 1), **val})
    return curve


def _initial_weights(cfg) -> tuple[dict | None, list[str]]:
    """Where a fine-tune started (model.weights): the file, its hash and its own card's training record, plus
    that card's reproduce commands, which go ahead of this run's so the card tells the whole history."""
    if not cfg.model.weights:
        return None, []
    try:
        resolved = resolve_weights(cfg.model.name, cfg.model.weights, get_entry(cfg.model.name).torchvision_name)
    except WeightsError:  # gone since training: name it, without the record
        return {"weights": str(cfg.model.weights)}, []
    card = resolved.card
    start = {"weights": str(cfg.model.weights), "sha256": sha256_file(resolved.path)}
    if "trained" in card:
        start["trained"] = card["trained"]
    return start, list(card.get("reproduce", []))


def _is_checkout(path: Path) -> bool:
    return (path / "pyproject.toml").is_file() and (path / "visionzoo").is_dir()


def _path_prefixes(run_info: dict) -> list[tuple[str, str]]:
    """(absolute prefix, portable form), longest first: a checkout of this project (where the run was started,
    where it is published from, the installed package's) becomes relative to it, the data folder beside it
    ../shared, the home folder ~. Paths elsewhere (a scratch folder) stay as they are."""
    checkouts = {Path(run_info["cwd"]) if run_info.get("cwd") else None, Path.cwd(),
                 Path(__file__).resolve().parents[1]}
    prefixes = {}
    for checkout in filter(None, checkouts):
        checkout = checkout.resolve()
        if _is_checkout(checkout):
            prefixes[str(checkout)] = ""
            prefixes[str(checkout.parent / "shared")] = "../shared"
    prefixes.setdefault(str(Path.home()), "~")
    return sorted(prefixes.items(), key=lambda item: -len(item[0]))


def _portable(value, prefixes: list[tuple[str, str]]):
    """`value` (strings, lists, dicts) with the machine's absolute paths written as `_path_prefixes` says, so that
    a card's commands run from any clone."""
    if isinstance(value, dict):
        return {k: _portable(v, prefixes) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v, prefixes) for v in value]
    if not isinstance(value, str):
        return value
    for prefix, portable in prefixes:
        if value == prefix:
            return portable or "."
        value = value.replace(prefix + "/", portable + "/" if portable else "")
    return value


def publish(run_dir: Path, tag: str, out_dir: Path, dtype: str = "float16") -> Path:
    target = load_target(run_dir)
    metrics = latest_metrics(run_dir)
    if metrics is None:
        raise FileNotFoundError(f"{run_dir}: no metrics_<split>.json; run `python evaluate.py {run_dir}` first so "
                                "the model card carries measured metrics")
    cfg = target.cfg
    state = strip_prefixes(read_state_dict(target.weights))
    torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]
    state = {k: (v.to(torch_dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_file = out_dir / f"{cfg.model.name}.{tag}.safetensors"
    tmp = weights_file.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"model": cfg.model.name, "tag": tag, "format": "pt"})
    tmp.chmod(0o644)
    tmp.replace(weights_file)
    run_info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    initial_weights, earlier_commands = _initial_weights(cfg)
    meta = target.meta
    card = {
        "model": cfg.model.name,
        "tag": tag,
        "task": cfg.task,
        "num_classes": len(meta["class_names"]) if meta.get("class_names") else cfg.model.num_classes,
        "class_names": meta.get("class_names"),
        "input_size": meta.get("input_size"),
        "mean": meta.get("mean"),
        "std": meta.get("std"),
        "interpolation": meta.get("interpolation"),
        "crop_pct": meta.get("crop_pct"),
        "dtype": dtype,
        # scalars, and the strings that qualify them (the feature extractor an FID was measured with)
        "metrics": {"split": metrics["split"], "data_root": metrics.get("data_root"), **metrics["scalars"],
                    **{k: v for k, v in metrics.get("metrics", {}).items() if isinstance(v, str)}},
        "sha256": sha256_file(weights_file),
        "size_bytes": weights_file.stat().st_size,
        "trained": {"epochs": cfg.train.epochs, "seconds": _training_seconds(run_dir), "git": run_info.get("git"),
                    "versions": run_info.get("versions"), "device": run_info.get("device"),
                    "initial_weights": initial_weights, "curve": _training_curve(run_dir)},
        # as it was run, less the flag that only mattered in that run folder
        "command": (run_info.get("command") or "").replace(" --overwrite", "") or None,
        "reproduce": earlier_commands + _data_commands(cfg) + [
            f"python train.py {run_info.get('config_file') or '<config>'} --run-dir {run_dir}",
            # the evaluation as it was run (overrides such as eval.iwae_k=5000 included)
            metrics.get("command") or f"python evaluate.py {run_dir} --split {metrics['split']}",
            f"python -m visionzoo.publish {run_dir} --tag {tag} --out {out_dir}",
        ],
        "config": to_dict(cfg),
    }
    prefixes = _path_prefixes(run_info)
    for key in ("command", "reproduce", "config", "metrics"):
        card[key] = _portable(card[key], prefixes)
    card.update({k: v for k, v in cfg.card.items() if k not in card})  # data set, split, anchor, licence
    card.update({k: v for k, v in meta.items() if k not in card})  # task-specific metadata (detectors' sizes)
    weights_file.with_suffix(".json").write_text(json.dumps(card, indent=2))
    return weights_file


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--tag", required=True, help="weights tag, e.g. shapes -> <model>.shapes.safetensors")
    p.add_argument("--out", type=Path, default=Path("weights"))
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    p.add_argument("--push-to-hub", metavar="ORG/NAME",
                   help="also upload the file and its card to this Hugging Face Hub repository (needs the "
                        "'hub' extra and a token); users then load it as weights='hf-hub:ORG/NAME'")
    args = p.parse_args(argv)
    try:
        path = publish(args.run_dir, args.tag, args.out, args.dtype)
        print(f"wrote {path} and {path.with_suffix('.json')}")
        if args.push_to_hub:
            print(f"pushed to {push_to_hub(path, args.push_to_hub)}")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
