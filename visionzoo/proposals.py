"""External region proposals for Fast R-CNN: selective search (OpenCV contrib) and proposals files.

A :class:`~visionzoo.datasets.detection.ProposalSource` gives the (P, 4) float32 XYXY boxes of one image,
best first; set it as ``dataset.proposals`` (with ``dataset.proposal_top_k``) on a detection dataset and
every sample carries ``target["proposals"]``, resized and flipped with the image by the v2 transforms.

* :class:`SelectiveSearch` runs OpenCV's selective search, optionally with a disk cache keyed by the
  image's pixels and the parameters; :meth:`SelectiveSearch.precompute` fills the cache for a whole
  dataset once (selective search takes about a second per PASCAL-sized image), after which ``get`` only
  reads it.
* :class:`ProposalsFile` serves precomputed proposals per image id, as detectron2 and mmdetection treat
  them; :func:`write_proposals_file` writes one.
* ``python -m visionzoo.proposals DATA_ROOT --split train --out proposals_train.npz`` runs selective search
  over a COCO-layout dataset and writes a proposals file.

Proposals file formats (detectron2's keys; pickles are refused, never loaded):

* ``.json``: an object with ``ids`` (N image ids), ``boxes`` (N lists of [x1, y1, x2, y2]),
  ``scores`` or ``objectness_logits`` (N lists of P_i numbers) and optional ``bbox_mode``.
* ``.npz`` and ``.safetensors`` hold flat arrays: ``ids`` (N,) int64, ``boxes`` (sum P_i, 4) float32,
  ``scores`` (or ``objectness_logits``) (sum P_i,) float32 and ``counts`` (N,) int64, image i owning
  the ``counts[i]`` rows after the first ``counts[:i].sum()``; ``bbox_mode`` is a 0-d string array in
  ``.npz`` and a metadata entry in ``.safetensors``. (A ``.json`` file may use this flat layout too.)

``bbox_mode`` is ``"XYXY_ABS"`` (default) or ``"XYWH_ABS"`` (also detectron2's ``BoxMode`` values 0 and 1),
absolute pixels of the stored image. Image ids are integers (strings are converted with ``int()``, as
DetectionDataset does with its ids). Boxes are served sorted by score, highest first.
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
import threading
import time
import uuid
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, NamedTuple, Union

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_safetensors
from tqdm import tqdm

from visionzoo.datasets.coco import CocoDetection
from visionzoo.datasets.common import ImageReadError, load_rgb, open_image_rgb
from visionzoo.datasets.detection import DetectionDataset, ProposalSource

PathLike = Union[str, os.PathLike]

MODES = ("fast", "quality", "single")
CACHE_FORMAT = 1  # bump when the cached array's meaning changes, so old cache files are not reused
BBOX_MODES = ("XYXY_ABS", "XYWH_ABS")  # detectron2 BoxMode 0 and 1; relative / rotated boxes are not supported
FILE_SUFFIXES = (".npz", ".safetensors", ".json")
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pth", ".pt")
FILE_FORMAT = "visionzoo.proposals/1"

PICKLE_REFUSED = """\
{path}: refused to read a {suffix} file: loading it would unpickle it, and unpickling runs whatever code the \
file contains, so visionzoo never does. Convert the proposals to .npz where they were made (in the session that \
wrote the file, and only if you trust it), from their ids, boxes and objectness_logits:

    from visionzoo.proposals import write_proposals_file
    write_proposals_file("{stem}.npz", ids, boxes, objectness_logits, bbox_mode)
"""


# --------------------------------------------------------------------------------------- utilities
def _cv2():
    """OpenCV with the contrib modules (selective search lives in ximgproc)."""
    import cv2  # loaded on first use: slow to import, and only selective search needs it

    if not hasattr(cv2, "ximgproc"):
        raise ImportError(f"OpenCV {cv2.__version__} has no ximgproc module (selective search is in the contrib "
                          "build): pip install opencv-contrib-python-headless, and uninstall opencv-python / "
                          "opencv-python-headless, which shadow it")
    return cv2


_LIBC: Any = None
_RAND_LOCK = threading.Lock()


def _libc_srand() -> Callable[[int], Any] | None:
    """libc's srand, or None where it cannot be reached (Windows)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(None) if os.name == "posix" else False
        except OSError:
            _LIBC = False
    return getattr(_LIBC, "srand", None) if _LIBC else None


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and os.replace, so readers
    (and concurrent writers of the same content) never see a partial file. The temporary file is opened
    with the process umask, unlike mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def to_rgb_array(image, source: str = "") -> np.ndarray:
    """An image as a C-contiguous uint8 (H, W, 3) RGB array: a PIL image (any mode), a uint8 numpy array
    or a uint8 torch tensor, through the data layer's one loader. Paths and float pixels are refused: the
    cache key is the exact pixels, and a path is opened by the caller, which names it in errors."""
    return load_rgb(image, source or "image", paths=False, floats=False)


