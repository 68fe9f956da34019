"""Pascal VOC detection dataset (``Annotations/*.xml``, ``JPEGImages/*.jpg``, ``ImageSets/Main/<split>.txt``).

VOC boxes are 1-based inclusive pixel indices; they become 0-based XYXY pixel-edge coordinates
``(xmin - 1, ymin - 1, xmax, ymax)``. Objects marked ``difficult`` are left out of the targets unless
``keep_difficult=True``; with it they are kept and flagged in ``target["difficult"]`` (the VOC metric ignores
them), and :meth:`VOCDetection.get_annotation` always returns every object with its flag.

The XML is parsed with ``xml.etree.ElementTree`` (defusedxml is not available): files declaring a DTD or
entities are refused before parsing, which rules out entity-expansion attacks.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
from PIL import Image

from visionzoo.datasets.common import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, open_image_rgb
from visionzoo.datasets.detection import (
    DetectionDataset,
    SafeJoiner,
    make_target,
    sanitize_boxes,
    warn_dropped,
)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_SPLITS = ("trainval", "train", "val", "test")
ON_CORRUPT = ("error", "skip")
CLASSES_FILE = "classes.txt"
BACKGROUND_NAMES = ("background", "__background__")
_FORBIDDEN = (b"<!doctype", b"<!entity")


def check_detection_classes(classes, source: str = "data.params.classes") -> list[str]:
    """Detection class names (labels 1..K, the background left out) as a checked list of strings."""
    if isinstance(classes, str) or not isinstance(classes, Sequence):
        raise ValueError(f"{source}: expected a list of class names, got {classes!r}")
    names = [str(c).strip() for c in classes]
    if not names or not all(names):
        raise ValueError(f"{source}: class names must be non-empty, got {list(classes)}")
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise ValueError(f"{source}: class name(s) {', '.join(map(repr, dupes))} listed more than once")
    if names[0] in BACKGROUND_NAMES:
        raise ValueError(f"{source}: leave the background out of detection classes (labels 1..K are the names given; "
                         f"got {names[0]!r} first)")
    return names


def read_detection_classes(path: Union[str, os.PathLike]) -> list[str]:
    """Detection class names from a text file, one per line in label order 1..K; a leading background line
    ("background" / "__background__", as in a segmentation classes.txt) is skipped, blank lines are ignored."""
    path = Path(path)
    try:
        names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    except FileNotFoundError as e:
        raise FileNotFoundError(f"class names file not found: {path}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read class names ({e})") from e
    if names and names[0] in BACKGROUND_NAMES:
        names = names[1:]
    return check_detection_classes(names, str(path))


def voc_year_root(root: Union[str, os.PathLike], year: Union[str, int, None]) -> Path:
    """The folder holding a VOC year's data: ``root`` itself, or ``root/VOC<year>`` (year 2012 or "VOC2012")."""
    root = Path(root)
    if year is None:
        return root
    y = str(year)
    return root / (y if y.upper().startswith("VOC") else f"VOC{y}")


