"""The configuration schema shared by every task, as dataclasses.

Sections whose content depends on the task (`loss`, `data.augment`, `eval`) are typed by the task's
own dataclasses (see visionzoo/tasks/*); the engine reads only the shared sections below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from visionzoo.config import machine

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _default_num_workers() -> int:
    return machine.default_num_workers()  # looked up at call time: tests replace it


@dataclass
class ModelConfig:
    name: str = ""
    weights: Optional[str] = None  # path, tag, or "torchvision:<TAG>": see README "Weights"
    num_classes: Optional[int] = None
    kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the model builder


@dataclass
class DataConfig:
    dataset: str = "image_folder"  # a dataset builder the task knows (image_folder, shapes, ...)
    root: Optional[str] = None
    train_split: str = "train"
    val_split: Optional[str] = "val"
    test_split: Optional[str] = "test"
    input_size: int = 224
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    interpolation: Literal["nearest", "bilinear", "bicubic"] = "bilinear"
    crop_pct: float = 0.875  # evaluation: resize to input_size / crop_pct, then centre-crop
    batch_size: int = 64
    eval_batch_size: Optional[int] = None
    num_workers: int = field(default_factory=lambda: _default_num_workers())  # cores per GPU - 1 (1..8); 2 on CPU
    prefetch_factor: int = 2
    on_corrupt: Literal["error", "skip"] = "error"
    max_image_pixels: int = 64_000_000
    download: bool = False  # fetch missing official files (mnist, fashion_mnist, cifar10) when online
    params: dict = field(default_factory=dict)  # extra keyword arguments for the dataset builder
    augment: Any = field(default_factory=dict)  # typed by the task


@dataclass
class OptimConfig:
    name: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    no_decay_norm_and_bias: bool = False  # exclude norm layers and biases from weight decay
    params: Optional[str] = None  # sub-module (attribute path) this optimizer updates; None = all


@dataclass
class ScheduleConfig:
    name: Literal["constant", "step", "multistep", "cosine", "exponential", "polynomial"] = "cosine"
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.1  # lr multiplier at the first warm-up step
    step_size: int = 30  # epochs, for "step"
    milestones: list[int] = field(default_factory=list)  # epochs, for "multistep"
    gamma: float = 0.1  # decay factor for step/multistep; per-epoch factor for exponential
    power: float = 0.9  # for polynomial
    min_lr_ratio: float = 0.0  # floor of cosine/polynomial, as a fraction of the base lr


@dataclass
class EmaConfig:
    enabled: bool = False
    decay: float = 0.9998


@dataclass
class TrainConfig:
    epochs: int = 10
    device: str = "auto"  # auto, cpu, cuda, cuda:1
    seed: int = 0
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: Optional[bool] = None  # null: on, except for detection/segmentation (inputs vary in size)
    tf32: bool = True  # float32 matmuls/convolutions on TF32 tensor cores (Ampere+); false = IEEE float32
    grad_clip: Optional[float] = None  # max global L2 norm
    accumulate: int = 1  # gradient accumulation steps
    ema: EmaConfig = field(default_factory=EmaConfig)
    log_interval: int = 20  # steps between train log records (and host-device syncs)
    eval_interval: int = 1  # epochs between validations
    max_steps_per_epoch: Optional[int] = None  # cap, for smoke tests
    best_metric: Optional[str] = None  # defaults to the task's primary metric
    tensorboard: bool = False
    sync_batchnorm: bool = False
    find_unused_parameters: bool = False  # DDP: for models whose forward leaves some parameters unused
    layer_stats_interval: int = 0  # steps between per-layer activation / gradient statistics; 0 = off


@dataclass
class OutputConfig:
    dir: str = "runs"
    name: Optional[str] = None  # default: the config file's stem


@dataclass
class ExperimentConfig:
    task: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Named optimizers for tasks that update parts of a model separately (GANs); empty = one "main".
    optimizers: dict[str, OptimConfig] = field(default_factory=dict)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: Any = field(default_factory=dict)  # typed by the task
    eval: Any = field(default_factory=dict)  # typed by the task
    output: OutputConfig = field(default_factory=OutputConfig)
    # What a published model card says about the recipe beyond the config: data set and split, the paper's
    # figure it is measured against (anchor), licence of the data, caveats. Copied into the card by publish.
    card: dict = field(default_factory=dict)
