"""The generative family as the shared engine sees it: autoencoders, VAEs and GANs on unlabelled (or, for
conditional models, labelled) images.

The engine needs no special case: a GAN is two update phases with their own optimizers ("discriminator" on
every batch, "generator" on every n-th: n critic steps per generator step), declared by `update_phases`;
the best checkpoint is chosen by each kind's own metric (PSNR up, NLL down, FID down); the fixed-noise
samples of every epoch are written by `after_epoch`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from visionzoo.tasks.base import Task, UpdatePhase, checked_data_params, images_to_device
from visionzoo.tasks.generative import losses
from visionzoo.tasks.generative.metrics import AutoencoderAccumulator, GANAccumulator, VAEAccumulator

PROGRESS_DIR = "progress"  # run_dir/progress/epoch_NNN.png: fixed-noise samples (or reconstructions) per epoch
DATA_PARAMS = {"train_samples": None, "eval_samples": None, "seed": 0, "grayscale": False,
               # MNIST / Fashion-MNIST: the validation part carved out of train (datasets/digits.py)
               "val_size": 5000, "split_seed": 0,
               # "bernoulli": binarise grey levels by sampling, afresh each epoch for training (seeded per
               # sample and epoch), once with binarize_seed for evaluation splits; None: grey images
               "binarize": None, "binarize_seed": 0}
BINARIZE = (None, "bernoulli")
DIGIT_DATASETS = ("mnist", "fashion_mnist")


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
    return 1 if cfg.data.params.get("grayscale") or cfg.data.dataset in DIGIT_DATASETS else 3


def unwrap(model):
    return getattr(model, "module", getattr(model, "_orig_mod", model))


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
        if params["binarize"] not in BINARIZE:
            raise ValueError(f"data.params.binarize = {params['binarize']!r}; expected one of {BINARIZE}")
        if params["binarize"] and d.dataset not in DIGIT_DATASETS:
            raise ValueError(f"data.params.binarize is for grey digit images ({', '.join(DIGIT_DATASETS)}), "
                             f"not data.dataset = {d.dataset!r}")
        num = params["train_samples"] if train else params["eval_samples"]
        if d.dataset in DIGIT_DATASETS:
            base, transform = self._digits(cfg, split, train, params, num)
            dataset = GenerativeImages(base, transform, data_range(kind))
            return self._checked_gan_eval(cfg, dataset, split) if kind == "gan" and not train else dataset
        ops: list = [v2.ToImage()]
        if d.dataset == "image_folder":
            ops += [v2.Resize(size, antialias=True), v2.CenterCrop(size)]
        if params["grayscale"]:
            ops.append(v2.Grayscale(1))
        if train and cfg.data.augment.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(cfg.data.augment.hflip))
        ops.append(v2.ToDtype(torch.float32, scale=True))
        transform = v2.Compose(ops)
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
            raise ValueError(f"data.dataset = {d.dataset!r} is not a generative dataset; expected 'shapes', "
                             "'image_folder', 'mnist' or 'fashion_mnist'")
        dataset = GenerativeImages(base, transform, data_range(kind))
        return self._checked_gan_eval(cfg, dataset, split) if kind == "gan" and not train else dataset

    def split_exists(self, cfg, split: str) -> bool:
        if cfg.data.dataset in DIGIT_DATASETS:  # splits carved from the official files, not folders
            from visionzoo.datasets.digits import SPLITS

            return split in SPLITS
        return super().split_exists(cfg, split)

    @staticmethod
    def _digits(cfg, split, train, params, num):
        """MNIST / Fashion-MNIST (28 px grey, in memory) and its transform; binarised when asked: a Bernoulli
        draw per sample and epoch for training, one seeded draw (binarize_seed) of the whole split otherwise."""
        from visionzoo.datasets.binarize import DynamicBinarize, binarize_fixed
        from visionzoo.datasets.digits import MNIST

        d = cfg.data
        if not d.root:
            raise ValueError(f"data.root is required for data.dataset = {d.dataset} (the folder of its IDX files)")
        if d.input_size != 28:
            raise ValueError(f"data.input_size = {d.input_size}; {d.dataset} images are 28 x 28 (set 28)")
        if params["grayscale"] is False and "grayscale" in d.params:
            raise ValueError(f"{d.dataset} images are grey; data.params.grayscale must be true (or left out)")
        base = MNIST(d.root, split, None, fashion=d.dataset == "fashion_mnist", download=d.download,
                     val_size=params["val_size"], split_seed=params["split_seed"])
        ops: list = [UnitFloat()]
        if params["binarize"] and train:
            ops.append(DynamicBinarize())
        elif params["binarize"]:
            base.images = binarize_fixed(base.images, params["binarize_seed"])
            base.description += f", binarised once with torch.bernoulli, seed {params['binarize_seed']}"
        if train and cfg.data.augment.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(cfg.data.augment.hflip))
        if num is not None:
            keep = slice(0, min(num, len(base)))
            base.images, base.labels = base.images[keep], base.labels[keep]
            base.targets = base.labels.tolist()
        return base, v2.Compose(ops) if len(ops) > 1 else ops[0]

    def _checked_gan_eval(self, cfg, dataset, split):
        # fail before training, not at the first validation
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
            out = {"loss": terms["loss"], "recon_nll": terms["recon_nll"].detach().mean(),
                   "kl": terms["kl"].detach().mean(), "elbo": terms["elbo"].detach().mean()}
            if "iwae_bound" in terms:
                out["iwae_bound"] = terms["iwae_bound"].detach().mean()
            return out
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
            from visionzoo.models.autoencoder import parse_corruption

            extras = [f"{k}_{v:g}" for k, v in map(parse_corruption, cfg.eval.extra_corruptions)]
            if extras and not extra.get("denoising"):
                raise ValueError(f"eval.extra_corruptions is for denoising autoencoders, not {cfg.model.name}")
            return AutoencoderAccumulator(denoising=bool(extra.get("denoising")), extra_corruptions=extras)
        if kind == "vae":
            likelihood = cfg.model.kwargs.get("likelihood") or _default_kwarg(cfg.model.name, "likelihood")
            binarize = cfg.data.params.get("binarize")
            binary = (f"binarised images: one torch.bernoulli draw of the grey levels, seed "
                      f"{cfg.data.params.get('binarize_seed', 0)} (data.params.binarize_seed)") if binarize else \
                "binarised images (pixel > 0.5)"
            return VAEAccumulator(dims=image_channels(cfg) * cfg.data.input_size ** 2,
                                  dequantized=likelihood == "gaussian", k=cfg.eval.iwae_k, binary_data=binary)
        extractor = self.feature_extractor(cfg, "cpu")
        reference = (lambda: self.training_features(cfg)) if cfg.eval.fid_train_floor else None
        return GANAccumulator(extractor.name, cfg.eval.kid_subsets, cfg.eval.kid_subset_size,
                              cfg.eval.collapse_ratio, cfg.eval.seed, reference=reference)

    def training_features(self, cfg, batch_size: int = 500) -> torch.Tensor:
        """The FID extractor's features of every image of the training split (no augmentation), computed once
        per process: the reference side of the train-vs-evaluation floor."""
        key = (cfg.eval.fid_features, cfg.data.dataset, cfg.data.root, cfg.data.train_split,
               str(sorted(cfg.data.params.items())))
        cache = self.__dict__.setdefault("_training_features", {})
        if key not in cache:
            dataset = self.build_dataset(cfg, cfg.data.train_split, train=False)
            extractor = self.feature_extractor(cfg, "cpu")
            chunks = []
            for start in range(0, len(dataset), batch_size):
                images = torch.stack([dataset.image(i) for i in range(start, min(start + batch_size, len(dataset)))])
                chunks.append(extractor(images))
            cache[key] = torch.cat(chunks).double()
        return cache[key]

    def eval_outputs(self, model, batch, cfg):
        x, y, seeds, indices = batch
        y = y if getattr(model, "num_classes", None) is not None else None
        gens = _noise_generators(seeds, x.device)
        if model.kind == "autoencoder":
            x_in = x if model.corruption is None else torch.cat(
                [model.corrupt(x[i:i + 1], generator=g) for i, g in enumerate(gens)])
            extras = {}
            for spec in cfg.eval.extra_corruptions:
                from visionzoo.models.autoencoder import corrupt_images, parse_corruption

                kind, amount = parse_corruption(spec)
                # each image's own generator goes on from where its main corruption left it: fixed per image
                extra_in = torch.cat([corrupt_images(x[i:i + 1], kind, amount, g) for i, g in enumerate(gens)])
                extras[f"{kind}_{amount:g}"] = (model(extra_in), extra_in)
            return model(x_in), x_in, extras
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
        real_features, fake_features = extractor(x * 0.5 + 0.5), extractor(fake * 0.5 + 0.5)
        correct = None
        head = getattr(extractor, "head", None)
        if y is not None and head is not None and head.out_features == model.num_classes:
            # a conditional sample counts as right when the extractor's classifier gives it the class it was
            # drawn for (lenet5.mnist on MNIST: does the model draw the digit it was asked for)
            correct = head(fake_features).argmax(1) == y
        return real_features, fake_features, correct

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

