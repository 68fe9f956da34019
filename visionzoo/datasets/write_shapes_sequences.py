"""Write synthetic moving-shapes tracking sequences in the GOT-10k layout.

    python -m visionzoo.datasets.write_shapes_sequences OUT [--train 200] [--val 20] [--test 30]
        [--frames 75] [--size 256x192] [--seed 0] [--overwrite] [--no-progress]

Layout (read it back with ``SequenceDataset(OUT, split)`` or ``read_got10k_sequence``)::

    OUT/sequences_meta.json                      parameters, per-split counts, scenario statistics
    OUT/<split>/list.txt                         sequence names in order
    OUT/<split>/Shapes_<Split>_000001/00000001.jpg ...   JPEG quality 95
        groundtruth.txt      x,y,w,h (4 decimals) of the part of the target's shape inside the image
        absence.label        1 while nothing of the target is visible (fully occluded or out of the frame)
        cover.label          visible fraction * 8 rounded down, at least 1 while visible, 0 when absent
        cut_by_image.label   1 while part of the target's shape is outside the image
        meta_info.ini        [METAINFO] object_class (shape name), motion_class and the scenario flags

Each sequence is one target shape on a fixed textured background with mild per-frame noise. Scenarios are
drawn per sequence (and recorded in meta_info.ini): constant, accelerating or decelerating motion that
bounces off the walls, growing or shrinking scale, in-plane rotation, a partial or full occlusion by an
occluder of another colour passing over the target, distractors of the SAME shape and colour moving
nearby, and the target leaving the frame and coming back. The target is fully visible in the first frame
(trackers initialise there). Boxes cover the target's whole shape within the image, occluded parts
included (as GOT-10k boxes do); a frame where no part of it is inside the image gets 0,0,0,0.

Everything is deterministic by seed: sequence ``i`` of a split comes from its own seed
(:func:`sequence_seed`), so re-running gives byte-identical files. Re-running with the same parameters
does nothing (or finishes an interrupted run: every sequence folder appears by an atomic rename), other
parameters are refused unless ``overwrite``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from visionzoo.datasets.common import read_writer_meta
from visionzoo.datasets.sequences import read_got10k_sequence
from visionzoo.datasets.shapes import (
    DEFAULT_SUPERSAMPLE,
    SHAPE_CLASSES,
    SPLITS,
    ShapeSpec,
    draw_shape,
    ensure_contrast,
    random_color,
    render_background,
    shape_polygon,
)
from visionzoo.datasets.write_shapes import normalise_counts

META_NAME = "sequences_meta.json"
# Bump when rendered pixels or annotations change, so folders from an older generator are not reused.
GENERATOR_VERSION = 1
DEFAULT_COUNTS = {"train": 200, "val": 20, "test": 30}
DEFAULT_FRAMES = 75  # 200 x 75 = 15k training frames; SiamFC pairs frames up to 100 apart
DEFAULT_SIZE = (256, 192)  # (width, height); trackers crop 127/255 patches, so the frame size barely matters
JPEG_QUALITY = 95
# Target circumradius as a fraction of the smaller image side: boxes of about 16..64 px at 256x192.
TARGET_RADIUS_RANGE = (1 / 24, 1 / 6)
NOISE_STD_RANGE = (1.0, 5.0)  # per-sequence Gaussian pixel noise (0..255 scale), redrawn every frame
MIN_LEAVE_FRAMES = 8  # shortest sequence that fits leaving the frame and coming back
MIN_VISIBLE_PIXELS = 2.0  # less visible area than this (or under 1/64 of the shape) counts as absent
_STREAM_TAG = 0x5E9E7C  # keeps sequence seeds disjoint from the other shapes streams

MOTIONS = ("constant_velocity", "accelerating", "decelerating")
SCALE_CHANGES = ("none", "growing", "shrinking")
OCCLUSIONS = ("none", "partial", "full")
MAX_DISTRACTORS = 3
SCENARIO_KEYS = ("kind", "motion", "scale_change", "rotation", "occlusion", "distractors", "leave_frame")


def sequence_seed(seed: int, split: str, index: int) -> int:
    """The seed of sequence ``index`` (0-based) of ``split``."""
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index), _STREAM_TAG])
               .generate_state(1)[0])


def sequence_name(split: str, index: int) -> str:
    """GOT-10k style folder name, numbered from 1: Shapes_Train_000001."""
    return f"Shapes_{split.capitalize()}_{index + 1:06d}"


# ------------------------------------------------------------------------------------------ scenarios
def sample_scenarios(rng: np.random.Generator) -> dict:
    """The scenario mix of one sequence (always the same number of draws, so forcing some keys leaves
    the rest of the sequence unchanged)."""
    u = rng.random(7)
    return {
        "kind": SHAPE_CLASSES[int(u[0] * len(SHAPE_CLASSES))],
        "motion": MOTIONS[0] if u[1] < 0.5 else MOTIONS[1] if u[1] < 0.75 else MOTIONS[2],
        "scale_change": SCALE_CHANGES[0] if u[2] < 0.5 else SCALE_CHANGES[1] if u[2] < 0.75 else SCALE_CHANGES[2],
        "rotation": bool(u[3] < 0.5),
        "occlusion": OCCLUSIONS[0] if u[4] < 0.4 else OCCLUSIONS[1] if u[4] < 0.75 else OCCLUSIONS[2],
        "distractors": 0 if u[5] < 0.5 else 1 if u[5] < 0.8 else 2,
        "leave_frame": bool(u[6] < 0.3),
    }


def _check_scenarios(forced: dict) -> dict:
    allowed = {"kind": SHAPE_CLASSES, "motion": MOTIONS, "scale_change": SCALE_CHANGES,
               "occlusion": OCCLUSIONS}
    unknown = sorted(set(forced) - set(SCENARIO_KEYS))
    if unknown:
        raise ValueError(f"unknown scenario key(s) {', '.join(map(repr, unknown))}; expected {', '.join(SCENARIO_KEYS)}")
    out = dict(forced)
    for k, choices in allowed.items():
        if k in out and out[k] not in choices:
            raise ValueError(f"scenario {k}={out[k]!r}: expected one of {', '.join(choices)}")
    for k in ("rotation", "leave_frame"):
        if k in out:
            out[k] = bool(out[k])
    if "distractors" in out:
        out["distractors"] = int(out["distractors"])
        if not 0 <= out["distractors"] <= MAX_DISTRACTORS:
            raise ValueError(f"scenario distractors={out['distractors']}: expected 0..{MAX_DISTRACTORS}")
    return out


# ----------------------------------------------------------------------------------------- trajectory
def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class _Plan:
    """Per-frame geometry of every object of a sequence (arrays of length L)."""

    pos: np.ndarray  # (L, 2) target centre
    base: np.ndarray  # (L, 2) target centre without the leave-frame excursion (distractors orbit it)
    radius: np.ndarray  # (L,)
    rotation: np.ndarray  # (L,)
    bounces: int
    leave_window: tuple[int, int] | None  # frames [first, last] planned fully outside
    occluder: list[ShapeSpec] | None = None  # one spec per frame
    distractors: list[list[ShapeSpec]] = field(default_factory=list)  # per distractor, one spec per frame


def _radius_track(rng: np.random.Generator, n: int, m: float, scale_change: str) -> np.ndarray:
    lo, hi = TARGET_RADIUS_RANGE[0] * m, TARGET_RADIUS_RANGE[1] * m
    ratio = rng.uniform(1.4, 2.0)
    u = rng.random()
    t = np.arange(n) / max(n - 1, 1)
    if scale_change == "growing":
        return (lo + u * (hi / ratio - lo)) * ratio ** t
    if scale_change == "shrinking":
        return (lo * ratio + u * (hi - lo * ratio)) * ratio ** -t
    return np.full(n, lo + u * (hi - lo))


def _base_track(rng, n: int, size: tuple[int, int], radius: np.ndarray, motion: str) -> tuple[np.ndarray, int]:
    """Centres of a target moving straight at constant / growing / shrinking speed, reflected off walls
    inset by a per-sequence fraction of its radius (under 1: it sticks out a little at a bounce)."""
    w, h = size
    m = min(w, h)
    inset = rng.uniform(0.4, 1.0)
    heading = rng.uniform(0.0, 2 * math.pi)
    if motion == "accelerating":
        v0, gain = rng.uniform(0.006, 0.015) * m, rng.uniform(2.5, 4.0)
    elif motion == "decelerating":
        v0, gain = rng.uniform(0.025, 0.045) * m, 1.0 / rng.uniform(2.5, 5.0)
    else:
        v0, gain = rng.uniform(0.008, 0.03) * m, 1.0
    speed = v0 * gain ** (np.arange(n) / max(n - 1, 1))
    r0 = radius[0] + 1.0  # the first frame shows the whole target
    pos = np.empty((n, 2))
    pos[0] = rng.uniform(r0, w - r0), rng.uniform(r0, h - r0)
    d = np.array([math.cos(heading), math.sin(heading)])
    bounces = 0
    for t in range(1, n):
        p = pos[t - 1] + d * speed[t - 1]
        for a, side in ((0, w), (1, h)):
            lo = radius[t] * inset
            hi = side - lo
            if p[a] < lo:
                p[a], d[a] = 2 * lo - p[a], abs(d[a])
                bounces += 1
            elif p[a] > hi:
                p[a], d[a] = 2 * hi - p[a], -abs(d[a])
                bounces += 1
            p[a] = min(max(p[a], min(lo, side / 2)), max(hi, side / 2))
        pos[t] = p
    return pos, bounces


def _leave_excursion(rng, base: np.ndarray, radius: np.ndarray, size: tuple[int, int]):
    """Blend the track towards a point just outside the nearest wall and back: (positions, window of
    frames fully outside)."""
    n = len(base)
    w, h = size
    ramp = max(2, round(n * rng.uniform(0.06, 0.12)))
    hold = max(2, round(n * rng.uniform(0.06, 0.15)))
    while 2 * ramp + hold + 2 > n and hold > 2:
        hold -= 1
    while 2 * ramp + hold + 2 > n and ramp > 1:
        ramp -= 1
    start = int(rng.integers(1, max(2, n - 2 * ramp - hold)))
    t = np.arange(n)
    weight = np.where(t <= start + ramp, _smoothstep((t - start) / ramp),
                      1.0 - _smoothstep((t - start - ramp - hold) / ramp))
    p = base[start]
    wall = int(np.argmin([p[0], w - p[0], p[1], h - p[1]]))  # left, right, top, bottom
    out = base.copy()
    gap = radius + 2.0
    out[:, 0 if wall < 2 else 1] = {0: -gap, 1: w + gap, 2: -gap, 3: h + gap}[wall]
    pos = base + weight[:, None] * (out - base)
    window = (start + ramp, min(start + ramp + hold, n - 1))
    return pos, window


_INRADIUS = {"circle": math.cos(math.pi / 64), "square": math.sqrt(0.5), "hexagon": math.cos(math.pi / 6)}


def _occluder_track(rng, plan: _Plan, kind_choice: str, color, n: int) -> list[ShapeSpec]:
    """An occluder that passes over the target around frame t_c: its centre is the target's plus a linear
    drift, so the crossing happens as planned whatever the target does (it never touches frame 0's target)."""
    full = kind_choice == "full"
    kinds = tuple(_INRADIUS) if full else SHAPE_CLASSES
    kind = kinds[int(rng.integers(len(kinds)))]
    r_max = float(plan.radius.max())
    dur = max(4.0, n * rng.uniform(0.2, 0.35))
    phi = rng.uniform(0, 2 * math.pi)
    rot = rng.uniform(0, 360)
    lateral_u = rng.uniform(-1, 1)
    size_u = rng.random()
    t_c_u = rng.random()
    # the target's radius where the crossing happens is not known before t_c: size from the largest one
    big = 1.35 * r_max / _INRADIUS.get(kind, 1.0)
    small = r_max * (0.5 + 0.4 * size_u)
    r_o = big if full else small
    lateral = (0.1 if full else 0.6) * lateral_u * r_max
    u = 2.0 * (r_o + r_max) / dur  # relative speed: from touching on one side to the other in `dur` frames
    t_min = math.ceil((r_o + r_max + 1.0) / u)  # frame 0 well clear of the target
    t_max = n - 1
    t_c = t_min + t_c_u * max(t_max - t_min, 0)
    if plan.leave_window is not None:  # cross away from the frames spent outside, when there is room
        a, b = plan.leave_window
        before, after = (t_min, a - dur / 2), (b + dur / 2, t_max)
        spans = [s for s in (before, after) if s[1] >= s[0]]
        if spans:
            s = max(spans, key=lambda s: s[1] - s[0])
            t_c = s[0] + t_c_u * (s[1] - s[0])
    d = np.array([math.cos(phi), math.sin(phi)])
    perp = np.array([-d[1], d[0]])
    specs = []
    for t in range(n):
        c = plan.pos[t] + d * u * (t - t_c) + perp * lateral
        specs.append(ShapeSpec(kind, float(c[0]), float(c[1]), float(r_o), rot, color))
    return specs


def _distractor_tracks(rng, plan: _Plan, kind: str, n_distractors: int, n: int) -> list[list[ShapeSpec]]:
    """Look-alikes orbiting the target's (leave-free) track at 2.4..3.6 radii, so they never overlap it
    while it is in place and stay in view while it is away."""
    tracks = []
    t = np.arange(n)
    for _ in range(n_distractors):
        phase = rng.uniform(0, 2 * math.pi) + math.radians(rng.uniform(2, 6)) * rng.choice([-1, 1]) * t
        dist = rng.uniform(2.4, 3.6) + 0.3 * np.sin(rng.uniform(0.05, 0.2) * t + rng.uniform(0, 2 * math.pi))
        scale = rng.uniform(0.9, 1.1)
        drot = rng.uniform(-30, 30)
        specs = []
        for k in range(n):
            r = plan.radius[k]
            c = plan.base[k] + dist[k] * r * np.array([math.cos(phase[k]), math.sin(phase[k])])
            specs.append(ShapeSpec(kind, float(c[0]), float(c[1]), float(r * scale),
                                   float(plan.rotation[k] + drot), (0, 0, 0)))
        tracks.append(specs)
    return tracks


# ------------------------------------------------------------------------------------------ rendering
def _coverage_patch(spec: ShapeSpec, x0: int, y0: int, x1: int, y1: int, ss: int) -> np.ndarray:
    """Fraction of each pixel of the window [x0, x1) x [y0, y1) that ``spec`` covers, float32 (rasterised
    at ``ss`` times the resolution and box-downsampled, as render_scene does)."""
    img = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    draw_shape(ImageDraw.Draw(img), replace(spec, cx=spec.cx - x0, cy=spec.cy - y0), ss, 255)
    return np.asarray(img.reduce(ss), dtype=np.float32) * np.float32(1 / 255)


def _window(spec: ShapeSpec) -> tuple[int, int, int, int]:
    r = spec.size
    return (math.floor(spec.cx - r) - 1, math.floor(spec.cy - r) - 1,
            math.ceil(spec.cx + r) + 1, math.ceil(spec.cy + r) + 1)


def _paint(canvas: np.ndarray, spec: ShapeSpec, ss: int, keep: np.ndarray | None = None) -> None:
    """Composite ``spec`` onto ``canvas`` in place; ``keep`` (H, W float) gets multiplied by 1 - coverage."""
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = _window(spec)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    a = _coverage_patch(spec, cx0, cy0, cx1, cy1, ss)[..., None]
    region = canvas[cy0:cy1, cx0:cx1]
    region *= 1.0 - a
    region += a * np.asarray(spec.color, np.float32)
    if keep is not None:
        keep[cy0:cy1, cx0:cx1] *= 1.0 - a[..., 0]


@dataclass
class ShapesSequence:
    """One generated sequence: frames plus the GOT-10k annotations that describe them."""

    images: list[Image.Image]
    boxes: np.ndarray  # (N, 4) x, y, w, h as written (zeros where no part of the target is in the image)
    absent: np.ndarray  # (N,) bool
    cover: np.ndarray  # (N,) int 0..8
    cut_by_image: np.ndarray  # (N,) bool
    scenarios: dict
    info: dict  # meta_info.ini entries


def make_sequence(
    seq_seed: int,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    scenarios: dict | None = None,
    *,
    supersample: int = DEFAULT_SUPERSAMPLE,
) -> ShapesSequence:
    """Render one sequence of ``frames`` frames of ``size`` (width, height), deterministic from ``seq_seed``.

    ``scenarios`` forces some of the per-sequence choices (keys of SCENARIO_KEYS: kind, motion,
    scale_change, rotation, occlusion, distractors, leave_frame); the others are drawn as usual.
    """
    n = int(frames)
    w, h = (int(s) for s in size)
    if n < 2:
        raise ValueError(f"a sequence needs at least 2 frames, got {frames}")
    if w < 32 or h < 32:
        raise ValueError(f"frame size must be at least 32x32, got {w}x{h}")
    rng = np.random.default_rng(seq_seed)
    sc = sample_scenarios(rng)
    sc.update(_check_scenarios(scenarios or {}))
    if n < MIN_LEAVE_FRAMES and sc["leave_frame"]:
        if scenarios and scenarios.get("leave_frame"):
            raise ValueError(f"leaving the frame and coming back needs at least {MIN_LEAVE_FRAMES} frames, got {n}")
        sc["leave_frame"] = False
    m = min(w, h)

    # background and colours
    bg = render_background(rng, max(w, h))[:h, :w].astype(np.float32)
    noise_std = float(rng.uniform(*NOISE_STD_RANGE))
    radius = _radius_track(rng, n, m, sc["scale_change"])
    rot0 = rng.uniform(0, 360)
    omega = rng.uniform(2, 8) * rng.choice([-1, 1])
    rotation = rot0 + (omega * np.arange(n) if sc["rotation"] else 0.0 * np.arange(n))
    base, bounces = _base_track(rng, n, (w, h), radius, sc["motion"])
    pos, window = base, None
    excursion_rng = np.random.default_rng(rng.integers(2**63))  # same draws whether or not it is used
    if sc["leave_frame"]:
        pos, window = _leave_excursion(excursion_rng, base, radius, (w, h))
    plan = _Plan(pos, base, radius, rotation, bounces, window)

    target0 = ShapeSpec(sc["kind"], float(pos[0, 0]), float(pos[0, 1]), float(radius[0]), float(rotation[0]),
                        random_color(rng))
    foot = np.zeros((h, w), np.float32)
    x0, y0, x1, y1 = _window(target0)
    foot[max(y0, 0):y1, max(x0, 0):x1] = _coverage_patch(target0, max(x0, 0), max(y0, 0), min(x1, w), min(y1, h),
                                                         supersample)
    color = ensure_contrast(target0, bg, foot, rng)
    occ_color = _other_color(rng, color, bg)
    occ_rng = np.random.default_rng(rng.integers(2**63))
    dis_rng = np.random.default_rng(rng.integers(2**63))
    if sc["occlusion"] != "none":
        plan.occluder = _occluder_track(occ_rng, plan, sc["occlusion"], occ_color, n)
    plan.distractors = _distractor_tracks(dis_rng, plan, sc["kind"], sc["distractors"], n)

    images, boxes = [], np.zeros((n, 4))
    absent, cover, cut = np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, bool)
    for t in range(n):
        canvas = bg.copy()
        for track in plan.distractors:
            _paint(canvas, replace(track[t], color=color), supersample)
        target = ShapeSpec(sc["kind"], float(pos[t, 0]), float(pos[t, 1]), float(radius[t]), float(rotation[t]), color)
        tx0, ty0, tx1, ty1 = _window(target)
        full = _coverage_patch(target, tx0, ty0, tx1, ty1, supersample)  # the whole shape, in the frame or not
        total = float(full.sum())
        visible = np.zeros((h, w), np.float32)
        cx0, cy0, cx1, cy1 = max(tx0, 0), max(ty0, 0), min(tx1, w), min(ty1, h)
        if cx1 > cx0 and cy1 > cy0:
            a = full[cy0 - ty0:cy1 - ty0, cx0 - tx0:cx1 - tx0]
            visible[cy0:cy1, cx0:cx1] = a
            region = canvas[cy0:cy1, cx0:cx1]
            region *= 1.0 - a[..., None]
            region += a[..., None] * np.asarray(color, np.float32)
        if plan.occluder is not None:
            _paint(canvas, plan.occluder[t], supersample, keep=visible)
        shown = float(visible.sum())
        frac = shown / total if total > 0 else 0.0
        absent[t] = shown < MIN_VISIBLE_PIXELS or frac < 1 / 64
        cover[t] = 0 if absent[t] else min(8, max(1, int(math.floor(8 * frac + 1e-6))))
        xs, ys = zip(*shape_polygon(target))
        bx0, by0, bx1, by1 = max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), float(w)), min(max(ys), float(h))
        cut[t] = min(xs) < 0 or min(ys) < 0 or max(xs) > w or max(ys) > h
        if bx1 - bx0 >= 1e-3 and by1 - by0 >= 1e-3:
            boxes[t] = bx0, by0, bx1 - bx0, by1 - by0
        elif not absent[t]:  # cannot happen (visible pixels imply a box), but never write a visible 0-size box
            absent[t], cover[t] = True, 0
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(noise_std)
        np.clip(canvas, 0, 255, out=canvas)
        images.append(Image.fromarray(np.rint(canvas).astype(np.uint8), "RGB"))

    info = {
        "object_class": sc["kind"],
        "motion_class": sc["motion"],
        "major_class": "shape",
        "root_class": "synthetic",
        "motion_adverb": "bouncing" if bounces else "straight",
        "resolution": f"({w}, {h})",
        "scale_change": sc["scale_change"],
        "rotation": int(sc["rotation"]),
        "rotation_speed": f"{omega if sc['rotation'] else 0.0:.2f}",
        "occlusion": sc["occlusion"],
        "distractors": sc["distractors"],
        "leave_frame": int(sc["leave_frame"]),
        "bounces": bounces,
        "noise_std": f"{noise_std:.2f}",
        "sequence_seed": int(seq_seed),
        "generator": f"visionzoo.datasets.write_shapes_sequences v{GENERATOR_VERSION}",
    }
    return ShapesSequence(images, boxes, absent, cover, cut, sc, info)


