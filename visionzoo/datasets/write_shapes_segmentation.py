"""Write multi-object shapes scenes as a Pascal VOC-layout semantic segmentation dataset.

    python -m visionzoo.datasets.write_shapes_segmentation OUT [--size 128] [--train 2000] [--val 300]
        [--test 300] [--max-objects 4] [--seed 0] [--overwrite] [--no-progress]

Layout (read a split back with ``VOCSegmentation(OUT, split)``):

* ``OUT/JPEGImages/<split>_<index:05d>.jpg`` (JPEG quality 95),
* ``OUT/SegmentationClass/<split>_<index:05d>.png``: palette PNG (VOC colours) of class values,
* ``OUT/ImageSets/Segmentation/{train,val,test}.txt``: the ids of each split,
* ``OUT/classes.txt``: "background" then the shape classes (class value = line index),
* ``OUT/segmentation_meta.json``: the parameters.

Scenes follow the recipe of :mod:`visionzoo.datasets.write_shapes_scenes` (0..max_objects shapes of varied
scale, about 10% negatives, later shapes occluding earlier ones) from their own seed stream, so the images
differ from the detection scenes. The mask labels every visible pixel of every shape (render_scene's
visible masks: at least half the pixel shows the shape, the front shape wins) with ``1 + class index``; the
rest is background 0. There is no ignore band. Everything is deterministic by seed; re-running with the
same parameters does nothing (missing files are written again), other parameters are refused unless
``overwrite``.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from visionzoo.datasets.segmentation import write_mask
from visionzoo.datasets.shapes import SHAPE_CLASSES, SPLITS, ShapeSpec, render_scene, sample_shape
from visionzoo.datasets.write_shapes import normalise_counts
from visionzoo.datasets.write_shapes_scenes import (
    DEFAULT_COUNTS,
    NEGATIVE_FRACTION,
    SCENE_SIZE_RANGE,
    _read_meta,
    _write_json,
    scene_writer_main,
)

META_NAME = "segmentation_meta.json"
# Bump when the rendered pixels or masks change, so folders from an older generator are not reused.
GENERATOR_VERSION = 1
JPEG_QUALITY = 95
CLASSES = ("background", *SHAPE_CLASSES)
_STREAM_TAG = 0x5E6A5C  # keeps these seeds disjoint from the classification and detection-scene streams
_OWNED = ("JPEGImages", "SegmentationClass", "ImageSets", "classes.txt")


def segmentation_seed(seed: int, split: str, index: int) -> int:
    """The per-image seed of image ``index`` of ``split``."""
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index), _STREAM_TAG])
               .generate_state(1)[0])


def make_segmentation_scene(
    sample_seed: int,
    image_size: int = 128,
    max_objects: int = 4,
) -> tuple[Image.Image, np.ndarray, list[ShapeSpec]]:
    """One scene, deterministic from ``sample_seed``: (RGB image, uint8 (H, W) mask with 0 = background and
    ``1 + SHAPE_CLASSES.index(kind)`` on every visible pixel of each shape, the shapes back to front)."""
    rng = np.random.default_rng(sample_seed)
    negative = max_objects == 0 or rng.random() < NEGATIVE_FRACTION
    n = 0 if negative else int(rng.integers(1, max_objects + 1))
    specs = [sample_shape(rng, image_size, size_range=SCENE_SIZE_RANGE) for _ in range(n)]
    image, visible = render_scene(specs, image_size, rng)
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    for spec, vis in zip(specs, visible):  # back to front: the front shape wins (masks never overlap anyway)
        mask[vis] = 1 + SHAPE_CLASSES.index(spec.kind)
    return image, mask, specs


def sample_id(split: str, index: int) -> str:
    """The VOC id (file stem) of image ``index`` of ``split``."""
    return f"{split}_{index:05d}"


def _params(image_size: int, counts: dict[str, int], max_objects: int, seed: int) -> dict:
    return {"dataset": "shapes_segmentation", "generator_version": GENERATOR_VERSION,
            "image_size": int(image_size), "counts": counts, "max_objects": int(max_objects), "seed": int(seed),
            "size_range": list(SCENE_SIZE_RANGE), "negative_fraction": NEGATIVE_FRACTION,
            "jpeg_quality": JPEG_QUALITY, "classes": list(CLASSES)}


def _split_file(out: Path, split: str) -> Path:
    return out / "ImageSets" / "Segmentation" / f"{split}.txt"


def _missing(out: Path, params: dict) -> list[tuple[str, int]]:
    """(split, index) of every sample whose image or mask is not on disk."""
    return [(split, i) for split in SPLITS for i in range(params["counts"][split])
            if not (out / "JPEGImages" / f"{sample_id(split, i)}.jpg").is_file()
            or not (out / "SegmentationClass" / f"{sample_id(split, i)}.png").is_file()]


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_shapes_segmentation(out_dir, image_size, counts, max_objects, seed, overwrite,
                               progress) -> tuple[dict, bool]:
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
    owned = [out / name for name in _OWNED]

    meta = None if overwrite else _read_meta(meta_path)
    if overwrite:
        for p in owned:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()
        meta_path.unlink(missing_ok=True)
    elif meta is not None:
        old = {k: meta.get(k) for k in params}
        if old != params:
            diff = ", ".join(f"{k}: {old.get(k)!r} on disk vs {params[k]!r} asked" for k in params
                             if old.get(k) != params[k])
            raise ValueError(f"{out}: already holds shapes segmentation data written with different parameters "
                             f"({diff}); pass overwrite=True (--overwrite) to replace it, or choose another folder")
        if (meta.get("complete") and not _missing(out, params)
                and all(_split_file(out, s).is_file() for s in SPLITS) and (out / "classes.txt").is_file()):
            return meta["stats"], False
    else:
        taken = [str(p) for p in owned if p.is_file() or (p.is_dir() and any(p.iterdir()))]
        if taken:
            raise ValueError(f"{out}: {', '.join(taken)} already exist(s) but there is no {META_NAME}, so they "
                             "were not written by this tool; pass overwrite=True (--overwrite) to replace them")

    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / d).mkdir(parents=True, exist_ok=True)
    _write_json(meta_path, {**params, "complete": False}, indent=2)
    _write_text(out / "classes.txt", "".join(f"{c}\n" for c in CLASSES))
    total = sum(params["counts"].values())
    bar = tqdm(total=total, desc=f"writing shapes segmentation to {out}", unit="img", disable=not progress,
               dynamic_ncols=True)
    stats = {}
    for split in SPLITS:
        ids = []
        shapes = negatives = 0
        pixels = np.zeros(len(CLASSES), dtype=np.int64)
        for i in range(params["counts"][split]):
            # Every file is rendered again (cheap) so the statistics are complete after an interrupted run.
            image, mask, specs = make_segmentation_scene(segmentation_seed(seed, split, i), image_size,
                                                         max_objects)
            name = sample_id(split, i)
            jpg = out / "JPEGImages" / f"{name}.jpg"
            tmp = jpg.with_name(f".{jpg.name}.tmp")  # hidden, no image suffix: never read as a sample
            image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
            os.replace(tmp, jpg)
            write_mask(out / "SegmentationClass" / f"{name}.png", mask)
            ids.append(name)
            shapes += len(specs)
            negatives += not specs
            pixels += np.bincount(mask.ravel(), minlength=len(CLASSES))
            bar.update(1)
        _write_text(_split_file(out, split), "".join(f"{i}\n" for i in ids))
        stats[split] = {"images": len(ids), "shapes": shapes, "negatives": negatives,
                        "class_pixels": {c: int(n) for c, n in zip(CLASSES, pixels)}}
    bar.close()
    _write_json(meta_path, {**params, "complete": True, "stats": stats,
                            "layout": "JPEGImages/{split}_{index:05d}.jpg, SegmentationClass/{split}_{index:05d}.png, "
                                      "ImageSets/Segmentation/{split}.txt, classes.txt"},
                indent=2)
    return stats, True


def write_shapes_segmentation(
    out_dir: Union[str, os.PathLike],
    image_size: int = 128,
    counts: dict[str, int] | None = None,
    max_objects: int = 4,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, dict]:
    """Write shapes scenes to ``out_dir`` in the Pascal VOC segmentation layout (see the module docstring).

    Args:
        counts: images per split; missing splits get the defaults (train 2000, val 300, test 300).
        max_objects: at most this many shapes per image (0 gives negatives only).
        overwrite: replace the folders this tool writes if they hold something else.

    Returns per-split statistics ``{split: {"images", "shapes", "negatives", "class_pixels" {name: count}}}``.
    Does nothing if the folder already holds exactly these parameters and every file; raises ValueError
    naming the differences if it holds other parameters (or VOC folders without metadata) and
    ``overwrite`` is False.
    """
    return _write_shapes_segmentation(out_dir, image_size, counts, max_objects, seed, overwrite, progress)[0]


def main(argv: list[str] | None = None) -> int:
    return scene_writer_main(
        argv, prog="python -m visionzoo.datasets.write_shapes_segmentation",
        description="Write multi-object shapes scenes as a Pascal VOC-layout semantic segmentation dataset.",
        write=_write_shapes_segmentation, what="shapes segmentation scenes", counted="shapes")


if __name__ == "__main__":
    sys.exit(main())
