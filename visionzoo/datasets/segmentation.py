"""Semantic segmentation data: mask reading, Pascal VOC / mask-folder datasets, joint v2 transforms, collate.

Sample convention: ``dataset[i]`` returns ``(image, mask)`` where, after the transform, ``image`` is a float32
(3, H, W) tensor and ``mask`` an int64 (H, W) tensor of class values: ``0..num_classes - 1`` (index into
``dataset.classes``, 0 usually "background") or :data:`IGNORE_INDEX` (255: object borders, "void", padding),
which losses and metrics skip. Without a transform the image is scaled to [0, 1].

Masks are stored as 8-bit PNGs whose pixel values are the class values: palette ("P") images (Pascal VOC's
``SegmentationClass``, the palette only colours them for viewing) or greyscale ("L") images. Colour-coded RGB
masks are refused rather than guessed. Every load checks that the mask has the image's size and only known
values, with errors naming the files; :meth:`SegmentationDataset.validate` checks a whole dataset up front.

Transforms (:func:`build_segmentation_transforms`) are ``torchvision.transforms.v2`` pipelines called as
``transform(image, mask)`` with a ``tv_tensors.Image`` (uint8) and a ``tv_tensors.Mask`` (uint8, H x W): v2
moves the mask with the image, resizes masks with nearest-neighbour interpolation and pads them with
:data:`IGNORE_INDEX`, so padding never counts. :func:`segmentation_collate` pads variable-size samples the
same way.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from visionzoo.datasets.common import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageReadError,
    SkippedSample,
    open_image,
    open_image_rgb,
)
from visionzoo.datasets.detection import SafeJoiner, to_image
from visionzoo.datasets.voc import VOC_CLASSES, voc_year_root

IGNORE_INDEX = 255
VOC_SEG_CLASSES = ("background", *VOC_CLASSES)
MASK_MODES = ("P", "L")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ON_CORRUPT = ("error", "skip")
CLASSES_FILE = "classes.txt"


# --------------------------------------------------------------------------------------------- masks
@functools.lru_cache(maxsize=1)
def _voc_palette() -> tuple[int, ...]:
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):  # the bits of the index are spread over the high bits of r, g, b in turn
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return tuple(pal)


def voc_palette() -> list[int]:
    """The standard 256-entry Pascal VOC colour map as 768 ints ``[r0, g0, b0, r1, ...]`` (for
    ``PIL.Image.putpalette``): 0 black, 1 (128, 0, 0), 2 (0, 128, 0), ..., 255 (224, 224, 192)."""
    return list(_voc_palette())


def read_mask(path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A class-value mask as a uint8 (H, W) array.

    Palette ("P") images give their palette indices (the colours are ignored), greyscale ("L") images their
    values. Raises FileNotFoundError naming a missing file, ValueError naming the file and its mode for
    any other mode (RGB colour-coded masks, 16-bit, ...), and ImageReadError for files that cannot be
    decoded or are above ``max_pixels``.
    """
    path = Path(path)
    img = open_image(path, max_pixels, what="mask")
    if img.mode not in MASK_MODES:
        raise ValueError(
            f"{path}: mask image mode is {img.mode!r}; expected a palette ('P') or greyscale ('L') "
            "8-bit PNG whose pixel values are the class values (convert colour-coded masks to "
            "class indices first)")
    w, h = img.size
    arr = np.array(img, dtype=np.uint8)
    if arr.shape != (h, w):
        raise ImageReadError(f"{path}: decoded mask has shape {arr.shape}, expected ({h}, {w})")
    return arr