def _other_color(rng: np.random.Generator, color, bg: np.ndarray, tries: int = 64) -> tuple[int, int, int]:
    """An occluder colour far from the target's (RGB distance >= 120) that also stands out from most of
    the background; the best of ``tries`` random colours."""
    sample = bg[::8, ::8].reshape(-1, 3)
    best, best_score = None, -1.0
    for _ in range(tries):
        c = random_color(rng)
        d_target = float(np.linalg.norm(np.subtract(c, color)))
        d_bg = float(np.percentile(np.linalg.norm(sample - np.asarray(c, np.float32), axis=1), 10))
        score = min(d_target / 120.0, d_bg / 60.0)
        if score > best_score:
            best, best_score = c, score
        if score >= 1.0:
            break
    return best


# -------------------------------------------------------------------------------------------- writing
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _labels_text(values) -> str:
    return "".join(f"{int(v)}\n" for v in values)


def _ini_text(info: dict) -> str:
    return "[METAINFO]\n" + "".join(f"{k}: {v}\n" for k, v in info.items())


def write_sequence(
    seq_dir: Union[str, os.PathLike],
    seq_seed: int,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    scenarios: dict | None = None,
) -> ShapesSequence:
    """Render one sequence and write it to ``seq_dir`` in the GOT-10k layout. The files go to a hidden
    sibling folder first, renamed into place when complete, so a crash never leaves a half sequence."""
    seq = make_sequence(seq_seed, frames, size, scenarios)
    final = Path(seq_dir)
    if final.exists():
        raise FileExistsError(f"{final}: already exists")
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for i, img in enumerate(seq.images, 1):
        img.save(tmp / f"{i:08d}.jpg", format="JPEG", quality=JPEG_QUALITY)
    (tmp / "groundtruth.txt").write_text("".join(f"{x:.4f},{y:.4f},{bw:.4f},{bh:.4f}\n" for x, y, bw, bh in seq.boxes))
    (tmp / "absence.label").write_text(_labels_text(seq.absent))
    (tmp / "cover.label").write_text(_labels_text(seq.cover))
    (tmp / "cut_by_image.label").write_text(_labels_text(seq.cut_by_image))
    (tmp / "meta_info.ini").write_text(_ini_text(seq.info))
    os.replace(tmp, final)
    return seq


