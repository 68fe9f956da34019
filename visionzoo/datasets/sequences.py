"""Single-object tracking sequences on disk: GOT-10k, OTB and LaSOT layouts read into one :class:`Sequence`.

Layouts (``seq`` is one sequence folder):

* GOT-10k: ``seq/00000001.jpg`` ... (8 digits, from 1), ``groundtruth.txt`` (comma-separated x,y,w,h; the
  test split has only the first line), ``absence.label`` (1 = absent), ``cover.label`` (0..8, about cover/8
  of the target visible), ``cut_by_image.label`` (1 = partly outside the image), ``meta_info.ini``.
* OTB: ``seq/img/0001.jpg`` ..., ``groundtruth_rect.txt`` (x,y,w,h separated by commas, tabs or spaces, in
  1-based pixels); multi-target folders hold ``groundtruth_rect.<k>.txt`` instead; a few sequences use only
  part of their images (:data:`OTB_FRAME_RANGES`).
* LaSOT: ``<class>/<class>-<n>/img/00000001.jpg``, ``groundtruth.txt`` (comma), ``full_occlusion.txt`` and
  ``out_of_view.txt`` (one comma-separated line of 0/1), optional ``nlp.txt``.

Every box comes back as float64 ``(x, y, w, h)`` in 0-based pixel coordinates (the left/top edge of the
first pixel is 0), one row per frame; frames without a box (LaSOT's 0,0,0,0 for absent frames, NaN rows,
frames past a 1-line GOT-10k test ground truth) are NaN rows. Malformed files raise ValueError (missing
files FileNotFoundError) naming the file and, for a bad line, its 1-based number and text, because a
silently shifted or truncated annotation corrupts every number computed on it. A box on a visible frame must be
finite and within :data:`MAX_BOX_COORD` pixels (1e308 would turn every overlap into inf or NaN).

Hostile folders: symbolic links that leave the sequence folder (the dataset root, for :class:`SequenceDataset`'s
sequence folders) are refused unless ``allow_external_links=True``; a link back to a folder being scanned is
not followed; files named like frames that are not regular files (FIFOs, devices) are refused, never opened.
"""
from __future__ import annotations

import configparser
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
import torch

from visionzoo.datasets.common import DEFAULT_MAX_IMAGE_PIXELS, open_image_rgb

PathLike = Union[str, os.PathLike]

LAYOUTS = ("got10k", "otb", "lasot")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

# OTB sequences whose ground truth covers only part of the image folder: 1-based, inclusive frame numbers.
# Taken from the GOT-10k toolkit's OTB dataset class (got-10k/toolkit, got10k/datasets/otb.py, which slices
# the sorted image list for these five names), itself following the OTB benchmark's own loader
# (load_video_info.m: David 300-770, Football1 1-74, Freeman3 1-460, Freeman4 1-283; Diving 1-215 in
# later versions). Keys are lower-case folder names. Applied only when the folder's image count differs
# from the ground-truth line count, so already-trimmed copies of these sequences still load.
OTB_FRAME_RANGES: dict[str, tuple[int, int]] = {
    "david": (300, 770),
    "football1": (1, 74),
    "freeman3": (1, 460),
    "freeman4": (1, 283),
    "diving": (1, 215),
}

_GOT_FRAME = re.compile(r"^(\d{8})\.jpg$")
# Largest |coordinate| or size accepted in a box, in pixels: far above any real frame, far below overflow.
MAX_BOX_COORD = 1e7
_SEPARATORS = re.compile(r"\s*,\s*|\s+")
_TARGET_SUFFIX = re.compile(r"^(.+)\.(\d+)$")
_OTB_TARGET_FILE = re.compile(r"^groundtruth_rect\.(\d+)\.txt$")


