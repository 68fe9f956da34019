"""Write multi-object shapes scenes as a COCO-format detection / instance-segmentation dataset.

    python -m visionzoo.datasets.write_shapes_scenes OUT [--size 128] [--train 2000] [--val 300]
        [--test 300] [--max-objects 4] [--seed 0] [--overwrite] [--no-progress]

Layout: ``OUT/images/{train,val,test}/<split>_<index:05d>.png``, ``OUT/annotations/instances_<split>.json``
and ``OUT/scenes_meta.json`` with the parameters; read a split back with
``CocoDetection(*split_paths(OUT, split), masks=True)``.

Each image holds 0..max_objects shapes (about 10% are negatives with none) of varied scale; later shapes
may occlude earlier ones. An instance is annotated only if at least ``MIN_VISIBLE`` of its in-frame
footprint is still visible; heavily occluded shapes stay in the picture but not in the annotations.
Boxes come from the visible masks, segmentations are compressed RLE of the visible masks (counts stored as
str), ``area`` is the visible pixel count and categories have NON-contiguous ids (1, 3, 5, 7, 9), as COCO
has gaps. Everything is deterministic by seed; re-running with the same parameters does nothing, other
parameters are refused unless ``overwrite``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from tqdm import tqdm

from visionzoo.datasets.common import read_writer_meta
from visionzoo.datasets.shapes import (
    DEFAULT_SUPERSAMPLE,
    SHAPE_CLASSES,
    SPLITS,
    ShapeSpec,
    draw_shape,
    mask_to_box,
    render_scene,
    sample_shape,
)
from visionzoo.datasets.write_shapes import normalise_counts

META_NAME = "scenes_meta.json"
# Bump when the rendered pixels or annotations change, so folders from an older generator are not reused.
GENERATOR_VERSION = 1
DEFAULT_COUNTS = {"train": 2000, "val": 300, "test": 300}
CATEGORY_IDS = tuple(2 * i + 1 for i in range(len(SHAPE_CLASSES)))  # 1, 3, 5, 7, 9: ids with gaps
SCENE_SIZE_RANGE = (0.07, 0.3)  # circumradius as a fraction of the image side (varied scale)
NEGATIVE_FRACTION = 0.1  # share of images drawn with no shapes at all
MIN_VISIBLE = 0.3  # an instance is annotated only if this fraction of its footprint is visible
MIN_PIXELS = 4  # ... and at least this many pixels
_STREAM_TAG = 0x5CE9E5  # keeps scene seeds disjoint from the classification stream


def scene_seed(seed: int, split: str, index: int) -> int:
    """The per-image seed of scene ``index`` of ``split``."""
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index), _STREAM_TAG])
               .generate_state(1)[0])


def _footprint(spec: ShapeSpec, image_size: int, supersample: int = DEFAULT_SUPERSAMPLE) -> np.ndarray:
    """The in-frame mask of ``spec`` alone, with render_scene's rule (at least half of each pixel)."""
    big = image_size * supersample
    canvas = Image.new("L", (big, big), 0)
    draw_shape(ImageDraw.Draw(canvas), spec, supersample, 255)
    return np.asarray(canvas.reduce(supersample)) >= 128


def make_scene(
    sample_seed: int,
    image_size: int = 128,
    max_objects: int = 4,
    *,
    size_range: tuple[float, float] = SCENE_SIZE_RANGE,
    min_visible: float = MIN_VISIBLE,
) -> tuple[Image.Image, list[dict], int]:
    """One scene, deterministic from ``sample_seed``.

    Returns (RGB image, instances, number of shapes left unannotated for being occluded). Each instance
    is ``{"class_index", "mask" (bool (H, W) visible mask), "box" (x0, y0, x1, y1) pixel edges,
    "visible" (visible fraction of its footprint)}``, back to front.
    """
    rng = np.random.default_rng(sample_seed)
    negative = max_objects == 0 or rng.random() < NEGATIVE_FRACTION
    n = 0 if negative else int(rng.integers(1, max_objects + 1))
    specs = [sample_shape(rng, image_size, size_range=size_range) for _ in range(n)]
    image, visible = render_scene(specs, image_size, rng)
    instances, dropped = [], 0
    for spec, vis in zip(specs, visible):
        total = int(_footprint(spec, image_size).sum())
        shown = int(vis.sum())
        if total == 0 or shown < MIN_PIXELS or shown < min_visible * total:
            dropped += 1
            continue
        instances.append({"class_index": SHAPE_CLASSES.index(spec.kind), "mask": vis,
                          "box": mask_to_box(vis), "visible": shown / total})
    return image, instances, dropped