def _parse_size(size) -> tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().split("x")
        try:
            vals = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"frame size must be WIDTHxHEIGHT or one number, got {size!r}") from None
        size = vals * 2 if len(vals) == 1 else vals
    elif isinstance(size, int):
        size = (size, size)
    w, h = (int(s) for s in size)
    if not (32 <= w <= 4096 and 32 <= h <= 4096):
        raise ValueError(f"frame size must be within 32..4096 pixels per side, got {w}x{h}")
    return w, h


def _params(counts: dict[str, int], frames: int, size: tuple[int, int], seed: int) -> dict:
    return {"dataset": "shapes_sequences", "generator_version": GENERATOR_VERSION, "counts": counts,
            "frames": int(frames), "size": [int(size[0]), int(size[1])], "seed": int(seed),
            "jpeg_quality": JPEG_QUALITY, "target_radius_range": list(TARGET_RADIUS_RANGE),
            "noise_std_range": list(NOISE_STD_RANGE), "classes": list(SHAPE_CLASSES)}


def _read_meta(path: Path) -> dict | None:
    return read_writer_meta(path, "sequences")


def _all_files_present(out: Path, params: dict) -> bool:
    names = ("groundtruth.txt", "absence.label", "cover.label", "cut_by_image.label", "meta_info.ini")
    for split in SPLITS:
        if not (out / split / "list.txt").is_file():
            return False
        for i in range(params["counts"][split]):
            d = out / split / sequence_name(split, i)
            if any(not (d / f).is_file() for f in names):
                return False
            if any(not (d / f"{k:08d}.jpg").is_file() for k in range(1, params["frames"] + 1)):
                return False
    return True


