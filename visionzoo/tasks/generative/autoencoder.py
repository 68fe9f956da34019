"""The generative task for autoencoders (plain and denoising): reconstruction loss, PSNR (and, for a
denoising model, the gain over its corrupted input, also under `eval.extra_corruptions`)."""
from __future__ import annotations

import torch

from visionzoo.models.autoencoder import corrupt_images, parse_corruption
from visionzoo.models.utils import unwrap
from visionzoo.registry import capabilities
from visionzoo.tasks.generative import losses
from visionzoo.tasks.generative.common import GenerativeTaskBase, noise_generators
from visionzoo.tasks.generative.metrics import AutoencoderAccumulator


class AutoencoderTask(GenerativeTaskBase):
    kind = "autoencoder"
    primary_metric = "psnr"

    def training_losses(self, model, batch, phase):
        x = batch[0]
        x_hat = model(unwrap(model).corrupt(x))
        loss = losses.reconstruction_loss(x_hat, x, self.cfg.loss.recon)
        return {"loss": loss, "mse": torch.nn.functional.mse_loss(x_hat.detach(), x)}

    def new_accumulator(self, dataset):
        cfg = self.cfg
        denoising = capabilities(cfg.model.name).denoising
        extras = [f"{k}_{v:g}" for k, v in map(parse_corruption, cfg.eval.extra_corruptions)]
        if extras and not denoising:
            raise ValueError(f"eval.extra_corruptions is for denoising autoencoders, not {cfg.model.name}")
        return AutoencoderAccumulator(denoising=denoising, extra_corruptions=extras)

    def eval_outputs(self, model, batch):
        x, y, seeds, indices = batch
        gens = noise_generators(seeds, x.device)
        x_in = x if model.corruption is None else torch.cat(
            [model.corrupt(x[i:i + 1], generator=g) for i, g in enumerate(gens)])
        extras = {}
        for spec in self.cfg.eval.extra_corruptions:
            kind, amount = parse_corruption(spec)
            # each image's own generator goes on from where its main corruption left it: fixed per image
            extra_in = torch.cat([corrupt_images(x[i:i + 1], kind, amount, g) for i, g in enumerate(gens)])
            extras[f"{kind}_{amount:g}"] = (model(extra_in), extra_in)
        return model(x_in), x_in, extras
