"""Write the procedural shapes dataset to disk in ImageFolder layout.

    python -m visionzoo.datasets.write_shapes OUT [--size 64] [--train 5000] [--val 1000] [--test 1000]
        [--seed 0] [--format png|jpg] [--overwrite] [--distort [--max-rotation 90] [--scale 0.5 1.0]]

Layout: ``OUT/{train,val,test}/<class>/<split>_<index:05d>.<ext>`` plus ``OUT/shapes_meta.json`` with the
parameters. Re-running with the same parameters does nothing (missing files, e.g. after an interrupted
run, are written again); different parameters are refused unless ``--overwrite`` is given. Files are
the exact images ``ShapesClassification(split, image_size=..., seed=...)`` renders in memory. ``--distort``
writes them under a strong random affine warp instead (visionzoo/datasets/shapes_distorted.py).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from tqdm import tqdm

from visionzoo.datasets.common import read_writer_meta
from visionzoo.datasets.shapes import (
    DEFAULT_SPLIT_SIZES,
    SHAPE_CLASSES,
    SPLITS,
    _label_of,
    make_classification_sample,
    sample_seed,
)
from visionzoo.datasets.shapes_distorted import DEFAULT_DISTORTION, check_distortion, make_distorted_sample

META_NAME = "shapes_meta.json"
# Bump when the rendered pixels change, so folders written by an older renderer are not reused silently.
GENERATOR_VERSION = 2  # 2: larger shapes in single-object images
FORMATS = {"png": "PNG", "jpg": "JPEG"}
JPEG_QUALITY = 95


def _normalise_format(fmt: str) -> str:
    f = str(fmt).lower().lstrip(".")
    f = "jpg" if f == "jpeg" else f
    if f not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return f


def normalise_counts(counts: dict | None, defaults: dict[str, int] = DEFAULT_SPLIT_SIZES) -> dict[str, int]:
    """Per-split sample counts: the defaults, overridden by ``counts`` (unknown splits are an error)."""
    counts = dict(counts or {})
    unknown = sorted(set(counts) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {', '.join(map(repr, unknown))} in counts; expected {', '.join(SPLITS)}")
    out = {s: int(counts.get(s, defaults[s])) for s in SPLITS}
    bad = {s: n for s, n in out.items() if n < 0 or n > 99999}
    if bad:
        raise ValueError(f"split counts must be in 0..99999, got {bad}")
    return out


def _params(image_size: int, counts: dict[str, int], seed: int, fmt: str, distortion: dict | None = None) -> dict:
    params = {"dataset": "shapes", "generator_version": GENERATOR_VERSION, "image_size": int(image_size),
              "counts": counts, "seed": int(seed), "format": fmt, "classes": list(SHAPE_CLASSES)}
    if distortion is not None:  # absent for clean shapes, so folders written before the option still match
        params["distortion"] = check_distortion(distortion)
    return params


def _expected_files(out: Path, params: dict):
    """(split, index, sample seed, label, path) of every file the parameters call for (labels computed
    without rendering)."""
    ext = params["format"]
    for split in SPLITS:
        for i in range(params["counts"][split]):
            s = sample_seed(params["seed"], split, i)
            label = _label_of(s)
            yield split, i, s, label, out / split / SHAPE_CLASSES[label] / f"{split}_{i:05d}.{ext}"


def _read_meta(path: Path) -> dict | None:
    return read_writer_meta(path, "shapes")


def _differences(old: dict, new: dict) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k}: {old.get(k)!r} on disk vs {new[k]!r} asked" for k in keys)


def _write_meta(path: Path, params: dict, complete: bool, class_counts: dict | None = None) -> None:
    meta = {**params, "complete": complete, "layout": "{split}/{class}/{split}_{index:05d}.{format}"}
    if class_counts is not None:
        meta["class_counts"] = class_counts
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, path)


def _write_image_folder(out_dir, image_size, counts, seed, fmt, overwrite, progress,
                        distortion=None) -> tuple[dict, int]:
    """The writer; returns (per-split counts, number of files written now)."""
    out = Path(out_dir)
    fmt = _normalise_format(fmt)
    image_size = int(image_size)
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    params = _params(image_size, normalise_counts(counts), seed, fmt, distortion)
    meta_path = out / META_NAME
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")

    meta = None if overwrite else _read_meta(meta_path)
    if overwrite:
        for split in SPLITS:
            if (out / split).exists():
                shutil.rmtree(out / split)
        meta_path.unlink(missing_ok=True)
    elif meta is not None:
        asked = {**params, "distortion": params.get("distortion")}  # clean shapes vs a distorted folder too
        old = {k: meta.get(k) for k in asked}
        if old != asked:
            raise ValueError(f"{out}: already holds shapes written with different parameters "
                             f"({_differences(old, asked)}); pass overwrite=True (--overwrite) to replace "
                             "them, or choose another folder")
    else:
        taken = [str(out / s) for s in SPLITS if (out / s).exists() and any((out / s).iterdir())]
        if taken:
            raise ValueError(f"{out}: {', '.join(taken)} already exist(s) but there is no {META_NAME}, so "
                             "they were not written by this tool (or the write was interrupted before it "
                             "started); pass overwrite=True (--overwrite) to replace them")

    files = list(_expected_files(out, params))
    class_counts = {s: {c: 0 for c in SHAPE_CLASSES} for s in SPLITS}
    for split, _, _, label, _ in files:
        class_counts[split][SHAPE_CLASSES[label]] += 1
    todo = [f for f in files if not f[-1].is_file()]
    if meta is not None and meta.get("complete") and not todo:
        return dict(params["counts"]), 0

    out.mkdir(parents=True, exist_ok=True)
    _write_meta(meta_path, params, complete=False)
    save_kwargs = {"quality": JPEG_QUALITY} if fmt == "jpg" else {}
    made_dirs: set[Path] = set()
    for _split, _, s, label, path in tqdm(todo, desc=f"writing shapes to {out}", unit="img",
                                         disable=not progress, dynamic_ncols=True):
        if distortion is None:
            image, lab = make_classification_sample(s, image_size)
        else:
            image, lab = make_distorted_sample(s, image_size, params["distortion"])
        assert lab == label
        if path.parent not in made_dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            made_dirs.add(path.parent)
        tmp = path.with_name(f".{path.name}.tmp")  # hidden + no image suffix: never read as a sample
        image.save(tmp, format=FORMATS[fmt], **save_kwargs)
        os.replace(tmp, path)
    _write_meta(meta_path, params, complete=True, class_counts=class_counts)
    return dict(params["counts"]), len(todo)


def write_image_folder(
    out_dir: str | os.PathLike,
    image_size: int = 64,
    counts: dict[str, int] | None = None,
    seed: int = 0,
    fmt: str = "png",
    overwrite: bool = False,
    progress: bool = True,
    distortion: dict | None = None,
) -> dict[str, int]:
    """Write shapes to ``out_dir/{train,val,test}/<class>/<split>_<index:05d>.<fmt>`` plus
    ``out_dir/shapes_meta.json``.

    Args:
        counts: samples per split; missing splits get the defaults (train 5000, val 1000, test 1000);
            a split with 0 samples gets no folder.
        fmt: "png" (lossless) or "jpg" (quality 95).
        overwrite: replace the split folders if they hold something else.
        distortion: None for the clean shapes, else the distorted variant's parameters (``{}`` for the
            defaults: rotation up to +-90 degrees, scale 0.5-1.0, see shapes_distorted.py).

    Returns the number of samples per split. Does nothing if the folder already holds exactly these
    parameters and every file; raises ValueError naming the differences if it holds other parameters
    (or split folders without metadata) and ``overwrite`` is False.
    """
    return _write_image_folder(out_dir, image_size, counts, seed, fmt, overwrite, progress, distortion)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m visionzoo.datasets.write_shapes",
        description="Write the procedural shapes dataset in ImageFolder layout (OUT/{train,val,test}/<class>/).")
    p.add_argument("out", help="output folder")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    for split in SPLITS:
        p.add_argument(f"--{split}", type=int, default=DEFAULT_SPLIT_SIZES[split],
                       help=f"number of {split} images (default {DEFAULT_SPLIT_SIZES[split]})")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--format", choices=sorted(FORMATS), default="png", help="image format (default png)")
    p.add_argument("--overwrite", action="store_true", help="replace a folder written with other parameters")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--distort", action="store_true",
                   help="write the distorted variant: each image rotated, scaled and shifted at random")
    p.add_argument("--max-rotation", type=float, default=DEFAULT_DISTORTION["max_rotation"],
                   help="with --distort: rotation range +-degrees (default %(default)s)")
    p.add_argument("--scale", type=float, nargs=2, default=DEFAULT_DISTORTION["scale_range"], metavar=("LO", "HI"),
                   help="with --distort: scale range (default 0.5 1.0)")
    args = p.parse_args(argv)
    counts = {s: getattr(args, s) for s in SPLITS}
    distortion = {"max_rotation": args.max_rotation, "scale_range": list(args.scale)} if args.distort else None
    try:
        counts, written = _write_image_folder(args.out, args.size, counts, args.seed, args.format,
                                              args.overwrite, not args.no_progress, distortion)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    total = sum(counts.values())
    split_str = ", ".join(f"{s} {n}" for s, n in counts.items())
    if written:
        print(f"wrote {written} of {total} shapes images ({split_str}; {args.size}px {args.format}, "
              f"seed {args.seed}) to {args.out}")
    else:
        print(f"{args.out} already holds these {total} shapes images ({split_str}; {args.size}px "
              f"{args.format}, seed {args.seed}); nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