def _split_stats(seqs: list) -> dict:
    """Counts over the sequences of a split, read back from disk (so resumed runs count every sequence)."""
    scen = {"motion": {}, "scale_change": {}, "rotation": {}, "occlusion": {}, "distractors": {},
            "leave_frame": {}, "object_class": {}}
    frames = absent = cut = partial = 0
    for s in seqs:
        frames += len(s)
        absent += int(s.absent.sum())
        cut += int(np.asarray(s.meta.get("cut_by_image", np.zeros(len(s)))).sum())
        partial += int(((s.cover > 0) & (s.cover < 8)).sum()) if s.cover is not None else 0
        for key, meta_key in (("motion", "motion_class"), ("scale_change", "scale_change"),
                              ("rotation", "rotation"), ("occlusion", "occlusion"), ("distractors", "distractors"),
                              ("leave_frame", "leave_frame"), ("object_class", "object_class")):
            v = str(s.meta.get(meta_key))
            scen[key][v] = scen[key].get(v, 0) + 1
    return {"sequences": len(seqs), "frames": frames, "absent_frames": absent, "cut_by_image_frames": cut,
            "partly_visible_frames": partial,
            "scenarios": {k: dict(sorted(v.items())) for k, v in scen.items()}}


def _write_shapes_sequences(out_dir, counts, frames, size, seed, overwrite, progress) -> tuple[dict, bool]:
    """The writer; returns (per-split statistics, whether anything was written)."""
    out = Path(out_dir)
    size = _parse_size(size)
    frames = int(frames)
    if not 2 <= frames <= 99_999_999:
        raise ValueError(f"frames must be at least 2, got {frames}")
    params = _params(normalise_counts(counts, DEFAULT_COUNTS), frames, size, seed)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a folder")
    meta_path = out / META_NAME
    owned = [out / split for split in SPLITS]

    meta = None if overwrite else _read_meta(meta_path)
    if overwrite:
        for d in owned:
            if d.exists():
                shutil.rmtree(d)
        meta_path.unlink(missing_ok=True)
    elif meta is not None:
        old = {k: meta.get(k) for k in params}
        if old != params:
            diff = ", ".join(f"{k}: {old.get(k)!r} on disk vs {params[k]!r} asked" for k in params
                             if old.get(k) != params[k])
            raise ValueError(f"{out}: already holds shapes sequences written with different parameters ({diff}); "
                             "pass overwrite=True (--overwrite) to replace them, or choose another folder")
        if meta.get("complete") and _all_files_present(out, params):
            return meta["stats"], False
    else:
        taken = [str(d) for d in owned if d.exists() and any(d.iterdir())]
        if taken:
            raise ValueError(f"{out}: {', '.join(taken)} already exist(s) but there is no {META_NAME}, so they "
                             "were not written by this tool; pass overwrite=True (--overwrite) to replace them")

    out.mkdir(parents=True, exist_ok=True)
    _write_json(meta_path, {**params, "complete": False})
    total = sum(params["counts"].values()) * frames
    bar = tqdm(total=total, desc=f"writing shapes sequences to {out}", unit="frame", disable=not progress,
               dynamic_ncols=True)
    stats = {}
    for split in SPLITS:
        root = out / split
        root.mkdir(parents=True, exist_ok=True)
        names, seqs = [], []
        for i in range(params["counts"][split]):
            name = sequence_name(split, i)
            d = root / name
            if not d.is_dir():  # present folders are complete: they appear by an atomic rename
                write_sequence(d, sequence_seed(seed, split, i), frames, size)
            seqs.append(read_got10k_sequence(d))  # checks what was written and feeds the statistics
            names.append(name)
            bar.update(frames)
        _atomic_write_text(root / "list.txt", "".join(f"{n}\n" for n in names))
        stats[split] = _split_stats(seqs)
    bar.close()
    _write_json(meta_path, {**params, "complete": True, "stats": stats,
                            "layout": "{split}/list.txt, {split}/Shapes_{Split}_{index:06d}/{frame:08d}.jpg + "
                                      "groundtruth.txt, absence.label, cover.label, cut_by_image.label, meta_info.ini"})
    return stats, True


