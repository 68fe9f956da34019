"""Pieces shared by the detection datasets (COCO, Pascal VOC, shapes scenes).

Sample convention: ``dataset[i]`` returns ``(image, target)`` where ``image`` is a
``torchvision.tv_tensors.Image`` (uint8, CHW) and ``target`` is a dict:

* ``boxes``: ``tv_tensors.BoundingBoxes`` (N, 4), XYXY in pixel-edge coordinates, float32,
  ``canvas_size=(H, W)``;
* ``labels``: int64 (N,), contiguous 1..K (0 is the background, as torchvision's detectors expect);
* ``masks``: ``tv_tensors.Mask`` uint8 (N, H, W), only for datasets built with ``masks=True``;
* ``image_id``: int; ``iscrowd``: int64 (N,); ``area``: float32 (N,) (as annotated, before any
  transform); ``orig_size``: int64 tensor ``(H, W)`` of the image as stored.

Datasets may add further per-instance fields (VOC: ``difficult``, bool (N,)). A dataset given a proposal
source (``dataset.proposals``, for Fast R-CNN) adds ``proposals``: ``tv_tensors.BoundingBoxes`` (P, 4) XYXY,
best first, at most ``dataset.proposal_top_k``; v2 transforms resize and flip them with the image. Transforms are
``torchvision.transforms.v2`` pipelines called as ``transform(image, target)``: v2 moves boxes and masks
together with the image, and :func:`build_detection_transforms` ends with a SanitizeBoundingBoxes that
filters every per-instance field along with the boxes.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from visionzoo.datasets.common import ImageReadError, SkippedSample

# Per-instance fields filtered together with the boxes (besides masks, which v2 finds by type).
PER_INSTANCE_KEYS = ("labels", "iscrowd", "area", "difficult")


# ------------------------------------------------------------------------------------------- boxes
class SanitizedBoxes(NamedTuple):
    """Result of :func:`sanitize_boxes`: the kept boxes (clipped to the image) and their labels, the
    indices of the kept boxes in the input, and how many boxes were dropped."""

    boxes: np.ndarray  # (M, 4) float32 XYXY
    labels: np.ndarray  # (M,) int64
    keep: np.ndarray  # (M,) int64 indices into the input
    dropped: int


def sanitize_boxes(boxes, labels, width, height, source: Union[str, os.PathLike] = "") -> SanitizedBoxes:
    """Clip XYXY boxes to a ``width`` x ``height`` image and drop those with width or height <= 0 after
    clipping (degenerate boxes, boxes entirely outside the image, non-finite coordinates).

    ``boxes`` is (N, 4) array-like, ``labels`` (N,); ``width`` / ``height`` are numbers or (N,) arrays (one
    image size per box, to sanitize a whole dataset in one call). ``source`` (e.g. the annotation file)
    names the data in errors. The caller counts ``dropped`` and warns once per dataset (see
    :func:`warn_dropped`).
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 4)
    lab = np.asarray(labels, dtype=np.int64).reshape(-1)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{source}: boxes must have shape (N, 4), got {tuple(b.shape)}")
    if lab.shape[0] != b.shape[0]:
        raise ValueError(f"{source}: {b.shape[0]} boxes but {lab.shape[0]} labels")
    w = np.asarray(width, dtype=np.float64).reshape(-1, 1)
    h = np.asarray(height, dtype=np.float64).reshape(-1, 1)
    clipped = np.empty_like(b)
    clipped[:, 0::2] = np.clip(b[:, 0::2], 0.0, w)
    clipped[:, 1::2] = np.clip(b[:, 1::2], 0.0, h)
    finite = np.isfinite(b).all(axis=1)
    ok = finite & (clipped[:, 2] - clipped[:, 0] > 0) & (clipped[:, 3] - clipped[:, 1] > 0)
    keep = np.flatnonzero(ok).astype(np.int64)
    return SanitizedBoxes(clipped[keep].astype(np.float32), lab[keep], keep, int(b.shape[0] - keep.size))


def warn_dropped(source: Union[str, os.PathLike], dropped_ids: list, what: str = "ids") -> None:
    """The one warning a dataset emits after scanning its annotations, naming the file and (up to 10 of)
    the dropped annotations."""
    if not dropped_ids:
        return
    shown = ", ".join(map(str, dropped_ids[:10])) + (", ..." if len(dropped_ids) > 10 else "")
    warnings.warn(f"{source}: dropped {len(dropped_ids)} boxes with width or height <= 0 "
                  f"(after clipping to the image) ({what} {shown})", stacklevel=3)


