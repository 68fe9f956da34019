"""Semantic segmentation as the shared engine sees it: Pascal VOC or image/mask folders with joint
transforms.v2 augmentation, per-pixel cross-entropy (plus the auxiliary head's), the FCN paper's four
metrics from a confusion matrix, optional dense-CRF refinement and sliding-window inference, and the
segmentation report."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from visionzoo.datasets.camvid import CamVidSegmentation, camvid_root
from visionzoo.datasets.registry import get_dataset, register_dataset, typed_params
from visionzoo.datasets.segmentation import (
    MaskFolderSegmentation,
    VOCSegmentation,
    build_segmentation_transforms,
    segmentation_collate,
)
from visionzoo.datasets.voc import voc_year_root
from visionzoo.inference.crf import DenseCRF
from visionzoo.inference.sliding_window import predict_logits
from visionzoo.tasks.base import Accumulator, Task, check_trained_classes, images_to_device, model_num_classes
from visionzoo.tasks.segmentation.metrics import ConfusionMeter
from visionzoo.tasks.segmentation.report import build_segmentation_report


@dataclass
class SegmentationAugment:
    enabled: bool = True
    crop_size: Optional[int] = None  # square training crop (padded with ignore); default data.input_size
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])  # random resize factor
    hflip: float = 0.5
    photometric: bool = False  # RandomPhotometricDistort


@dataclass
class SegmentationLoss:
    aux_weight: float = 0.5  # weight of the auxiliary head's loss (torchvision's FCN recipe)
    class_weights: Optional[list[float]] = None  # per-class cross-entropy weights
    label_smoothing: float = 0.0


@dataclass
class SegmentationEval:
    crf: bool = False  # also evaluate with dense-CRF refinement (the report shows both)
    crf_params: dict = field(default_factory=dict)  # keyword arguments of DenseCRF
    sliding_window: Optional[int] = None  # window side for images larger than it; None = whole image
    window_overlap: float = 0.3333333333333333
    examples_in_report: int = 6
    worst_in_report: int = 6


@dataclass
class SegmentationParams:
    """`data.params` every segmentation data set reads (each data set's own class below adds its keys); alone,
    the keys of a config whose data set is not registered (a benchmark's synthetic batches)."""

    # class names (index = mask value); default: root/classes.txt (voc, folder), else VOC's 21 or CamVid's 11
    classes: Optional[list[str]] = None
    base_size: Optional[int] = None  # resize the image side to this before augmentation / at evaluation


@dataclass
class VOCSegmentationParams(SegmentationParams):
    """`data.params` of segmentation's `voc`."""

    year: Union[int, str, None] = None  # root holds VOC<year>/


@dataclass
class MaskFolderParams(SegmentationParams):
    """`data.params` of `folder`."""

    image_dir: str = "images/{split}"  # images, relative to data.root
    mask_dir: str = "masks/{split}"  # masks (same stem, .png), relative to data.root


@dataclass
class CamVidParams(SegmentationParams):
    """`data.params` of `camvid` (the shared keys only)."""


def data_params(cfg) -> SegmentationParams:
    """`data.params` typed by the config's data set (VOCSegmentationParams, ...), or by SegmentationParams, the
    keys every segmentation data set reads, for a config without a registered data set (a benchmark's batches)."""
    return typed_params("segmentation", cfg.data, SegmentationParams)


def _reader_options(cfg, params: SegmentationParams, transform) -> dict:
    return {"transform": transform, "classes": params.classes, "on_corrupt": cfg.data.on_corrupt,
            "max_image_pixels": cfg.data.max_image_pixels}


def _voc_has_split(root: Path, params: VOCSegmentationParams, split: str) -> bool:
    return (voc_year_root(root, params.year) / "ImageSets" / "Segmentation" / f"{split}.txt").is_file()


@register_dataset("voc", task="segmentation", params=VOCSegmentationParams, has_split=_voc_has_split)
def _voc(cfg, split, params: VOCSegmentationParams, transform):
    """Pascal VOC segmentation layout"""
    return VOCSegmentation(cfg.data.root, split=split, year=params.year, **_reader_options(cfg, params, transform))


def _folder_has_split(root: Path, params: MaskFolderParams, split: str) -> bool:
    return (root / params.image_dir.format(split=split)).is_dir()


@register_dataset("folder", task="segmentation", params=MaskFolderParams, has_split=_folder_has_split)
def _folder(cfg, split, params: MaskFolderParams, transform):
    """images and same-stem PNG masks in two folders"""
    return MaskFolderSegmentation(cfg.data.root, split, image_dir=params.image_dir, mask_dir=params.mask_dir,
                                  **_reader_options(cfg, params, transform))


def _camvid_has_split(root: Path, params: CamVidParams, split: str) -> bool:
    return (camvid_root(root) / split).is_dir()


@register_dataset("camvid", task="segmentation", params=CamVidParams, has_split=_camvid_has_split)
def _camvid(cfg, split, params: CamVidParams, transform):
    """CamVid (SegNet's 11-class layout)"""
    return CamVidSegmentation(cfg.data.root, split, **_reader_options(cfg, params, transform))




def build_segmentation_dataset(cfg, split: str, train: bool):
    d, aug = cfg.data, cfg.data.augment
    entry = get_dataset("segmentation", d.dataset)
    params = entry.parse_params(d.params)
    if not d.root:
        raise ValueError(f"data.root is required for data.dataset = {d.dataset}")
    if train and aug.enabled:
        transform = build_segmentation_transforms(
            True, crop_size=aug.crop_size or d.input_size, scale_range=tuple(aug.scale_range), hflip=aug.hflip,
            mean=d.mean, std=d.std, base_size=params.base_size, photometric=aug.photometric)
    else:
        transform = build_segmentation_transforms(False, crop_size=None, mean=d.mean, std=d.std,
                                                  base_size=params.base_size)
    return entry.builder(cfg, split, params, transform)


def denormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised images back to the 0..255 scale the CRF's colour kernel works on."""
    mean = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * std + mean).clamp(0, 1) * 255.0


def build_crf(params: dict):
    """DenseCRF from eval.crf_params (it holds no tensors, so building one per batch costs nothing)."""
    try:
        return DenseCRF(**params)
    except TypeError as e:
        raise ValueError(f"eval.crf_params: {e}") from None


class _WorstImages:
    """The n images with the lowest IoU seen so far, with their predictions (a bounded heap, so a
    large validation set never holds every prediction in memory)."""

    def __init__(self, n: int):
        self.n, self.heap = n, []  # (-iou, index, prediction): the root is the best of the kept

    def wants(self, iou: float) -> bool:
        """Whether an image of this IoU would be kept (so its prediction is worth copying)."""
        if self.n <= 0 or iou != iou:  # NaN: an image with nothing to score
            return False
        return len(self.heap) < self.n or -iou > self.heap[0][0]

    def offer(self, iou: float, index: int, pred) -> None:
        if not self.wants(iou):
            return
        item = (-iou, index, pred)
        if len(self.heap) < self.n:
            heapq.heappush(self.heap, item)
        elif -iou > self.heap[0][0]:
            heapq.heapreplace(self.heap, item)

    def items(self) -> list[tuple[float, int, np.ndarray]]:
        return sorted(((-neg, i, p) for neg, i, p in self.heap), key=lambda t: (t[0], t[1]))


class SegmentationAccumulator(Accumulator):
    """Confusion matrices (without and with CRF), per-image IoU, and the predictions the report shows."""

    def __init__(self, num_classes: int, class_names, with_crf: bool, keep_examples: int, keep_worst: int):
        self.variants = ["plain", "crf"] if with_crf else ["plain"]
        self.meters = {v: ConfusionMeter(num_classes, class_names) for v in self.variants}
        self.keep_examples = keep_examples
        self.examples: dict[int, dict[str, np.ndarray]] = {}  # index -> variant -> prediction
        self.worst = {v: _WorstImages(keep_worst) for v in self.variants}

    def update(self, batch, outputs, indices) -> None:
        _, masks, sizes = batch
        masks = masks.cpu()
        for variant in self.variants:
            preds = outputs[variant].cpu()
            ious = self.meters[variant].update(preds, masks, indices=list(indices)).tolist()
            for k, (index, iou) in enumerate(zip(map(int, indices), ious)):
                example = len(self.examples) < self.keep_examples or index in self.examples
                if not (example or self.worst[variant].wants(iou)):
                    continue  # most images: nothing to keep, so no copy of the prediction
                h, w = sizes[k]
                pred = preds[k, :h, :w].to(torch.uint8).numpy()
                self.worst[variant].offer(iou, index, pred)
                if example:
                    self.examples.setdefault(index, {})[variant] = pred

    def state_tensors(self):
        return [self.meters[v].state_tensors()[0] for v in self.variants]

    def load_state_tensors(self, tensors) -> None:
        for v, t in zip(self.variants, tensors):
            self.meters[v].load_state_tensors([t])

    def synchronize(self) -> None:
        """Sum the confusion matrices; gather per-image IoUs and the worst images from every rank."""
        super().synchronize()
        gathered = [None] * torch.distributed.get_world_size()
        local = {v: (self.meters[v].per_image_iou, self.worst[v].items()) for v in self.variants}
        torch.distributed.all_gather_object(gathered, local)
        for v in self.variants:
            worst = _WorstImages(self.worst[v].n)
            for rank_state in gathered:
                per_image, items = rank_state[v]
                self.meters[v].per_image_iou.update(per_image)
                for iou, index, pred in items:
                    worst.offer(iou, index, pred)
            self.worst[v] = worst

    def compute(self) -> dict:
        metrics = self.meters["plain"].compute()
        if "crf" in self.variants:
            crf = self.meters["crf"].compute()
            for key in ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou", "per_class_iou"):
                metrics[f"crf_{key}"] = crf[key]
            if metrics.get("mean_iou") is not None and crf.get("mean_iou") is not None:
                metrics["crf_gain_mean_iou"] = crf["mean_iou"] - metrics["mean_iou"]
        return metrics


class SegmentationTask(Task):
    name = "segmentation"
    variable_input_size = True  # images keep their own sizes: cuDNN autotuning off by default
    loss_config = SegmentationLoss
    eval_config = SegmentationEval
    augment_config = SegmentationAugment
    primary_metric = "mean_iou"
    higher_is_better = True

    # ---- data ---------------------------------------------------------------------------------
    def build_dataset(self, split, train, class_names=None):
        ds = build_segmentation_dataset(self.cfg, split, train)
        check_trained_classes(ds, class_names, split, self.cfg.data.root)
        return ds

    def collate(self, samples):
        """(images, masks, sizes): padded to the batch's largest image (masks with the ignore value);
        `sizes` are the unpadded (H, W), so the CRF and the report see only real pixels."""
        images, masks = segmentation_collate(samples)
        return images, masks, [tuple(int(s) for s in image.shape[-2:]) for image, _ in samples]

    def to_device(self, batch, device, channels_last):
        images, masks, sizes = batch
        return images_to_device(images, device, channels_last), masks.to(device, non_blocking=True), sizes

    def batch_size_of(self, batch) -> int:
        return batch[0].shape[0]

    # ---- model --------------------------------------------------------------------------------
    def model_meta(self, dataset) -> dict:
        d = self.cfg.data
        return {
            "class_names": list(dataset.classes) if dataset is not None else None,
            "input_size": [3, d.input_size, d.input_size],
            "mean": list(d.mean),
            "std": list(d.std),
            "ignore_index": getattr(dataset, "ignore_index", 255),
        }

    # ---- training -----------------------------------------------------------------------------
    def _class_weights(self, values: tuple[float, ...], device: torch.device) -> torch.Tensor:
        """loss.class_weights as a tensor on `device`, built once: a list -> GPU tensor copy every step would be
        a blocking host-to-device transfer."""
        cache = self.__dict__.setdefault("_class_weight_cache", {})
        key = (values, str(device))
        if key not in cache:
            cache[key] = torch.tensor(values, dtype=torch.float32, device=device)
        return cache[key]

    def training_losses(self, model, batch, phase):
        cfg = self.cfg
        images, masks, _ = batch
        out = model(images)
        if not isinstance(out, dict):
            out = {"out": out}
        weight = None
        if cfg.loss.class_weights is not None:
            n = out["out"].shape[1]
            if len(cfg.loss.class_weights) != n:
                raise ValueError(f"loss.class_weights has {len(cfg.loss.class_weights)} values, but the model "
                                 f"predicts {n} classes")
            weight = self._class_weights(tuple(cfg.loss.class_weights), images.device)
        losses = {}
        for name, logits in out.items():
            losses[f"loss_{name}"] = F.cross_entropy(logits.float(), masks, weight=weight, ignore_index=255,
                                                     label_smoothing=cfg.loss.label_smoothing)
        total = losses["loss_out"] + cfg.loss.aux_weight * losses.get("loss_aux", 0.0)
        return {"loss": total, **losses}

    # ---- evaluation ---------------------------------------------------------------------------
    def new_accumulator(self, dataset):
        names = list(dataset.classes)
        e = self.cfg.eval
        return SegmentationAccumulator(len(names), names, e.crf, e.examples_in_report, e.worst_in_report)

    def eval_outputs(self, model, batch):
        cfg = self.cfg
        images, masks, sizes = batch
        logits = predict_logits(model, images, window=cfg.eval.sliding_window, overlap=cfg.eval.window_overlap)
        logits = logits.float()
        outputs = {"plain": logits.argmax(1)}
        if cfg.eval.crf:
            valid = torch.zeros(masks.shape, dtype=torch.bool, device=images.device)
            for k, (h, w) in enumerate(sizes):
                valid[k, :h, :w] = True
            rgb = denormalize(images.float(), cfg.data.mean, cfg.data.std)
            outputs["crf"] = build_crf(cfg.eval.crf_params)(logits, rgb, valid=valid).argmax(1)
        return outputs

    def scalar_metrics(self, metrics: dict) -> dict[str, float]:
        keys = ["pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou",
                "crf_pixel_accuracy", "crf_mean_accuracy", "crf_mean_iou", "crf_fw_iou"]
        return {k: float(metrics[k]) for k in keys if metrics.get(k) is not None}

    def write_report(self, out_path: Path, *, metrics, dataset, accumulator, model, model_summary, log_records,
                     run_info, title) -> Path:
        def load(index):
            return dataset.load_image(index), dataset.load_mask(index)

        examples = [(index, *load(index), preds) for index, preds in sorted(accumulator.examples.items())]
        worst = {v: [(iou, index, *load(index), pred) for iou, index, pred in w.items()]
                 for v, w in accumulator.worst.items()}
        return build_segmentation_report(
            out_path, title=title, metrics=metrics, class_names=list(dataset.classes), examples=examples,
            worst=worst, log_records=log_records, model_summary=model_summary, run_info=run_info)

    # ---- benchmarks ---------------------------------------------------------------------------
    def synthetic_batch(self, batch_size, image_size, device, train=True):
        """Normalised random images, masks over the model's classes with a tenth of the pixels ignored (255),
        and the unpadded sizes (training and evaluation alike)."""
        g, s = torch.Generator().manual_seed(0), image_size
        images = torch.randn(batch_size, 3, s, s, generator=g)
        masks = torch.randint(0, model_num_classes(self.cfg), (batch_size, s, s), generator=g)
        masks[torch.rand(batch_size, s, s, generator=g) < 0.1] = 255
        return images.to(device), masks.to(device), [(s, s)] * batch_size
