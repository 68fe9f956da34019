"""The generative family as the shared engine sees it: autoencoders, VAEs and GANs on unlabelled (or, for
conditional models, labelled) images, each trained by its own task class (autoencoder.py, vae.py, gan.py,
sharing common.py); `task: generative` picks the class from the kind the model declares in the registry.

The engine needs no special case: a GAN is two update phases with their own optimizers ("discriminator" on
every batch, "generator" on every n-th: n critic steps per generator step), declared by `update_phases`;
the best checkpoint is chosen by each kind's own metric (PSNR up, NLL down, FID down); the fixed-noise
samples of every epoch are written by `after_epoch`.
"""
from __future__ import annotations

from pathlib import Path

from visionzoo.models.utils import unwrap
from visionzoo.registry import capabilities, get_entry
from visionzoo.tasks.base import UpdatePhase
from visionzoo.tasks.generative.autoencoder import AutoencoderTask
from visionzoo.tasks.generative.common import (  # noqa: F401  (the names this module has always offered)
    PROGRESS_DIR,
    GenerativeAugment,
    GenerativeEval,
    GenerativeImages,
    GenerativeLoss,
    GenerativeParams,
    GenerativeTaskBase,
    image_channels,
)
from visionzoo.tasks.generative.gan import GANTask
from visionzoo.tasks.generative.vae import VAETask

__all__ = ["AutoencoderTask", "GANTask", "GenerativeTask", "VAETask", "model_kind", "unwrap"]


def model_kind(cfg) -> str:
    """"autoencoder" | "vae" | "gan": the generative kind the config's model declares."""
    entry = get_entry(cfg.model.name)
    if entry.task != "generative":
        raise ValueError(f"model.name = {cfg.model.name!r} is a {entry.task} model, not a generative one")
    return capabilities(cfg.model.name).generative_kind


class GenerativeTask(GenerativeTaskBase):
    """`task: generative`: hands each call to the task of the config's model kind (AutoencoderTask, VAETask or
    GANTask), so the engine and the entry points need not know there are three. What takes no config (batch
    layout, metric direction) is the same for all kinds."""

    KINDS: dict[str, type[GenerativeTaskBase]] = {"autoencoder": AutoencoderTask, "vae": VAETask, "gan": GANTask}

    def __init__(self):
        self.kinds = {kind: cls() for kind, cls in self.KINDS.items()}

    def for_config(self, cfg) -> GenerativeTaskBase:
        return self.kinds[model_kind(cfg)]

    def primary_metric_for(self, cfg) -> str:
        return self.for_config(cfg).primary_metric

    def build_dataset(self, cfg, split, train, class_names=None):
        return self.for_config(cfg).build_dataset(cfg, split, train, class_names)

    def build_model(self, cfg, train_set):
        return self.for_config(cfg).build_model(cfg, train_set)

    def model_meta(self, cfg, dataset) -> dict:
        return self.for_config(cfg).model_meta(cfg, dataset)

    def update_phases(self, cfg) -> list[UpdatePhase]:
        return self.for_config(cfg).update_phases(cfg)

    def one_forward_per_update(self, cfg) -> bool:
        return self.for_config(cfg).one_forward_per_update(cfg)

    def training_losses(self, model, batch, phase, cfg):
        return self.for_config(cfg).training_losses(model, batch, phase, cfg)

    def feature_extractor(self, cfg, device):
        return self.for_config(cfg).feature_extractor(cfg, device)

    def new_accumulator(self, cfg, dataset):
        return self.for_config(cfg).new_accumulator(cfg, dataset)

    def eval_outputs(self, model, batch, cfg):
        return self.for_config(cfg).eval_outputs(model, batch, cfg)

    def after_epoch(self, model, cfg, epoch, run_dir, dataset) -> None:
        self.for_config(cfg).after_epoch(model, cfg, epoch, run_dir, dataset)

    def write_report(self, out_path: Path, *, cfg, **context) -> Path:
        return self.for_config(cfg).write_report(out_path, cfg=cfg, **context)

    def synthetic_batch(self, cfg, batch_size, image_size, device, train=True):
        return self.for_config(cfg).synthetic_batch(cfg, batch_size, image_size, device, train)