# ------------------------------------------------------------------------------------------- paths
class SafeJoiner:
    """:func:`safe_join` for many names under one root: the root and each parent folder are resolved once
    (only a final component that is a symlink, ``.`` or ``..`` needs a full resolve), so checking every
    image of a large annotation file stays cheap."""

    def __init__(self, root: str | os.PathLike, source: str | os.PathLike = ""):
        self.root, self.source = root, source
        self.root_resolved = os.path.realpath(root)
        self._prefix = os.path.join(self.root_resolved, "")
        self._parents: dict[str, str] = {"": self.root_resolved}

    def _reject(self, file_name, why: str):
        raise ValueError(f"{self.source}: file_name {file_name!r} {why} (dataset root {str(self.root)!r}); "
                         "annotation files may only name files inside the dataset root")

    def join_str(self, file_name: str) -> str:
        """As ``__call__``, returning the resolved path as a string."""
        if not isinstance(file_name, str):
            self._reject(file_name, "is not a string")
        if not file_name or "\x00" in file_name:
            self._reject(file_name, "is empty or contains a NUL byte")
        if (file_name.startswith(("/", "\\")) or os.path.isabs(file_name)
                or (len(file_name) > 1 and file_name[1] == ":")):
            self._reject(file_name, "is an absolute path")
        parent, _, name = file_name.rpartition("/")
        base = self._parents.get(parent)
        if base is None:
            base = self._parents[parent] = os.path.realpath(os.path.join(self.root_resolved, parent))
        path = os.path.join(base, name)
        if name in ("", ".", "..") or os.path.islink(path):
            path = os.path.realpath(path)
        if not path.startswith(self._prefix):
            self._reject(file_name, f"resolves to {path!r}, outside the dataset root")
        return path

    def __call__(self, file_name: str) -> Path:
        return Path(self.join_str(file_name))


def safe_join(root: str | os.PathLike, file_name: str, source: str | os.PathLike = "") -> Path:
    """Resolve ``file_name`` (taken from the annotation file ``source``) inside the dataset ``root``.

    Rejects, with a ValueError naming ``source``, ``file_name`` and ``root``: non-strings, empty names,
    NUL bytes, absolute paths (also Windows drive / UNC forms) and anything that resolves outside the
    resolved root (``../``, symlinks pointing out of the root). Returns the resolved path (which need not
    exist yet). Use :class:`SafeJoiner` for many names under one root."""
    return SafeJoiner(root, source)(file_name)


# ------------------------------------------------------------------------------------------ target
def make_target(
    boxes,
    labels,
    canvas_size: tuple[int, int],
    image_id: int,
    *,
    iscrowd=None,
    area=None,
    masks=None,
    orig_size: tuple[int, int] | None = None,
    **extra,
) -> dict[str, Any]:
    """Build a target dict in the convention above. ``boxes`` (N, 4) XYXY, ``labels`` (N,); ``iscrowd``
    defaults to zeros and ``area`` to the box areas; ``masks`` (N, H, W) when given; ``extra`` per-instance
    or per-image fields are converted to tensors."""
    h, w = int(canvas_size[0]), int(canvas_size[1])
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
    n = b.shape[0]
    target = {
        "boxes": tv_tensors.BoundingBoxes(b, format=tv_tensors.BoundingBoxFormat.XYXY, canvas_size=(h, w)),
        "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(n)),
    }
    if masks is not None:
        m = torch.as_tensor(np.asarray(masks, dtype=np.uint8).reshape(n, h, w))
        target["masks"] = tv_tensors.Mask(m)
    target["image_id"] = int(image_id)
    target["iscrowd"] = (torch.zeros(n, dtype=torch.int64) if iscrowd is None
                         else torch.as_tensor(np.asarray(iscrowd, dtype=np.int64).reshape(n)))
    if area is None:
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    target["area"] = torch.as_tensor(np.asarray(area, dtype=np.float32).reshape(n))
    target["orig_size"] = torch.tensor(orig_size if orig_size is not None else (h, w), dtype=torch.int64)
    for k, v in extra.items():
        target[k] = torch.as_tensor(v)
    return target