# ------------------------------------------------------------------------------- selective search
def _run_selective_search(bgr: np.ndarray, mode: str, base_k: int | None = None, inc_k: int | None = None,
                          sigma: float | None = None) -> np.ndarray:
    """OpenCV's selective search on one uint8 BGR image: (N, 4) int (x, y, w, h), most relevant first.
    Parameters left as None keep OpenCV's defaults. (Module-level so tests can count the calls.)"""
    cv2 = _cv2()
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(bgr)
    if mode == "single":
        ss.switchToSingleStrategy(**{k: v for k, v in (("k", base_k), ("sigma", sigma)) if v is not None})
    else:
        switch = ss.switchToSelectiveSearchFast if mode == "fast" else ss.switchToSelectiveSearchQuality
        switch(**{k: v for k, v in (("base_k", base_k), ("inc_k", inc_k), ("sigma", sigma)) if v is not None})
    return np.asarray(ss.process()).reshape(-1, 4)


def rects_to_boxes(rects, min_box_size: float = 0.0, max_proposals: int | None = None) -> np.ndarray:
    """OpenCV (x, y, w, h) rects to (P, 4) float32 XYXY ``(x, y, x + w, y + h)`` in the given order, dropping
    repeats (keeping the first), boxes with a side below ``min_box_size`` or <= 0, then all but the first
    ``max_proposals``."""
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([r[:, :2], r[:, :2] + r[:, 2:]], axis=1).astype(np.float32)
    if len(boxes):
        _, first = np.unique(boxes, axis=0, return_index=True)
        boxes = boxes[np.sort(first)]
    wh = boxes[:, 2:] - boxes[:, :2]
    boxes = boxes[(wh > 0).all(axis=1) & (wh >= min_box_size).all(axis=1)]
    return np.ascontiguousarray(boxes[:max_proposals])


def _compute(rgb: np.ndarray, params: dict, num_threads: int | None = None) -> np.ndarray:
    """Selective search on an RGB array with SelectiveSearch.params; the (P, 4) float32 boxes."""
    if num_threads is not None:
        _cv2().setNumThreads(num_threads)
    bgr = np.ascontiguousarray(rgb[..., ::-1])  # OpenCV's colour-space strategies expect BGR
    if params["seed"] is None:
        rects = _run_selective_search(bgr, params["mode"], params["base_k"], params["inc_k"], params["sigma"])
    else:
        # OpenCV ranks the regions with libc rand() ("pseudo-random ranking" of the paper), whose state is
        # global to the process: reseeding right before each run makes the order a function of the pixels
        # and parameters alone (the same in every process, cached or not).
        with _RAND_LOCK:
            srand = _libc_srand()
            if srand is not None:
                srand(params["seed"])
            rects = _run_selective_search(bgr, params["mode"], params["base_k"], params["inc_k"],
                                          params["sigma"])
    return rects_to_boxes(rects, params["min_box_size"], params["max_proposals"])


def _worker_init() -> None:
    _cv2().setNumThreads(1)  # one OpenCV thread per process: the pool is the parallelism


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


class _Pending(NamedTuple):
    image_id: int
    path: str
    cache_file: Path | None
    boxes: np.ndarray | None  # known (cached or computed in this process) ...
    result: Future | None  # ... or a worker's result

    def ready(self) -> bool:
        return self.result is None or self.result.done()


