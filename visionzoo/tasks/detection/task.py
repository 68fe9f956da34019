"""Detection and instance segmentation as the shared engine sees it: COCO JSON or Pascal VOC data with
joint transforms.v2 augmentation, the detectors' own multi-task losses, COCO box/mask AP through
pycocotools (and VOC07 AP50 as an option), and the detection report."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from pycocotools.coco import COCO
from torch import nn

from visionzoo.datasets.coco import CocoDetection
from visionzoo.datasets.detection import build_detection_transforms, detection_collate
from visionzoo.datasets.pennfudan import PennFudanDetection
from visionzoo.datasets.registry import get_dataset, register_dataset, typed_params
from visionzoo.datasets.voc import VOCDetection, voc_year_root
from visionzoo.datasets.yolo import YOLODetection
from visionzoo.models.utils import unwrap
from visionzoo.proposals import ProposalsFile, SelectiveSearch
from visionzoo.registry import capabilities
from visionzoo.tasks.base import Accumulator, Task, check_trained_classes, model_num_classes
from visionzoo.tasks.detection.metrics import CocoEvaluator, _quiet, voc07_ap50
from visionzoo.tasks.detection.report import build_detection_report, measured_model_summary


@dataclass
class DetectionAugment:
    enabled: bool = True
    hflip: float = 0.5
    photometric: bool = False  # RandomPhotometricDistort
    scale_jitter: Optional[list[float]] = None  # [lo, hi]: large-scale jitter, needs jitter_size
    jitter_size: Optional[int] = None
    min_box_size: float = 1.0  # boxes smaller than this (px) after augmentation are dropped


@dataclass
class DetectionLoss:
    # Multipliers of the detector's loss terms (loss_classifier, loss_box_reg, loss_objectness,
    # loss_rpn_box_reg, loss_mask); unnamed terms count once.
    weights: dict = field(default_factory=dict)


@dataclass
class DetectionEval:
    iou_types: Optional[list[str]] = None  # default: bbox, plus segm for mask models
    voc07: bool = False  # also the Pascal VOC07 11-point AP50
    mask_threshold: float = 0.5
    examples_in_report: int = 8
    report_score_threshold: float = 0.5


@dataclass
class DetectionParams:
    """`data.params` every detection data set reads (each data set's own class below adds its keys); alone, the
    keys of a config whose data set is not registered (a benchmark's synthetic batches)."""

    masks: Optional[bool] = None  # load instance masks (default: when the model predicts masks)
    proposals: str = "selective_search"  # Fast R-CNN: "selective_search" or a proposals file pattern
    proposal_top_k_train: int = 2000
    proposal_top_k_test: int = 1000
    # keyword arguments of visionzoo.proposals.SelectiveSearch
    selective_search: dict = field(default_factory=lambda: {"mode": "fast"})
    proposal_cache_dir: str = ".cache/proposals"  # relative to data.root unless absolute
    proposal_workers: int = 0


@dataclass
class COCOParams(DetectionParams):
    """`data.params` of `coco`."""

    image_dir: str = "images/{split}"  # image folder, relative to data.root
    ann_file: str = "annotations/instances_{split}.json"  # annotation file, relative to data.root


@dataclass
class VOCDetectionParams(DetectionParams):
    """`data.params` of detection's `voc`."""

    year: Union[int, str, None] = None  # root holds VOC<year>/
    classes: Optional[list[str]] = None  # class names in label order (default VOC's 20, or root/classes.txt)


@dataclass
class PennFudanParams(DetectionParams):
    """`data.params` of `pennfudan`."""

    split_seed: int = 1  # seed of the split permutation (1: the torchvision tutorial's test images)
    test_size: int = 50  # images held out for test (the last of the permutation)
    val_size: int = 20  # images before them held out for validation


@dataclass
class YOLOParams(DetectionParams):
    """`data.params` of `yolo`."""

    image_dir: str = "images/{split}"  # image folder, relative to data.root
    label_dir: str = "labels/{split}"  # label folder (one .txt per image), relative to data.root
    classes: Optional[list[str]] = None  # class names, class 0 first (default: root/data.yaml, else root/classes.txt)


def data_params(cfg) -> DetectionParams:
    """`data.params` typed by the config's data set (COCOParams, ...), or by DetectionParams, the keys every
    detection data set reads, for a config without a registered data set (a benchmark's synthetic batches)."""
    return typed_params("detection", cfg.data, DetectionParams)


def model_predicts_masks(name: str) -> bool:
    return capabilities(name).predicts_masks


def model_needs_proposals(model: nn.Module) -> bool:
    return bool(getattr(unwrap(model), "needs_proposals", False))


def _attach_proposals(dataset, cfg, params: DetectionParams, split: str, train: bool, progress: bool = True) -> None:
    spec = params.proposals
    root = Path(cfg.data.root)
    if spec == "selective_search":
        cache = Path(params.proposal_cache_dir)
        source = SelectiveSearch(cache_dir=cache if cache.is_absolute() else root / cache, **params.selective_search)
        source.precompute(dataset, progress=progress, workers=int(params.proposal_workers))
    else:
        path = Path(str(spec).format(split=split))
        source = ProposalsFile(path if path.is_absolute() else root / path)
    dataset.proposals = source
    dataset.proposal_top_k = int(params.proposal_top_k_train if train else params.proposal_top_k_test)


def _reader_options(cfg) -> dict:
    return {"on_corrupt": cfg.data.on_corrupt, "max_image_pixels": cfg.data.max_image_pixels}


def _coco_has_split(root: Path, params: COCOParams, split: str) -> bool:
    return (root / params.ann_file.format(split=split)).is_file()


@register_dataset("coco", task="detection", params=COCOParams, has_split=_coco_has_split)
def _coco(cfg, split, params: COCOParams, transform, masks: bool, train: bool):
    """COCO JSON annotations (boxes and instance masks)"""
    root = Path(cfg.data.root)
    return CocoDetection(root / params.image_dir.format(split=split), root / params.ann_file.format(split=split),
                         transform=transform, masks=masks, **_reader_options(cfg))


def _voc_has_split(root: Path, params: VOCDetectionParams, split: str) -> bool:
    return (voc_year_root(root, params.year) / "ImageSets" / "Main" / f"{split}.txt").is_file()


@register_dataset("voc", task="detection", params=VOCDetectionParams, has_split=_voc_has_split)
def _voc(cfg, split, params: VOCDetectionParams, transform, masks: bool, train: bool):
    """Pascal VOC layout (boxes; difficult objects kept for evaluation)"""
    if masks:
        raise ValueError("data.dataset = voc has no instance masks; use a box-only model (faster_rcnn_*, "
                         "fast_rcnn_*) or COCO-format data")
    return VOCDetection(cfg.data.root, split=split, year=params.year, transform=transform, keep_difficult=not train,
                        classes=params.classes, **_reader_options(cfg))


def _any_split(root: Path, params: DetectionParams, split: str) -> bool:
    return True  # the splits are carved from one folder by a seeded permutation


@register_dataset("pennfudan", task="detection", params=PennFudanParams, has_split=_any_split)
def _pennfudan(cfg, split, params: PennFudanParams, transform, masks: bool, train: bool):
    """Penn-Fudan pedestrians (boxes and instance masks)"""
    return PennFudanDetection(cfg.data.root, split=split, transform=transform, masks=masks, seed=params.split_seed,
                              test_size=params.test_size, val_size=params.val_size, **_reader_options(cfg))


def _yolo_has_split(root: Path, params: YOLOParams, split: str) -> bool:
    return (root / params.image_dir.format(split=split)).is_dir()


@register_dataset("yolo", task="detection", params=YOLOParams, has_split=_yolo_has_split)
def _yolo(cfg, split, params: YOLOParams, transform, masks: bool, train: bool):
    """YOLO text labels (boxes)"""
    if masks:
        raise ValueError("data.dataset = yolo has boxes only; use a box-only model (faster_rcnn_*)")
    return YOLODetection(cfg.data.root, split=split, image_dir=params.image_dir, label_dir=params.label_dir,
                         classes=params.classes, transform=transform, **_reader_options(cfg))




def build_detection_dataset(cfg, split: str, train: bool, masks: bool | None = None, proposals: bool = False,
                            progress: bool = True):
    d, aug = cfg.data, cfg.data.augment
    entry = get_dataset("detection", d.dataset)
    params = entry.parse_params(d.params)
    if not d.root:
        raise ValueError(f"data.root is required for data.dataset = {d.dataset}")
    if train and aug.enabled:
        transform = build_detection_transforms(True, hflip=aug.hflip, photometric=aug.photometric,
                                               scale_jitter=aug.scale_jitter, jitter_size=aug.jitter_size,
                                               min_box_size=aug.min_box_size)
    else:
        transform = build_detection_transforms(False, min_box_size=aug.min_box_size)
    want_masks = model_predicts_masks(cfg.model.name) if params.masks is None else bool(params.masks)
    if masks is not None:
        want_masks = masks
    ds = entry.builder(cfg, split, params, transform, want_masks, train)
    if proposals:
        _attach_proposals(ds, cfg, params, split, train, progress)
    return ds


def coco_ground_truth(dataset):
    """The dataset's annotations as a pycocotools COCO object (COCO data: its own; VOC: converted, with
    difficult objects as iscrowd regions so that they count neither as hits nor misses)."""
    if hasattr(dataset, "coco"):
        return dataset.coco
    images, anns = [], []
    for i in range(len(dataset)):
        h, w = dataset.get_height_and_width(i)
        images.append({"id": i, "width": int(w), "height": int(h), "file_name": str(dataset.image_path(i))})
        a = dataset.get_annotation(i)
        for box, label, difficult in zip(a["boxes"], a["labels"], a["difficult"]):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "iscrowd": int(difficult),
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    cats = [{"id": k, "name": n} for k, n in enumerate(dataset.classes) if k > 0]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": cats}
    with _quiet():  # pycocotools prints while indexing
        coco.createIndex()
    return coco


def _cpu_prediction(pred: dict) -> dict:
    out = {k: v.detach().float().cpu() if k != "labels" else v.detach().cpu() for k, v in pred.items()}
    if "masks" in out:  # (N, 1, H, W) probabilities: keep them small
        out["masks"] = out["masks"].to(torch.float16)
    return out


class DetectionAccumulator(Accumulator):
    """COCO evaluation of every image seen, plus what the report and VOC07 need (kept on the CPU)."""

    def __init__(self, dataset, iou_types, voc07: bool, mask_threshold: float, keep_examples: int):
        label_to_cat_id = getattr(dataset, "label_to_cat_id", None)
        if label_to_cat_id is None:  # VOC: the converted ground truth uses the labels as category ids
            label_to_cat_id = {k: k for k in range(1, len(dataset.classes))}
        self.dataset = dataset
        self.coco = CocoEvaluator(coco_ground_truth(dataset), iou_types=iou_types, label_to_cat_id=label_to_cat_id,
                                  mask_threshold=mask_threshold)
        self.voc07 = voc07
        self.keep_examples = keep_examples
        self.examples: dict[int, dict] = {}  # dataset index -> prediction
        self.voc_predictions: dict[int, dict] = {}

    def _coco_image_id(self, index: int) -> int:
        return int(self.dataset.ids[index]) if hasattr(self.dataset, "coco") else int(index)

    def update(self, batch, outputs, indices) -> None:
        preds = [_cpu_prediction(p) for p in outputs]
        self.coco.update(preds, [self._coco_image_id(i) for i in indices])
        for i, p in zip(indices, preds):
            if len(self.examples) < self.keep_examples or i in self.examples:
                self.examples[int(i)] = p
            if self.voc07:
                self.voc_predictions[int(i)] = {k: p[k] for k in ("boxes", "scores", "labels")}

    def synchronize(self) -> None:
        """Gather every rank's detections into every rank's evaluator (COCO evaluation is not a sum)."""
        gathered = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, (self.coco.results(), self.coco.image_ids, self.voc_predictions))
        self.coco.reset()
        for results, image_ids, voc in gathered:
            self.coco.extend(results, image_ids)
            self.voc_predictions.update(voc)

    def compute(self) -> dict:
        metrics = self.coco.compute()
        if self.voc07:
            order = sorted(self.voc_predictions)
            targets = []
            for i in order:
                if hasattr(self.dataset, "get_annotation"):
                    targets.append(self.dataset.get_annotation(i))
                else:
                    t = self.dataset.load_target(i)
                    targets.append({"boxes": t["boxes"], "labels": t["labels"],
                                    "difficult": t["iscrowd"].bool()})
            voc = voc07_ap50([self.voc_predictions[i] for i in order], targets,
                             class_names=list(self.dataset.classes))
            metrics["voc07_mAP"] = voc["mAP"]
            metrics["voc07_per_class"] = {k: v for k, v in voc["per_class"].items() if k != "__background__"}
        return metrics


class DetectionTask(Task):
    name = "detection"
    variable_input_size = True  # images keep their own sizes: cuDNN autotuning off by default
    loss_config = DetectionLoss
    eval_config = DetectionEval
    augment_config = DetectionAugment
    primary_metric = "bbox_AP"
    higher_is_better = True

    # ---- data ---------------------------------------------------------------------------------
    def build_dataset(self, split, train, class_names=None):
        cfg = self.cfg
        ds = build_detection_dataset(cfg, split, train, proposals=capabilities(cfg.model.name).needs_proposals)
        check_trained_classes(ds, class_names, split, cfg.data.root, skip=1)
        return ds

    def collate(self, samples):
        return detection_collate(samples)

    def to_device(self, batch, device, channels_last):
        images, targets = batch
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [{k: (v.as_subclass(torch.Tensor).to(device, non_blocking=True) if torch.is_tensor(v) else v)
                    for k, v in t.items()} for t in targets]
        return images, targets

    def batch_size_of(self, batch) -> int:
        return len(batch[0])

    # ---- model --------------------------------------------------------------------------------
    def model_meta(self, dataset) -> dict:
        cfg = self.cfg
        kwargs = cfg.model.kwargs
        return {
            "class_names": list(dataset.classes) if dataset is not None else None,
            "min_size": kwargs.get("min_size"),
            "max_size": kwargs.get("max_size"),
            "masks": model_predicts_masks(cfg.model.name),
        }

    # ---- training -----------------------------------------------------------------------------
    @staticmethod
    def _forward(model, images, targets=None, with_targets=True):
        if model_needs_proposals(model):
            proposals = [t["proposals"] for t in targets]
            return model(images, targets if with_targets else None, proposals=proposals)
        return model(images, targets) if with_targets else model(images)

    def training_losses(self, model, batch, phase):
        cfg = self.cfg
        images, targets = batch
        losses = self._forward(model, images, targets)
        weights = cfg.loss.weights
        unknown = [k for k in weights if k not in losses]
        if unknown:
            raise ValueError(f"loss.weights names {unknown}, but {cfg.model.name} has the loss terms {sorted(losses)}")
        total = sum(float(weights.get(k, 1.0)) * v for k, v in losses.items())
        return {"loss": total, **losses}

    # ---- evaluation ---------------------------------------------------------------------------
    def iou_types(self) -> list[str]:
        cfg = self.cfg
        if cfg.eval.iou_types:
            return list(cfg.eval.iou_types)
        return ["bbox", "segm"] if model_predicts_masks(cfg.model.name) else ["bbox"]

    def new_accumulator(self, dataset):
        e = self.cfg.eval
        return DetectionAccumulator(dataset, self.iou_types(), e.voc07, e.mask_threshold, e.examples_in_report)

    def eval_outputs(self, model, batch):
        images, targets = batch
        return self._forward(model, images, targets, with_targets=False)

    def scalar_metrics(self, metrics: dict) -> dict[str, float]:
        out = {}
        for iou_type in metrics.get("iou_types", []):
            for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"):
                key = f"{iou_type}_{name}"
                if key in metrics:
                    out[key] = float(metrics[key])
        if "voc07_mAP" in metrics:
            out["voc07_mAP"] = float(metrics["voc07_mAP"])
        return out

    def write_report(self, out_path: Path, *, metrics, dataset, accumulator, model, model_summary, log_records,
                     run_info, title) -> Path:
        names = list(dataset.classes)
        if len(dataset):  # the detector's own resize and its GFLOPs, on an evaluated image
            model_summary = measured_model_summary(model, dataset[min(accumulator.examples, default=0)],
                                                   model_summary)
        examples = []
        for index, pred in sorted(accumulator.examples.items()):
            image = dataset.load_image(index)
            target = dataset.load_target(index)
            gt = {"boxes": np.asarray(target["boxes"]), "labels": [names[int(k)] for k in target["labels"]],
                  "image_id": target["image_id"]}
            if "masks" in target:
                gt["masks"] = np.asarray(target["masks"])
            shown = {"boxes": pred["boxes"].numpy(), "labels": [names[int(k)] for k in pred["labels"]],
                     "scores": pred["scores"].numpy()}
            if "masks" in pred:
                shown["masks"] = pred["masks"].float().numpy()
            examples.append((image, gt, shown))
        return build_detection_report(out_path, title=title, metrics=metrics, class_names=names[1:],
                                      examples=examples, log_records=log_records, model_summary=model_summary,
                                      run_info=run_info, score_threshold=self.cfg.eval.report_score_threshold)

    # ---- benchmarks ---------------------------------------------------------------------------
    def synthetic_batch(self, batch_size, image_size, device, train=True):
        """Square images in 0..1 with three boxes each (labels over the model's classes; for Mask R-CNN,
        instance masks filling the boxes). Fast R-CNN also gets `proposals`, as many as
        data.params.proposal_top_k_train / _test: half jittered copies of the boxes, half anywhere."""
        cfg, g, s = self.cfg, torch.Generator().manual_seed(0), image_size
        num_classes = model_num_classes(cfg)
        caps = capabilities(cfg.model.name)
        params = data_params(cfg)
        top_k = params.proposal_top_k_train if train else params.proposal_top_k_test
        images, targets = [], []
        for _ in range(batch_size):
            xy = torch.rand(3, 2, generator=g) * 0.6 * s
            boxes = torch.cat([xy, (xy + (0.15 + 0.25 * torch.rand(3, 2, generator=g)) * s).clamp(max=s)], 1)
            target = {"boxes": boxes, "labels": torch.randint(1, num_classes, (3,), generator=g)}
            if caps.predicts_masks:
                target["masks"] = torch.zeros(3, s, s, dtype=torch.uint8)
                for k, (x1, y1, x2, y2) in enumerate(boxes.round().int().tolist()):
                    target["masks"][k, y1:y2, x1:x2] = 1
            if caps.needs_proposals:
                near = boxes[torch.randint(0, 3, (top_k // 2,), generator=g)]
                near = near + torch.randn(near.shape, generator=g) * 0.05 * s
                corner = torch.rand(top_k - len(near), 2, generator=g) * 0.8 * s
                anywhere = torch.cat([corner, corner + (0.05 + 0.5 * torch.rand(len(corner), 2, generator=g)) * s], 1)
                proposals = torch.cat([near, anywhere]).clamp(0, s)
                proposals[:, :2] = proposals[:, :2].clamp(max=s - 1)  # at least 1 px wide and high
                proposals[:, 2:] = torch.maximum(proposals[:, 2:], proposals[:, :2] + 1)
                target["proposals"] = proposals
            images.append(torch.rand(3, s, s, generator=g))
            targets.append(target)
        return self.to_device((images, targets), torch.device(device), channels_last=False)