def write_mask(path: Union[str, os.PathLike], mask, palette: Sequence[int] | None = None) -> None:
    """Save a uint8 (H, W) class-value mask as a palette PNG (colours from ``palette``, default
    :func:`voc_palette`), atomically (a hidden temporary file, then ``os.replace``)."""
    path = Path(path)
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"{path}: a mask must be 2-D (H, W), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(f"{path}: mask values must be in 0..255, got {arr.min()}..{arr.max()}")
        arr = arr.astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(arr))  # uint8 (H, W): mode "L"
    img.putpalette(list(palette) if palette is not None else voc_palette())  # L -> P, values kept
    tmp = path.with_name(f".{path.name}.tmp")  # hidden, no image suffix: never read as a sample
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def read_class_names(path: Union[str, os.PathLike]) -> list[str]:
    """Class names from a text file, one per line; the line index is the class value (line 1 -> 0).
    Trailing blank lines are ignored; blank lines in between and duplicate names are errors."""
    path = Path(path)
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except FileNotFoundError as e:
        raise FileNotFoundError(f"class names file not found: {path}") from e
    while lines and not lines[-1]:
        lines.pop()
    blank = [i + 1 for i, ln in enumerate(lines) if not ln]
    if blank:
        raise ValueError(f"{path}: blank line(s) {blank[:10]} among the class names (one name per line, the "
                         "line index is the class value)")
    return _check_classes(lines, str(path))


def _check_classes(classes: Sequence[str], source: str = "classes") -> list[str]:
    if isinstance(classes, str):
        raise ValueError(f"{source}: expected a list of class names, got the string {classes!r}")
    names = [str(c) for c in classes]
    if not names:
        raise ValueError(f"{source}: no class names")
    if len(names) > IGNORE_INDEX:
        raise ValueError(f"{source}: {len(names)} classes; at most {IGNORE_INDEX} fit in an 8-bit mask next to "
                         f"the ignore value {IGNORE_INDEX}")
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise ValueError(f"{source}: class name(s) {', '.join(map(repr, dupes))} listed more than once")
    return names


def _check_on_corrupt(on_corrupt: str) -> str:
    if on_corrupt not in ON_CORRUPT:
        raise ValueError(f"on_corrupt must be one of {', '.join(map(repr, ON_CORRUPT))}, got {on_corrupt!r}")
    return on_corrupt