@dataclass
class Sequence:
    """One annotated tracking sequence: frame files in order and one box / visibility label per frame."""

    name: str
    frames: list[Path]
    boxes: np.ndarray  # (N, 4) float64 x, y, w, h (0-based pixels); NaN rows where there is no box
    absent: np.ndarray  # (N,) bool: target not visible
    cover: np.ndarray | None = None  # (N,) int 0..8 (GOT-10k cover.label), None when the layout has none
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def load_frame(self, i: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
        """Frame ``i`` as an (H, W, 3) uint8 RGB array (decompression bombs refused, errors name the file)."""
        return np.asarray(open_image_rgb(self.frames[i], max_pixels))

    def __repr__(self) -> str:
        layout = self.meta.get("layout", "?")
        return f"Sequence(name={self.name!r}, frames={len(self.frames)}, layout={layout!r})"


# --------------------------------------------------------------------------------------------- parsing
def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} file not found: {path}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: {what} file is not text ({e})") from e


def _content_lines(path: Path, text: str) -> list[tuple[int, str]]:
    """(1-based line number, stripped text) of every line; blank lines are allowed only at the end (a
    blank line inside would silently shift every following frame)."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    out = []
    for k, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            raise ValueError(f"{path}, line {k}: blank line before the end of the file")
        out.append((k, s))
    return out


def _parse_boxes(path: Path, text: str) -> np.ndarray:
    """(N, 4) float64 boxes from x,y,w,h lines separated by commas, tabs, spaces or mixes. A line of four
    NaNs is a frame without a box; partial NaNs, infinities and negative sizes are errors."""
    rows = []
    for k, line in _content_lines(path, text):
        fields = _SEPARATORS.split(line)
        if len(fields) != 4:
            raise ValueError(f"{path}, line {k}: expected 4 numbers x,y,w,h, got {len(fields)} field(s) "
                             f"in {line!r}")
        try:
            vals = [float(f) for f in fields]
        except ValueError:
            raise ValueError(f"{path}, line {k}: not a number in {line!r}") from None
        nans = sum(math.isnan(v) for v in vals)
        if nans not in (0, 4):
            raise ValueError(f"{path}, line {k}: some but not all values are NaN in {line!r}")
        if any(math.isinf(v) for v in vals):
            raise ValueError(f"{path}, line {k}: infinite value in {line!r}")
        if not nans and (vals[2] < 0 or vals[3] < 0):
            raise ValueError(f"{path}, line {k}: negative width or height in {line!r}")
        if not nans and max(abs(v) for v in vals) > MAX_BOX_COORD:
            raise ValueError(f"{path}, line {k}: value beyond {MAX_BOX_COORD:g} pixels in {line!r}")
        rows.append(vals)
    if not rows:
        raise ValueError(f"{path}: ground-truth file is empty")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def _parse_labels(path: Path, text: str, n: int, valid: range, what: str) -> np.ndarray:
    """Integer labels, one per frame, whitespace- or comma-separated (one per line in GOT-10k, one
    comma-separated line in LaSOT); the count must be ``n`` and every value in ``valid``."""
    values = []
    for k, line in _content_lines(path, text):
        for tok in _SEPARATORS.split(line):
            try:
                v = int(tok)
            except ValueError:
                raise ValueError(f"{path}, line {k}: {what} value {tok!r} (frame {len(values) + 1}) is not an "
                                 f"integer in {line!r}") from None
            if v not in valid:
                raise ValueError(f"{path}, line {k}: {what} value {v} (frame {len(values) + 1}) is outside "
                                 f"{valid.start}..{valid.stop - 1} in {line!r}")
            values.append(v)
    if len(values) != n:
        raise ValueError(f"{path}: {len(values)} {what} value(s) for {n} frames")
    return np.asarray(values, dtype=np.int64)


def _check_count(path: Path, boxes: np.ndarray, n_frames: int, frames_where: Path) -> None:
    if len(boxes) != n_frames:
        raise ValueError(f"{path}: {len(boxes)} ground-truth line(s) but {n_frames} frame(s) in {frames_where}")


def _zero_size_to_nan(path: Path, boxes: np.ndarray, absent: np.ndarray) -> np.ndarray:
    """Zero-size boxes mean "no box"; they are allowed only in frames whose labels say absent."""
    zero = ~np.isnan(boxes).any(axis=1) & ((boxes[:, 2] == 0) | (boxes[:, 3] == 0))
    bad = np.flatnonzero(zero & ~absent)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}, line {i + 1}: zero-size box {boxes[i].tolist()} in a frame "
                         f"whose labels say the target is visible ({bad.size} such line(s))")
    boxes = boxes.copy()
    boxes[zero] = np.nan
    return boxes


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(os.path.join(root, ""))


def _check_link(path: str, root: str, allow_external_links: bool) -> None:
    target = os.path.realpath(path)
    if not allow_external_links and not _inside(target, root):
        raise ValueError(f"{path}: symbolic link to {target}, outside {root}; pass allow_external_links=True to "
                         "follow links that leave the dataset")


def _frame_files(folder: Path, wanted, root: Path, allow_external_links: bool) -> list[Path]:
    """Files of ``folder`` whose names ``wanted`` accepts (hidden ones skipped). Links leaving ``root`` and
    special files (FIFOs, devices: opening one could block forever) are refused with the file's name."""
    root_real = os.path.realpath(root)
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith(".") or not wanted(e.name):
                continue
            if e.is_symlink():
                _check_link(e.path, root_real, allow_external_links)
            elif e.is_file(follow_symlinks=False):  # d_type from the listing: no stat per frame
                out.append(Path(e.path))
                continue
            try:
                mode = os.stat(e.path).st_mode
            except FileNotFoundError:  # a dangling link: reported when the frame is read
                out.append(Path(e.path))
                continue
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a device or special file"
                raise ValueError(f"{e.path}: {kind} named like a frame; refused (remove or rename it)")
            out.append(Path(e.path))
    return out