class SelectiveSearch(ProposalSource):
    """Selective search proposals (Uijlings et al.) from OpenCV contrib's ximgproc.

    Args:
        mode: "fast" (the paper's fast setting: two colour spaces, two strategies), "quality" (more colour
            spaces, segmentations and strategies: more proposals, several times slower) or "single" (one
            segmentation and strategy: few proposals, quick).
        base_k, inc_k, sigma: graph-segmentation parameters passed to ``switchToSelectiveSearchFast/Quality``
            only when given (OpenCV's defaults otherwise: 150, 150, 0.8); in "single" mode ``base_k`` is
            its ``k`` (default 200) and ``inc_k`` is not allowed.
        min_box_size: drop proposals whose width or height is below this many pixels (Uijlings' demo drops
            boxes under 20 px on PASCAL images).
        max_proposals: keep (and cache) at most this many, in OpenCV's ranking order (None: all).
        cache_dir: folder of the disk cache (None: no cache, every ``get`` runs selective search).
        num_threads: ``cv2.setNumThreads`` before each run (None: leave OpenCV's setting; process-wide).
        seed: libc ``srand`` seed set right before each run, making OpenCV's pseudo-random ranking
            reproducible (POSIX only; None: leave the process's rand state alone, so the order of the same
            boxes varies from call to call).

    ``get`` returns (P, 4) float32 XYXY boxes ``(x, y, x + w, y + h)`` in OpenCV's order, repeats removed;
    an image without proposals gives (0, 4). Cache files are ``cache_dir/<key[:2]>/<key>.npy`` where the
    key is the sha256 of the decoded RGB pixels, their shape, the parameters that change the result and
    the OpenCV version: renamed or moved images still hit, edited images and other parameters do not. A
    corrupt cache file is recomputed (with a warning) and overwritten.
    """

    def __init__(
        self,
        mode: str = "fast",
        *,
        base_k: int | None = None,
        inc_k: int | None = None,
        sigma: float | None = None,
        min_box_size: float = 0.0,
        max_proposals: int | None = 2000,
        cache_dir: PathLike | None = None,
        num_threads: int | None = None,
        seed: int | None = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        for name, value in (("base_k", base_k), ("inc_k", inc_k)):
            if value is not None and not (_is_int(value) and value > 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if mode == "single" and inc_k is not None:
            raise ValueError(f"inc_k is not used in mode 'single' (one segmentation with k = base_k), "
                             f"got inc_k={inc_k!r}")
        if sigma is not None and not (_is_number(sigma) and math.isfinite(sigma) and sigma > 0):
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        if not (_is_number(min_box_size) and math.isfinite(min_box_size) and min_box_size >= 0):
            raise ValueError(f"min_box_size must be a number >= 0 (pixels), got {min_box_size!r}")
        if max_proposals is not None and not (_is_int(max_proposals) and max_proposals > 0):
            raise ValueError(f"max_proposals must be a positive integer or None (all), got {max_proposals!r}")
        if num_threads is not None and not (_is_int(num_threads) and num_threads >= 0):
            raise ValueError(f"num_threads must be an integer >= 0 or None, got {num_threads!r}")
        if seed is not None and not (_is_int(seed) and 0 <= seed < 2**32):
            raise ValueError(f"seed must be an integer in [0, 2**32) or None, got {seed!r}")
        if cache_dir is not None and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
            raise ValueError(f"cache_dir {str(cache_dir)!r} exists and is not a folder")
        self.mode = mode
        self.base_k = None if base_k is None else int(base_k)
        self.inc_k = None if inc_k is None else int(inc_k)
        self.sigma = None if sigma is None else float(sigma)
        self.min_box_size = float(min_box_size)
        self.max_proposals = None if max_proposals is None else int(max_proposals)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.num_threads = None if num_threads is None else int(num_threads)
        self.seed = None if seed is None else int(seed)

    @property
    def params(self) -> dict:
        """The parameters that change the result (and so the cache key)."""
        return {"mode": self.mode, "base_k": self.base_k, "inc_k": self.inc_k, "sigma": self.sigma,
                "min_box_size": self.min_box_size, "max_proposals": self.max_proposals, "seed": self.seed}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        cache = None if self.cache_dir is None else str(self.cache_dir)
        return f"SelectiveSearch({args}, cache_dir={cache!r})"

    # ------------------------------------------------------------------------------------- cache
    def _key(self, rgb: np.ndarray) -> str:
        header = json.dumps({"format": CACHE_FORMAT, "opencv": _cv2().__version__, "params": self.params,
                             "shape": list(rgb.shape), "dtype": str(rgb.dtype)},
                            sort_keys=True, separators=(",", ":"))
        h = hashlib.sha256(header.encode())
        h.update(b"\0")
        h.update(memoryview(rgb).cast("B"))
        return h.hexdigest()

    def cache_key(self, image) -> str:
        """The cache key of ``image`` (PIL image, array or tensor) under these parameters."""
        return self._key(to_rgb_array(image))

    def cache_file(self, image) -> Path | None:
        """Where ``image``'s proposals are cached (None without a cache_dir)."""
        return self._cache_file(to_rgb_array(image))

    def _cache_file(self, rgb: np.ndarray) -> Path | None:
        if self.cache_dir is None:
            return None
        key = self._key(rgb)
        return self.cache_dir / key[:2] / f"{key}.npy"

    @staticmethod
    def _read_cache(file: Path, source: str) -> np.ndarray | None:
        """The cached boxes, or None when absent or unusable (then recomputed and overwritten)."""
        try:
            arr = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as e:  # any unreadable file is a cache miss, never an error
            why = f"{type(e).__name__}: {e}"
        else:
            if (isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[1] == 4
                    and np.isfinite(arr).all()):
                return arr
            if hasattr(arr, "close"):
                arr.close()
            why = f"holds {type(arr).__name__} {getattr(arr, 'dtype', '')} {getattr(arr, 'shape', '')}"
        warnings.warn(f"corrupt selective search cache file {file} ({why}) for {source or 'an image'}; "
                      "recomputing it", stacklevel=3)
        return None

    # --------------------------------------------------------------------------------------- get
    def get(self, image_id: int = 0, path: str = "", image=None) -> np.ndarray:
        """(P, 4) float32 XYXY proposals of ``image`` (read from ``path`` when None), best first."""
        if image is None:
            image = open_image_rgb(path)
        return self._get_rgb(to_rgb_array(image, str(path)), str(path))[0]

    def _get_rgb(self, rgb: np.ndarray, path: str) -> tuple[np.ndarray, bool]:
        file = self._cache_file(rgb)
        if file is not None:
            boxes = self._read_cache(file, path)
            if boxes is not None:
                return boxes, True
        boxes = self._run(rgb, path)
        if file is not None:
            _atomic_write_bytes(file, _npy_bytes(boxes))
        return boxes, False

    def _run(self, rgb: np.ndarray, path: str) -> np.ndarray:
        try:
            return _compute(rgb, self.params, self.num_threads)
        except _cv2().error as e:
            raise RuntimeError(f"{path or 'image'}: selective search failed ({e})") from e

    # -------------------------------------------------------------------------------- many images
    def iter_proposals(
        self,
        dataset_or_items: DetectionDataset | Iterable,
        progress: bool = True,
        workers: int = 0,
        desc: str | None = None,
    ) -> Iterator[tuple[int, np.ndarray, bool]]:
        """``(image_id, boxes, cached)`` for every image, in order, with a tqdm bar.

        ``dataset_or_items`` is a DetectionDataset (its ``ids``, ``image_path(i)`` and ``load_image(i)``;
        with ``on_corrupt="skip"`` unreadable images are skipped with one warning) or an iterable of
        ``(image_id, path)`` (the file is decoded) or ``(image_id, path, image)``. Images are decoded and
        hashed here; with ``workers > 0`` selective search runs in a pool of spawned processes (one
        OpenCV thread each; they take a few seconds to start, importing torch) with a bounded number of
        images in flight."""
        if not (_is_int(workers) and workers >= 0):
            raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
        items, total, skip_unreadable = _items(dataset_or_items)
        bar = tqdm(total=total, desc=desc or f"selective search ({self.mode})", unit="img",
                   disable=not progress, dynamic_ncols=True)
        n_cached = 0
        skipped: list[str] = []
        try:
            if workers == 0:
                for image_id, path, load in items:
                    rgb = _load(load, path, skip_unreadable, skipped)
                    if rgb is None:
                        continue
                    boxes, cached = self._get_rgb(rgb, path)
                    n_cached += cached
                    bar.set_postfix_str(f"{n_cached} cached", refresh=False)
                    bar.update(1)
                    yield image_id, boxes, cached
            else:
                # spawn: fork after OpenCV/torch threads can deadlock. An executor rather than Pool: a worker
                # that dies (out of memory, killed) fails the run instead of hanging it.
                ctx = multiprocessing.get_context("spawn")
                window = 4 * workers  # images decoded and waiting: keeps memory bounded on large datasets
                pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init)
                try:
                    pending: deque[_Pending] = deque()

                    def finish(p: _Pending) -> tuple[int, np.ndarray, bool]:
                        if p.result is None:
                            return p.image_id, p.boxes, True
                        try:
                            boxes = p.result.result()
                        except Exception as e:
                            raise RuntimeError(f"{p.path}: selective search failed in a worker "
                                               f"({type(e).__name__}: {e})") from e
                        if p.cache_file is not None:
                            _atomic_write_bytes(p.cache_file, _npy_bytes(boxes))
                        return p.image_id, boxes, False

                    def drain(limit: int) -> Iterator[tuple[int, np.ndarray, bool]]:
                        # yield finished images from the front, waiting on it while more than limit are pending
                        nonlocal n_cached
                        while pending and (pending[0].ready() or len(pending) > limit):
                            out = finish(pending.popleft())
                            n_cached += out[2]
                            bar.set_postfix_str(f"{n_cached} cached", refresh=False)
                            bar.update(1)
                            yield out

                    for image_id, path, load in items:
                        rgb = _load(load, path, skip_unreadable, skipped)
                        if rgb is None:
                            continue
                        file = self._cache_file(rgb)
                        boxes = None if file is None else self._read_cache(file, path)
                        result = None if boxes is not None else pool.submit(_compute, rgb, self.params)
                        pending.append(_Pending(image_id, path, file, boxes, result))
                        yield from drain(window)
                    yield from drain(0)
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)  # on an error: no work for images never read
        finally:
            bar.close()
            if skipped:
                shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
                warnings.warn(f"skipped {len(skipped)} unreadable images ({shown})", stacklevel=2)

    def precompute(self, dataset_or_items: DetectionDataset | Iterable, progress: bool = True,
                   workers: int = 0) -> dict[str, int]:
        """Compute (or find cached) the proposals of every image into ``cache_dir``, so that training only
        reads them; returns ``{"computed": n, "cached": m}``. See :meth:`iter_proposals` for the inputs."""
        if self.cache_dir is None:
            raise ValueError("precompute needs a cache_dir to keep the proposals in (SelectiveSearch(..., "
                             "cache_dir=...)); use iter_proposals to get them without a cache")
        counts = {"computed": 0, "cached": 0}
        for _, _, cached in self.iter_proposals(dataset_or_items, progress=progress, workers=workers):
            counts["cached" if cached else "computed"] += 1
        return counts