def _as_sample_tensors(image, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 (C, H, W) image, int64 (H, W) mask) as plain tensors: uint8 images are scaled to [0, 1],
    a (1, H, W) mask loses its channel dim."""
    if isinstance(image, Image.Image):
        image = to_image(image)
    image = torch.as_tensor(image).as_subclass(torch.Tensor)
    if image.dtype == torch.uint8:
        image = image.float().div_(255.0)
    elif image.dtype != torch.float32:
        image = image.float()
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask)
    mask = torch.as_tensor(mask).as_subclass(torch.Tensor)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"a segmentation mask must be (H, W) or (1, H, W), got shape {tuple(mask.shape)}")
    return image, mask.to(torch.int64)


# ------------------------------------------------------------------------------------------- datasets
class SegmentationDataset(torch.utils.data.Dataset):
    """What every semantic segmentation dataset shares: loading and checking image/mask pairs, on_corrupt,
    the joint transform. Subclasses fill ``ids``, ``_image_paths``, ``_mask_paths`` and call
    :meth:`_setup`.

    Attributes: ``classes`` (names; the index is the class value), ``num_classes``, ``ignore_index`` (255),
    ``ids``, ``transform`` (called as ``transform(image, mask)`` with a uint8 ``tv_tensors.Image`` and a
    uint8 (H, W) ``tv_tensors.Mask``), ``on_corrupt`` ("error" or "skip": an unreadable image *or mask file*
    gives a :class:`SkippedSample`; a mask of the wrong size or with unknown values always raises, as it
    is a labelling error, not a corrupt file), ``max_image_pixels``.
    """

    ignore_index: int = IGNORE_INDEX
    ids: list[str]
    _image_paths: list[Path]
    _mask_paths: list[Path]

    def _setup(self, classes: Sequence[str], transform: Callable | None, on_corrupt: str, max_image_pixels,
               source: str = "classes") -> None:
        if isinstance(max_image_pixels, bool) or not float(max_image_pixels) > 0:
            raise ValueError(f"max_image_pixels must be a positive number, got {max_image_pixels!r}")
        self.classes = _check_classes(classes, source)
        self.transform = transform
        self.on_corrupt = _check_on_corrupt(on_corrupt)
        self.max_image_pixels = int(max_image_pixels)

    @property
    def num_classes(self) -> int:
        """Number of classes, background included (mask values 0..num_classes - 1)."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self._image_paths)

    def image_path(self, index: int) -> Path:
        return Path(self._image_paths[index])

    def mask_path(self, index: int) -> Path:
        return Path(self._mask_paths[index])

    def load_image(self, index: int) -> Image.Image:
        """The decoded RGB image of sample ``index``, untransformed (ImageReadError if unreadable)."""
        return open_image_rgb(self._image_paths[index], self.max_image_pixels)

    def _image_size(self, index: int) -> tuple[int, int]:
        """(W, H) of the image from its header, without decoding."""
        path = self._image_paths[index]
        try:
            with Image.open(path) as im:
                return im.size
        except FileNotFoundError as e:
            raise FileNotFoundError(f"image file not found: {path}") from e
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise ImageReadError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e

    def load_mask(self, index: int, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The uint8 (H, W) class-value mask of sample ``index``, checked: it must have the image's size
        (``image_size`` (W, H) if known, else read from the image header) and hold only values
        ``0..num_classes - 1`` or ``ignore_index``; ValueError naming the files otherwise."""
        path = self._mask_paths[index]
        mask = read_mask(path, self.max_image_pixels)
        w, h = self._image_size(index) if image_size is None else image_size
        if mask.shape != (h, w):
            raise ValueError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} (W x H) but its image "
                             f"{self._image_paths[index]} is {w}x{h}")
        counts = np.bincount(mask.ravel(), minlength=256)
        counts[: self.num_classes] = 0
        counts[self.ignore_index] = 0
        bad = np.flatnonzero(counts)
        if bad.size:
            shown = ", ".join(map(str, bad[:10].tolist())) + (", ..." if bad.size > 10 else "")
            raise ValueError(f"{path}: mask holds value(s) {shown} outside the class range "
                             f"0..{self.num_classes - 1} ({self.num_classes} classes) and not the ignore "
                             f"value {self.ignore_index}")
        return mask

    def __getitem__(self, index: int):
        index = range(len(self))[index]  # IndexError when out of range
        try:
            pil = self.load_image(index)
        except (ImageReadError, FileNotFoundError) as e:
            if self.on_corrupt == "skip":
                return SkippedSample(str(self._image_paths[index]), str(e))
            raise
        try:
            mask = self.load_mask(index, image_size=pil.size)
        except ImageReadError as e:  # an undecodable mask file is a corrupt file; wrong contents always raise
            if self.on_corrupt == "skip":
                return SkippedSample(str(self._mask_paths[index]), str(e))
            raise
        image, target = to_image(pil), tv_tensors.Mask(torch.from_numpy(mask))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return _as_sample_tensors(image, target)

    def validate(self, progress: bool = True, decode_images: bool = False) -> dict[str, Any]:
        """Check every sample (mask readable, same size as its image, known values) and raise on the first
        bad one, naming the files. Images are only opened for their size unless ``decode_images``.

        Returns ``{"samples", "class_pixels" (list, one count per class), "ignore_pixels"}``.
        """
        pixels = np.zeros(256, dtype=np.int64)
        for i in tqdm(range(len(self)), desc=f"checking {type(self).__name__} masks", unit="img",
                      disable=not progress, dynamic_ncols=True):
            size = self.load_image(i).size if decode_images else None
            pixels += np.bincount(self.load_mask(i, image_size=size).ravel(), minlength=256)
        return {"samples": len(self), "class_pixels": pixels[: self.num_classes].tolist(),
                "ignore_pixels": int(pixels[self.ignore_index])}


def _check_split_name(split: str) -> str:
    split = str(split)
    if not split or split in (".", "..") or any(c in split for c in "/\\\x00"):
        raise ValueError(f"invalid split name {split!r} (a file name without folders, e.g. 'train')")
    return split


class VOCSegmentation(SegmentationDataset):
    """Pascal VOC semantic segmentation: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette
    PNGs, 255 = object borders / ignore) and ``ImageSets/Segmentation/<split>.txt`` (one id per line).

    Args:
        root: the folder holding those — or, with ``year``, the VOCdevkit folder holding ``VOC<year>/``.
        split: the name of a split file, e.g. "train", "val", "trainval".
        year: e.g. 2012 (``root/VOC2012``); None when ``root`` is the year folder itself.
        transform: a v2 transform called as ``transform(image, mask)``.
        classes: the class names, index = class value (background first). Default: ``<root>/classes.txt``
            when it exists (written by write_shapes_segmentation), else :data:`VOC_SEG_CLASSES`.
        on_corrupt / max_image_pixels: as for the other datasets.

    Ids must stay inside the dataset folder; every image and mask must exist (checked here, cheaply).
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        year: Union[str, int, None] = None,
        transform: Callable | None = None,
        classes: Sequence[str] | None = None,
        on_corrupt: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        split = _check_split_name(split)
        root = voc_year_root(root, year)
        self.root, self.split = root, split
        if classes is None:
            names_file = root / CLASSES_FILE
            classes, source = ((read_class_names(names_file), str(names_file)) if names_file.is_file()
                               else (VOC_SEG_CLASSES, "VOC_SEG_CLASSES"))
        else:
            source = "classes"
        self._setup(classes, transform, on_corrupt, max_image_pixels, source)

        if not (root / "SegmentationClass").is_dir():
            hint = ""
            if year is None and root.is_dir():
                years = sorted(p.name for p in root.glob("VOC*") if p.is_dir())
                hint = f" (found {', '.join(years)}: pass year=...)" if years else ""
            raise FileNotFoundError(f"VOC SegmentationClass folder not found: {root / 'SegmentationClass'}{hint}")
        sets = root / "ImageSets" / "Segmentation"
        split_file = sets / f"{split}.txt"
        try:
            lines = split_file.read_text().splitlines()
        except FileNotFoundError as e:
            found = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
            have = f"available: {', '.join(found)}" if found else f"no split files in {sets}"
            raise FileNotFoundError(f"VOC segmentation split file not found: {split_file} ({have})") from e
        self.split_file = split_file
        self.ids = [ln.split()[0] for ln in lines if ln.strip()]

        img_join, mask_join = SafeJoiner(root / "JPEGImages", split_file), SafeJoiner(root / "SegmentationClass",
                                                                                      split_file)
        self._image_paths = [img_join(f"{i}.jpg") for i in self.ids]
        self._mask_paths = [mask_join(f"{i}.png") for i in self.ids]
        for image_id, img, msk in zip(self.ids, self._image_paths, self._mask_paths):
            for kind, p in (("image", img), ("mask", msk)):
                if not p.is_file():
                    raise FileNotFoundError(f"{kind} file not found: {p} (id {image_id!r} in {split_file})")

    def __repr__(self) -> str:
        return (f"VOCSegmentation(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
                f"classes={self.num_classes})")


