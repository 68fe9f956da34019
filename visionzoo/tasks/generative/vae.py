"""The generative task for VAEs (conditional or not): the model's own ELBO terms for training, and for
evaluation the ELBO and the importance-weighted bound L_k as negative log-likelihoods."""
from __future__ import annotations

import torch

from visionzoo.models.utils import unwrap
from visionzoo.tasks.generative.common import (
    DigitsGenerativeParams,
    GenerativeTaskBase,
    data_params,
    default_kwarg,
    image_channels,
    noise_generators,
)
from visionzoo.tasks.generative.metrics import VAEAccumulator


class VAETask(GenerativeTaskBase):
    kind = "vae"
    primary_metric = "nll"

    def training_losses(self, model, batch, phase):
        x, y = batch[:2]
        core = unwrap(model)
        y = y if getattr(core, "num_classes", None) is not None else None
        terms = model(core.prepare_data(x), y)
        out = {"loss": terms["loss"], "recon_nll": terms["recon_nll"].detach().mean(),
               "kl": terms["kl"].detach().mean(), "elbo": terms["elbo"].detach().mean()}
        if "iwae_bound" in terms:
            out["iwae_bound"] = terms["iwae_bound"].detach().mean()
        return out

    def new_accumulator(self, dataset):
        cfg = self.cfg
        likelihood = cfg.model.kwargs.get("likelihood") or default_kwarg(cfg.model.name, "likelihood")
        params = data_params(cfg)
        binarized = isinstance(params, DigitsGenerativeParams) and params.binarize
        binary = (f"binarised images: one torch.bernoulli draw of the grey levels, seed "
                  f"{params.binarize_seed} (data.params.binarize_seed)") if binarized else \
            "binarised images (pixel > 0.5)"
        return VAEAccumulator(dims=image_channels(cfg) * cfg.data.input_size ** 2,
                              dequantized=likelihood == "gaussian", k=cfg.eval.iwae_k, binary_data=binary)

    def eval_outputs(self, model, batch):
        cfg = self.cfg
        x, y, seeds, indices = batch
        y = y if getattr(model, "num_classes", None) is not None else None
        gens = noise_generators(seeds, x.device)
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
