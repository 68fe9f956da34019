"""Penn-Fudan pedestrians (Wang, Shi, Song and Shen, ACCV 2007): 170 street photos with instance masks of 423
people, the data set of torchvision's detection fine-tuning tutorial.

Layout (``root`` is the ``PennFudanPed`` folder or the folder holding it)::

    PNGImages/<name>.png        the photos (RGB)
    PedMasks/<name>_mask.png    8-bit instance masks: 0 background, k the k-th person

Every non-zero mask value is one instance of the single class "person"; its box is the tight box around
its pixels in pixel-edge XYXY (a mask spanning columns 10..20 gives x1 = 10, x2 = 21) and its ``area`` is its
pixel count (what COCO evaluation sorts into small / medium / large).

Splits (there is no official one): the images are sorted by name and permuted with
``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``; the last ``test_size`` (50) of the
permutation are "test" — with the default seed 1 these are the 50 test images of torchvision's tutorial
(``torch.manual_seed(1); torch.randperm(len(dataset))``) — the ``val_size`` (20) before them "val", the rest
"train"; "trainval" is train + val and "all" every image. Each split lists its images in name order.
"""
from __future__ import annotations

import contextlib
import io
import os
from functools import cached_property
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from visionzoo.datasets.common import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, open_image, open_image_rgb
from visionzoo.datasets.detection import DetectionDataset, make_target

PENNFUDAN_CLASSES = ("__background__", "person")
PENNFUDAN_SPLITS = ("train", "val", "trainval", "test", "all")
ON_CORRUPT = ("error", "skip")


def pennfudan_root(root: Union[str, os.PathLike]) -> Path:
    """The folder holding ``PNGImages/`` and ``PedMasks/``: ``root`` itself or ``root/PennFudanPed``."""
    root = Path(root).expanduser()
    if not (root / "PNGImages").is_dir() and (root / "PennFudanPed" / "PNGImages").is_dir():
        root = root / "PennFudanPed"
    for sub in ("PNGImages", "PedMasks"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"Penn-Fudan folder not found: {root / sub} (data.root must hold PNGImages/ and "
                                    "PedMasks/, or PennFudanPed/ with them; unpack the archive with "
                                    "`python -m visionzoo.datasets.unpack pennfudanped.tar.gz`)")
    return root


def pennfudan_split_indices(n: int, split: str, seed: int = 1, test_size: int = 50, val_size: int = 20) -> list[int]:
    """Positions (in name order) of the images of ``split`` among ``n`` images; see the module docstring."""
    if split not in PENNFUDAN_SPLITS:
        raise ValueError(f"unknown Penn-Fudan split {split!r}; expected one of {', '.join(PENNFUDAN_SPLITS)}")
    if test_size < 0 or val_size < 0 or n <= test_size + val_size:
        raise ValueError(f"{n} images cannot hold a test split of {test_size} and a validation split of {val_size} "
                         "with images left to train on")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    train_end = n - test_size - val_size
    parts = {"train": perm[:train_end], "val": perm[train_end:n - test_size], "trainval": perm[:n - test_size],
             "test": perm[n - test_size:], "all": perm}
    return sorted(parts[split])