class MaskFolderSegmentation(SegmentationDataset):
    """Images and masks in two folders: every image file (jpg, jpeg, png, bmp, webp; sub-folders included,
    hidden files skipped, sorted) in ``root/image_dir`` has a mask with the same relative path and stem plus
    ``.png`` in ``root/mask_dir``.

    Args:
        root: the dataset folder.
        split: substituted for ``{split}`` in ``image_dir`` / ``mask_dir``.
        image_dir / mask_dir: folders relative to ``root`` (default ``images/{split}``, ``masks/{split}``).
        classes: the class names, index = class value; default ``<root>/classes.txt``.
        transform / on_corrupt / max_image_pixels: as for :class:`VOCSegmentation`.

    ``ids`` are the images' paths relative to the image folder, without suffix.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        image_dir: str = "images/{split}",
        mask_dir: str = "masks/{split}",
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        on_corrupt: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        split = _check_split_name(split)
        root = Path(root)
        self.root, self.split = root, split
        if classes is None:
            names_file = root / CLASSES_FILE
            if not names_file.is_file():
                raise ValueError(f"{root}: no {CLASSES_FILE} (one class name per line, background first); give "
                                 "the class names with classes=[...]")
            classes, source = read_class_names(names_file), str(names_file)
        else:
            source = "classes"
        self._setup(classes, transform, on_corrupt, max_image_pixels, source)
        self.image_dir = root / image_dir.format(split=split)
        self.mask_dir = root / mask_dir.format(split=split)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        if not self.mask_dir.is_dir():
            raise FileNotFoundError(f"mask folder not found: {self.mask_dir}")

        images = []
        for dirpath, dirnames, filenames in os.walk(self.image_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            images += [os.path.join(dirpath, f) for f in filenames
                       if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
        images.sort()
        if not images:
            raise ValueError(f"{self.image_dir}: no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
        self.ids, self._image_paths, self._mask_paths = [], [], []
        seen: dict[str, str] = {}
        for img in images:
            rel = Path(os.path.relpath(img, self.image_dir)).with_suffix("").as_posix()
            if rel in seen:
                raise ValueError(f"{img} and {seen[rel]} would share the mask {self.mask_dir / rel}.png; "
                                 "keep one image per name")
            seen[rel] = img
            mask = self.mask_dir / f"{rel}.png"
            if not mask.is_file():
                raise FileNotFoundError(f"mask file not found: {mask} (for image {img})")
            self.ids.append(rel)
            self._image_paths.append(Path(img))
            self._mask_paths.append(mask)

    def __repr__(self) -> str:
        return (f"MaskFolderSegmentation(image_dir={str(self.image_dir)!r}, mask_dir={str(self.mask_dir)!r}, "
                f"images={len(self)}, classes={self.num_classes})")


# ----------------------------------------------------------------------------------------- transforms
def _spatial_size(flat_inputs: list) -> tuple[int, int]:
    """(H, W) shared by the images / masks among a transform's inputs."""
    sizes = {tuple(F.get_size(x)) for x in flat_inputs
             if isinstance(x, (tv_tensors.Image, tv_tensors.Mask, tv_tensors.Video, Image.Image))}
    if not sizes:
        raise TypeError("no image or mask found among the transform inputs")
    if len(sizes) > 1:
        raise ValueError(f"image and mask sizes differ: {sorted(sizes)}")
    return sizes.pop()


