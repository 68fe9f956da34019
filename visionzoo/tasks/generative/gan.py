"""The generative task for GANs (DCGAN, WGAN-GP, conditional DCGAN): two update phases with their own
optimizers ("discriminator" on every batch, "generator" on every n-th: n critic steps per generator step),
and FID / KID of generated images against the evaluation images through a named feature extractor."""
from __future__ import annotations

import torch

from visionzoo.models.utils import unwrap
from visionzoo.registry import get_entry
from visionzoo.tasks.base import UpdatePhase
from visionzoo.tasks.generative import losses
from visionzoo.tasks.generative.common import GenerativeTaskBase, noise_generators
from visionzoo.tasks.generative.metrics import GANAccumulator


class GANTask(GenerativeTaskBase):
    kind = "gan"
    data_range = "symmetric"  # Tanh output
    primary_metric = "fid"
    # the train-vs-evaluation floor's reference features by data and extractor: on the class, so that they are
    # computed once per process (as the extractors are), not once per task object
    _training_features: dict[tuple, torch.Tensor] = {}

    def check_eval_dataset(self, dataset, split):
        # fail before training, not at the first validation
        extractor = self.feature_extractor("cpu")
        if len(dataset) <= extractor.dim:
            raise ValueError(f"FID with {extractor.name} needs more samples than feature dimensions "
                             f"({extractor.dim}): split {split!r} has {len(dataset)} images; set "
                             f"data.params.eval_samples to at least {extractor.dim + 1} (more is better)")
        return dataset

    def update_phases(self) -> list[UpdatePhase]:
        cfg = self.cfg
        steps = cfg.loss.critic_steps or get_entry(cfg.model.name).extra.get("critic_steps", 1)
        if steps < 1:
            raise ValueError(f"loss.critic_steps = {steps}; expected >= 1")
        return [UpdatePhase("discriminator", "discriminator"), UpdatePhase("generator", "generator", every=steps)]

    def training_losses(self, model, batch, phase):
        x, y = batch[:2]
        gan = unwrap(model)
        y = y if getattr(gan, "num_classes", None) is not None else None
        if phase.name == "discriminator":
            # One generator pass per batch, as in pytorch/examples: the generator phase of the same batch reuses
            # these images (and their graph), so BatchNorm statistics are updated once and no work is repeated.
            fake = gan.generator(gan.latents(x.shape[0]), y)
            self._last_fake = (x, fake)
            real_scores, fake_scores = gan.discriminator(x, y), gan.discriminator(fake.detach(), y)
            if gan.loss == "wgan-gp":
                penalty = losses.gradient_penalty(gan.discriminator, x, fake.detach(), y)
                distance = real_scores.mean() - fake_scores.mean()
                return {"loss": -distance + self.cfg.loss.gp_weight * penalty, "wasserstein": distance.detach(),
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

    def new_accumulator(self, dataset):
        e = self.cfg.eval
        extractor = self.feature_extractor("cpu")
        reference = self.training_features if e.fid_train_floor else None
        return GANAccumulator(extractor.name, e.kid_subsets, e.kid_subset_size, e.collapse_ratio, e.seed,
                              reference=reference)

    def training_features(self, batch_size: int = 500) -> torch.Tensor:
        """The FID extractor's features of every image of the training split (no augmentation), computed once
        per process: the reference side of the train-vs-evaluation floor."""
        cfg = self.cfg
        key = (cfg.eval.fid_features, cfg.data.dataset, cfg.data.root, cfg.data.train_split,
               str(sorted(cfg.data.params.items())))
        if key not in self._training_features:
            dataset = self.build_dataset(cfg.data.train_split, train=False)
            extractor = self.feature_extractor("cpu")
            chunks = []
            for start in range(0, len(dataset), batch_size):
                images = torch.stack([dataset.image(i) for i in range(start, min(start + batch_size, len(dataset)))])
                chunks.append(extractor(images))
            self._training_features[key] = torch.cat(chunks).double()
        return self._training_features[key]

    def eval_outputs(self, model, batch):
        x, y, seeds, indices = batch
        y = y if getattr(model, "num_classes", None) is not None else None
        gens = noise_generators(seeds, x.device)
        z = torch.stack([torch.randn(model.latent_dim, generator=g, device=x.device) for g in gens])
        fake = model.generator(z, y)
        extractor = self.feature_extractor(x.device)
        real_features, fake_features = extractor(x * 0.5 + 0.5), extractor(fake * 0.5 + 0.5)
        correct = None
        head = getattr(extractor, "head", None)
        if y is not None and head is not None and head.out_features == model.num_classes:
            # a conditional sample counts as right when the extractor's classifier gives it the class it was
            # drawn for (lenet5.mnist on MNIST: does the model draw the digit it was asked for)
            correct = head(fake_features).argmax(1) == y
        return real_features, fake_features, correct