def _image_files(folder: Path, allow_external_links: bool = False, root: Path | None = None) -> list[Path]:
    """Image files of ``folder`` in frame order (numeric stems numerically, hidden files skipped)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"frame folder not found: {folder}")
    root = folder.parent if root is None else root
    if folder.is_symlink():
        _check_link(str(folder), os.path.realpath(root), allow_external_links)
    files = _frame_files(folder, lambda n: os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES, root,
                         allow_external_links)
    return sorted(files, key=lambda p: _natural_key(p.name))


def _frame_number(p: Path) -> int | None:
    return int(p.stem) if p.stem.isdigit() else None


def _check_consecutive(files: list[Path], folder: Path) -> None:
    """Numbered frames must run 1, 2, 3, ... with no gap: a missing file would shift every later box."""
    nums = [_frame_number(p) for p in files]
    if None in nums:
        return
    for expect, (num, p) in enumerate(zip(nums, files), 1):
        if num != expect:
            raise ValueError(f"{folder}: frame files are not numbered consecutively from 1: expected frame "
                             f"{expect}, found {p.name}")


def _seq_dir(seq_dir: PathLike) -> Path:
    d = Path(seq_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"sequence folder not found: {d}")
    return d


# --------------------------------------------------------------------------------------------- GOT-10k
def _read_ini(path: Path) -> dict:
    """meta_info.ini as a flat dict (sections merged; [METAINFO] is the only one in GOT-10k)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(_read_text(path, "meta info"), source=str(path))
    except configparser.Error as e:
        raise ValueError(f"{path}: unreadable meta info ({e})") from e
    out: dict = {}
    for section in parser.sections():
        out.update(parser[section])
    return out


def _nan_on_visible(path: Path, boxes: np.ndarray, absent: np.ndarray, given: int) -> None:
    """A NaN row that the file gives for a frame whose labels say visible is an error (a hole in the data)."""
    bad = np.flatnonzero(np.isnan(boxes[:given]).any(axis=1) & ~absent[:given])
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path}, line {i + 1}: NaN box in a frame whose labels say the target is visible "
                         f"({bad.size} such line(s)); mark the frame absent in absence.label")


