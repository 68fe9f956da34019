"""Classification as the shared engine sees it: ImageFolder or shapes data with transforms.v2
augmentation, cross-entropy with label smoothing, top-k / per-class metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from visionzoo.datasets.digits import CIFAR10, MNIST, DigitsParams, DistortedMNIST, DistortedMNISTParams
from visionzoo.datasets.digits import SPLITS as DIGIT_SPLITS
from visionzoo.datasets.folder import ImageFolderDataset, ImageFolderParams
from visionzoo.datasets.registry import get_dataset, register_dataset
from visionzoo.datasets.shapes import ShapesClassification, ShapesParams
from visionzoo.inference.preprocess import INTERPOLATION, eval_transform
from visionzoo.tasks.base import Accumulator, Task, images_to_device, model_num_classes
from visionzoo.tasks.classification.metrics import ClassificationMeter
from visionzoo.tasks.classification.report import build_classification_report, stn_examples


@dataclass
class ClassificationAugment:
    enabled: bool = True
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop area range
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    hflip: float = 0.5
    vflip: float = 0.0
    rotation: float = 0.0  # max degrees
    color_jitter: float = 0.0  # brightness/contrast/saturation strength
    random_erasing: float = 0.0  # probability
    # CIFAR-style crop (He et al. 2016): pad by this many pixels and take a random input_size crop, in place
    # of the RandomResizedCrop above; None = RandomResizedCrop.
    crop_padding: Optional[int] = None


@dataclass
class ClassificationLoss:
    label_smoothing: float = 0.0


@dataclass
class ClassificationEval:
    topk: list[int] = field(default_factory=lambda: [1, 5])
    misclassified_in_report: int = 32


def build_transforms(cfg, train: bool):
    """The training augmentation, or (evaluation, or augmentation off) the inference layer's evaluation
    transform, which the Classifier and extract_features use too."""
    d, aug = cfg.data, cfg.data.augment
    if not (train and aug.enabled):
        return eval_transform(d.input_size, d.crop_pct, d.mean, d.std, d.interpolation)
    interp = INTERPOLATION[d.interpolation]
    ops: list = [v2.ToImage()]
    if aug.crop_padding is not None:
        ops.append(v2.RandomCrop(d.input_size, padding=aug.crop_padding))
    else:
        ops.append(v2.RandomResizedCrop(d.input_size, scale=tuple(aug.scale), ratio=tuple(aug.ratio),
                                        interpolation=interp, antialias=True))
    if aug.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip > 0:
        ops.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.rotation > 0:
        ops.append(v2.RandomRotation(aug.rotation, interpolation=interp))
    if aug.color_jitter > 0:
        s = aug.color_jitter
        ops.append(v2.ColorJitter(brightness=s, contrast=s, saturation=s))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(d.mean, d.std)]
    if aug.random_erasing > 0:
        ops.append(v2.RandomErasing(aug.random_erasing))
    return v2.Compose(ops)


class ClassificationAccumulator(Accumulator):
    def __init__(self, num_classes: int, class_names, topk):
        self.meter = ClassificationMeter(num_classes, class_names, topk=tuple(topk))

    def update(self, batch, outputs, indices) -> None:
        _, targets = batch
        self.meter.update(outputs.float(), targets, indices=torch.as_tensor(indices, dtype=torch.long))

    def compute(self) -> dict:
        return self.meter.compute()

    def state_tensors(self):
        return self.meter.state_tensors()

    def load_state_tensors(self, tensors) -> None:
        self.meter.load_state_tensors(tensors)

    def synchronize(self) -> None:
        """Sums of the counts, and every rank's per-sample predictions for the report's misclassified images."""
        super().synchronize()
        self.meter.gather_samples()


def _root(cfg, what: str = "") -> Path:
    if not cfg.data.root:
        raise ValueError(f"data.root is required for data.dataset = {cfg.data.dataset}{what}")
    return Path(cfg.data.root)


@register_dataset("image_folder", task="classification", params=ImageFolderParams)
def _image_folder(cfg, split, params: ImageFolderParams, transform, class_names):
    """root/<split>/<class>/*.jpg"""
    d = cfg.data
    return ImageFolderDataset(_root(cfg) / split, transform=transform, on_corrupt=d.on_corrupt,
                              max_image_pixels=d.max_image_pixels, classes=class_names,
                              extensions=params.extensions, allow_external_links=params.allow_external_links)


def _digit_kwargs(cfg, params: DigitsParams) -> dict:
    _root(cfg, " (the folder of its files)")
    return {"download": cfg.data.download if params.download is None else params.download,
            "val_size": params.val_size, "split_seed": params.split_seed}


@register_dataset("mnist", task="classification", params=DigitsParams, splits=DIGIT_SPLITS)
def _mnist(cfg, split, params: DigitsParams, transform, class_names):
    """MNIST from its IDX files (val: the last 5,000 of a permutation of train)"""
    return MNIST(cfg.data.root, split, transform, fashion=False, **_digit_kwargs(cfg, params))


@register_dataset("fashion_mnist", task="classification", params=DigitsParams, splits=DIGIT_SPLITS)
def _fashion_mnist(cfg, split, params: DigitsParams, transform, class_names):
    """Fashion-MNIST from its IDX files"""
    return MNIST(cfg.data.root, split, transform, fashion=True, **_digit_kwargs(cfg, params))


@register_dataset("mnist_distorted", task="classification", params=DistortedMNISTParams, splits=DIGIT_SPLITS)
def _mnist_distorted(cfg, split, params: DistortedMNISTParams, transform, class_names):
    """MNIST distorted as in the spatial-transformer paper (R, RTS, TC)"""
    return DistortedMNIST(cfg.data.root, split, transform, variant=params.variant, seed=params.seed,
                          fresh=params.fresh, **_digit_kwargs(cfg, params))


@register_dataset("cifar10", task="classification", params=DigitsParams, splits=DIGIT_SPLITS)
def _cifar10(cfg, split, params: DigitsParams, transform, class_names):
    """CIFAR-10 from the official batches or an ImageFolder copy"""
    return CIFAR10(cfg.data.root, split, transform, max_image_pixels=cfg.data.max_image_pixels,
                   **_digit_kwargs(cfg, params))


@register_dataset("shapes", task="classification", params=ShapesParams)
def _shapes(cfg, split, params: ShapesParams, transform, class_names):
    """shapes rendered on the fly (no files)"""
    return ShapesClassification(split=split, num_samples=params.num_samples, seed=params.seed,
                                image_size=cfg.data.input_size if params.image_size is None else params.image_size,
                                transform=transform)


class ClassificationTask(Task):
    name = "classification"
    loss_config = ClassificationLoss
    eval_config = ClassificationEval
    augment_config = ClassificationAugment
    primary_metric = "top1"
    higher_is_better = True

    def build_dataset(self, split, train, class_names=None):
        cfg = self.cfg
        entry = get_dataset(self.name, cfg.data.dataset)
        return entry.builder(cfg, split, entry.parse_params(cfg.data.params), build_transforms(cfg, train),
                             class_names)

    def to_device(self, batch, device, channels_last):
        images, targets = batch
        return images_to_device(images, device, channels_last), targets.to(device, non_blocking=True)

    def batch_size_of(self, batch) -> int:
        return batch[0].shape[0]

    def model_meta(self, dataset) -> dict:
        d = self.cfg.data
        return {
            "class_names": list(dataset.classes) if dataset is not None else None,
            "input_size": [len(d.mean), d.input_size, d.input_size],  # one mean per channel
            "mean": list(d.mean),
            "std": list(d.std),
            "interpolation": d.interpolation,
            "crop_pct": d.crop_pct,
        }

    def training_losses(self, model, batch, phase):
        images, targets = batch
        logits = model(images)
        return {"loss": F.cross_entropy(logits, targets, label_smoothing=self.cfg.loss.label_smoothing)}

    def new_accumulator(self, dataset):
        names = list(dataset.classes)
        return ClassificationAccumulator(len(names), names, self.cfg.eval.topk)

    def eval_outputs(self, model, batch):
        return model(batch[0])

    def scalar_metrics(self, metrics: dict) -> dict[str, float]:
        keys = [k for k in metrics if k.startswith("top")] + ["loss", "macro_f1"]
        return {k: float(metrics[k]) for k in keys if k in metrics}

    def write_report(self, out_path: Path, *, metrics, dataset, accumulator, model, model_summary, log_records,
                     run_info, title) -> Path:
        cfg = self.cfg
        names = list(dataset.classes)
        wrong = []
        for index, target, pred, conf in accumulator.meter.misclassified(cfg.eval.misclassified_in_report):
            image = dataset.load_image(index) if hasattr(dataset, "load_image") else None
            if image is not None:
                wrong.append((image, names[target], names[pred], float(conf)))
        first_conv = next((m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
        return build_classification_report(
            out_path, title=title, metrics=metrics, class_names=names, log_records=log_records,
            misclassified_images=wrong, first_layer_weight=None if first_conv is None else first_conv.detach().cpu(),
            model_summary=model_summary, run_info=run_info,
            stn_examples=stn_examples(model, dataset, cfg.data.mean, cfg.data.std))

    # ---- benchmarks ---------------------------------------------------------------------------
    def synthetic_batch(self, batch_size, image_size, device, train=True):
        """Normalised random images and labels over the model's classes (training and evaluation alike)."""
        g = torch.Generator().manual_seed(0)
        images = torch.randn(batch_size, 3, image_size, image_size, generator=g)
        labels = torch.randint(0, model_num_classes(self.cfg), (batch_size,), generator=g)
        return images.to(device), labels.to(device)
