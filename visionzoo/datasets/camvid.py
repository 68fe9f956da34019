"""CamVid road scenes as distributed with SegNet (Brostow et al. 2008; Badrinarayanan et al. 2017): 701 frames at
480x360, 11 classes plus void.

Layout (``root`` is the ``CamVid`` folder or the folder holding it)::

    {train,val,test}/<frame>.jpg|png          367 / 101 / 233 frames
    {train,val,test}annot/<frame>.png         8-bit labels 0..10, 11 = void

Label 11 (void: unlabelled pixels) becomes the ignore value 255 on load, so losses and metrics skip it; any
other value above 10 is an error naming the file. The frames may be PNG (the original distribution) or JPEG
(the copy in ../shared/data, re-encoded at quality 95): each frame's label has the frame's stem plus ``.png``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from visionzoo.datasets.common import DEFAULT_MAX_IMAGE_PIXELS
from visionzoo.datasets.segmentation import (
    IGNORE_INDEX,
    IMAGE_EXTENSIONS,
    SegmentationDataset,
    _check_split_name,
    read_mask,
)

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                  "Bicyclist")
CAMVID_VOID = 11


def camvid_root(root: Union[str, os.PathLike]) -> Path:
    """The folder holding ``train/``, ``trainannot/``, ...: ``root`` itself or ``root/CamVid``."""
    root = Path(root).expanduser()
    if not any((root / f"{s}annot").is_dir() for s in ("train", "val", "test")) and (root / "CamVid").is_dir():
        root = root / "CamVid"
    return root


class CamVidSegmentation(SegmentationDataset):
    """CamVid in SegNet's layout (see the module docstring).

    Args:
        root: the ``CamVid`` folder or the folder holding it.
        split: "train", "val" or "test" (any folder name with a ``<split>annot`` partner works).
        transform: a v2 transform called as ``transform(image, mask)``.
        classes: the 11 class names (default :data:`CAMVID_CLASSES`); label ``len(classes)`` is void.
        on_corrupt / max_image_pixels: as for the other datasets.

    ``ids`` are the frames' file stems, sorted.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        transform: Callable | None = None,
        classes: Sequence[str] | None = None,
        on_corrupt: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        split = _check_split_name(split)
        self.root, self.split = camvid_root(root), split
        self._setup(CAMVID_CLASSES if classes is None else classes, transform, on_corrupt, max_image_pixels,
                    "classes" if classes is not None else "CAMVID_CLASSES")
        self.void_value = len(self.classes)
        self.image_dir, self.mask_dir = self.root / split, self.root / f"{split}annot"
        for folder in (self.image_dir, self.mask_dir):
            if not folder.is_dir():
                found = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
                raise FileNotFoundError(f"CamVid folder not found: {folder} (data.root must hold {{train,val,test}}/ "
                                        f"and {{train,val,test}}annot/, or CamVid/ with them; found: "
                                        f"{', '.join(found) or 'nothing'})")
        images = sorted(p for p in self.image_dir.iterdir()
                        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not images:
            raise ValueError(f"{self.image_dir}: no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
        self.ids = [p.stem for p in images]
        self._image_paths = images
        self._mask_paths = [self.mask_dir / f"{p.stem}.png" for p in images]
        for img, msk in zip(self._image_paths, self._mask_paths):
            if not msk.is_file():
                raise FileNotFoundError(f"label file not found: {msk} (for frame {img})")

    def load_mask(self, index: int, image_size: tuple[int, int] | None = None) -> np.ndarray:
        """The frame's labels with void (11) as :data:`IGNORE_INDEX`, checked as
        :meth:`SegmentationDataset.load_mask` does."""
        path = self._mask_paths[index]
        mask = read_mask(path, self.max_image_pixels)
        mask = np.where(mask == self.void_value, np.uint8(IGNORE_INDEX), mask)
        w, h = self._image_size(index) if image_size is None else image_size
        if mask.shape != (h, w):
            raise ValueError(f"{path}: label image is {mask.shape[1]}x{mask.shape[0]} (W x H) but its frame "
                             f"{self._image_paths[index]} is {w}x{h}")
        bad = np.unique(mask[(mask >= self.num_classes) & (mask != IGNORE_INDEX)])
        if bad.size:
            raise ValueError(f"{path}: label value(s) {', '.join(map(str, bad[:10].tolist()))} outside the class "
                             f"range 0..{self.num_classes - 1} and not void ({self.void_value})")
        return mask

    def __repr__(self) -> str:
        return f"CamVidSegmentation(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"