def read_got10k_sequence(seq_dir: PathLike, *, allow_external_links: bool = False) -> Sequence:
    """A GOT-10k sequence folder. A 1-line ``groundtruth.txt`` (the test split) gives the first box only:
    the other rows are NaN. Label files and meta_info.ini may be missing (absent all False, cover None).
    A NaN box on a frame that absence.label says is visible is an error."""
    d = _seq_dir(seq_dir)
    frames = sorted(_frame_files(d, _GOT_FRAME.match, d, allow_external_links))
    if not frames:
        raise ValueError(f"{d}: no frames (expected 00000001.jpg, 00000002.jpg, ...)")
    _check_consecutive(frames, d)
    n = len(frames)
    gt_path = d / "groundtruth.txt"
    boxes = _parse_boxes(gt_path, _read_text(gt_path, "ground-truth"))
    gt_lines = len(boxes)
    if gt_lines == 1 and n > 1:  # test split: only the initial box is public
        boxes = np.vstack([boxes, np.full((n - 1, 4), np.nan)])
    _check_count(gt_path, boxes, n, d)

    meta: dict = {"layout": "got10k", "path": str(d), "groundtruth_file": str(gt_path),
                  "groundtruth_lines": gt_lines}
    absent = np.zeros(n, dtype=bool)
    cover = None
    p = d / "absence.label"
    if p.is_file():
        absent = _parse_labels(p, _read_text(p, "absence"), n, range(2), "absence").astype(bool)
        meta["absence_file"] = str(p)
    p = d / "cover.label"
    if p.is_file():
        cover = _parse_labels(p, _read_text(p, "cover"), n, range(9), "cover")
        meta["cover_file"] = str(p)
    p = d / "cut_by_image.label"
    if p.is_file():
        meta["cut_by_image"] = _parse_labels(p, _read_text(p, "cut_by_image"), n, range(2),
                                             "cut_by_image").astype(bool)
        meta["cut_by_image_file"] = str(p)
    p = d / "meta_info.ini"
    if p.is_file():
        meta.update({k: v for k, v in _read_ini(p).items() if k not in meta})
        meta["meta_info_file"] = str(p)
    if "absence_file" in meta:
        _nan_on_visible(gt_path, boxes, absent, gt_lines)
    boxes = _zero_size_to_nan(gt_path, boxes, absent)
    return Sequence(d.name, frames, boxes, absent, cover, meta)