def split_paths(out_dir: Union[str, os.PathLike], split: str) -> tuple[Path, Path]:
    """(image root, annotation file) of ``split`` — the arguments of CocoDetection."""
    out = Path(out_dir)
    return out / "images" / split, out / "annotations" / f"instances_{split}.json"


def _categories() -> list[dict]:
    return [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in zip(CATEGORY_IDS, SHAPE_CLASSES)]



def _params(image_size: int, counts: dict[str, int], max_objects: int, seed: int) -> dict:
    return {"dataset": "shapes_scenes", "generator_version": GENERATOR_VERSION, "image_size": int(image_size),
            "counts": counts, "max_objects": int(max_objects), "seed": int(seed),
            "size_range": list(SCENE_SIZE_RANGE), "min_visible": MIN_VISIBLE,
            "negative_fraction": NEGATIVE_FRACTION, "categories": _categories()}


def _file_name(split: str, index: int) -> str:
    return f"{split}_{index:05d}.png"


def _read_meta(path: Path) -> dict | None:
    return read_writer_meta(path, "scenes")


def _write_json(path: Path, obj, indent=None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=indent) + "\n")
    os.replace(tmp, path)


def _all_files_present(out: Path, params: dict) -> bool:
    for split in SPLITS:
        root, ann = split_paths(out, split)
        if not ann.is_file():
            return False
        if any(not (root / _file_name(split, i)).is_file() for i in range(params["counts"][split])):
            return False
    return True


def _write_coco_scenes(out_dir, image_size, counts, max_objects, seed, overwrite, progress) -> tuple[dict, bool]:
    """The writer; returns (per-split statistics, whether anything was written)."""
    out = Path(out_dir)
    image_size, max_objects = int(image_size), int(max_objects)
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16 pixels, got {image_size}")
    if not 0 <= max_objects <= 50:
        raise ValueError(f"max_objects must be in 0..50, got {max_objects}")
    params = _params(image_size, normalise_counts(counts, DEFAULT_COUNTS), max_objects, seed)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    meta_path = out / META_NAME
    owned = [out / "images", out / "annotations"]

    meta = None if overwrite else _read_meta(meta_path)
    if overwrite:
        for d in owned:
            if d.exists():
                shutil.rmtree(d)
        meta_path.unlink(missing_ok=True)
    elif meta is not None:
        old = {k: meta.get(k) for k in params}
        if old != params:
            diff = ", ".join(f"{k}: {old.get(k)!r} on disk vs {params[k]!r} asked" for k in params
                             if old.get(k) != params[k])
            raise ValueError(f"{out}: already holds shapes scenes written with different parameters ({diff}); "
                             "pass overwrite=True (--overwrite) to replace them, or choose another folder")
        if meta.get("complete") and _all_files_present(out, params):
            return meta["stats"], False
    else:
        taken = [str(d) for d in owned if d.exists() and any(d.iterdir())]
        if taken:
            raise ValueError(f"{out}: {', '.join(taken)} already exist(s) but there is no {META_NAME}, so they "
                             "were not written by this tool; pass overwrite=True (--overwrite) to replace them")

    out.mkdir(parents=True, exist_ok=True)
    _write_json(meta_path, {**params, "complete": False}, indent=2)
    total = sum(params["counts"].values())
    bar = tqdm(total=total, desc=f"writing shapes scenes to {out}", unit="img", disable=not progress,
               dynamic_ncols=True)
    stats = {}
    for split in SPLITS:
        root, ann_file = split_paths(out, split)
        root.mkdir(parents=True, exist_ok=True)
        ann_file.parent.mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        negatives = occluded = 0
        for i in range(params["counts"][split]):
            image, instances, dropped = make_scene(scene_seed(seed, split, i), image_size, max_objects)
            name = _file_name(split, i)
            tmp = root / f".{name}.tmp"  # hidden, no image suffix: never read as a sample
            image.save(tmp, format="PNG")
            os.replace(tmp, root / name)
            image_id = i + 1
            images.append({"id": image_id, "file_name": name, "width": image_size, "height": image_size})
            for inst in instances:
                rle = mask_utils.encode(np.asfortranarray(inst["mask"].astype(np.uint8)))
                x0, y0, x1, y1 = inst["box"]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id,
                    "category_id": CATEGORY_IDS[inst["class_index"]],
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                    "area": float(inst["mask"].sum()),
                    "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
                    "iscrowd": 0,
                })
            negatives += not instances
            occluded += dropped
            bar.update(1)
        info = {"description": "visionzoo procedural shapes scenes", "split": split,
                **{k: params[k] for k in ("generator_version", "image_size", "max_objects", "seed")}}
        _write_json(ann_file, {"info": info, "licenses": [], "images": images, "annotations": annotations,
                               "categories": _categories()})
        stats[split] = {"images": len(images), "instances": len(annotations), "negatives": negatives,
                        "occluded_dropped": occluded}
    bar.close()
    _write_json(meta_path, {**params, "complete": True, "stats": stats,
                            "layout": "images/{split}/{split}_{index:05d}.png, annotations/instances_{split}.json"},
                indent=2)
    return stats, True


