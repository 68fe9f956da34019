"""`visionzoo predict`: run a model of the zoo on image files and folders; write JSON and drawn images.

    visionzoo predict resnet18 --weights shapes photos/ cat.png --out predictions   # top-k classes
    visionzoo predict mask_rcnn_resnet18_fpn --weights shapes scenes/                # boxes, names, masks
    visionzoo predict fcn4s_resnet18 --weights shapes scenes/ --crf                  # class masks
    visionzoo predict siamfc_alexnet --weights shapes GOT-10k_Val_000001/            # track a sequence
    visionzoo predict siamfc_alexnet --weights shapes frames/ --init-box 10,20,40,30

The task follows the model. Folders are searched recursively for images (.jpg .jpeg .png .bmp .gif .webp
.tif .tiff); for a tracker each PATH is one sequence: a GOT-10k, OTB or LaSOT folder (its first ground-truth
box starts the tracker unless --init-box is given) or a folder of frames in name order.
OUT/predictions.json holds one record per image (or sequence); OUT also gets the drawn images (the same
relative names, .png), segmentation class masks (<name>.mask.png, pixel value = class index) and per sequence
the boxes (boxes.txt, x,y,w,h per line) and the drawn frames. An image that cannot be read is reported and
skipped; the exit code is then 1.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionzoo.datasets.common import ImageReadError
from visionzoo.datasets.sequences import read_sequence
from visionzoo.predict import Classifier, Detector, Segmenter, load_image
from visionzoo.registry import get_entry
from visionzoo.tracking import create_tracker, track_sequence
from visionzoo.weights import WeightsError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def image_files(paths: list[str]) -> list[tuple[Path, Path]]:
    """(file, name relative to its PATH argument) for each image: files as given, folders searched."""
    found = []
    for arg in paths:
        path = Path(arg).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not files:
                raise FileNotFoundError(f"{path}: no images ({' '.join(IMAGE_SUFFIXES)}) in this folder")
            found += [(f, Path(path.name) / f.relative_to(path)) for f in files]
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return found


def _parse_box(text: str | None):
    if text is None:
        return None
    try:
        box = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise ValueError(f"--init-box {text!r}: expected x,y,w,h in pixels, e.g. 10,20,40,30")
    return box


def _out_file(out: Path, relative: Path, suffix: str) -> Path:
    target = out / relative.with_suffix(suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _predict_images(args, task: str, out: Path) -> tuple[list[dict], int]:
    if task == "classification":
        predictor = Classifier(args.model, weights=args.weights, top_k=args.top_k, device=args.device)
    elif task == "detection":
        predictor = Detector(args.model, weights=args.weights, score_threshold=args.score_threshold,
                             device=args.device)
    else:
        predictor = Segmenter(args.model, weights=args.weights, crf=args.crf, window=args.window,
                              device=args.device)
    records, failed = [], 0
    for file, relative in image_files(args.paths):
        try:
            result = predictor(file)
        except (ValueError, ImageReadError, OSError) as e:
            print(f"error: {e}" if str(file) in str(e) else f"error: {file}: {e}", file=sys.stderr)
            failed += 1
            continue
        record: dict = {"file": str(file)}
        if task == "classification":
            record.update(labels=result.labels, indices=result.indices.tolist(),
                          scores=[round(float(s), 6) for s in result.scores])
            drawn = None if args.no_draw else predictor.draw(file, result)
        elif task == "detection":
            record.update(image_size=list(result.image_size), boxes=np.round(result.boxes, 2).tolist(),
                          labels=result.names, scores=[round(float(s), 6) for s in result.scores])
            drawn = None if args.no_draw else predictor.draw(file, result)
        else:
            mask_file = _out_file(out, relative, ".mask.png")
            Image.fromarray(result.mask.astype(np.uint8 if result.mask.max(initial=0) < 256 else np.uint16)).save(
                mask_file)
            record.update(image_size=list(result.mask.shape), present=result.present(), mask=str(mask_file))
            drawn = None if args.no_draw else predictor.overlay(file, result)
        if drawn is not None:
            drawn_file = _out_file(out, relative, ".png")
            drawn.save(drawn_file)
            record["drawn"] = str(drawn_file)
        records.append(record)
        if not args.quiet:
            print(json.dumps(record))
    return records, failed


def _sequence(path: Path):
    """A tracking sequence folder as (name, frames, first ground-truth box or None)."""
    try:
        seq = read_sequence(path)
        visible = np.flatnonzero(~np.isnan(seq.boxes).any(axis=1))
        first = seq.boxes[0].tolist() if len(visible) and visible[0] == 0 else None
        return seq.name, list(seq.frames), first
    except (FileNotFoundError, ValueError):
        frames = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()) \
            if path.is_dir() else []
        if not frames:
            raise
        return path.name, frames, None


def _track(args, out: Path) -> tuple[list[dict], int]:
    tracker = create_tracker(args.model, weights=args.weights, device=args.device)
    init_box = _parse_box(args.init_box)
    records = []
    for arg in args.paths:
        path = Path(arg).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: a tracker takes sequence folders (GOT-10k, OTB, LaSOT, or a folder "
                                    "of frames)")
        name, frames, first_box = _sequence(path)
        box = init_box or first_box
        if box is None:
            raise ValueError(f"{path}: no ground-truth box on the first frame; give the target with "
                             "--init-box x,y,w,h")
        start = time.time()
        result = track_sequence(tracker, frames, box, progress=not args.quiet, desc=name)
        seq_out = out / name
        seq_out.mkdir(parents=True, exist_ok=True)
        np.savetxt(seq_out / "boxes.txt", result.boxes, fmt="%.2f", delimiter=",")
        record = {"sequence": str(path), "frames": len(frames), "init_box": [float(v) for v in box],
                  "boxes": np.round(result.boxes, 2).tolist(),
                  "scores": [None if np.isnan(s) else round(float(s), 6) for s in result.scores],
                  "fps": round(result.fps, 2), "seconds": round(time.time() - start, 2),
                  "boxes_file": str(seq_out / "boxes.txt")}
        if not args.no_draw:
            for i, (frame, (x, y, w, h)) in enumerate(zip(frames, result.boxes)):
                image = load_image(frame)
                ImageDraw.Draw(image).rectangle([x, y, x + w, y + h], outline=(255, 0, 0), width=2)
                image.save(seq_out / f"{i + 1:08d}.png")
            record["drawn"] = str(seq_out)
        records.append(record)
        if not args.quiet:
            print(json.dumps({k: v for k, v in record.items() if k not in ("boxes", "scores")}))
    return records, 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a registered model name (visionzoo models)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (a tracker: sequence folders)")
    p.add_argument("--weights", help="weights: a tag (shapes), a file, or torchvision:TAG")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--top-k", type=int, default=5, help="classification: classes per image (default 5)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="detection: keep scores >= this (0.5)")
    p.add_argument("--crf", action="store_true", help="segmentation: refine with the dense CRF")
    p.add_argument("--window", type=int, help="segmentation: sliding-window tile side for large images")
    p.add_argument("--init-box", help="tracking: the target's first box x,y,w,h (default: the ground truth's)")
    p.add_argument("--no-draw", action="store_true", help="write the JSON only")
    p.add_argument("--quiet", action="store_true", help="no per-image lines on stdout")
    args = p.parse_intermixed_args(argv)
    try:
        task = get_entry(args.model).task
        if task == "generative":
            raise ValueError(f"{args.model!r} is a generative model: it has nothing to predict from images "
                             "(see its sample() and reconstruct() methods)")
        args.out.mkdir(parents=True, exist_ok=True)
        if task == "tracking":
            records, failed = _track(args, args.out)
        else:
            records, failed = _predict_images(args, task, args.out)
    except (FileNotFoundError, ValueError, WeightsError, ImageReadError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = {"model": args.model, "weights": args.weights, "task": task, "predictions": records}
    (args.out / "predictions.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'predictions.json'} ({len(records)} {'sequences' if task == 'tracking' else 'images'}"
          + (f", {failed} failed" if failed else "") + ")", file=sys.stderr)
    return 1 if failed else 0
