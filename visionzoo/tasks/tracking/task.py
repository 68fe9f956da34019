"""Single-object tracking as the shared engine sees it.

Training: (exemplar, search) crop pairs drawn from sequences (visionzoo.datasets.tracking_pairs); the
loss follows what the model declares (visionzoo.registry.Capabilities): SiamFC's class-balanced logistic
loss on the 17x17 response, or, for a model that embeds candidate boxes (SINT), the marginal contrastive loss
on their RoI embeddings. Evaluation: every sequence of the split is tracked from its first-frame box by the
model's tracker kind (visionzoo.tracking) and scored with the
OTB and GOT-10k protocols (metrics.py); the report shows success/precision plots, a per-sequence table
and frames of the best and worst sequences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
from torch.utils.data import Subset

from visionzoo.datasets.registry import get_dataset, register_dataset, typed_params
from visionzoo.datasets.sequences import SequenceDataset
from visionzoo.datasets.tracking_pairs import PairSettings, TrackingPairs, sample_candidates
from visionzoo.factory import create_model
from visionzoo.registry import capabilities
from visionzoo.tasks.base import Accumulator, Task
from visionzoo.tasks.tracking.losses import contrastive_loss, siamfc_labels, siamfc_logistic_loss
from visionzoo.tasks.tracking.metrics import SequenceResult, summarize
from visionzoo.tasks.tracking.report import build_tracking_report
from visionzoo.tracking import build_tracker, track_sequence, tracker_params


@dataclass
class TrackingAugment:
    enabled: bool = True
    stretch: float = 0.05  # each crop's side scaled by 1 + U(-stretch, stretch)
    shift: float = 8.0  # search crop centre moved by up to this many output px


@dataclass
class TrackingLoss:
    # SiamFC
    radius_pos: float = 16.0  # px in the search crop: response cells this close to the target are positive
    # SINT
    margin: float = 1.0  # epsilon of the marginal contrastive loss
    form: Literal["paper", "hadsell"] = "paper"  # where the margin applies: see losses.contrastive_loss
    positives: int = 16  # candidate boxes per pair with IoU >= pos_iou
    negatives: int = 48  # ... and with IoU < neg_iou
    pos_iou: float = 0.7
    neg_iou: float = 0.5


@dataclass
class TrackingEval:
    tracker: dict = field(default_factory=dict)  # tracker inference parameters (SiamFCParams / SINTParams)
    max_sequences: Optional[int] = None  # evaluate only the first n sequences (quick validation)
    max_frames: Optional[int] = None  # track only the first n frames of each sequence
    showcase_frames: int = 6  # frames shown per best/worst sequence in the report
    showcase_sequences: int = 2  # best and worst sequences shown (each)
    # IoU convention of AO / SR / success: "got10k" = the official toolkit's rect_iou (boxes bounded to the image
    # its way; published AOs are comparable), "geometric" = boxes intersected with the image (see tracking/metrics.py)
    iou_convention: Literal["got10k", "geometric"] = "got10k"


@dataclass
class TrackingParams:
    """`data.params` every tracking data set reads: how training pairs are drawn (`sequences` adds its folder
    layout); alone, the keys of a config whose data set is not registered (a benchmark's synthetic batches)."""

    pairs_per_epoch: int = 2000
    max_gap: int = 100  # frames between the two frames of a pair
    min_size: float = 4.0
    max_aspect: float = 4.0
    min_cover: int = 1
    context: float = 0.5


@dataclass
class SequencesParams(TrackingParams):
    """`data.params` of `sequences`."""

    layout: str = "auto"  # got10k, otb, lasot or auto (detected per sequence)


def data_params(cfg) -> TrackingParams:
    """`data.params` typed by the config's data set, or by TrackingParams, the keys every tracking data set
    reads, for a config without a registered data set (a benchmark's synthetic batches)."""
    return typed_params("tracking", cfg.data, TrackingParams)


def _layout_dataset(name: str, layout: str, doc: str):
    """Register the sequence folders of `layout` as tracking data set `name`."""

    def build(cfg, split, params: TrackingParams):
        return SequenceDataset(cfg.data.root, split=split, layout=layout)

    build.__doc__ = doc
    register_dataset(name, task="tracking", params=TrackingParams)(build)


_layout_dataset("got10k", "got10k", "GOT-10k layout")
_layout_dataset("otb", "otb", "OTB layout")
_layout_dataset("lasot", "lasot", "LaSOT layout")


@register_dataset("sequences", task="tracking", params=SequencesParams)
def _any_layout(cfg, split, params: SequencesParams):
    """any of them, detected per sequence (or data.params.layout)"""
    return SequenceDataset(cfg.data.root, split=split, layout=params.layout)


class TrackingAccumulator(Accumulator):
    """Per-sequence results (boxes, ground truth, times), keyed by dataset index."""

    def __init__(self, iou_convention: str = "got10k"):
        self.results: dict[int, object] = {}
        self.iou_convention = iou_convention

    def update(self, batch, outputs, indices) -> None:
        for index, result in zip(indices, outputs):
            self.results[int(index)] = result

    def synchronize(self) -> None:
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, self.results)
        for part in gathered:
            self.results.update(part)

    def compute(self) -> dict:
        return summarize([self.results[k] for k in sorted(self.results)], iou_convention=self.iou_convention)


