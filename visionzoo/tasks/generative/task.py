"""The generative family as the shared engine sees it: autoencoders, VAEs and GANs on unlabelled (or, for
conditional models, labelled) images.

The engine needs no special case: a GAN is two update phases with their own optimizers ("discriminator" on
every batch, "generator" on every n-th: n critic steps per generator step), declared by `update_phases`;
the best checkpoint is chosen by each kind's own metric (PSNR up, NLL down, FID down); the fixed-noise
samples of every epoch are written by `after_epoch`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from visionzoo.tasks.base import Task, UpdatePhase, checked_data_params, images_to_device
from visionzoo.tasks.generative import losses
from visionzoo.tasks.generative.metrics import AutoencoderAccumulator, GANAccumulator, VAEAccumulator

PROGRESS_DIR = "progress"  # run_dir/progress/epoch_NNN.png: fixed-noise samples (or reconstructions) per epoch
DATA_PARAMS = {"train_samples": None, "eval_samples": None, "seed": 0, "grayscale": False}


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
    collapse_ratio: float = 0.2  # warn when generated samples' diversity < this x the real images'
    seed: int = 0  # fixed noise of the progress grids and report samples
    grid_samples: int = 64


def model_kind(cfg) -> tuple[str, dict]:
    """("autoencoder" | "vae" | "gan", the registry entry's extra data) of the config's model."""
    from visionzoo.registry import get_entry

    entry = get_entry(cfg.model.name)
    if entry.task != "generative":
        raise ValueError(f"model.name = {cfg.model.name!r} is a {entry.task} model, not a generative one")
    return entry.family, entry.extra


def data_range(kind: str) -> str:
    """GANs model images in [-1, 1] (Tanh output), autoencoders and VAEs in [0, 1]."""
    return "symmetric" if kind == "gan" else "unit"


def image_channels(cfg) -> int:
    return 1 if cfg.data.params.get("grayscale") else 3


def unwrap(model):
    return getattr(model, "module", getattr(model, "_orig_mod", model))


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


def _noise_generators(seeds: torch.Tensor, device) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(int(s)) for s in seeds]


class GenerativeTask(Task):
    name = "generative"
    loss_config = GenerativeLoss
    eval_config = GenerativeEval
    augment_config = GenerativeAugment
    primary_metric = "loss"

    _PRIMARY = {"autoencoder": "psnr", "vae": "nll", "gan": "fid"}
    _HIGHER_IS_BETTER = {"psnr", "psnr_gain", "elbo", "iwae_bound"}

    def primary_metric_for(self, cfg) -> str:
        return self._PRIMARY[model_kind(cfg)[0]]

    def higher_is_better_for(self, metric: str) -> bool:
        return metric in self._HIGHER_IS_BETTER

    # ---- data -------------------------------------------------------------------------------
    def build_dataset(self, cfg, split, train, class_names=None):
        d = cfg.data
        params = checked_data_params(cfg, DATA_PARAMS, "generative")
        kind, _ = model_kind(cfg)
        size = d.input_size
        ops: list = [v2.ToImage()]
        if d.dataset == "image_folder":
            ops += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
        if params["grayscale"]:
            ops.append(v2.Grayscale(1))
        if train and cfg.data.augment.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(cfg.data.augment.hflip))
        ops.append(v2.ToDtype(torch.float32, scale=True))
        transform = v2.Compose(ops)
        num = params["train_samples"] if train else params["eval_samples"]
        if d.dataset == "shapes":
            from visionzoo.datasets.shapes import ShapesClassification

            base = ShapesClassification(split=split, num_samples=num, image_size=size, seed=params["seed"])
        elif d.dataset == "image_folder":
            from visionzoo.datasets.folder import ImageFolderDataset

            if not d.root:
                raise ValueError("data.root is required for data.dataset = image_folder")
            base = ImageFolderDataset(Path(d.root) / split, on_corrupt=d.on_corrupt,
                                      max_image_pixels=d.max_image_pixels, classes=class_names)
            if num is not None:
                base = torch.utils.data.Subset(base, range(min(num, len(base))))
                base.classes = base.dataset.classes
        else:
            raise ValueError(f"data.dataset = {d.dataset!r} is not a generative dataset; expected 'shapes' or "
                             "'image_folder'")
        dataset = GenerativeImages(base, transform, data_range(kind))
        if kind == "gan" and not train:  # fail before training, not at the first validation
            extractor = self.feature_extractor(cfg, "cpu")
            if len(dataset) <= extractor.dim:
                raise ValueError(f"FID with {extractor.name} needs more samples than feature dimensions "
                                 f"({extractor.dim}): split {split!r} has {len(dataset)} images; set "
                                 f"data.params.eval_samples to at least {extractor.dim + 1} (more is better)")
        return dataset

    def to_device(self, batch, device, channels_last):
        images, labels, seeds, indices = batch
        return images_to_device(images, device, channels_last), labels.to(device, non_blocking=True), seeds, indices

    def batch_size_of(self, batch) -> int:
        return batch[0].shape[0]

    # ---- model ------------------------------------------------------------------------------
    def build_model(self, cfg, train_set):
        from visionzoo.factory import create_model

        _, extra = model_kind(cfg)
        num_classes = None
        if extra.get("conditional"):
            num_classes = cfg.model.num_classes or (len(train_set.classes) if train_set is not None else None)
        model = create_model(cfg.model.name, weights=cfg.model.weights, num_classes=num_classes, **cfg.model.kwargs)
        channels = image_channels(cfg)
        if tuple(model.image_shape) != (channels, cfg.data.input_size, cfg.data.input_size):
            raise ValueError(f"model {cfg.model.name} makes images of shape {tuple(model.image_shape)} but the data "
                             f"are ({channels}, {cfg.data.input_size}, {cfg.data.input_size}): set model.kwargs."
                             "image_size / channels to match data.input_size / data.params.grayscale")
        return model

    def model_meta(self, cfg, dataset) -> dict:
        kind, extra = model_kind(cfg)
        classes = list(dataset.classes) if dataset is not None and dataset.classes else None
        return {"input_size": [image_channels(cfg), cfg.data.input_size, cfg.data.input_size],
                "data_range": data_range(kind),
                # unconditional models take no class count: only conditional ones carry class names
                "class_names": classes if extra.get("conditional") else None,
                "mean": None, "std": None}

    # ---- training ---------------------------------------------------------------------------
    def update_phases(self, cfg) -> list[UpdatePhase]:
        kind, extra = model_kind(cfg)
        if kind != "gan":
            return [UpdatePhase()]
        steps = cfg.loss.critic_steps or extra.get("critic_steps", 1)
        if steps < 1:
            raise ValueError(f"loss.critic_steps = {steps}; expected >= 1")
        return [UpdatePhase("discriminator", "discriminator"), UpdatePhase("generator", "generator", every=steps)]

    def training_losses(self, model, batch, phase, cfg):
        x, y = batch[:2]
        core = unwrap(model)
        y = y if getattr(core, "num_classes", None) is not None else None
        if core.kind == "autoencoder":
            x_hat = model(core.corrupt(x))
            loss = losses.reconstruction_loss(x_hat, x, cfg.loss.recon)
            return {"loss": loss, "mse": torch.nn.functional.mse_loss(x_hat.detach(), x)}
        if core.kind == "vae":
            terms = model(core.prepare_data(x), y)
            return {"loss": terms["loss"], "recon_nll": terms["recon_nll"].detach().mean(),
                    "kl": terms["kl"].detach().mean(), "elbo": terms["elbo"].detach().mean()}
        return self._gan_losses(core, x, y, phase, cfg)

    def _gan_losses(self, gan, x, y, phase, cfg):
        if phase.name == "discriminator":
            # One generator pass per batch, as in pytorch/examples: the generator phase of the same batch reuses
            # these images (and their graph), so BatchNorm statistics are updated once and no work is repeated.
            fake = gan.generator(gan.latents(x.shape[0]), y)
            self._last_fake = (x, fake)
            real_scores, fake_scores = gan.discriminator(x, y), gan.discriminator(fake.detach(), y)
            if gan.loss == "wgan-gp":
                penalty = losses.gradient_penalty(gan.discriminator, x, fake.detach(), y)
                distance = real_scores.mean() - fake_scores.mean()
                return {"loss": -distance + cfg.loss.gp_weight * penalty, "wasserstein": distance.detach(),
                        "gp": penalty.detach()}
            return {"loss": losses.discriminator_loss(real_scores, fake_scores),
                    "d_real": torch.sigmoid(real_scores.detach()).mean(),
                    "d_fake": torch.sigmoid(fake_scores.detach()).mean()}
        batch_x, fake = self.__dict__.pop("_last_fake", (None, None))
        if batch_x is not x:  # no discriminator phase on this batch: generate afresh
            fake = gan.generator(gan.latents(x.shape[0]), y)
        scores = gan.discriminator(fake, y)
        if gan.loss == "wgan-gp":
            return {"loss": -scores.mean()}
        return {"loss": losses.nonsaturating_generator_loss(scores)}

    # ---- evaluation -------------------------------------------------------------------------
    def feature_extractor(self, cfg, device):
        """The FID/KID feature extractor, built once per (spec, device)."""
        from visionzoo.tasks.generative.features import build_feature_extractor

        cache = self.__dict__.setdefault("_extractors", {})
        key = (cfg.eval.fid_features, str(device))
        if key not in cache:
            cache[key] = build_feature_extractor(cfg.eval.fid_features, device=device)
        return cache[key]

    def new_accumulator(self, cfg, dataset):
        kind, extra = model_kind(cfg)
        if kind == "autoencoder":
            return AutoencoderAccumulator(denoising=bool(extra.get("denoising")))
        if kind == "vae":
            likelihood = cfg.model.kwargs.get("likelihood") or _default_kwarg(cfg.model.name, "likelihood")
            return VAEAccumulator(dims=image_channels(cfg) * cfg.data.input_size ** 2,
                                  dequantized=likelihood == "gaussian",
                                  k=cfg.eval.iwae_k)
        extractor = self.feature_extractor(cfg, "cpu")
        return GANAccumulator(extractor.name, cfg.eval.kid_subsets, cfg.eval.kid_subset_size,
                              cfg.eval.collapse_ratio, cfg.eval.seed)

    def eval_outputs(self, model, batch, cfg):
        x, y, seeds, indices = batch
        y = y if getattr(model, "num_classes", None) is not None else None
        gens = _noise_generators(seeds, x.device)
        if model.kind == "autoencoder":
            x_in = x if model.corruption is None else torch.cat(
                [model.corrupt(x[i:i + 1], generator=g) for i, g in enumerate(gens)])
            return model(x_in), x_in
        if model.kind == "vae":
            data = torch.cat([model.prepare_data(x[i:i + 1], generator=g) for i, g in enumerate(gens)])
            noise = torch.stack([torch.randn(model.latent_dim, generator=g, device=x.device) for g in gens])
            terms = model.loss_terms(data, y, noise=noise)
            bound = None
            limit = cfg.eval.iwae_images
            keep = [i for i, index in enumerate(indices.tolist()) if limit is None or index < limit]
            if keep:
                bound = torch.cat([model.iwae_bound(data[i:i + 1], None if y is None else y[i:i + 1],
                                                    k=cfg.eval.iwae_k, generator=gens[i]) for i in keep])
            return terms, bound, keep
        z = torch.stack([torch.randn(model.latent_dim, generator=g, device=x.device) for g in gens])
        fake = model.generator(z, y)
        extractor = self.feature_extractor(cfg, x.device)
        return extractor(x * 0.5 + 0.5), extractor(fake * 0.5 + 0.5)

    def scalar_metrics(self, metrics: dict) -> dict[str, float]:
        return {k: float(v) for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("num_")}

    def after_epoch(self, model, cfg, epoch, run_dir, dataset) -> None:
        from visionzoo.tasks.generative.report import progress_grid

        out = Path(run_dir) / PROGRESS_DIR
        out.mkdir(parents=True, exist_ok=True)
        progress_grid(model, dataset, cfg).save(out / f"epoch_{epoch:03d}.png")

    def write_report(self, out_path: Path, *, metrics, dataset, accumulator, model, model_summary, log_records,
                     run_info, cfg, title) -> Path:
        from visionzoo.tasks.generative.report import build_generative_report

        run_dir = (run_info or {}).get("run_dir")
        progress = sorted((Path(run_dir) / PROGRESS_DIR).glob("epoch_*.png")) if run_dir else []
        return build_generative_report(out_path, title=title, metrics=metrics, dataset=dataset, model=model, cfg=cfg,
                                       log_records=log_records, run_info=run_info, model_summary=model_summary,
                                       progress_images=progress)

    # ---- benchmarks ---------------------------------------------------------------------------
    def synthetic_batch(self, cfg, batch_size, image_size, device, train=True):
        """Random images in the model's data range, labels over its classes (used by conditional models), one
        noise seed and dataset index per image, as GenerativeImages + collate give (training and evaluation)."""
        from visionzoo.tasks.base import model_num_classes

        g, kind = torch.Generator().manual_seed(0), model_kind(cfg)[0]
        x = torch.rand(batch_size, image_channels(cfg), image_size, image_size, generator=g)
        if data_range(kind) == "symmetric":
            x = x * 2 - 1
        labels = torch.randint(0, model_num_classes(cfg) or 1, (batch_size,), generator=g)
        seeds = torch.randint(0, 2 ** 62, (batch_size,), generator=g)
        return self.to_device((x, labels, seeds, torch.arange(batch_size)), torch.device(device), False)


def _default_kwarg(model_name: str, key: str):
    import inspect

    from visionzoo.registry import get_entry

    return inspect.signature(get_entry(model_name).builder).parameters[key].default