def read_voc_xml(path: Union[str, os.PathLike]) -> ET.Element:
    """Parse one annotation file, refusing DTDs / entity declarations; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"VOC annotation file not found: {path}") from e
    lowered = data.lower()
    for token in _FORBIDDEN:
        if token in lowered:
            raise ValueError(f"{path}: refusing XML with a {token.decode().upper()} declaration "
                             "(DTDs and entities are not allowed in annotation files)")
    try:
        return ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"{path}: malformed XML ({e})") from e


def _text(elem: ET.Element, key: str, path: Path, where: str = "") -> str:
    child = elem.find(key)
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"{path}: missing <{key}>{' in ' + where if where else ''}")
    return child.text.strip()


def _number(elem: ET.Element, key: str, path: Path, where: str) -> float:
    s = _text(elem, key, path, where)
    try:
        return float(s)
    except ValueError:
        raise ValueError(f"{path}: <{key}> in {where} is not a number: {s!r}") from None


def parse_voc_annotation(path: Union[str, os.PathLike], class_to_label: dict[str, int]) -> dict:
    """One VOC XML file as numpy arrays: ``boxes`` (N, 4) 0-based XYXY (not yet clipped), ``labels``,
    ``difficult`` (bool), plus ``width`` / ``height`` (None if the file has no <size>) and ``filename``."""
    path = Path(path)
    root = read_voc_xml(path)
    width = height = None
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        width = int(_number(size, "width", path, "<size>"))
        height = int(_number(size, "height", path, "<size>"))
    boxes, labels, difficult = [], [], []
    for k, obj in enumerate(root.iter("object")):
        where = f"object {k}"
        name = _text(obj, "name", path, where)
        if name not in class_to_label:
            raise ValueError(f"{path}: unknown class name {name!r} in {where} (known: {', '.join(class_to_label)}; "
                             "declare a data set's own classes with data.params.classes or a classes.txt in its "
                             "root, one name per line)")
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{path}: missing <bndbox> in {where}")
        x1, y1, x2, y2 = (_number(bb, key, path, f"{where} <bndbox>") for key in ("xmin", "ymin", "xmax", "ymax"))
        boxes.append((x1 - 1.0, y1 - 1.0, x2, y2))
        labels.append(class_to_label[name])
        d = obj.find("difficult")
        difficult.append(d is not None and d.text is not None and d.text.strip() not in ("", "0"))
    filename = root.find("filename")
    return {
        "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
        "labels": np.array(labels, dtype=np.int64),
        "difficult": np.array(difficult, dtype=bool),
        "width": width,
        "height": height,
        "filename": filename.text.strip() if filename is not None and filename.text else None,
    }


class VOCDetection(DetectionDataset):
    """Pascal VOC detection.

    Args:
        root: the folder holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/`` — or, with
            ``year``, the VOCdevkit folder holding ``VOC<year>/``.
        split: "trainval", "train", "val" or "test" (reads ``ImageSets/Main/<split>.txt``).
        year: e.g. "2007" or 2012 (``root/VOC2007``); None when ``root`` is the year folder itself.
        transform: a v2 transform called as ``transform(image, target)``.
        keep_difficult: keep objects marked difficult (flagged in ``target["difficult"]``); otherwise they
            are left out of the targets (use True, or :meth:`get_annotation`, for evaluation).
        classes: class names, in label order 1..K (a data set of one's own: e.g. ``["raccoon"]``). Default: the
            names in ``<root>/classes.txt`` when it exists (one per line; a leading "background" or
            "__background__" line is skipped), else the 20 VOC classes.
        on_corrupt / max_image_pixels: as for the other datasets.

    ``ids`` are the VOC image ids (strings); ``target["image_id"]`` is the sample index.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        split: str = "trainval",
        year: Union[str, int, None] = None,
        transform: Callable | None = None,
        keep_difficult: bool = False,
        classes: Sequence[str] | None = None,
        on_corrupt: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if split not in VOC_SPLITS:
            raise ValueError(f"unknown VOC split {split!r}; expected one of {', '.join(VOC_SPLITS)}")
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}")
        root = voc_year_root(root, year)
        self.root, self.split, self.transform = root, split, transform
        self.keep_difficult = bool(keep_difficult)
        self.on_corrupt, self.max_image_pixels = on_corrupt, int(max_image_pixels)
        if classes is None:
            classes = read_detection_classes(root / CLASSES_FILE) if (root / CLASSES_FILE).is_file() else VOC_CLASSES
        self.classes = ["__background__", *check_detection_classes(classes)]
        self.class_to_label = {c: i for i, c in enumerate(self.classes) if i > 0}

        if not (root / "Annotations").is_dir():
            hint = ""
            if year is None and root.is_dir():
                years = sorted(p.name for p in root.glob("VOC*") if p.is_dir())
                hint = f" (found {', '.join(years)}: pass year=...)" if years else ""
            raise FileNotFoundError(f"VOC Annotations folder not found: {root / 'Annotations'}{hint}")
        split_file = root / "ImageSets" / "Main" / f"{split}.txt"
        try:
            lines = split_file.read_text().split("\n")
        except FileNotFoundError as e:
            raise FileNotFoundError(f"VOC split file not found: {split_file}") from e
        self.ids = [ln.split()[0] for ln in lines if ln.strip()]

        xml_join, jpg_join = SafeJoiner(root / "Annotations", split_file), SafeJoiner(root / "JPEGImages", split_file)
        self._xml_paths = [xml_join(f"{i}.xml") for i in self.ids]
        self._paths = [jpg_join(f"{i}.jpg") for i in self.ids]
        self._ann: list[dict] = []
        self._keep: list[np.ndarray] = []
        self._sizes: list[tuple[int, int]] = []
        dropped: list[str] = []
        for image_id, xml_path, img_path in zip(self.ids, self._xml_paths, self._paths):
            a = parse_voc_annotation(xml_path, self.class_to_label)
            if a["width"] is None:  # no <size>: read the image header (cheap, no decoding)
                try:
                    with Image.open(img_path) as im:
                        a["width"], a["height"] = im.size
                except FileNotFoundError as e:
                    raise FileNotFoundError(f"image file not found: {img_path} (and {xml_path} has no <size>)") from e
            s = sanitize_boxes(a["boxes"], a["labels"], a["width"], a["height"], xml_path)
            keep_mask = np.zeros(len(a["labels"]), bool)
            keep_mask[s.keep] = True
            dropped += [f"{image_id}.xml#{k}" for k in np.flatnonzero(~keep_mask)]
            boxes = np.zeros((len(a["labels"]), 4), np.float32)
            boxes[s.keep] = s.boxes
            a["boxes"] = boxes  # clipped; rows of dropped boxes are unused
            a["valid"] = keep_mask
            self._ann.append(a)
            self._sizes.append((a["height"], a["width"]))
        warn_dropped(split_file, dropped, "objects")

    # ------------------------------------------------------------------------------------------ access

    def get_height_and_width(self, index: int) -> tuple[int, int]:
        return self._sizes[index]

    def get_annotation(self, index: int) -> dict:
        """Every (valid) object of image ``index`` whatever ``keep_difficult``: ``boxes`` (N, 4) float32
        0-based XYXY, ``labels`` int64, ``difficult`` bool (numpy arrays), for evaluation."""
        a = self._ann[index]
        v = a["valid"]
        return {"boxes": a["boxes"][v], "labels": a["labels"][v], "difficult": a["difficult"][v]}

    def load_image(self, index: int) -> Image.Image:
        path = self._paths[index]
        try:
            image = open_image_rgb(path, self.max_image_pixels)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"image file not found: {path} (id {self.ids[index]!r} in "
                                    f"{self.split}.txt)") from e
        h, w = self._sizes[index]
        if image.size != (w, h):
            raise ImageReadError(f"{path}: image is {image.size[0]}x{image.size[1]} but "
                                 f"{self._xml_paths[index].name} says {w}x{h}")
        return image

    def load_target(self, index: int) -> dict:
        a = self.get_annotation(index)
        if not self.keep_difficult:
            a = {k: v[~a["difficult"]] for k, v in a.items()}
        return make_target(a["boxes"], a["labels"], self._sizes[index], index, difficult=a["difficult"])

    def __repr__(self) -> str:
        return (f"VOCDetection(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
                f"keep_difficult={self.keep_difficult})")