def _write_json(path: Path, obj) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_shapes_sequences(
    out_dir: Union[str, os.PathLike],
    counts: dict[str, int] | None = None,
    frames: int = DEFAULT_FRAMES,
    size: tuple[int, int] | str = DEFAULT_SIZE,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, dict]:
    """Write moving-shapes sequences to ``out_dir`` in the GOT-10k layout (see the module docstring).

    Args:
        counts: sequences per split; missing splits get the defaults (train 200, val 20, test 30).
        frames: frames per sequence.
        size: (width, height) or "WxH".
        overwrite: replace the split folders if they hold something else.

    Returns per-split statistics ``{split: {"sequences", "frames", "absent_frames", "cut_by_image_frames",
    "partly_visible_frames", "scenarios"}}``. Does nothing if the folder already holds exactly these
    parameters and every file; raises ValueError naming the differences if it holds other parameters.
    """
    return _write_shapes_sequences(out_dir, counts, frames, size, seed, overwrite, progress)[0]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m visionzoo.datasets.write_shapes_sequences",
                                description="Write synthetic moving-shapes tracking sequences in the GOT-10k layout.")
    p.add_argument("out", help="output folder")
    for split in SPLITS:
        p.add_argument(f"--{split}", type=int, default=DEFAULT_COUNTS[split],
                       help=f"number of {split} sequences (default {DEFAULT_COUNTS[split]})")
    p.add_argument("--frames", type=int, default=DEFAULT_FRAMES, help=f"frames per sequence (default {DEFAULT_FRAMES})")
    p.add_argument("--size", default=f"{DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]}",
                   help=f"frame size WIDTHxHEIGHT, or one number for square frames (default {DEFAULT_SIZE[0]}x{DEFAULT_SIZE[1]})")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a folder written with other parameters")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    counts = {s: getattr(args, s) for s in SPLITS}
    try:
        stats, written = _write_shapes_sequences(args.out, counts, args.frames, args.size, args.seed,
                                                 args.overwrite, not args.no_progress)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    summary = "; ".join(f"{s}: {v['sequences']} sequences, {v['frames']} frames, {v['absent_frames']} absent"
                        for s, v in stats.items())
    if written:
        print(f"wrote shapes sequences ({args.size}, {args.frames} frames, seed {args.seed}) to {args.out}: {summary}")
    else:
        print(f"{args.out} already holds these shapes sequences ({summary}); nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