def _items(dataset_or_items) -> tuple[Iterator[tuple[int, str, Callable[[], Any]]], int | None, bool]:
    """(image_id, path, loader) triples, their number (when known) and whether unreadable images are
    skipped (a dataset with on_corrupt="skip")."""
    if isinstance(dataset_or_items, DetectionDataset):
        ds = dataset_or_items
        gen = ((int(ds.ids[i]), str(ds.image_path(i)), lambda i=i: ds.load_image(i)) for i in range(len(ds)))
        return gen, len(ds), getattr(ds, "on_corrupt", "error") == "skip"

    def from_items():
        for n, item in enumerate(dataset_or_items):
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise ValueError(f"item {n}: expected (image_id, path) or (image_id, path, image), got {item!r}")
            if len(item) == 2:
                yield int(item[0]), str(item[1]), lambda p=item[1]: open_image_rgb(p)
            else:
                yield int(item[0]), str(item[1]), lambda im=item[2]: im

    total = len(dataset_or_items) if hasattr(dataset_or_items, "__len__") else None
    return from_items(), total, False


def _load(load: Callable[[], Any], path: str, skip_unreadable: bool, skipped: list[str]) -> np.ndarray | None:
    try:
        image = load()
    except ImageReadError:
        if not skip_unreadable:
            raise
        skipped.append(path)
        return None
    return to_rgb_array(image, path)


