"""What the three generative tasks (autoencoder.py, vae.py, gan.py) share: the config sections, the data sets
(registered in visionzoo.datasets.registry for the task "generative") and their `data.params`, the image
wrapper that carries each sample's noise seed, model building, the per-epoch progress grids, the report and
the benchmarks' synthetic batch. Each kind adds only its losses, update phases and evaluation."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch
from torch.utils.data import Dataset, Subset
from torchvision.transforms import v2

from visionzoo.datasets.binarize import DynamicBinarize, binarize_fixed
from visionzoo.datasets.digits import MNIST
from visionzoo.datasets.digits import SPLITS as DIGIT_SPLITS
from visionzoo.datasets.folder import ImageFolderDataset
from visionzoo.datasets.registry import get_dataset, register_dataset, typed_params
from visionzoo.datasets.shapes import ShapesClassification
from visionzoo.factory import create_model
from visionzoo.registry import capabilities, get_entry
from visionzoo.tasks.base import Task, images_to_device, model_num_classes
from visionzoo.tasks.generative.features import build_feature_extractor
from visionzoo.tasks.generative.report import build_generative_report, progress_grid

PROGRESS_DIR = "progress"  # run_dir/progress/epoch_NNN.png: fixed-noise samples (or reconstructions) per epoch


@dataclass
class GenerativeAugment:
    hflip: float = 0.0  # probability of a horizontal flip of training images


@dataclass
class GenerativeLoss:
    recon: Literal["mse", "bce"] = "mse"  # autoencoders' reconstruction loss
    gp_weight: float = 10.0  # WGAN-GP's gradient-penalty weight
    critic_steps: Optional[int] = None  # discriminator steps per generator step; None: the model's (dcgan 1, wgan_gp 5)


@dataclass
class GenerativeEval:
    iwae_k: int = 100  # importance samples of the VAE's bound L_k (5000 for final numbers)
    iwae_images: Optional[int] = None  # L_k on the first N evaluation images only (k decodes per image); None: all
    fid_features: Optional[str] = None  # "zoo:resnet18:shapes", "inception:PATH" or PATH; None: env var, else zoo
    kid_subsets: int = 100
    kid_subset_size: int = 500  # subsets of the (default 1000) evaluation images: a spread, not one number
    fid_train_floor: bool = False  # also score the training images against the evaluation images (a floor)
    extra_corruptions: list[str] = field(default_factory=list)  # denoising AEs: also scored on e.g. "masking:0.25"
    collapse_ratio: float = 0.2  # warn when generated samples' diversity < this x the real images'
    seed: int = 0  # fixed noise of the progress grids and report samples
    grid_samples: int = 64


@dataclass
class GenerativeParams:
    """`data.params` every generative data set reads (each data set's own class below adds its keys); alone, the
    keys of a config whose data set is not registered (a benchmark's synthetic batches)."""

    train_samples: Optional[int] = None  # images per training epoch (null: the split's size)
    eval_samples: Optional[int] = None  # images evaluated (null: the split's size)
    grayscale: bool = False  # one channel


@dataclass
class ShapesGenerativeParams(GenerativeParams):
    """`data.params` of generative's `shapes`."""

    seed: int = 0  # of every image


@dataclass
class FolderGenerativeParams(GenerativeParams):
    """`data.params` of generative's `image_folder` (the shared keys only)."""


@dataclass
class DigitsGenerativeParams(GenerativeParams):
    """`data.params` of generative's `mnist` and `fashion_mnist`."""

    grayscale: bool = True  # one channel (the images are grey: false is an error)
    val_size: int = 5000  # the validation part carved out of train (datasets/digits.py)
    split_seed: int = 0
    # "bernoulli": binarise grey levels by sampling, afresh each epoch for training (seeded per sample and
    # epoch), once with binarize_seed for evaluation splits; None: grey images
    binarize: Optional[Literal["bernoulli"]] = None
    binarize_seed: int = 0


def data_params(cfg) -> GenerativeParams:
    """`data.params` typed by the config's data set (ShapesGenerativeParams, ...), or by GenerativeParams, the
    keys every generative data set reads, for a config without a registered data set (a benchmark's batches)."""
    return typed_params("generative", cfg.data, GenerativeParams)


def image_channels(cfg) -> int:
    return 1 if data_params(cfg).grayscale else 3


def default_kwarg(model_name: str, key: str):
    """The default of keyword `key` of the registered model's builder."""
    return inspect.signature(get_entry(model_name).builder).parameters[key].default


def noise_generators(seeds: torch.Tensor, device) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


class UnitFloat:
    """uint8 image tensor -> float32 in [0, 1] (the in-memory digit sets need nothing else: one cheap op)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch.float32).div_(255)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GenerativeImages(Dataset):
    """(image in the model's range, label, noise seed, index): the seed is drawn under the loader's per-item seed,
    so evaluation noise (corruption, dequantisation, latents) is the same whatever the batch or rank."""

    def __init__(self, base: Dataset, transform, data_range: str):
        self.base, self.transform, self.data_range = base, transform, data_range
        self.classes = list(getattr(base, "classes", []))

    def __len__(self) -> int:
        return len(self.base)

    def image(self, index: int) -> torch.Tensor:
        """Image `index` in [0, 1] (no augmentation)."""
        x = self[index][0]
        return x * 0.5 + 0.5 if self.data_range == "symmetric" else x

    def __getitem__(self, index: int):
        image, label = self.base[index]
        x = self.transform(image)
        if self.data_range == "symmetric":
            x = x * 2 - 1
        return x, label, int(torch.randint(0, 2 ** 62, ())), index


# ---- data sets: builder(cfg, split, params, train, class_names) -> (images dataset, transform) -------------
def _samples(params: GenerativeParams, train: bool) -> int | None:
    return params.train_samples if train else params.eval_samples


def _image_transform(cfg, params: GenerativeParams, train: bool, resize: bool):
    size = cfg.data.input_size
    ops: list = [v2.ToImage()]
    if resize:
        ops += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
    if params.grayscale:
        ops.append(v2.Grayscale(1))
    if train and cfg.data.augment.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(cfg.data.augment.hflip))
    ops.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(ops)


@register_dataset("shapes", task="generative", params=ShapesGenerativeParams)
def _shapes(cfg, split, params: ShapesGenerativeParams, train: bool, class_names):
    """shapes rendered on the fly at data.input_size"""
    base = ShapesClassification(split=split, num_samples=_samples(params, train), image_size=cfg.data.input_size,
                                seed=params.seed)
    return base, _image_transform(cfg, params, train, resize=False)


@register_dataset("image_folder", task="generative", params=FolderGenerativeParams)
def _image_folder(cfg, split, params: FolderGenerativeParams, train: bool, class_names):
    """root/<split>/<class>/*.jpg, resized and centre-cropped to data.input_size"""
    d = cfg.data
    transform = _image_transform(cfg, params, train, resize=True)
    if not d.root:
        raise ValueError("data.root is required for data.dataset = image_folder")
    base = ImageFolderDataset(Path(d.root) / split, on_corrupt=d.on_corrupt, max_image_pixels=d.max_image_pixels,
                              classes=class_names)
    num = _samples(params, train)
    if num is not None:
        base = Subset(base, range(min(num, len(base))))
        base.classes = base.dataset.classes
    return base, transform


def _digits(cfg, split, params: DigitsGenerativeParams, train: bool, fashion: bool):
    """MNIST / Fashion-MNIST (28 px grey, in memory) and its transform; binarised when asked: a Bernoulli
    draw per sample and epoch for training, one seeded draw (binarize_seed) of the whole split otherwise."""
    d = cfg.data
    if not d.root:
        raise ValueError(f"data.root is required for data.dataset = {d.dataset} (the folder of its IDX files)")
    if d.input_size != 28:
        raise ValueError(f"data.input_size = {d.input_size}; {d.dataset} images are 28 x 28 (set 28)")
    if not params.grayscale:
        raise ValueError(f"{d.dataset} images are grey; data.params.grayscale must be true (or left out)")
    base = MNIST(d.root, split, None, fashion=fashion, download=d.download, val_size=params.val_size,
                 split_seed=params.split_seed)
    ops: list = [UnitFloat()]
    if params.binarize and train:
        ops.append(DynamicBinarize())
    elif params.binarize:
        base.images = binarize_fixed(base.images, params.binarize_seed)
        base.description += f", binarised once with torch.bernoulli, seed {params.binarize_seed}"
    if train and cfg.data.augment.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(cfg.data.augment.hflip))
    num = _samples(params, train)
    if num is not None:
        keep = slice(0, min(num, len(base)))
        base.images, base.labels = base.images[keep], base.labels[keep]
        base.targets = base.labels.tolist()
    return base, v2.Compose(ops) if len(ops) > 1 else ops[0]


@register_dataset("mnist", task="generative", params=DigitsGenerativeParams, splits=DIGIT_SPLITS)
def _mnist(cfg, split, params: DigitsGenerativeParams, train: bool, class_names):
    """MNIST digits (grey, 28 px; binarised when data.params.binarize is set)"""
    return _digits(cfg, split, params, train, fashion=False)


@register_dataset("fashion_mnist", task="generative", params=DigitsGenerativeParams, splits=DIGIT_SPLITS)
def _fashion_mnist(cfg, split, params: DigitsGenerativeParams, train: bool, class_names):
    """Fashion-MNIST (grey, 28 px)"""
    return _digits(cfg, split, params, train, fashion=True)




class GenerativeTaskBase(Task):
    """The generative task for one kind of model (`kind`, with its own `primary_metric`); subclasses add the
    losses, update phases and evaluation of that kind."""

    name = "generative"
    kind: str = ""
    data_range: str = "unit"  # the models' images: "unit" [0, 1] (Sigmoid), "symmetric" [-1, 1] (Tanh)
    loss_config = GenerativeLoss
    eval_config = GenerativeEval
    augment_config = GenerativeAugment
    primary_metric = "loss"
    _HIGHER_IS_BETTER = {"psnr", "psnr_gain", "elbo", "iwae_bound"}
    # FID/KID feature extractors by (eval.fid_features, device): on the class, so that they are built once per
    # process, not once per task object
    _extractors: dict[tuple, object] = {}

    def higher_is_better_for(self, metric: str) -> bool:
        return metric in self._HIGHER_IS_BETTER

    # ---- data -------------------------------------------------------------------------------
    def build_dataset(self, split, train, class_names=None):
        cfg = self.cfg
        entry = get_dataset(self.name, cfg.data.dataset)
        params = entry.parse_params(cfg.data.params)
        base, transform = entry.builder(cfg, split, params, train, class_names)
        dataset = GenerativeImages(base, transform, self.data_range)
        return dataset if train else self.check_eval_dataset(dataset, split)

    def check_eval_dataset(self, dataset, split: str):
        """An evaluation split, checked before training starts (a kind whose metrics need more images says so)."""
        return dataset

    def to_device(self, batch, device, channels_last):
        images, labels, seeds, indices = batch
        return images_to_device(images, device, channels_last), labels.to(device, non_blocking=True), seeds, indices

    def batch_size_of(self, batch) -> int:
        return batch[0].shape[0]

    # ---- model ------------------------------------------------------------------------------
    def build_model(self, train_set):
        cfg = self.cfg
        num_classes = None
        if capabilities(cfg.model.name).conditional:
            num_classes = cfg.model.num_classes or (len(train_set.classes) if train_set is not None else None)
        model = create_model(cfg.model.name, weights=cfg.model.weights, num_classes=num_classes, **cfg.model.kwargs)
        channels = image_channels(cfg)
        if tuple(model.image_shape) != (channels, cfg.data.input_size, cfg.data.input_size):
            raise ValueError(f"model {cfg.model.name} makes images of shape {tuple(model.image_shape)} but the data "
                             f"are ({channels}, {cfg.data.input_size}, {cfg.data.input_size}): set model.kwargs."
                             "image_size / channels to match data.input_size / data.params.grayscale")
        return model

    def model_meta(self, dataset) -> dict:
        cfg = self.cfg
        classes = list(dataset.classes) if dataset is not None and dataset.classes else None
        return {"input_size": [image_channels(cfg), cfg.data.input_size, cfg.data.input_size],
                "data_range": self.data_range,
                # unconditional models take no class count: only conditional ones carry class names
                "class_names": classes if capabilities(cfg.model.name).conditional else None,
                "mean": None, "std": None}

    # ---- evaluation -------------------------------------------------------------------------
    def feature_extractor(self, device):
        """The FID/KID feature extractor, built once per (spec, device) in a process."""
        key = (self.cfg.eval.fid_features, str(device))
        if key not in self._extractors:
            self._extractors[key] = build_feature_extractor(self.cfg.eval.fid_features, device=device)
        return self._extractors[key]

    def scalar_metrics(self, metrics: dict) -> dict[str, float]:
        return {k: float(v) for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("num_")}

    def after_epoch(self, model, epoch, run_dir, dataset) -> None:
        out = Path(run_dir) / PROGRESS_DIR
        out.mkdir(parents=True, exist_ok=True)
        progress_grid(model, dataset, self.cfg).save(out / f"epoch_{epoch:03d}.png")

    def write_report(self, out_path: Path, *, metrics, dataset, accumulator, model, model_summary, log_records,
                     run_info, title) -> Path:
        run_dir = (run_info or {}).get("run_dir")
        progress = sorted((Path(run_dir) / PROGRESS_DIR).glob("epoch_*.png")) if run_dir else []
        return build_generative_report(out_path, title=title, metrics=metrics, dataset=dataset, model=model,
                                       cfg=self.cfg, log_records=log_records, run_info=run_info, model_summary=model_summary,
                                       progress_images=progress)

    # ---- benchmarks ---------------------------------------------------------------------------
    def synthetic_batch(self, batch_size, image_size, device, train=True):
        """Random images in the model's data range, labels over its classes (used by conditional models), one
        noise seed and dataset index per image, as GenerativeImages + collate give (training and evaluation)."""
        cfg, g = self.cfg, torch.Generator().manual_seed(0)
        x = torch.rand(batch_size, image_channels(cfg), image_size, image_size, generator=g)
        if self.data_range == "symmetric":
            x = x * 2 - 1
        labels = torch.randint(0, model_num_classes(cfg) or 1, (batch_size,), generator=g)
        seeds = torch.randint(0, 2 ** 62, (batch_size,), generator=g)
        return self.to_device((x, labels, seeds, torch.arange(batch_size)), torch.device(device), False)
