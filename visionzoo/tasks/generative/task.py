"""The generative family as the shared engine sees it: autoencoders, VAEs and GANs on unlabelled (or, for
conditional models, labelled) images, each trained by its own task class (autoencoder.py, vae.py, gan.py,
sharing common.py); `task: generative` picks the class from the kind the model declares in the registry.

The engine needs no special case: a GAN is two update phases with their own optimizers ("discriminator" on
every batch, "generator" on every n-th: n critic steps per generator step), declared by `update_phases`;
the best checkpoint is chosen by each kind's own metric (PSNR up, NLL down, FID down); the fixed-noise
samples of every epoch are written by `after_epoch`.
"""
from __future__ import annotations

from visionzoo.models.utils import unwrap
from visionzoo.registry import capabilities, get_entry
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
    """`task: generative` in the registry: `for_config` builds the task of the config's model kind (AutoencoderTask,
    VAETask or GANTask), so the engine and the entry points need not know there are three. What takes no config
    (the config sections, metric direction) is read on this class."""

    KINDS: dict[str, type[GenerativeTaskBase]] = {"autoencoder": AutoencoderTask, "vae": VAETask, "gan": GANTask}

    def __init__(self, cfg):
        raise TypeError("GenerativeTask is the registry's entry, not a task object: build one with "
                        "visionzoo.tasks.task_for(cfg) (or GenerativeTask.for_config(cfg))")

    @classmethod
    def for_config(cls, cfg) -> GenerativeTaskBase:
        return cls.KINDS[model_kind(cfg)](cfg)
