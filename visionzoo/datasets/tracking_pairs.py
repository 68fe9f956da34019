"""Training pairs for Siamese trackers, shared by SiamFC and SINT.

Each item is one (exemplar, search) pair from one sequence: two frames at most `max_gap` frames apart in
which the target is visible (not absent, at least `min_cover` of 8 visible where the layout says, at
least `min_size` px, aspect ratio within `max_aspect`). The exemplar is SiamFC's context crop around the
target resized to 127 px; the search image is the crop 255/127 times larger around the target in the
other frame, resized to 255 px, so the target has the same pixel size in both. Augmentation is a small
stretch of each crop's side and a shift of the search crop's centre (the target then lies off-centre
by up to `shift` px). Padding outside the frame is the frame's mean colour.

Randomness comes from torch's generator, which the engine seeds per (run seed, epoch, index), so every
pair is reproducible and resume is exact; `pairs_per_epoch` sets the epoch length (pairs are drawn, not
enumerated: a sequence of n frames holds about n x 2 x max_gap of them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from visionzoo.datasets.crops import box_in_crop, context_side, crop_and_resize


@dataclass
class PairSettings:
    pairs_per_epoch: int = 2000
    max_gap: int = 100
    exemplar_size: int = 127
    search_size: int = 255
    context: float = 0.5
    min_size: float = 4.0  # px: smaller targets are not used as pair frames
    max_aspect: float = 4.0
    min_cover: int = 1  # GOT-10k cover label (0..8) a frame needs; 1 = any visible part
    stretch: float = 0.05  # crop side scaled by 1 + U(-stretch, stretch)
    shift: float = 8.0  # search crop centre moved by U(-shift, shift) output px in x and y


def usable_frames(seq, settings: PairSettings) -> np.ndarray:
    """Indices of the frames of `seq` that may form a pair."""
    boxes = np.asarray(seq.boxes, dtype=np.float64)
    w, h = boxes[:, 2], boxes[:, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(boxes).all(1) & (w >= settings.min_size) & (h >= settings.min_size)
        ok &= np.maximum(w / h, h / w) <= settings.max_aspect
    if seq.absent is not None:
        ok &= ~np.asarray(seq.absent, dtype=bool)
    if seq.cover is not None:
        ok &= np.asarray(seq.cover) >= settings.min_cover
    return np.flatnonzero(ok)


class TrackingPairs(Dataset):
    """(exemplar, search) crops with the target's box in each, as a dict of tensors:
    exemplar (3, 127, 127) and search (3, 255, 255) normalised with `mean`/`std`; exemplar_box and
    search_box: (4,) x1, y1, x2, y2 in crop pixels. With `candidates` = (positives, negatives, pos_iou,
    neg_iou) (SINT), also `candidates` (K, 4) boxes in the search crop and `candidate_labels` (K,): 1 for
    boxes with IoU >= pos_iou with the target, 0 for boxes with IoU < neg_iou."""

    def __init__(self, sequences, settings: PairSettings | None = None, mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), augment: bool = True,
                 candidates: tuple[int, int, float, float] | None = None):
        self.settings = settings or PairSettings()
        self.candidates = candidates
        if self.settings.pairs_per_epoch < 1:
            raise ValueError(f"pairs_per_epoch must be >= 1, got {self.settings.pairs_per_epoch}")
        self.sequences, self.frames = [], []
        for seq in sequences:
            frames = usable_frames(seq, self.settings)
            if len(frames) >= 2:
                self.sequences.append(seq)
                self.frames.append(frames)
        if not self.sequences:
            raise ValueError(f"no sequence has two usable frames for training pairs (of {len(sequences)} "
                             f"sequences; usable = visible, >= {self.settings.min_size} px, aspect <= "
                             f"{self.settings.max_aspect}, cover >= {self.settings.min_cover})")
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1) * 255
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1) * 255
        self.augment = augment

    def __len__(self) -> int:
        return self.settings.pairs_per_epoch

    def pick(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(sequence, exemplar frame, search frame): a sequence uniformly, then two distinct usable frames
        at most max_gap apart (the same frame only when it has no usable neighbour in reach)."""
        s = int(rng.integers(len(self.sequences)))
        frames = self.frames[s]
        z = int(frames[rng.integers(len(frames))])
        near = frames[(np.abs(frames - z) <= self.settings.max_gap) & (frames != z)]
        x = int(near[rng.integers(len(near))]) if len(near) else z
        return s, z, x

    def _crop(self, image: np.ndarray, box, out_size: int, rng: np.random.Generator, search: bool):
        st = self.settings
        x, y, w, h = box
        side = context_side(w, h, st.context) * (st.search_size / st.exemplar_size if search else 1.0)
        center = np.array([x + w / 2, y + h / 2])
        if self.augment:
            side *= 1 + rng.uniform(-st.stretch, st.stretch)
            if search:
                center = center - rng.uniform(-st.shift, st.shift, size=2) * side / out_size
        crop = crop_and_resize(image, tuple(center), side, out_size)
        bx, by, bw, bh = box_in_crop(box, tuple(center), side, out_size)
        return crop, np.array([bx, by, bx + bw, by + bh], dtype=np.float32)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
        s, z, x = self.pick(rng)
        seq = self.sequences[s]
        exemplar, z_box = self._crop(seq.load_frame(z), seq.boxes[z], self.settings.exemplar_size, rng, False)
        search, x_box = self._crop(seq.load_frame(x), seq.boxes[x], self.settings.search_size, rng, True)
        item = {"exemplar": self._to_tensor(exemplar), "search": self._to_tensor(search),
                "exemplar_box": torch.from_numpy(z_box), "search_box": torch.from_numpy(x_box)}
        if self.candidates is not None:
            boxes, labels = sample_candidates(x_box, *self.candidates, self.settings.search_size, rng)
            item["candidates"], item["candidate_labels"] = torch.from_numpy(boxes), torch.from_numpy(labels)
        return item

    def _to_tensor(self, crop: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).float() - self.mean) / self.std