# ------------------------------------------------------------------------------- proposals files
def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


class _Flat(NamedTuple):
    ids: np.ndarray  # (N,) int64
    boxes: np.ndarray  # (M, 4) float32, as stored (bbox_mode)
    scores: np.ndarray  # (M,) float32
    counts: np.ndarray  # (N,) int64
    bbox_mode: str


def _bbox_mode_name(value, source: str) -> str:
    """"XYXY_ABS" / "XYWH_ABS" from a name, detectron2's BoxMode (an IntEnum) or its value 0 / 1."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if _is_int(value) and 0 <= int(value) < len(BBOX_MODES):
        return BBOX_MODES[int(value)]
    name = value if isinstance(value, str) else getattr(value, "name", None)
    if name in BBOX_MODES:
        return name
    raise ValueError(f"{source}: unsupported bbox_mode {value!r}; expected one of {', '.join(BBOX_MODES)} "
                     "(or detectron2's BoxMode 0 / 1; relative and rotated boxes are not supported)")


def _as_ids(ids, source: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{source}: 'ids' must be a 1-D list of image ids, got shape {tuple(arr.shape)}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind not in "USO":
        raise ValueError(f"{source}: 'ids' must be integer image ids, got {arr.dtype} values "
                         f"(e.g. {arr[:3].tolist()})")
    out = np.empty(len(arr), np.int64)
    for i, v in enumerate(arr.tolist()):
        try:
            if not (_is_int(v) or isinstance(v, (str, bytes))):
                raise TypeError
            out[i] = int(v)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{source}: ids[{i}] = {v!r} is not an integer image id (string ids must convert "
                             "with int(), as the datasets' ids do)") from None
    return out


def _as_float(value, source: str, what: str) -> np.ndarray:
    if isinstance(value, np.ndarray) and value.dtype in (np.float32, np.float64):
        return value  # no float64 copy of a large float32 file
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{source}: {what} must hold numbers ({e})") from None


def _from_nested(source: str, ids, boxes, scores, bbox_mode) -> _Flat:
    """detectron2's per-image lists: ``boxes[i]`` (P_i, 4), ``scores[i]`` (P_i,)."""
    ids_arr = _as_ids(ids, source)
    boxes, scores = list(boxes), list(scores)
    if not len(ids_arr) == len(boxes) == len(scores):
        raise ValueError(f"{source}: mismatched lengths: {len(ids_arr)} ids, {len(boxes)} boxes arrays and "
                         f"{len(scores)} scores arrays (one of each per image)")
    b_list, s_list = [], []
    for i, (iid, b, s) in enumerate(zip(ids_arr.tolist(), boxes, scores)):
        b = _as_float(b, source, f"boxes[{i}] (image id {iid})")
        s = _as_float(s, source, f"scores[{i}] (image id {iid})")
        if b.size == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"{source}: boxes[{i}] (image id {iid}) must have shape (P, 4), "
                             f"got {tuple(b.shape)}")
        s = s.reshape(-1) if s.ndim <= 1 else s
        if s.shape != (len(b),):
            raise ValueError(f"{source}: mismatched lengths for image id {iid}: {len(b)} boxes but scores of "
                             f"shape {tuple(s.shape)}")
        b_list.append(b)
        s_list.append(s)
    counts = np.array([len(b) for b in b_list], dtype=np.int64)
    flat_b = np.concatenate(b_list) if b_list else np.zeros((0, 4))
    flat_s = np.concatenate(s_list) if s_list else np.zeros(0)
    return _Flat(ids_arr, flat_b, flat_s, counts, _bbox_mode_name(bbox_mode, source))