def _unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` holds (0 where it never does), as masked sums: boolean indexing has a
    data-dependent size, which costs a blocking device-to-host copy on a GPU."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1)


class TrackingTask(Task):
    name = "tracking"
    loss_config = TrackingLoss
    eval_config = TrackingEval
    augment_config = TrackingAugment
    primary_metric = "ao"
    higher_is_better = True

    # ---- data ---------------------------------------------------------------------------------
    def _sequences(self, split: str):
        cfg = self.cfg
        d = cfg.data
        entry = get_dataset(self.name, d.dataset)
        params = entry.parse_params(d.params)
        if not d.root:
            raise ValueError(f"data.root is required for data.dataset = {d.dataset}")
        return entry.builder(cfg, split, params)

    def build_dataset(self, split, train, class_names=None):
        cfg = self.cfg
        caps = capabilities(cfg.model.name)
        tracker_params(caps.tracker_kind, cfg.eval.tracker)  # a typo fails now, not after an epoch of training
        sequences = self._sequences(split)
        if not train:
            if cfg.eval.max_sequences:
                subset = Subset(sequences, range(min(cfg.eval.max_sequences, len(sequences))))
                subset.sequences = [sequences[i] for i in subset.indices]
                return subset
            return sequences
        p, aug, loss = data_params(cfg), cfg.data.augment, cfg.loss
        settings = PairSettings(pairs_per_epoch=p.pairs_per_epoch, max_gap=p.max_gap, context=p.context,
                                min_size=p.min_size, max_aspect=p.max_aspect, min_cover=p.min_cover,
                                stretch=aug.stretch, shift=aug.shift)
        candidates = None
        if caps.embeds_candidate_boxes:
            candidates = (loss.positives, loss.negatives, loss.pos_iou, loss.neg_iou)
        return TrackingPairs(list(sequences), settings, mean=cfg.data.mean, std=cfg.data.std, augment=aug.enabled,
                             candidates=candidates)

    def collate(self, samples):
        if samples and isinstance(samples[0], dict):
            return torch.utils.data.default_collate(samples)
        return list(samples)  # evaluation: whole sequences, tracked one by one

    def to_device(self, batch, device, channels_last):
        if isinstance(batch, dict):
            return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return batch

    def batch_size_of(self, batch) -> int:
        return batch["search"].shape[0] if isinstance(batch, dict) else len(batch)

    # ---- model --------------------------------------------------------------------------------
    def build_model(self, train_set):
        cfg = self.cfg
        return create_model(cfg.model.name, weights=cfg.model.weights, **cfg.model.kwargs)

    def model_meta(self, dataset) -> dict:
        d = self.cfg.data
        return {"class_names": None, "input_size": [3, 255, 255], "mean": list(d.mean), "std": list(d.std)}

    # ---- training -----------------------------------------------------------------------------
    def one_forward_per_update(self) -> bool:
        # a model that embeds candidate boxes (SINT) embeds the query and the candidates in two forward calls
        return not capabilities(self.cfg.model.name).embeds_candidate_boxes

    def training_losses(self, model, batch, phase):
        cfg = self.cfg
        if capabilities(cfg.model.name).embeds_candidate_boxes:
            return self._sint_losses(model, batch)
        logits = model(batch["exemplar"], batch["search"])
        raw = _unwrap(model)
        labels = siamfc_labels(batch["search_box"], logits.shape[-1], raw.total_stride,
                               batch["search"].shape[-1], cfg.loss.radius_pos)
        loss = siamfc_logistic_loss(logits[:, 0].float(), labels)
        return {"loss": loss, "loss_logistic": loss}

    def _sint_losses(self, model, batch):
        cfg = self.cfg
        b = batch["exemplar"].shape[0]
        index = torch.arange(b, device=batch["exemplar"].device, dtype=torch.float32)
        query_rois = torch.cat([index[:, None], batch["exemplar_box"]], 1)
        cand = batch["candidates"]  # (B, K, 4)
        k = cand.shape[1]
        cand_rois = torch.cat([index.repeat_interleave(k)[:, None], cand.reshape(-1, 4)], 1)
        query = model(batch["exemplar"], query_rois)  # (B, D)
        candidates = model(batch["search"], cand_rois).reshape(b, k, -1)
        labels = batch["candidate_labels"].float()
        loss = contrastive_loss(query[:, None, :].expand_as(candidates), candidates, labels, cfg.loss.margin,
                                cfg.loss.form)
        with torch.no_grad():
            sim = (query[:, None, :] * candidates).sum(-1).float()
            cos_pos, cos_neg = masked_mean(sim, labels > 0.5), masked_mean(sim, labels < 0.5)
        return {"loss": loss, "loss_contrastive": loss, "cos_pos": cos_pos, "cos_neg": cos_neg}

    # ---- evaluation ---------------------------------------------------------------------------
    def new_accumulator(self, dataset):
        return TrackingAccumulator(self.cfg.eval.iou_convention)

    def eval_outputs(self, model, batch):
        cfg = self.cfg
        raw = _unwrap(model)
        device = next(raw.parameters()).device
        tracker = build_tracker(raw, capabilities(cfg.model.name).tracker_kind, cfg.eval.tracker, device=device, mean=cfg.data.mean,
                                std=cfg.data.std)
        results = []
        for seq in batch:
            frames = _FirstFrames(seq, cfg.eval.max_frames)
            track = track_sequence(tracker, frames, seq.boxes[0])
            n = len(frames)
            first = seq.load_frame(0)
            results.append(SequenceResult(
                name=seq.name, pred=track.boxes, gt=np.asarray(seq.boxes[:n], dtype=np.float64),
                cover=None if seq.cover is None else np.asarray(seq.cover[:n]),
                absent=None if seq.absent is None else np.asarray(seq.absent[:n]),
                times=track.times, image_size=(first.shape[1], first.shape[0])))
        model.eval()  # the tracker switched the raw module to eval already; keep the wrapper in step
        return results

    def scalar_metrics(self, metrics: dict) -> dict[str, float]:
        keys = ["ao", "sr50", "sr75", "success_auc", "precision_20", "fps"]
        return {k: float(metrics[k]) for k in keys if metrics.get(k) is not None}

    def write_report(self, out_path: Path, *, metrics, dataset, accumulator, model, model_summary, log_records,
                     run_info, title) -> Path:
        e = self.cfg.eval
        showcase = select_showcase(metrics, accumulator.results, dataset, e.showcase_sequences, e.showcase_frames)
        return build_tracking_report(out_path, title=title, metrics=metrics, showcase=showcase,
                                     log_records=log_records, model_summary=model_summary, run_info=run_info)

    # ---- benchmarks ---------------------------------------------------------------------------
    def synthetic_batch(self, batch_size, image_size, device, train=True):
        """train: `batch_size` (exemplar, search) pairs at TrackingPairs' crop sizes (127 / 255 px, whatever
        `image_size`): a square target of half the exemplar's side centred in the exemplar and shifted by up to
        data.augment.shift px in the search crop, plus SINT's candidate boxes. Not train: one sequence of
        `batch_size` frames of image_size x image_size (a square moving over noise), the item evaluation tracks
        frame by frame."""
        cfg, rng = self.cfg, np.random.default_rng(0)
        if not train:
            return [_SyntheticSequence(batch_size, image_size, rng)]
        st, g, b = PairSettings(), torch.Generator().manual_seed(0), batch_size
        side = st.exemplar_size / 2  # SiamFC's context crop is twice a square target's side
        z = (st.exemplar_size - side) / 2
        centre = st.search_size / 2 + rng.uniform(-cfg.data.augment.shift, cfg.data.augment.shift, (b, 2))
        search_box = torch.from_numpy(np.concatenate([centre - side / 2, centre + side / 2], 1)).float()
        batch = {"exemplar": torch.randn(b, 3, st.exemplar_size, st.exemplar_size, generator=g),
                 "search": torch.randn(b, 3, st.search_size, st.search_size, generator=g),
                 "exemplar_box": torch.tensor([z, z, z + side, z + side]).repeat(b, 1), "search_box": search_box}
        if capabilities(cfg.model.name).embeds_candidate_boxes:
            loss = cfg.loss
            drawn = [sample_candidates(box.numpy(), loss.positives, loss.negatives, loss.pos_iou, loss.neg_iou,
                                       st.search_size, rng) for box in search_box]
            batch["candidates"] = torch.from_numpy(np.stack([boxes for boxes, _ in drawn]))
            batch["candidate_labels"] = torch.from_numpy(np.stack([labels for _, labels in drawn]))
        return self.to_device(batch, torch.device(device), channels_last=False)


class _FirstFrames:
    """The first `limit` frames of a sequence (all when limit is None), loadable one at a time."""

    def __init__(self, seq, limit: int | None):
        self.seq, self.n = seq, len(seq) if not limit else min(limit, len(seq))

    def __len__(self) -> int:
        return self.n

    def load_frame(self, i: int) -> np.ndarray:
        return self.seq.load_frame(i)


def select_showcase(metrics: dict, results: dict, dataset, per_side: int, frames_per_sequence: int) -> list[dict]:
    """Evenly spaced frames of the `per_side` best and worst sequences by AO, with both boxes."""
    rows = [r for r in metrics.get("per_sequence", []) if r.get("ao") is not None]
    if not rows or per_side <= 0 or frames_per_sequence <= 0:
        return []
    rows.sort(key=lambda r: r["ao"])
    chosen = [("best", r) for r in rows[::-1][:per_side]]
    chosen += [("worst", r) for r in rows[:per_side] if r["name"] not in {c[1]["name"] for c in chosen}]
    by_name = {res.name: (index, res) for index, res in results.items()}
    showcase = []
    for label, row in chosen:
        index, res = by_name[row["name"]]
        seq = dataset[index]
        n = len(res.pred)
        picks = np.unique(np.linspace(0, n - 1, min(frames_per_sequence, n)).round().astype(int))
        frames = []
        for i in picks:
            gt = res.gt[i]
            frames.append((int(i), seq.load_frame(int(i)), gt if np.isfinite(gt).all() else None, res.pred[i]))
        showcase.append({"name": row["name"], "label": label, "ao": row["ao"], "frames": frames})
    return showcase


class _SyntheticSequence:
    """A sequence held in memory (TrackingTask.synthetic_batch): a bright square moving diagonally over a noise
    background, visible in every frame, with its ground-truth boxes (x, y, w, h)."""

    def __init__(self, frames: int, size: int, rng: np.random.Generator):
        self.name, self.cover, self.absent = "synthetic", None, None
        side = max(4.0, size / 6)
        xy = (0.2 + 0.4 * np.linspace(0, 1, frames))[:, None] * (size - side)
        self.boxes = np.concatenate([xy, xy, np.full((frames, 2), side)], 1)
        background = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        self.frames = []
        for x, y, w, h in self.boxes.round().astype(int):
            frame = background.copy()
            frame[y:y + h, x:x + w] = (255, 64, 0)
            self.frames.append(frame)

    def __len__(self) -> int:
        return len(self.frames)

    def load_frame(self, i: int) -> np.ndarray:
        return self.frames[i]
