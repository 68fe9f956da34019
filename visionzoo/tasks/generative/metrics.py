"""Evaluation of the generative family, one accumulator per kind of model.

- autoencoders: reconstruction MSE and PSNR (the denoising one: from the corrupted input to the clean image,
  next to the PSNR of the corrupted input itself, so the gain is visible);
- VAEs: the ELBO and its two terms, the importance-weighted bound L_k, NLL = -L_k and bits per dimension,
  all in nats per image of the data the likelihood models (binarised or dequantised, see models/vae.py);
- GANs: FID and KID of generated samples against the evaluation split's images, through a named feature
  extractor, and sample diversity against the real images' (a collapse warning when it falls).
"""
from __future__ import annotations

import math

import torch

from visionzoo.tasks.base import Accumulator


def psnr(x_hat: torch.Tensor, x: torch.Tensor, data_max: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, data_max] (an exact reconstruction is capped at 100 dB)."""
    mse = (x_hat.float() - x.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_max ** 2 / mse.clamp(min=1e-10))


def bits_per_dim(nll_nats: float, dims: int, dequantized: bool) -> float:
    """NLL per image (nats) as bits per dimension; for densities on dequantised 8-bit data add D ln 256 nats
    (the density is over [0, 1], the 8-bit probability over 256 levels: REFERENCE.md)."""
    return (nll_nats + (dims * math.log(256) if dequantized else 0.0)) / (dims * math.log(2))


class _SumAccumulator(Accumulator):
    """Per-image values summed by name; distributed evaluation sums the same tensors across ranks."""

    keys: tuple[str, ...] = ()

    def __init__(self):
        self.sums = torch.zeros(len(self.keys), dtype=torch.float64)

    def add(self, **values: torch.Tensor) -> None:
        for k, v in values.items():
            self.sums[self.keys.index(k)] += v.detach().double().sum().cpu()

    def total(self, key: str) -> float:
        return float(self.sums[self.keys.index(key)])

    def state_tensors(self):
        return [self.sums]

    def load_state_tensors(self, tensors) -> None:
        self.sums = tensors[0]


class AutoencoderAccumulator(_SumAccumulator):
    keys = ("n", "mse", "psnr", "mse_corrupted", "psnr_corrupted")

    def __init__(self, denoising: bool):
        super().__init__()
        self.denoising = denoising

    def update(self, batch, outputs, indices) -> None:
        x = batch[0]
        x_hat, x_in = outputs
        self.add(n=torch.tensor(float(x.shape[0])), mse=(x_hat - x).pow(2).flatten(1).mean(1), psnr=psnr(x_hat, x))
        if self.denoising:
            self.add(mse_corrupted=(x_in - x).pow(2).flatten(1).mean(1), psnr_corrupted=psnr(x_in, x))

    def compute(self) -> dict:
        n = max(self.total("n"), 1.0)
        out = {"num_images": int(n), "mse": self.total("mse") / n, "psnr": self.total("psnr") / n}
        if self.denoising:
            out.update({"mse_corrupted": self.total("mse_corrupted") / n,
                        "psnr_corrupted": self.total("psnr_corrupted") / n})
            out["psnr_gain"] = out["psnr"] - out["psnr_corrupted"]
        return out


class VAEAccumulator(_SumAccumulator):
    keys = ("n", "elbo", "recon_nll", "kl", "n_iwae", "iwae", "elbo_iwae_images")

    def __init__(self, dims: int, dequantized: bool, k: int):
        super().__init__()
        self.dims, self.dequantized, self.k = dims, dequantized, k

    def update(self, batch, outputs, indices) -> None:
        terms, bound, keep = outputs  # keep: the batch positions whose bound L_k was computed
        self.add(n=torch.tensor(float(terms["elbo"].shape[0])), elbo=terms["elbo"], recon_nll=terms["recon_nll"],
                 kl=terms["kl"])
        if bound is not None:
            self.add(n_iwae=torch.tensor(float(bound.shape[0])), iwae=bound, elbo_iwae_images=terms["elbo"][keep])

    def compute(self) -> dict:
        n = max(self.total("n"), 1.0)
        out = {"num_images": int(n), "elbo": self.total("elbo") / n, "recon_nll": self.total("recon_nll") / n,
               "kl": self.total("kl") / n}
        out["elbo_bits_per_dim"] = bits_per_dim(-out["elbo"], self.dims, self.dequantized)
        n_iwae = self.total("n_iwae")
        if n_iwae:
            out.update({"iwae_k": self.k, "iwae_images": int(n_iwae), "iwae_bound": self.total("iwae") / n_iwae,
                        # the ELBO on the same images as L_k: the pair to compare (L_1 <= L_k)
                        "elbo_on_iwae_images": self.total("elbo_iwae_images") / n_iwae})
            out["nll"] = -out["iwae_bound"]
            out["bits_per_dim"] = bits_per_dim(out["nll"], self.dims, self.dequantized)
        out["data"] = "8-bit images dequantised to [0, 1]" if self.dequantized else "binarised images (pixel > 0.5)"
        return out


class GANAccumulator(Accumulator):
    """Features of real and generated images; FID/KID need every rank's features, so they are gathered."""

    def __init__(self, extractor_name: str, kid_subsets: int, kid_subset_size: int, collapse_ratio: float,
                 seed: int):
        self.extractor_name = extractor_name
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.collapse_ratio, self.seed = collapse_ratio, seed
        self.real: list[torch.Tensor] = []
        self.fake: list[torch.Tensor] = []

    def update(self, batch, outputs, indices) -> None:
        real, fake = outputs
        self.real.append(real.detach().double().cpu())
        self.fake.append(fake.detach().double().cpu())

    def synchronize(self) -> None:
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, (torch.cat(self.real), torch.cat(self.fake)))
        self.real = [r for r, _ in gathered]
        self.fake = [f for _, f in gathered]

    def compute(self) -> dict:
        from visionzoo.tasks.generative.fid import fid_from_features, kid_from_features, sample_diversity

        real, fake = torch.cat(self.real), torch.cat(self.fake)
        fid = fid_from_features(real, fake, extractor_name=self.extractor_name)
        kid, kid_std = kid_from_features(real, fake, subsets=self.kid_subsets, subset_size=self.kid_subset_size,
                                         seed=self.seed)
        div_real, div_fake = sample_diversity(real), sample_diversity(fake)
        ratio = div_fake / max(div_real, 1e-12)
        out = {"fid": fid, "kid": kid, "kid_std": kid_std, "diversity_ratio": ratio,
               "num_real": int(real.shape[0]), "num_generated": int(fake.shape[0]),
               "feature_extractor": self.extractor_name}
        if ratio < self.collapse_ratio:
            out["warnings"] = [f"generated samples look collapsed: their mean pairwise feature distance is "
                               f"{ratio:.3f} of the real images' (threshold eval.collapse_ratio = "
                               f"{self.collapse_ratio}); FID {fid:.2f}"]
        return out