def write_coco_scenes(
    out_dir: Union[str, os.PathLike],
    image_size: int = 128,
    counts: dict[str, int] | None = None,
    max_objects: int = 4,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, dict[str, int]]:
    """Write shapes scenes to ``out_dir`` in COCO format (see the module docstring).

    Args:
        counts: images per split; missing splits get the defaults (train 2000, val 300, test 300).
        max_objects: at most this many shapes per image (0 gives negatives only).
        overwrite: replace the images/annotations folders if they hold something else.

    Returns per-split statistics ``{split: {"images", "instances", "negatives", "occluded_dropped"}}``.
    Does nothing if the folder already holds exactly these parameters and every file; raises ValueError
    naming the differences if it holds other parameters and ``overwrite`` is False.
    """
    return _write_coco_scenes(out_dir, image_size, counts, max_objects, seed, overwrite, progress)[0]


def scene_writer_main(argv: list[str] | None, *, prog: str, description: str, write, what: str,
                      counted: str) -> int:
    """The command line shared by the scene writers: OUT, --size, one count per split, --max-objects, --seed,
    --overwrite, --no-progress. `write(out, size, counts, max_objects, seed, overwrite, progress)` returns
    (per-split statistics, whether anything was written); `counted` names the per-image objects statistic."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("out", help="output folder")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    for split in SPLITS:
        p.add_argument(f"--{split}", type=int, default=DEFAULT_COUNTS[split],
                       help=f"number of {split} images (default {DEFAULT_COUNTS[split]})")
    p.add_argument("--max-objects", type=int, default=4, help="most shapes per image (default 4)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a folder written with other parameters")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    counts = {s: getattr(args, s) for s in SPLITS}
    try:
        stats, written = write(args.out, args.size, counts, args.max_objects, args.seed, args.overwrite,
                               not args.no_progress)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = "; ".join(f"{s}: {v['images']} images, {v[counted]} {counted}, {v['negatives']} negatives"
                        for s, v in stats.items())
    if written:
        print(f"wrote {what} ({args.size}px, seed {args.seed}) to {args.out}: {summary}")
    else:
        print(f"{args.out} already holds these {what} ({summary}); nothing to do")
    return 0


def main(argv: list[str] | None = None) -> int:
    return scene_writer_main(
        argv, prog="python -m visionzoo.datasets.write_shapes_scenes",
        description="Write multi-object shapes scenes as a COCO detection / instance segmentation dataset.",
        write=_write_coco_scenes, what="shapes scenes", counted="instances")


if __name__ == "__main__":
    sys.exit(main())