class RandomScaleResize(v2.Transform):
    """Resize by a random factor drawn uniformly from ``scale_range``: both sides times the factor, or, with
    ``base_size``, the shorter side to ``base_size`` times the factor (aspect ratio kept). Images use
    bilinear interpolation (antialiased), masks nearest-neighbour (``NEAREST_EXACT``, aligned with the
    bilinear pixel grid), so mask values never mix. ``scale_range=(1, 1)`` with ``base_size`` is a plain
    shorter-side resize."""

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0), base_size: int | None = None):
        super().__init__()
        lo, hi = (float(s) for s in scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
        if base_size is not None and int(base_size) < 1:
            raise ValueError(f"base_size must be a positive number of pixels, got {base_size}")
        self.scale_range = (lo, hi)
        self.base_size = None if base_size is None else int(base_size)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _spatial_size(flat_inputs)
        lo, hi = self.scale_range
        f = lo + (hi - lo) * float(torch.rand(()))
        if self.base_size is not None:
            short = max(1, round(self.base_size * f))
            if h <= w:
                size = [short, max(1, round(w * short / h))]
            else:
                size = [max(1, round(h * short / w)), short]
        else:
            size = [max(1, round(h * f)), max(1, round(w * f))]
        return {"size": size}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST_EXACT)
        return self._call_kernel(F.resize, inpt, params["size"], interpolation=v2.InterpolationMode.BILINEAR,
                                 antialias=True)


class ToSegmentationTensors:
    """Last step of a segmentation pipeline: ``(image, mask)`` as a float32 (C, H, W) tensor (uint8 scaled to
    [0, 1]) and an int64 (H, W) tensor (plain tensors, the mask's channel dim squeezed)."""

    def __call__(self, image, mask):
        return _as_sample_tensors(image, mask)

    def __repr__(self) -> str:
        return "ToSegmentationTensors()"