# ------------------------------------------------------------------------------------------------ OTB
def _otb_target_files(d: Path) -> dict[int, Path]:
    out = {}
    for p in d.iterdir():
        m = _OTB_TARGET_FILE.match(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def _is_empty_file(p: Path) -> bool:
    return not p.read_text(encoding="utf-8-sig", errors="replace").strip()


def otb_targets(seq_dir: PathLike) -> list[int | None]:
    """The targets of an OTB folder: ``[None]`` for a plain ``groundtruth_rect.txt``, else the numbers k
    of its non-empty ``groundtruth_rect.<k>.txt`` files (Jogging: [1, 2]; Human4, whose .1 file is empty: [2])."""
    d = _seq_dir(seq_dir)
    if (d / "groundtruth_rect.txt").is_file():
        return [None]
    return [k for k, p in _otb_target_files(d).items() if not _is_empty_file(p)]


def _resolve_otb_target(d: Path, target: int | None) -> tuple[Path, Path, int | None, str]:
    """(sequence folder, ground-truth file, target number, sequence name) for ``read_otb_sequence``.
    ``Jogging.2`` names target 2 of ``Jogging`` (the GOT-10k toolkit's names) whether or not a folder
    of that name exists."""
    if not d.is_dir():
        m = _TARGET_SUFFIX.match(d.name)
        if m and (d.parent / m.group(1)).is_dir():
            k = int(m.group(2))
            if target is not None and target != k:
                raise ValueError(f"{d}: the name says target {k} but target={target} was passed")
            d, target = d.parent / m.group(1), k
        else:
            raise FileNotFoundError(f"sequence folder not found: {d}")
    if target is None:
        if (d / "groundtruth_rect.txt").is_file():
            return d, d / "groundtruth_rect.txt", None, d.name
        m = _TARGET_SUFFIX.match(d.name)
        if m and (d / f"groundtruth_rect.{m.group(2)}.txt").is_file():  # a copy named Jogging.1/
            return d, d / f"groundtruth_rect.{m.group(2)}.txt", int(m.group(2)), d.name
        found = otb_targets(d)
        if len(found) == 1:
            k = found[0]
            return d, d / f"groundtruth_rect.{k}.txt", k, d.name
        if found:
            raise ValueError(f"{d}: several targets ({', '.join(f'groundtruth_rect.{k}.txt' for k in found)}); "
                             f"pass target=k or read '{d.name}.k'")
        raise FileNotFoundError(f"ground-truth file not found: {d / 'groundtruth_rect.txt'}")
    gt = d / f"groundtruth_rect.{int(target)}.txt"
    if not gt.is_file():
        raise FileNotFoundError(f"ground-truth file not found: {gt}")
    several = len(otb_targets(d)) > 1
    name = f"{d.name}.{int(target)}" if several and not _TARGET_SUFFIX.match(d.name) else d.name
    return d, gt, int(target), name


def read_otb_sequence(
    seq_dir: PathLike,
    start_frame: int | None = None,
    end_frame: int | None = None,
    *,
    target: int | None = None,
    allow_external_links: bool = False,
) -> Sequence:
    """An OTB sequence folder (``img/`` + ``groundtruth_rect.txt``), boxes converted to 0-based pixels.

    ``start_frame``/``end_frame`` (1-based, inclusive, frame numbers as in the file names) select the
    annotated frames; by default all images, or the :data:`OTB_FRAME_RANGES` entry when the folder's image
    count differs from the ground-truth line count. ``target`` k reads ``groundtruth_rect.<k>.txt`` of a
    multi-target folder; ``.../Jogging.2`` does the same by name. A NaN or zero-size box marks the frame absent.
    """
    d, gt_path, target, name = _resolve_otb_target(Path(seq_dir), target)
    img_dir = d / "img"
    files = _image_files(img_dir, allow_external_links, d)
    if not files:
        raise ValueError(f"{img_dir}: no frames (expected img/0001.jpg, ...)")
    boxes = _parse_boxes(gt_path, _read_text(gt_path, "ground-truth"))

    nums = [_frame_number(p) for p in files]
    numbered = None not in nums
    if not numbered:
        nums = list(range(1, len(files) + 1))  # positions stand in for frame numbers
    rng_source = "all images"
    lo, hi = start_frame, end_frame
    if lo is not None or hi is not None:
        rng_source = "arguments"
    elif len(files) != len(boxes) and d.name.lower() in OTB_FRAME_RANGES:
        lo, hi = OTB_FRAME_RANGES[d.name.lower()]
        rng_source = "OTB_FRAME_RANGES"
    if rng_source != "all images":
        lo = nums[0] if lo is None else int(lo)
        hi = nums[-1] if hi is None else int(hi)
        if lo < 1 or hi < lo:
            raise ValueError(f"{d}: invalid frame range {lo}..{hi} (1-based, inclusive)")
        if hi > nums[-1] or lo < nums[0]:
            raise ValueError(f"{img_dir}: frame range {lo}..{hi} ({rng_source}) outside the images "
                             f"{nums[0]}..{nums[-1]}")
        files = [p for p, k in zip(files, nums) if lo <= k <= hi]
        if numbered and len(files) != hi - lo + 1:
            raise ValueError(f"{img_dir}: frames {lo}..{hi} are not all there ({len(files)} of {hi - lo + 1} files)")
    if len(boxes) != len(files):
        hint = "" if rng_source != "all images" else " (pass start_frame/end_frame if the annotation covers part of them)"
        raise ValueError(f"{gt_path}: {len(boxes)} ground-truth line(s) but {len(files)} frame(s) in {img_dir}"
                         + (f" for frames {lo}..{hi} ({rng_source})" if rng_source != "all images" else "") + hint)

    boxes = boxes.copy()
    boxes[:, :2] -= 1.0  # OTB counts pixels from 1
    nan = np.isnan(boxes).any(axis=1)
    absent = nan | (boxes[:, 2] == 0) | (boxes[:, 3] == 0)
    boxes[absent] = np.nan
    meta = {"layout": "otb", "path": str(d), "groundtruth_file": str(gt_path), "target": target,
            "frame_range": (nums[0] if rng_source == "all images" else lo,
                            nums[-1] if rng_source == "all images" else hi),
            "frame_range_source": rng_source}
    return Sequence(name, files, boxes, absent, None, meta)


# ---------------------------------------------------------------------------------------------- LaSOT
def read_lasot_sequence(seq_dir: PathLike, *, allow_external_links: bool = False) -> Sequence:
    """A LaSOT sequence folder (``img/``, ``groundtruth.txt``, ``full_occlusion.txt``, ``out_of_view.txt``).
    Absent = fully occluded or out of view; LaSOT's 0,0,0,0 boxes for those frames become NaN rows.
    Missing label files count as all-visible (recorded in ``meta["missing_labels"]``)."""
    d = _seq_dir(seq_dir)
    img_dir = d / "img"
    files = _image_files(img_dir, allow_external_links, d)
    if not files:
        raise ValueError(f"{img_dir}: no frames (expected img/00000001.jpg, ...)")
    _check_consecutive(files, img_dir)
    n = len(files)
    gt_path = d / "groundtruth.txt"
    boxes = _parse_boxes(gt_path, _read_text(gt_path, "ground-truth"))
    _check_count(gt_path, boxes, n, img_dir)
    meta: dict = {"layout": "lasot", "path": str(d), "groundtruth_file": str(gt_path), "missing_labels": []}
    m = re.match(r"^(.+)-\d+$", d.name)
    if m:
        meta["object_class"] = m.group(1)
    flags = {}
    for key in ("full_occlusion", "out_of_view"):
        p = d / f"{key}.txt"
        if p.is_file():
            flags[key] = _parse_labels(p, _read_text(p, key), n, range(2), key).astype(bool)
            meta[f"{key}_file"] = str(p)
        else:
            flags[key] = np.zeros(n, dtype=bool)
            meta["missing_labels"].append(p.name)
    meta.update(flags)
    absent = flags["full_occlusion"] | flags["out_of_view"]
    p = d / "nlp.txt"
    if p.is_file():
        meta["nlp"] = _read_text(p, "nlp").strip()
    boxes = _zero_size_to_nan(gt_path, boxes, absent)
    return Sequence(d.name, files, boxes, absent, None, meta)


# ---------------------------------------------------------------------------------------------- auto
def detect_layout(seq_dir: PathLike) -> str | None:
    """'otb', 'lasot' or 'got10k' from the files in ``seq_dir``, None when it looks like no sequence."""
    d = Path(seq_dir)
    if not d.is_dir():
        m = _TARGET_SUFFIX.match(d.name)
        if m and (d.parent / m.group(1)).is_dir():
            return "otb" if detect_layout(d.parent / m.group(1)) == "otb" else None
        return None
    has_img = (d / "img").is_dir()
    if has_img and ((d / "groundtruth_rect.txt").is_file() or _otb_target_files(d)):
        return "otb"
    if has_img and ((d / "full_occlusion.txt").is_file() or (d / "out_of_view.txt").is_file()
                    or (d / "groundtruth.txt").is_file()):
        return "lasot"
    if (d / "groundtruth.txt").is_file() and any(_GOT_FRAME.match(p.name) for p in d.iterdir()):
        return "got10k"
    return None


def read_sequence(seq_dir: PathLike, layout: str = "auto", *, allow_external_links: bool = False) -> Sequence:
    """Read a sequence folder in ``layout`` ('got10k', 'otb', 'lasot'), or detect it ('auto'):
    img/ + groundtruth_rect*.txt is OTB, img/ + full_occlusion.txt (or groundtruth.txt) LaSOT, 8-digit
    jpgs + groundtruth.txt GOT-10k."""
    if layout == "auto":
        d = Path(seq_dir)
        found = detect_layout(d)
        if found is None:
            if not d.is_dir():
                raise FileNotFoundError(f"sequence folder not found: {d}")
            raise ValueError(f"{d}: not a tracking sequence folder (expected GOT-10k 00000001.jpg + groundtruth.txt, "
                             "OTB img/ + groundtruth_rect.txt, or LaSOT img/ + groundtruth.txt + full_occlusion.txt)")
        layout = found
    readers = {"got10k": read_got10k_sequence, "otb": read_otb_sequence, "lasot": read_lasot_sequence}
    if layout not in readers:
        raise ValueError(f"unknown sequence layout {layout!r}; expected 'auto' or one of {', '.join(LAYOUTS)}")
    return readers[layout](seq_dir, allow_external_links=allow_external_links)


# -------------------------------------------------------------------------------------------- dataset
def _subfolders(d: Path, root: Path | None = None, allow_external_links: bool = True) -> list[Path]:
    """Visible sub-folders of ``d``; with ``root``: links leaving it are refused (unless allowed) and links
    back to ``d`` or one of its parents (loops) are not followed."""
    out = []
    real_d = os.path.realpath(d)
    for p in d.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue
        if root is not None and p.is_symlink():
            target = os.path.realpath(p)
            _check_link(str(p), os.path.realpath(root), allow_external_links)
            if _inside(real_d, target):  # points at d or above it
                continue
        out.append(p)
    return sorted(out, key=lambda p: _natural_key(p.name))


class SequenceDataset(torch.utils.data.Dataset):
    """All sequences of a folder (``root/split``, or ``root`` when ``split`` is None), read eagerly.

    Order: ``list.txt`` when the folder has one (GOT-10k), else the sorted subfolders that look like
    sequences; LaSOT's ``<class>/<class>-<n>/`` nesting is followed one level, and an OTB folder with
    several targets gives one sequence per target (``Jogging.1``, ``Jogging.2``). ``names`` keeps only
    those sequences, in that order. Items are :class:`Sequence` objects.
    """

    def __init__(self, root: PathLike, split: str | None = None, layout: str = "auto",
                 names: list[str] | None = None, allow_external_links: bool = False):
        if layout != "auto" and layout not in LAYOUTS:
            raise ValueError(f"unknown sequence layout {layout!r}; expected 'auto' or one of {', '.join(LAYOUTS)}")
        self.root = Path(root)
        self.split = split
        self.layout = layout
        self.allow_external_links = bool(allow_external_links)
        base = self.root / split if split is not None else self.root
        if not base.is_dir():
            raise FileNotFoundError(f"sequence folder not found: {base}")
        self.base = base
        entries = self._listed(base) if (base / "list.txt").is_file() else self._scanned(base)
        if names is not None:
            by_name = {name: path for name, path in entries}
            missing = [n for n in names if n not in by_name]
            if missing:
                raise ValueError(f"{base}: no sequence(s) named {', '.join(map(repr, missing[:5]))}"
                                 + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""))
            entries = [(n, by_name[n]) for n in names]
        self.sequences: list[Sequence] = [read_sequence(path, layout, allow_external_links=allow_external_links)
                                          for _, path in entries]

    def _listed(self, base: Path) -> list[tuple[str, Path]]:
        list_file = base / "list.txt"
        out = []
        for k, name in _content_lines(list_file, _read_text(list_file, "sequence list")):
            path = base / name
            if detect_layout(path) is None and not path.is_dir():
                raise FileNotFoundError(f"{list_file}, line {k}: sequence folder not found: {path}")
            out.append((Path(name).name, path))
        return out

    def _scanned(self, base: Path) -> list[tuple[str, Path]]:
        out = []
        seen: set[str] = set()  # real paths: two links to one sequence give it once
        for d in _subfolders(base, self.root, self.allow_external_links):
            found = detect_layout(d)
            if found is not None:
                if os.path.realpath(d) not in seen:
                    seen.add(os.path.realpath(d))
                    out.extend(self._expand(d, found if self.layout == "auto" else self.layout))
                continue
            for sub in _subfolders(d, self.root, self.allow_external_links):  # LaSOT <class>/<class>-<n>/
                if os.path.realpath(sub) in seen:
                    continue
                seen.add(os.path.realpath(sub))
                found = detect_layout(sub)
                if found is not None:
                    out.extend(self._expand(sub, found if self.layout == "auto" else self.layout))
        return out

    @staticmethod
    def _expand(d: Path, layout: str) -> list[tuple[str, Path]]:
        if layout == "otb":
            targets = otb_targets(d)
            if len(targets) > 1:
                return [(f"{d.name}.{k}", d.parent / f"{d.name}.{k}") for k in targets]
        return [(d.name, d)]

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sequences]

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int | str) -> Sequence:
        if isinstance(i, str):
            for s in self.sequences:
                if s.name == i:
                    return s
            raise KeyError(f"no sequence named {i!r} in {self.base}")
        return self.sequences[i]

    def __repr__(self) -> str:
        return f"SequenceDataset(root={str(self.root)!r}, split={self.split!r}, sequences={len(self)})"