def to_image(pil_image) -> tv_tensors.Image:
    """A PIL RGB image as a uint8 CHW ``tv_tensors.Image``."""
    arr = np.asarray(pil_image, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    return tv_tensors.Image(torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous())


def detection_collate(batch):
    """(list of images, list of targets): detection images have different sizes, so nothing is stacked
    (torchvision's detectors batch them after resizing). tv_tensors become plain tensors here, inside the
    DataLoader worker: pickled across the worker queue they cost about 3 ms per sample against 0.1 ms
    (benchmarks/data_loading.py measured one worker 3x slower than none before this)."""
    if not batch:
        return [], []
    images, targets = zip(*batch)
    plain = [{k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
             for t in targets]
    return [im.as_subclass(torch.Tensor) for im in images], plain


# -------------------------------------------------------------------------------------- transforms
def per_instance_fields(inputs: Any) -> tuple[torch.Tensor, ...]:
    """labels_getter for SanitizeBoundingBoxes: ``labels`` and the other per-instance tensors of the target
    (``iscrowd``, ``area``, ``difficult``) so they are filtered together with the boxes. Accepts the
    ``(image, target)`` pair or the target dict."""
    target = inputs[1] if isinstance(inputs, (tuple, list)) and len(inputs) >= 2 else inputs
    if not isinstance(target, Mapping):
        raise ValueError(f"expected (image, target dict) or a target dict, got {type(inputs).__name__}")
    if "labels" not in target:
        raise ValueError(f"detection target has no 'labels' (keys: {', '.join(map(str, target))})")
    labels = target["labels"]
    out = [labels]
    for k in PER_INSTANCE_KEYS[1:]:
        v = target.get(k)
        if isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == labels.shape[0]:
            out.append(v)
    return tuple(out)


def build_detection_transforms(
    train: bool,
    hflip: float = 0.5,
    photometric: bool = False,
    scale_jitter: tuple[float, float] | None = None,
    jitter_size: int | None = None,
    min_box_size: float = 1.0,
) -> v2.Compose:
    """The v2 pipeline applied jointly to ``(image, target)``.

    Training: optional RandomPhotometricDistort (``photometric``), optional large-scale jitter
    (``scale_jitter=(lo, hi)``: ScaleJitter to ``jitter_size`` x ``jitter_size`` times a random factor, then
    a ``jitter_size`` square RandomCrop padded with zeros — needed for the jitter to survive the detector's
    own resize), RandomHorizontalFlip(``hflip``). Always: ToDtype(float32, scale=True) on the image, then
    SanitizeBoundingBoxes (min size ``min_box_size``) filtering labels, iscrowd, area, difficult and masks
    with the boxes. No resizing otherwise: GeneralizedRCNNTransform resizes with min_size/max_size.
    """
    ops: list = []
    if train:
        if photometric:
            ops.append(v2.RandomPhotometricDistort(p=0.5))
        if scale_jitter is not None:
            if jitter_size is None:
                raise ValueError("scale_jitter needs jitter_size (the square canvas the jittered image is "
                                 "cropped/padded to)")
            lo, hi = map(float, scale_jitter)
            if not 0 < lo <= hi:
                raise ValueError(f"scale_jitter must be (lo, hi) with 0 < lo <= hi, got {scale_jitter}")
            ops += [v2.ScaleJitter((int(jitter_size), int(jitter_size)), scale_range=(lo, hi), antialias=True),
                    v2.RandomCrop(int(jitter_size), pad_if_needed=True, fill=0),
                    v2.ClampBoundingBoxes()]
        if hflip > 0:
            ops.append(v2.RandomHorizontalFlip(p=float(hflip)))
    ops += [v2.ToDtype(torch.float32, scale=True), SanitizeKeepingProposals(min_box_size)]
    return v2.Compose(ops)


class SanitizeKeepingProposals:
    """v2.SanitizeBoundingBoxes for the annotated boxes (filtering labels, iscrowd, area, difficult and
    masks with them); ``target["proposals"]``, a second set of boxes with its own count, is clipped and
    filtered separately (SanitizeBoundingBoxes would index it with the annotations' mask)."""

    def __init__(self, min_size: float = 1.0):
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=min_size, labels_getter=per_instance_fields)

    def __call__(self, image, target):
        proposals = target.pop("proposals", None) if isinstance(target, dict) else None
        image, target = self.sanitize(image, target)
        if proposals is not None:
            proposals = v2.functional.clamp_bounding_boxes(proposals)
            wh = proposals[:, 2:] - proposals[:, :2]
            target["proposals"] = tv_tensors.wrap(proposals[(wh >= 1).all(dim=1)], like=proposals)
        return image, target


class ProposalSource:
    """Where Fast R-CNN's external proposals come from (selective search, a proposals file)."""

    def get(self, image_id: int, path: str, image) -> np.ndarray:
        """(P, 4) float32 XYXY boxes in the stored image's pixels, best first, for one image (a PIL RGB
        image at `path`, with dataset id `image_id`)."""
        raise NotImplementedError


class DetectionDataset(torch.utils.data.Dataset):
    """What every detection dataset's __getitem__ does: decode the image (or skip it when unreadable and
    on_corrupt is "skip"), build its target (with external proposals when `proposals` is set), apply the
    joint image/target transform. Subclasses provide load_image(i), load_target(i), `ids`, `classes`,
    `_paths`, `on_corrupt` and `transform`."""

    proposals: ProposalSource | None = None
    proposal_top_k: int | None = None  # keep the best k proposals per image (None: all)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_classes(self) -> int:
        """Number of classes including the background (what torchvision's detectors call num_classes)."""
        return len(self.classes)

    def image_path(self, index: int) -> Path:
        return Path(self._paths[index])

    def __getitem__(self, index: int):
        index = range(len(self))[index]  # IndexError when out of range
        try:
            pil = self.load_image(index)
        except ImageReadError as e:
            if self.on_corrupt == "skip":
                return SkippedSample(str(self._paths[index]), str(e))
            raise
        image, target = to_image(pil), self.load_target(index)
        if self.proposals is not None:
            boxes = np.asarray(self.proposals.get(int(self.ids[index]), str(self._paths[index]), pil),
                               dtype=np.float32).reshape(-1, 4)[: self.proposal_top_k]
            target["proposals"] = tv_tensors.BoundingBoxes(
                torch.from_numpy(boxes.copy()), format=tv_tensors.BoundingBoxFormat.XYXY,
                canvas_size=(pil.height, pil.width))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