def read_instance_mask(path: Union[str, os.PathLike], max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """An instance mask (0 background, k > 0 one instance each) as a uint8 (H, W) array; ImageReadError naming
    the file when it cannot be decoded, ValueError when it is not an 8-bit single-channel image."""
    img = open_image(path, max_pixels, what="mask")
    if img.mode not in ("L", "P"):
        raise ValueError(f"{path}: instance mask mode is {img.mode!r}; expected an 8-bit greyscale or palette PNG "
                         "whose values are instance ids (0 background)")
    return np.array(img, dtype=np.uint8)


def instances_from_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(instance ids (N,) ascending, boxes (N, 4) float32 pixel-edge XYXY, areas (N,) pixel counts) of the
    non-zero values of an instance mask."""
    ids = np.unique(mask)
    ids = ids[ids != 0]
    boxes = np.zeros((len(ids), 4), np.float32)
    areas = np.zeros(len(ids), np.float32)
    for k, v in enumerate(ids):
        ys, xs = np.nonzero(mask == v)
        boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        areas[k] = len(xs)
    return ids, boxes, areas


class PennFudanDetection(DetectionDataset):
    """Penn-Fudan as a detection / instance segmentation dataset (see the module docstring).

    Args:
        root: the ``PennFudanPed`` folder or the folder holding it.
        split: "train", "val", "trainval", "test" or "all".
        transform: a v2 transform called as ``transform(image, target)``.
        masks: put the instance masks in the targets (Mask R-CNN).
        seed / test_size / val_size: the split (defaults: torchvision tutorial's 50 test images, 20 for validation).
        on_corrupt / max_image_pixels: as for the other datasets.

    ``ids`` are the images' positions in name order over the whole folder (stable across splits; the COCO
    image ids of :attr:`coco`), ``names`` their file stems, ``instance_ids`` each image's mask values.
    """

    label_to_cat_id = {1: 1}

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        transform: Callable | None = None,
        masks: bool = True,
        seed: int = 1,
        test_size: int = 50,
        val_size: int = 20,
        on_corrupt: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}")
        self.root = pennfudan_root(root)
        self.split, self.transform, self.masks = split, transform, bool(masks)
        self.on_corrupt, self.max_image_pixels = on_corrupt, int(max_image_pixels)
        self.classes = list(PENNFUDAN_CLASSES)
        all_images = sorted(p for p in (self.root / "PNGImages").iterdir()
                            if p.suffix.lower() == ".png" and not p.name.startswith("."))
        if not all_images:
            raise ValueError(f"{self.root / 'PNGImages'}: no .png images")
        self.ids = pennfudan_split_indices(len(all_images), split, seed, test_size, val_size)
        self._paths = [all_images[i] for i in self.ids]
        self.names = [p.stem for p in self._paths]
        self._mask_paths = [self.root / "PedMasks" / f"{name}_mask.png" for name in self.names]
        self.instance_ids, self._boxes, self._areas, self._sizes = [], [], [], []
        for path, mask_path in zip(self._paths, self._mask_paths):
            if not mask_path.is_file():
                raise FileNotFoundError(f"mask file not found: {mask_path} (for image {path})")
            mask = read_instance_mask(mask_path, self.max_image_pixels)
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except (OSError, ValueError, SyntaxError) as e:
                raise ImageReadError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
            if mask.shape != (h, w):
                raise ValueError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {path} "
                                 f"is {w}x{h}")
            ids, boxes, areas = instances_from_mask(mask)
            self.instance_ids.append(ids)
            self._boxes.append(boxes)
            self._areas.append(areas)
            self._sizes.append((h, w))

    # ------------------------------------------------------------------------------------------ access
    def get_height_and_width(self, index: int) -> tuple[int, int]:
        return self._sizes[index]

    def get_annotation(self, index: int) -> dict:
        """``boxes`` (N, 4) float32 XYXY, ``labels`` (all 1), ``difficult`` (all False) of image ``index``."""
        n = len(self._boxes[index])
        return {"boxes": self._boxes[index], "labels": np.ones(n, np.int64), "difficult": np.zeros(n, bool)}

    def load_mask(self, index: int) -> np.ndarray:
        """The instance masks of image ``index``, uint8 (N, H, W), in the order of ``instance_ids[index]``."""
        mask = read_instance_mask(self._mask_paths[index], self.max_image_pixels)
        return (mask[None] == self.instance_ids[index][:, None, None]).astype(np.uint8)

    def load_image(self, index: int) -> Image.Image:
        image = open_image_rgb(self._paths[index], self.max_image_pixels)
        h, w = self._sizes[index]
        if image.size != (w, h):
            raise ImageReadError(f"{self._paths[index]}: image is {image.size[0]}x{image.size[1]} but its mask is "
                                 f"{w}x{h}")
        return image

    def load_target(self, index: int) -> dict:
        masks = self.load_mask(index) if self.masks else None
        n = len(self._boxes[index])
        return make_target(self._boxes[index], np.ones(n, np.int64), self._sizes[index], index,
                           area=self._areas[index], masks=masks)

    @cached_property
    def coco(self):
        """The split's ground truth as a pycocotools COCO object with RLE instance masks (box and mask AP)."""
        images, anns = [], []
        for index, image_id in enumerate(self.ids):
            h, w = self._sizes[index]
            images.append({"id": int(image_id), "width": w, "height": h, "file_name": str(self._paths[index])})
            masks = self.load_mask(index)
            for m, box, area in zip(masks, self._boxes[index], self._areas[index]):
                rle = mask_utils.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("ascii")
                x1, y1, x2, y2 = (float(v) for v in box)
                anns.append({"id": len(anns) + 1, "image_id": int(image_id), "category_id": 1, "iscrowd": 0,
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float(area), "segmentation": rle})
        coco = COCO()
        coco.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints while indexing
            coco.createIndex()
        return coco

    def __repr__(self) -> str:
        return f"PennFudanDetection(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"
