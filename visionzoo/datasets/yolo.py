"""YOLO-format detection data (the layout of Ultralytics / Darknet exports)::

    images/<split>/<name>.jpg|png|...     the images (sub-folders allowed)
    labels/<split>/<name>.txt             one line per object: ``class cx cy w h``
    data.yaml  or  classes.txt            the class names

``class`` is a 0-based integer index into the names; ``cx cy w h`` are the box centre and size as fractions
of the image width and height (0..1). An image without a label file (or with an empty one) is a negative:
an image with no objects. Label files without an image are reported in one warning (and kept in
``orphan_labels``). A malformed line is an error naming the file and the line number.

Class names: ``data.params.classes`` if given, else ``names`` from ``<root>/data.yaml`` (a list, or a
mapping ``{0: name, 1: ...}``), else ``<root>/classes.txt`` (one name per line, line 1 = class 0). Class ``k``
becomes label ``k + 1`` (0 is the detectors' background).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import yaml
from PIL import Image

from visionzoo.datasets.common import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, open_image_rgb
from visionzoo.datasets.detection import DetectionDataset, make_target, sanitize_boxes, warn_dropped
from visionzoo.datasets.voc import check_detection_classes, read_detection_classes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
ON_CORRUPT = ("error", "skip")


def yolo_class_names(root: Union[str, os.PathLike]) -> list[str]:
    """The class names of a YOLO data set: ``names`` in ``root/data.yaml``, else ``root/classes.txt``."""
    root = Path(root)
    data_yaml = root / "data.yaml"
    if data_yaml.is_file():
        try:
            meta = yaml.safe_load(data_yaml.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ValueError(f"{data_yaml}: not valid YAML ({e})") from e
        names = meta.get("names") if isinstance(meta, dict) else None
        if isinstance(names, dict):
            keys = sorted(names)
            if keys != list(range(len(keys))):
                raise ValueError(f"{data_yaml}: 'names' keys must be the class indices 0..{len(keys) - 1}, got {keys}")
            names = [names[k] for k in keys]
        if not isinstance(names, list):
            raise ValueError(f"{data_yaml}: expected 'names' as a list of class names or a mapping "
                             f"{{0: name, ...}}, got {names!r}")
        return check_detection_classes(names, f"{data_yaml} names")
    if (root / "classes.txt").is_file():
        return read_detection_classes(root / "classes.txt")
    raise ValueError(f"{root}: no data.yaml or classes.txt with the class names; add one, or give "
                     "data.params.classes: [name, ...] (class 0 first)")


def parse_yolo_labels(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(class indices (N,) int64, normalised cx cy w h (N, 4) float64) of one label file; blank lines are
    skipped, anything else that is not ``class cx cy w h`` is a ValueError naming the file and line."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file ({e})") from e
    classes, boxes = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}, line {number}"
        if len(fields) != 5:
            raise ValueError(f"{where}: expected 'class cx cy w h' (5 values), got {len(fields)}: {line.strip()!r}"
                             + (" (polygon labels of YOLO segmentation are not read; export boxes)"
                                if len(fields) > 5 else ""))
        try:
            k = int(fields[0])
        except ValueError:
            raise ValueError(f"{where}: class {fields[0]!r} is not an integer index") from None
        if not 0 <= k < num_classes:
            raise ValueError(f"{where}: class index {k} outside 0..{num_classes - 1} ({num_classes} class names)")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise ValueError(f"{where}: cx cy w h must be numbers, got {' '.join(fields[1:])!r}") from None
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"{where}: cx cy w h must be fractions of the image size in 0..1 (normalised), got "
                             f"{' '.join(fields[1:])}")
        classes.append(k)
        boxes.append(values)
    return np.array(classes, np.int64), np.array(boxes, np.float64).reshape(-1, 4)


class YOLODetection(DetectionDataset):
    """A YOLO-format detection data set (see the module docstring).

    Args:
        root: the data set folder.
        split: substituted for ``{split}`` in ``image_dir`` / ``label_dir``.
        image_dir / label_dir: relative to ``root`` (default ``images/{split}``, ``labels/{split}``; e.g.
            ``{split}/images`` and ``{split}/labels`` for Roboflow's layout).
        classes: the class names (class 0 first); default from ``data.yaml`` or ``classes.txt``.
        transform / on_corrupt / max_image_pixels: as for the other datasets.

    ``ids`` are the sample positions; ``names`` the images' paths relative to the image folder, without suffix.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "train",
        image_dir: str = "images/{split}",
        label_dir: str = "labels/{split}",
        classes: Sequence[str] | None = None,
        transform: Callable | None = None,
        on_corrupt: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}")
        root = Path(root).expanduser()
        self.root, self.split, self.transform = root, split, transform
        self.on_corrupt, self.max_image_pixels = on_corrupt, int(max_image_pixels)
        names = yolo_class_names(root) if classes is None else check_detection_classes(classes)
        self.classes = ["__background__", *names]
        self.image_dir, self.label_dir = root / image_dir.format(split=split), root / label_dir.format(split=split)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"YOLO image folder not found: {self.image_dir}")

        images = []
        for dirpath, dirnames, filenames in os.walk(self.image_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            images += [Path(dirpath, f) for f in filenames
                       if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
        images.sort()
        if not images:
            raise ValueError(f"{self.image_dir}: no image files (looked for {', '.join(IMAGE_EXTENSIONS)})")
        self.names = [p.relative_to(self.image_dir).with_suffix("").as_posix() for p in images]
        dupes = sorted({n for n in self.names if self.names.count(n) > 1}) if len(set(self.names)) < len(images) else []
        if dupes:
            raise ValueError(f"{self.image_dir}: images {dupes[:5]} exist with two suffixes and would share one "
                             "label file; keep one image per name")
        self._paths = images
        self.ids = list(range(len(images)))
        self._label_paths = [self.label_dir / f"{n}.txt" for n in self.names]

        self.orphan_labels: list[Path] = []
        if self.label_dir.is_dir():
            wanted = {p.resolve() for p in self._label_paths}
            self.orphan_labels = sorted(p for p in self.label_dir.rglob("*.txt")
                                        if not p.name.startswith(".") and p.resolve() not in wanted)
        if self.orphan_labels:
            shown = ", ".join(str(p.relative_to(self.label_dir)) for p in self.orphan_labels[:10])
            warnings.warn(f"{self.label_dir}: {len(self.orphan_labels)} label file(s) without an image in "
                          f"{self.image_dir}, left out: {shown}{', ...' if len(self.orphan_labels) > 10 else ''}",
                          stacklevel=2)

        self._boxes, self._labels, self._sizes = [], [], []
        self.negatives, dropped = 0, []
        for path, label_path in zip(self._paths, self._label_paths):
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except (OSError, ValueError, SyntaxError) as e:
                raise ImageReadError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
            if label_path.is_file():
                k, cxcywh = parse_yolo_labels(label_path, len(names))
            else:
                k, cxcywh = np.zeros(0, np.int64), np.zeros((0, 4))
            self.negatives += len(k) == 0
            cx, cy, bw, bh = (cxcywh[:, 0] * w, cxcywh[:, 1] * h, cxcywh[:, 2] * w, cxcywh[:, 3] * h)
            xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
            s = sanitize_boxes(xyxy, k + 1, w, h, label_path)  # clips, drops zero-size boxes
            dropped += [f"{label_path.name}#{i}" for i in sorted(set(range(len(k))) - set(s.keep.tolist()))]
            self._boxes.append(s.boxes)
            self._labels.append(s.labels)
            self._sizes.append((h, w))
        warn_dropped(self.label_dir, dropped, "boxes")

    # ------------------------------------------------------------------------------------------ access
    def get_height_and_width(self, index: int) -> tuple[int, int]:
        return self._sizes[index]

    def get_annotation(self, index: int) -> dict:
        n = len(self._labels[index])
        return {"boxes": self._boxes[index], "labels": self._labels[index], "difficult": np.zeros(n, bool)}

    def load_image(self, index: int) -> Image.Image:
        image = open_image_rgb(self._paths[index], self.max_image_pixels)
        h, w = self._sizes[index]
        if image.size != (w, h):
            raise ImageReadError(f"{self._paths[index]}: decoded size {image.size[0]}x{image.size[1]} differs from "
                                 f"its header's {w}x{h}")
        return image

    def load_target(self, index: int) -> dict:
        return make_target(self._boxes[index], self._labels[index], self._sizes[index], index)

    def __repr__(self) -> str:
        return (f"YOLODetection(image_dir={str(self.image_dir)!r}, images={len(self)}, classes={len(self.classes) - 1}, "
                f"negatives={self.negatives})")
