"""How much does the JPEG coding of our CIFAR-10 copy cost? An ablation, not a speed figure.

The CIFAR-10 copy in ../shared/data is libjpeg quality 75 with 4:2:0 chroma subsampling, and the official
batches are not available offline, so the cost of that coding cannot be measured by training on the originals.
This script measures the cost of one *more* pass of the same coding: every image is coded again at the same
quality and subsampling, shifted by a few pixels so that the 8x8 blocks and the 2x2 chroma cells fall on new
pixels (a pass on the old grid would mostly reproduce the old coefficients and cost almost nothing). Train the
same recipe on the copy it writes and on the original copy; the accuracy difference is the cost of that pass.

    python benchmarks/jpeg_ablation.py ~/.cache/visionzoo/data/cifar10-jpeg /tmp/cifar10-jpeg-twice
    python train.py configs/classification/resnet20_cifar10.yaml data.root=/tmp/cifar10-jpeg-twice ...

It prints the mean PSNR of the pass. With --calibrate on a folder of larger, near-clean photographs (CamVid's
quality-95 4:4:4 frames), it also codes 32x32 area-downscaled crops of them twice, first on the grid and then
shifted, and prints both PSNRs: how a shifted second pass compares with the first pass on clean images, the
comparison that tells how far the measured second pass stands in for the first.
"""
from __future__ import annotations

import argparse
import io
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from visionzoo.engine.console import progress_bar  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def jpeg_pass(image: Image.Image, quality: int = 75, shift: int = 0) -> Image.Image:
    """Code an RGB image as JPEG at `quality` with 4:2:0 chroma subsampling and decode it. With `shift` > 0 the
    image is first padded by that many mirrored rows and columns at the top and left (and cropped back after),
    so the coding grid moves by `shift` pixels."""
    pixels = np.asarray(image.convert("RGB"))
    if shift:
        pixels = np.pad(pixels, ((shift, 0), (shift, 0), (0, 0)), mode="reflect")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality, subsampling=2)  # 2 = 4:2:0
    buffer.seek(0)
    coded = np.asarray(Image.open(buffer).convert("RGB"))
    return Image.fromarray(np.ascontiguousarray(coded[shift:, shift:]))


def psnr(a: Image.Image, b: Image.Image) -> float:
    """PSNR in dB of two 8-bit images of one size (inf where they are equal)."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images of different shapes: {x.shape} and {y.shape}")
    mse = float(np.mean((x - y) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def recode_folder(src: Path, dst: Path, quality: int, shift: int, show_progress: bool = True) -> float:
    """Write every image under `src` to the same relative path under `dst` (as PNG), after one shifted pass;
    returns the mean PSNR of the pass."""
    files = image_files(src)
    if not files:
        raise SystemExit(f"error: no images (.jpg, .jpeg, .png) under {src}")
    scores = []
    for path in progress_bar(files, desc="recode", disable=not show_progress):
        with Image.open(path) as image:
            original = image.convert("RGB")
        coded = jpeg_pass(original, quality, shift)
        scores.append(psnr(original, coded))
        out = (dst / path.relative_to(src)).with_suffix(".png")  # lossless: no loss beyond the pass
        out.parent.mkdir(parents=True, exist_ok=True)
        coded.save(out)
    return float(np.mean(scores))


def calibrate(photos: Path, samples: int, quality: int, shift: int, seed: int = 0) -> tuple[float, float]:
    """Mean PSNRs of a first (on-grid) and a second (shifted) pass over 32x32 crops of larger photographs."""
    files = image_files(photos)
    if not files:
        raise SystemExit(f"error: no images (.jpg, .jpeg, .png) under {photos}")
    rng = random.Random(seed)
    first, second = [], []
    for _ in progress_bar(range(samples), desc="calibrate"):
        with Image.open(rng.choice(files)) as image:
            photo = image.convert("RGB")
        side = rng.randint(96, min(photo.size))  # area-downscaling by 3x or more wipes out the q95 coding
        x, y = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
        clean = photo.crop((x, y, x + side, y + side)).resize((32, 32), Image.Resampling.BOX)
        once = jpeg_pass(clean, quality)
        first.append(psnr(clean, once))
        second.append(psnr(once, jpeg_pass(once, quality, shift)))
    return float(np.mean(first)), float(np.mean(second))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="image folder to recode (e.g. the unpacked CIFAR-10 JPEG copy)")
    p.add_argument("dst", type=Path, help="folder to write the recoded copy to (same layout)")
    p.add_argument("--quality", type=int, default=75, help="JPEG quality of the pass (default 75)")
    p.add_argument("--shift", type=int, default=3,
                   help="pixels the coding grid moves (default 3: odd, so the 2x2 chroma cells move too)")
    p.add_argument("--calibrate", type=Path, default=None, metavar="PHOTOS",
                   help="folder of near-clean photographs to compare a first and a second pass on")
    p.add_argument("--samples", type=int, default=2000, help="crops for --calibrate (default 2000)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not 1 <= args.quality <= 95:
        p.error(f"--quality {args.quality}: expected 1..95")
    if args.shift < 0 or args.shift >= 32:
        p.error(f"--shift {args.shift}: expected 0..31")
    if not args.src.is_dir():
        p.error(f"{args.src}: not a folder")
    if args.dst.resolve() == args.src.resolve():
        p.error("dst must differ from src")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    mean = recode_folder(args.src, args.dst, args.quality, args.shift, show_progress=not args.no_progress)
    print(f"pass (quality {args.quality}, 4:2:0, grid shifted by {args.shift}) over {args.src}: "
          f"mean PSNR {mean:.2f} dB; written to {args.dst}")
    if args.calibrate is not None:
        first, second = calibrate(args.calibrate, args.samples, args.quality, args.shift)
        print(f"calibration on {args.samples} 32x32 crops of {args.calibrate}: first pass {first:.2f} dB, "
              f"second shifted pass {second:.2f} dB")


if __name__ == "__main__":
    main()