def _from_flat(source: str, ids, boxes, scores, counts, bbox_mode) -> _Flat:
    """The flat layout: ``boxes`` (sum P_i, 4), ``scores`` (sum P_i,), ``counts`` (N,)."""
    ids_arr = _as_ids(ids, source)
    b = _as_float(boxes, source, "boxes")
    s = _as_float(scores, source, "scores")
    c = np.asarray(counts)
    if b.size == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{source}: boxes must have shape (P, 4) (all images' boxes, stacked), "
                         f"got {tuple(b.shape)}")
    if c.ndim != 1 or (c.size and c.dtype.kind not in "iu") or (c < 0).any():
        raise ValueError(f"{source}: counts must be a 1-D array of non-negative integers (boxes per image)")
    if len(c) != len(ids_arr):
        raise ValueError(f"{source}: mismatched lengths: {len(ids_arr)} ids but {len(c)} counts")
    if int(c.sum()) != len(b):
        raise ValueError(f"{source}: mismatched lengths: counts sum to {int(c.sum())} but there are {len(b)} boxes")
    if s.shape != (len(b),):
        raise ValueError(f"{source}: mismatched lengths: {len(b)} boxes but scores of shape {tuple(s.shape)}")
    return _Flat(ids_arr, b, s, c.astype(np.int64), _bbox_mode_name(bbox_mode, source))


def _check(flat: _Flat, source: str) -> np.ndarray:
    """Validate values; returns the boxes as XYXY (a view of the input when already XYXY)."""
    ids, b, s, counts = flat.ids, flat.boxes, flat.scores, flat.counts
    uniq, n = np.unique(ids, return_counts=True)
    if (n > 1).any():
        dup = uniq[n > 1]
        raise ValueError(f"{source}: duplicate image ids: {', '.join(map(str, dup[:10].tolist()))} "
                         f"(each image id may appear once)")
    owner = np.repeat(ids, counts)

    def bad(mask: np.ndarray, what: str):
        k = int(np.flatnonzero(mask)[0])
        raise ValueError(f"{source}: {what} for image id {int(owner[k])} ({int(mask.sum())} in all; first: "
                         f"{b[k].tolist() if b.ndim == 2 else b[k]}, score {s[k]})")

    if not np.isfinite(b).all():
        bad(~np.isfinite(b).all(axis=1), "non-finite box coordinates")
    if not np.isfinite(s).all():
        bad(~np.isfinite(s), "non-finite scores")
    xyxy = b
    if flat.bbox_mode == "XYWH_ABS":
        xyxy = b.copy()
        xyxy[:, 2:] += xyxy[:, :2]
    neg = ((xyxy[:, 2:] - xyxy[:, :2]) < 0).any(axis=1)
    if neg.any():
        bad(neg, f"boxes with negative width or height (bbox_mode {flat.bbox_mode})")
    return xyxy


def _check_suffix(path: Path, writing: bool = False) -> str:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if writing:
            raise ValueError(f"{path}: proposals are not written as pickles ({suffix}); use one of "
                             f"{', '.join(FILE_SUFFIXES)}")
        raise ValueError(PICKLE_REFUSED.format(path=path, suffix=suffix, stem=path.stem))
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"{path}: unsupported proposals file type {suffix or '(no suffix)'!r}; expected one "
                         f"of {', '.join(FILE_SUFFIXES)}")
    return suffix


def _scores_key(keys, source: str) -> str:
    for k in ("scores", "objectness_logits"):
        if k in keys:
            return k
    raise ValueError(f"{source}: missing key 'scores' (or detectron2's 'objectness_logits'); "
                     f"found {', '.join(sorted(keys)) or 'nothing'}")


def _require(keys, needed: Sequence[str], source: str) -> None:
    missing = [k for k in needed if k not in keys]
    if missing:
        raise ValueError(f"{source}: missing key(s) {', '.join(map(repr, missing))}; found "
                         f"{', '.join(sorted(keys)) or 'nothing'}")