def _iou_xyxy(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, :2], box[:2])
    rb = np.minimum(boxes[:, 2:], box[2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return inter / (area(boxes) + area(box) - inter)


def sample_candidates(target: np.ndarray, positives: int, negatives: int, pos_iou: float, neg_iou: float,
                      crop_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SINT's training candidates around `target` (x1, y1, x2, y2): `positives` boxes with IoU >= pos_iou
    (small shifts and rescalings of the target) and `negatives` with IoU < neg_iou (larger shifts, other
    sizes, anywhere in the crop), as (K, 4) float32 boxes and (K,) float32 labels. Drawn in bulk and
    filtered by IoU; a shortfall of positives is filled with the target itself."""
    w, h = target[2] - target[0], target[3] - target[1]
    cx, cy = (target[0] + target[2]) / 2, (target[1] + target[3]) / 2

    def jitter(n, shift, scale):
        s = np.exp(rng.normal(0, scale, size=(n, 2)))
        c = np.stack([cx + rng.normal(0, shift, n) * w, cy + rng.normal(0, shift, n) * h], 1)
        half = np.stack([w * s[:, 0], h * s[:, 1]], 1) / 2
        return np.concatenate([c - half, c + half], 1)

    pos = jitter(8 * positives, 0.08, 0.08)
    pos = pos[_iou_xyxy(pos, target) >= pos_iou][:positives]
    if len(pos) < positives:
        pos = np.concatenate([pos, np.repeat(target[None], positives - len(pos), 0)])
    near = jitter(4 * negatives, 0.8, 0.3)
    anywhere_c = rng.uniform(0, crop_size, size=(4 * negatives, 2))
    anywhere_half = np.stack([w, h], 0)[None] * np.exp(rng.normal(0, 0.3, size=(4 * negatives, 2))) / 2
    anywhere = np.concatenate([anywhere_c - anywhere_half, anywhere_c + anywhere_half], 1)
    neg = np.concatenate([near, anywhere])
    neg = neg[_iou_xyxy(neg, target) < neg_iou]
    if len(neg) == 0:  # a target filling the whole crop: the crop's corners are the negatives
        q = crop_size / 4
        neg = np.array([[0, 0, q, q], [3 * q, 0, 4 * q, q], [0, 3 * q, q, 4 * q], [3 * q, 3 * q, 4 * q, 4 * q]])
    pick = rng.permutation(len(neg))[:negatives]
    neg = neg[np.resize(pick, negatives)]  # exactly `negatives` (repeats only in degenerate cases)
    boxes = np.concatenate([pos, neg]).astype(np.float32)
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)
    return boxes, labels
