"""COCO-format detection / instance-segmentation dataset (boxes, polygons, RLE, crowd regions).

``CocoDetection(root, ann_file)`` reads an ``instances_*.json`` file with pycocotools and returns samples
in the convention of :mod:`visionzoo.datasets.detection`. Category ids (which may have gaps, as in COCO
itself) are mapped to contiguous labels 1..K in ascending id order; ``label_to_cat_id`` maps back for
evaluation against ``dataset.coco`` (a ``pycocotools.coco.COCO``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Union

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from visionzoo.datasets.common import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, open_image_rgb
from visionzoo.datasets.detection import (
    DetectionDataset,
    SafeJoiner,
    make_target,
    sanitize_boxes,
    warn_dropped,
)

ON_CORRUPT = ("error", "skip")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def load_coco_json(ann_file: Union[str, os.PathLike]) -> dict:
    """Read and structurally validate a COCO instances file; ValueError naming the file (and the entry and
    key) for malformed JSON, missing keys or wrong types, dangling image/category ids and duplicates.
    Fills in the optional ``iscrowd`` (0) and ``area`` (box area) so that COCOeval can use the data."""
    ann_file = Path(ann_file)
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"COCO annotation file not found: {ann_file}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{ann_file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{ann_file}: expected a JSON object at the top level, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{ann_file}: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise ValueError(f"{ann_file}: {key!r} must be a list, got {type(data[key]).__name__}")

    def check(entry, where: str, key: str, ok: Callable, what: str):
        if not isinstance(entry, dict):
            raise ValueError(f"{ann_file}: {where} must be an object, got {type(entry).__name__}")
        if key not in entry:
            raise ValueError(f"{ann_file}: {where} is missing key {key!r}")
        if not ok(entry[key]):
            raise ValueError(f"{ann_file}: {where} key {key!r} must be {what}, got {entry[key]!r}")
        return entry[key]

    def duplicates(ids: list, what: str) -> None:
        if len(set(ids)) != len(ids):
            seen: set = set()
            dup = next(x for x in ids if x in seen or seen.add(x))
            raise ValueError(f"{ann_file}: duplicate {what} id {dup}")

    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        check(img, where, "id", _is_int, "an integer")
        check(img, where, "file_name", lambda v: isinstance(v, str), "a string")
        for k in ("width", "height"):
            check(img, where, k, lambda v: _is_int(v) and v > 0, "a positive integer")
    image_ids = [img["id"] for img in data["images"]]
    duplicates(image_ids, "image")
    for i, cat in enumerate(data["categories"]):
        check(cat, f"categories[{i}]", "id", _is_int, "an integer")
        check(cat, f"categories[{i}]", "name", lambda v: isinstance(v, str), "a string")
    cat_ids = {cat["id"] for cat in data["categories"]}
    duplicates([cat["id"] for cat in data["categories"]], "category")
    image_id_set = set(image_ids)

    def check_annotation(i: int, ann) -> None:  # the slow, precise path, for the first suspicious entry
        where = f"annotations[{i}]"
        aid = check(ann, where, "id", _is_int, "an integer")
        where = f"annotations[{i}] (id {aid})"
        iid = check(ann, where, "image_id", _is_int, "an integer")
        cid = check(ann, where, "category_id", _is_int, "an integer")
        check(ann, where, "bbox", lambda v: isinstance(v, list) and len(v) == 4 and all(map(_is_number, v)),
              "a list of 4 numbers [x, y, width, height]")
        if iid not in image_id_set:
            raise ValueError(f"{ann_file}: {where} refers to image_id {iid}, which is not in 'images'")
        if cid not in cat_ids:
            raise ValueError(f"{ann_file}: {where} refers to category_id {cid}, which is not in 'categories'")
        if "iscrowd" in ann:
            check(ann, where, "iscrowd", lambda v: _is_int(v) and v in (0, 1), "0 or 1")
        if "area" in ann:
            check(ann, where, "area", _is_number, "a number")

    anns = data["annotations"]
    for i, ann in enumerate(anns):  # fast structural checks; check_annotation explains a failure
        if not (type(ann) is dict and type(ann.get("id")) is int and ann.get("image_id") in image_id_set
                and ann.get("category_id") in cat_ids and type(ann.get("bbox")) is list and len(ann["bbox"]) == 4
                and ann.setdefault("iscrowd", 0) in (0, 1)):
            check_annotation(i, ann)
    # numbers, checked in bulk: numpy gives a non-numeric dtype if any entry is not a number
    for key in ("bbox", "area"):
        values = np.array([a.get(key, 0) for a in anns])
        if anns and (values.dtype.kind not in "iuf" or values.dtype == np.bool_):
            for i, ann in enumerate(anns):
                check_annotation(i, ann)
        if anns and not np.isfinite(values).all():  # JSON allows NaN and Infinity; boxes must not hold them
            i = int(np.flatnonzero(~np.isfinite(values.reshape(len(anns), -1)).all(axis=1))[0])
            bad = "NaN" if np.isnan(np.asarray(anns[i].get(key, 0), dtype=np.float64)).any() else "infinity"
            raise ValueError(f"{ann_file}: annotations[{i}] (id {anns[i].get('id')}) key {key!r} holds {bad}: "
                             f"{anns[i].get(key)!r}")
    for ann in anns:
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
    duplicates([a["id"] for a in anns], "annotation")
    return data


def _polygon_parts(segm) -> list:
    """The usable polygon parts of a segmentation list (at least 3 points); pycocotools would read a
    4-number part as a box."""
    return [p for p in segm if len(p) >= 6 and len(p) % 2 == 0]


def _check_segmentation(ann: dict, img: dict, where: str) -> int:
    """ValueError (naming ``where``) for a segmentation the mask decoder cannot use; returns the number of
    polygon parts ignored for having fewer than 3 points."""
    if "segmentation" not in ann:
        raise ValueError(f"{where} has no 'segmentation' (needed with masks=True)")
    segm = ann["segmentation"]
    h, w = img["height"], img["width"]
    if isinstance(segm, list):
        if not all(type(part) is list for part in segm):
            raise ValueError(f"{where}: polygon segmentation must be a list of lists of numbers")
        return len(segm) - len(_polygon_parts(segm))
    if isinstance(segm, dict):
        for k in ("counts", "size"):
            if k not in segm:
                raise ValueError(f"{where}: RLE segmentation is missing key {k!r}")
        if list(segm["size"]) != [h, w]:
            raise ValueError(f"{where}: RLE size {segm['size']} differs from the image's [height, width] "
                             f"[{h}, {w}]")
        counts = segm["counts"]
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != h * w:
                raise ValueError(f"{where}: uncompressed RLE counts must be non-negative integers summing to "
                                 f"height * width = {h * w}")
        elif not isinstance(counts, (str, bytes)):
            raise ValueError(f"{where}: RLE counts must be a string (compressed) or a list (uncompressed)")
        return 0
    raise ValueError(f"{where}: segmentation must be a polygon list or an RLE object, "
                     f"got {type(segm).__name__}")


def segmentation_to_rle(segm, height: int, width: int) -> dict:
    """A COCO segmentation (polygons, uncompressed RLE or compressed RLE) as a compressed RLE."""
    if isinstance(segm, list):
        parts = _polygon_parts(segm)
        if not parts:
            return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(parts, height, width))
    if isinstance(segm["counts"], list):
        return mask_utils.frPyObjects(segm, height, width)
    counts = segm["counts"]
    return {"size": list(segm["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """A COCO segmentation as a uint8 (H, W) mask."""
    return np.ascontiguousarray(mask_utils.decode(segmentation_to_rle(segm, height, width)), dtype=np.uint8)


class CocoDetection(DetectionDataset):
    """A COCO-format detection dataset.

    Args:
        root: folder the images' ``file_name`` entries are relative to (e.g. ``coco/train2017``).
        ann_file: the instances JSON file.
        transform: a v2 transform called as ``transform(image, target)``.
        masks: also return instance masks (``target["masks"]``, uint8 (N, H, W)).
        on_corrupt: "error" raises on an unreadable image; "skip" returns a SkippedSample instead.
        max_image_pixels: images above this many pixels are refused (decompression bombs).

    Every image is kept (images without annotations are negatives with an empty (0, 4) ``boxes``).
    Boxes are clipped to the image and those with width or height <= 0 are dropped, with one warning
    naming the file. ``iscrowd`` regions are kept with ``target["iscrowd"] == 1``. ``ids`` are the image
    ids in ascending order; ``coco`` is the pycocotools object (for COCOeval); ``cat_ids`` the category
    ids in label order, ``label_to_cat_id`` / ``cat_id_to_label`` map between the two, ``classes`` holds
    the names in label order with ``classes[0] == "__background__"``.
    """

    def __init__(
        self,
        root: Union[str, os.PathLike],
        ann_file: Union[str, os.PathLike],
        transform: Callable | None = None,
        masks: bool = False,
        on_corrupt: str = "error",
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}")
        self.root = Path(root)
        self.ann_file = Path(ann_file)
        self.transform = transform
        self.masks = bool(masks)
        self.on_corrupt = on_corrupt
        self.max_image_pixels = int(max_image_pixels)
        if not self.root.is_dir():
            raise FileNotFoundError(f"COCO image root not found (or not a folder): {self.root}")

        data = load_coco_json(self.ann_file)
        coco = COCO()
        coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        self.coco = coco

        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.cat_ids = [c["id"] for c in cats]
        self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat_id = {i + 1: cid for i, cid in enumerate(self.cat_ids)}
        self.classes = ["__background__"] + [c["name"] for c in cats]

        self.ids = sorted(coco.imgs)
        src = self.ann_file.name
        join = SafeJoiner(self.root, self.ann_file)
        self._paths = [join.join_str(coco.imgs[i]["file_name"]) for i in self.ids]  # str: cheap for 100k+

        # All annotations in image order, sanitized in one vectorized call; sample i owns the kept rows
        # self._offsets[i]:self._offsets[i + 1] of the flat arrays.
        per_image = [coco.imgToAnns.get(iid, []) for iid in self.ids]
        anns = [a for lst in per_image for a in lst]
        counts = np.array([len(lst) for lst in per_image], dtype=np.int64)
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        widths = np.repeat(np.array([coco.imgs[i]["width"] for i in self.ids], dtype=np.float64), counts)
        heights = np.repeat(np.array([coco.imgs[i]["height"] for i in self.ids], dtype=np.float64), counts)
        labels = np.array([self.cat_id_to_label[a["category_id"]] for a in anns], dtype=np.int64)
        s = sanitize_boxes(xyxy, labels, widths, heights, src)
        ann_ids = np.array([a["id"] for a in anns], dtype=np.int64)
        owner = np.repeat(np.arange(len(self.ids)), counts)[s.keep]
        self._offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(self.ids)))])
        self._boxes, self._labels, self._ann_ids = s.boxes, s.labels, ann_ids[s.keep]
        self._iscrowd = np.array([a["iscrowd"] for a in anns], dtype=np.int64).reshape(-1)[s.keep]
        self._area = np.array([a["area"] for a in anns], dtype=np.float32).reshape(-1)[s.keep]
        if s.dropped:
            dropped = np.ones(len(anns), bool)
            dropped[s.keep] = False
            warn_dropped(src, ann_ids[dropped].tolist(), "annotation ids")
        if self.masks:
            bad_polygons = 0
            for k in s.keep.tolist():
                a = anns[k]
                bad_polygons += _check_segmentation(a, coco.imgs[a["image_id"]],
                                                    f"{self.ann_file}: annotation id {a['id']}")
            if bad_polygons:
                warnings.warn(f"{src}: ignored {bad_polygons} polygon parts with fewer than 3 points",
                              stacklevel=2)

    # ------------------------------------------------------------------------------------------ access

    def get_height_and_width(self, index: int) -> tuple[int, int]:
        img = self.coco.imgs[self.ids[index]]
        return img["height"], img["width"]

    def load_image(self, index: int) -> Image.Image:
        """The raw RGB PIL image; FileNotFoundError / ImageReadError naming the file."""
        index = range(len(self))[index]
        path = self._paths[index]
        img_info = self.coco.imgs[self.ids[index]]
        try:
            image = open_image_rgb(path, self.max_image_pixels)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"image file not found: {path} (file_name {img_info['file_name']!r} in "
                                    f"{self.ann_file})") from e
        if image.size != (img_info["width"], img_info["height"]):
            raise ImageReadError(f"{path}: image is {image.size[0]}x{image.size[1]} but {self.ann_file.name} "
                                 f"says {img_info['width']}x{img_info['height']}")
        return image

    def load_target(self, index: int) -> dict:
        """The target of sample ``index`` (untransformed), without reading the image."""
        index = range(len(self))[index]
        iid = self.ids[index]
        img = self.coco.imgs[iid]
        h, w = img["height"], img["width"]
        lo, hi = int(self._offsets[index]), int(self._offsets[index + 1])
        ann_ids = self._ann_ids[lo:hi].tolist()
        masks = None
        if self.masks:
            rles = []
            for aid in ann_ids:
                try:
                    rles.append(segmentation_to_rle(self.coco.anns[aid]["segmentation"], h, w))
                except (ValueError, TypeError) as e:
                    raise ValueError(f"{self.ann_file}: annotation id {aid}: cannot convert segmentation "
                                     f"({e})") from e
            masks = np.zeros((0, h, w), np.uint8)
            if rles:
                try:  # one call for all instances: (H, W, N)
                    masks = np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1), dtype=np.uint8)
                except (ValueError, TypeError) as e:
                    raise ValueError(f"{self.ann_file}: image id {iid}: cannot decode the segmentations of "
                                     f"annotation ids {ann_ids} ({e})") from e
        return make_target(self._boxes[lo:hi], self._labels[lo:hi], (h, w), iid,
                           iscrowd=self._iscrowd[lo:hi], area=self._area[lo:hi], masks=masks)

    def __repr__(self) -> str:
        n_ann = len(self._ann_ids)
        return (f"CocoDetection(root={str(self.root)!r}, ann_file={str(self.ann_file)!r}, images={len(self)}, "
                f"instances={n_ann}, classes={len(self.classes) - 1}, masks={self.masks})")