def _read(path: Path) -> _Flat:
    """Read any supported proposals file into the flat layout (structure checked, values not yet)."""
    suffix = _check_suffix(path)
    src = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"proposals file not found: {path}")
    if suffix == ".json":
        try:
            with open(path, "rb") as f:
                data = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object with ids, boxes and scores, "
                             f"got {type(data).__name__}")
        _require(data, ("ids", "boxes"), src)
        sk = _scores_key(data, src)
        mode = data.get("bbox_mode", "XYXY_ABS")
        if "counts" in data:
            return _from_flat(src, data["ids"], data["boxes"], data[sk], data["counts"], mode)
        for k in ("boxes", sk):
            if not isinstance(data[k], list):
                raise ValueError(f"{path}: {k!r} must be a list with one entry per image")
        return _from_nested(src, data["ids"], data["boxes"], data[sk], mode)
    if suffix == ".npz":
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as e:  # includes a pickle renamed to .npz: refused by allow_pickle=False
            raise ValueError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: not an .npz archive (a single .npy array?); expected arrays ids, boxes, "
                             "scores and counts")
        with z:
            keys = set(z.files)
            _require(keys, ("ids", "boxes", "counts"), src)
            sk = _scores_key(keys, src)
            arrays = {}
            for k in ("ids", "boxes", sk, "counts", "bbox_mode"):
                if k not in keys:
                    continue
                try:
                    arrays[k] = z[k]
                except ValueError as e:  # object arrays (ragged per-image lists) need pickle
                    raise ValueError(f"{path}: array {k!r} cannot be read without unpickling ({e}); store the "
                                     "flat layout instead (boxes (sum P_i, 4) float, scores (sum P_i,), counts "
                                     "(N,)), e.g. with visionzoo.proposals.write_proposals_file") from None
        return _from_flat(src, arrays["ids"], arrays["boxes"], arrays[sk], arrays["counts"],
                          arrays.get("bbox_mode", "XYXY_ABS"))
    try:
        with safe_open(str(path), framework="np") as f:
            keys = set(f.keys())
            meta = f.metadata() or {}
            _require(keys, ("ids", "boxes", "counts"), src)
            sk = _scores_key(keys, src)
            arrays = {k: f.get_tensor(k) for k in ("ids", "boxes", sk, "counts")}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None
    return _from_flat(src, arrays["ids"], arrays["boxes"], arrays[sk], arrays["counts"],
                      meta.get("bbox_mode", "XYXY_ABS"))