def build_segmentation_transforms(
    train: bool,
    *,
    crop_size: int | tuple[int, int] | None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: float = 0.5,
    mean: Sequence[float],
    std: Sequence[float],
    base_size: int | None = None,
    photometric: bool = False,
) -> v2.Compose:
    """The v2 pipeline applied jointly to ``(image, mask)``.

    Training: optional RandomPhotometricDistort (``photometric``, on the image only), a random resize by a
    factor in ``scale_range`` (of the image's own size, or of ``base_size`` for the shorter side;
    :class:`RandomScaleResize`), a ``crop_size`` RandomCrop padded where needed with 0 in the image and
    :data:`IGNORE_INDEX` in the mask (None: no crop), RandomHorizontalFlip(``hflip``).
    Evaluation: no crop; a shorter-side resize to ``base_size`` only if it is given.
    Always: ToDtype(float32, scale=True) on the image, Normalize(``mean``, ``std``) and
    :class:`ToSegmentationTensors` (mask as int64 (H, W)).
    """
    mean, std = [float(m) for m in mean], [float(s) for s in std]
    if len(mean) != len(std) or not mean:
        raise ValueError(f"mean and std need one value per channel, got mean={mean}, std={std}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std must be positive, got {std}")
    if not 0.0 <= float(hflip) <= 1.0:
        raise ValueError(f"hflip is a probability in [0, 1], got {hflip}")
    ops: list = []
    if train:
        if photometric:
            ops.append(v2.RandomPhotometricDistort(p=0.5))
        ops.append(RandomScaleResize(scale_range, base_size))
        if crop_size is not None:
            size = (int(crop_size), int(crop_size)) if isinstance(crop_size, (int, float)) else tuple(
                int(s) for s in crop_size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"crop_size must be a positive int or (height, width), got {crop_size}")
            ops.append(v2.RandomCrop(size, pad_if_needed=True,
                                     fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE_INDEX}))
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(p=float(hflip)))
    elif base_size is not None:
        ops.append(RandomScaleResize((1.0, 1.0), base_size))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std), ToSegmentationTensors()]
    return v2.Compose(ops)


# -------------------------------------------------------------------------------------------- collate
def segmentation_collate(samples) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, mask)`` samples into ``(images (N, C, Hmax, Wmax) float, masks (N, Hmax, Wmax)
    int64)``, padding each at the bottom/right to the largest height/width in the batch: images with 0,
    masks with :data:`IGNORE_INDEX`, so padding never counts in losses or metrics."""
    samples = list(samples)
    if not samples:
        return torch.zeros(0, 3, 0, 0), torch.zeros(0, 0, 0, dtype=torch.int64)
    pairs = []
    for k, s in enumerate(samples):
        if isinstance(s, SkippedSample) or not isinstance(s, (tuple, list)) or len(s) != 2:
            raise TypeError(f"segmentation_collate: sample {k} is not an (image, mask) pair "
                            f"({type(s).__name__}); SkippedSample markers are dropped by the engine's collate")
        image, mask = _as_sample_tensors(*s)
        if image.ndim != 3 or image.shape[-2:] != mask.shape:
            raise ValueError(f"segmentation_collate: sample {k} has image {tuple(image.shape)} and mask "
                             f"{tuple(mask.shape)}; expected (C, H, W) and (H, W)")
        pairs.append((image, mask))
    channels = {im.shape[0] for im, _ in pairs}
    if len(channels) > 1:
        raise ValueError(f"segmentation_collate: images have different channel counts {sorted(channels)}")
    hmax = max(im.shape[1] for im, _ in pairs)
    wmax = max(im.shape[2] for im, _ in pairs)
    images = torch.zeros(len(pairs), channels.pop(), hmax, wmax, dtype=torch.float32)
    masks = torch.full((len(pairs), hmax, wmax), IGNORE_INDEX, dtype=torch.int64)
    for k, (im, m) in enumerate(pairs):
        h, w = m.shape
        images[k, :, :h, :w] = im
        masks[k, :h, :w] = m
    return images, masks