class MissingProposalsError(ValueError, KeyError):
    """An image id that a proposals file does not hold (a ValueError and a KeyError)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ProposalsFile(ProposalSource):
    """Precomputed proposals (``.npz``, ``.safetensors`` or ``.json``, see the module docstring), served
    per image id as (P, 4) float32 XYXY boxes sorted by score, highest first.

    The whole file is read and checked at construction: errors name the file and what is wrong
    (missing keys, mismatched lengths, boxes not (P, 4), non-finite values, negative widths or heights,
    duplicate ids). Pickle-based files (``.pkl``, ``.pickle``, ``.pth``, ``.pt``) are refused, never
    unpickled; the error shows how to convert a trusted one.
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)
        flat = _read(self.path)
        xyxy = _check(flat, str(self.path))
        owner = np.repeat(np.arange(len(flat.ids)), flat.counts)
        order = np.lexsort((-flat.scores, owner))  # by image, then score descending (stable: ties keep order)
        self._boxes = np.ascontiguousarray(xyxy[order], dtype=np.float32)
        self._scores = np.ascontiguousarray(flat.scores[order], dtype=np.float32)
        self._offsets = np.concatenate([[0], np.cumsum(flat.counts)]).astype(np.int64)
        self._ids = flat.ids
        self._index = {iid: i for i, iid in enumerate(flat.ids.tolist())}
        self.bbox_mode = flat.bbox_mode  # as stored; served boxes are always XYXY
        self._warned_size = False

    @property
    def ids(self) -> list[int]:
        """The image ids in file order."""
        return self._ids.tolist()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id) -> bool:
        return _is_int(image_id) and int(image_id) in self._index

    def __repr__(self) -> str:
        return f"ProposalsFile({str(self.path)!r}, images={len(self)}, boxes={len(self._boxes)})"

    def boxes_and_scores(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(P, 4) float32 XYXY boxes and (P,) float32 scores of one image, highest score first."""
        i = self._index.get(int(image_id)) if _is_int(image_id) else None
        if i is None:
            shown = ", ".join(map(str, self._ids[:5].tolist())) + (", ..." if len(self._ids) > 5 else "")
            raise MissingProposalsError(f"{self.path}: no proposals for image id {image_id!r} (the file holds "
                                        f"{len(self)} images: ids {shown or 'none'}); was it made for another "
                                        "split or dataset?")
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        return self._boxes[lo:hi].copy(), self._scores[lo:hi].copy()

    def get(self, image_id: int, path: str = "", image=None) -> np.ndarray:
        boxes = self.boxes_and_scores(image_id)[0]
        if image is not None and len(boxes) and not self._warned_size:
            w, h = _image_size(image)
            if boxes[:, 2].max() > w + 1 or boxes[:, 3].max() > h + 1:
                self._warned_size = True  # once per file: the usual cause affects every image
                warnings.warn(f"{self.path}: proposals of image id {image_id} ({path}) reach "
                              f"({boxes[:, 2].max():g}, {boxes[:, 3].max():g}), outside the {w}x{h} image; were "
                              "they computed on differently sized images?", stacklevel=2)
        return boxes


def _image_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image, CHW tensor or HWC array."""
    if isinstance(image, Image.Image):
        return image.size
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    return int(image.shape[1]), int(image.shape[0])


def write_proposals_file(path: PathLike, ids: Sequence, boxes: Sequence, scores: Sequence,
                         bbox_mode: Any = "XYXY_ABS") -> Path:
    """Write proposals (``boxes[i]`` (P_i, 4) and ``scores[i]`` (P_i,) of image ``ids[i]``) as ``.npz``,
    ``.safetensors`` or ``.json`` by the suffix of ``path``, atomically. Boxes are stored as given, in
    ``bbox_mode`` ("XYXY_ABS" or "XYWH_ABS"); the input is checked as ProposalsFile checks a file."""
    path = Path(path)
    suffix = _check_suffix(path, writing=True)
    flat = _from_nested(str(path), ids, boxes, scores, bbox_mode)
    _check(flat, str(path))
    b, s = flat.boxes.astype(np.float32), flat.scores.astype(np.float32)
    if suffix == ".json":
        offs = np.concatenate([[0], np.cumsum(flat.counts)])
        obj = {"format": FILE_FORMAT, "bbox_mode": flat.bbox_mode, "ids": flat.ids.tolist(),
               "boxes": [b[offs[i]:offs[i + 1]].tolist() for i in range(len(flat.ids))],
               "scores": [s[offs[i]:offs[i + 1]].tolist() for i in range(len(flat.ids))]}
        data = json.dumps(obj, separators=(",", ":")).encode()
    elif suffix == ".npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, ids=flat.ids, boxes=b, scores=s, counts=flat.counts,
                            bbox_mode=np.array(flat.bbox_mode))
        data = buf.getvalue()
    else:
        data = save_safetensors({"ids": flat.ids, "boxes": np.ascontiguousarray(b), "scores": s, "counts": flat.counts},
                    metadata={"format": FILE_FORMAT, "bbox_mode": flat.bbox_mode})
    _atomic_write_bytes(path, data)
    return path


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m visionzoo.proposals",
        description="Run selective search over a COCO-layout dataset (images/<split>, "
                    "annotations/instances_<split>.json) and write a proposals file (.npz, .safetensors or "
                    ".json) for Fast R-CNN. Scores are minus OpenCV's rank (0, -1, -2, ...).")
    p.add_argument("data_root", help="dataset folder")
    p.add_argument("--split", default="train", help="split name (default train)")
    p.add_argument("--out", required=True, help="output file: .npz, .safetensors or .json")
    p.add_argument("--image-dir", help="image folder (default DATA_ROOT/images/<split>)")
    p.add_argument("--ann-file", help="annotation file (default DATA_ROOT/annotations/instances_<split>.json)")
    p.add_argument("--mode", choices=MODES, default="fast", help="selective search mode (default fast)")
    p.add_argument("--base-k", type=int, help="graph segmentation k (OpenCV's default when not given)")
    p.add_argument("--inc-k", type=int, help="k increment between segmentations (fast / quality)")
    p.add_argument("--sigma", type=float, help="graph segmentation sigma")
    p.add_argument("--min-box-size", type=float, default=0.0, help="drop proposals smaller than this (px)")
    p.add_argument("--max-proposals", type=int, default=2000, help="keep at most this many per image "
                   "(default 2000; 0 keeps all)")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default 0: this process)")
    p.add_argument("--cache-dir", help="selective search cache folder (reused by later runs and training)")
    p.add_argument("--seed", type=int, default=0, help="seed of OpenCV's pseudo-random ranking (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    image_dir = Path(args.image_dir) if args.image_dir else root / "images" / args.split
    ann_file = Path(args.ann_file) if args.ann_file else root / "annotations" / f"instances_{args.split}.json"
    out = Path(args.out)
    try:
        _check_suffix(out, writing=True)  # before hours of selective search, not after
        ss = SelectiveSearch(args.mode, base_k=args.base_k, inc_k=args.inc_k, sigma=args.sigma,
                             min_box_size=args.min_box_size, max_proposals=args.max_proposals or None,
                             cache_dir=args.cache_dir, seed=args.seed)
        dataset = CocoDetection(image_dir, ann_file)
        start = time.perf_counter()
        ids, boxes, n_cached = [], [], 0
        for image_id, b, cached in ss.iter_proposals(dataset, progress=not args.no_progress,
                                                     workers=args.workers):
            ids.append(image_id)
            boxes.append(b)
            n_cached += cached
        elapsed = time.perf_counter() - start
        scores = [-np.arange(len(b), dtype=np.float32) for b in boxes]  # keeps OpenCV's ranking when sorted
        write_proposals_file(out, ids, boxes, scores)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    sizes = np.array([len(b) for b in boxes]) if boxes else np.zeros(1, int)
    print(f"wrote {out}: {len(ids)} images ({len(ids) - n_cached} computed, {n_cached} cached) in {elapsed:.1f} s "
          f"({elapsed / max(len(ids), 1):.3f} s/img); proposals per image: mean {sizes.mean():.0f}, "
          f"min {sizes.min()}, max {sizes.max()}")
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so the pool's worker functions pickle as visionzoo.proposals.*.
    from visionzoo.proposals import main as _main

    sys.exit(_main())
