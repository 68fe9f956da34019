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
from visionzoo.tasks.generative.fid import fid_from_features, kid_from_features, sample_diversity


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
    """MSE and PSNR of reconstructions; a denoising autoencoder's from its corrupted input, next to the corrupted
    input's own PSNR, for its training corruption and for each of `extra_corruptions` (named "<kind>_<amount>",
    reported as psnr_<name>, psnr_corrupted_<name>, psnr_gain_<name>)."""

    base_keys = ("n", "mse", "psnr", "mse_corrupted", "psnr_corrupted")

    def __init__(self, denoising: bool, extra_corruptions: tuple[str, ...] | list[str] = ()):
        self.extra_corruptions = list(extra_corruptions)
        self.keys = self.base_keys + tuple(f"{m}_{name}" for name in self.extra_corruptions
                                           for m in ("psnr", "psnr_corrupted"))
        super().__init__()
        self.denoising = denoising

    def update(self, batch, outputs, indices) -> None:
        x = batch[0]
        x_hat, x_in, extras = outputs
        self.add(n=torch.tensor(float(x.shape[0])), mse=(x_hat - x).pow(2).flatten(1).mean(1), psnr=psnr(x_hat, x))
        if self.denoising:
            self.add(mse_corrupted=(x_in - x).pow(2).flatten(1).mean(1), psnr_corrupted=psnr(x_in, x))
        for name, (extra_hat, extra_in) in extras.items():
            self.add(**{f"psnr_{name}": psnr(extra_hat, x), f"psnr_corrupted_{name}": psnr(extra_in, x)})

    def compute(self) -> dict:
        n = max(self.total("n"), 1.0)
        out = {"num_images": int(n), "mse": self.total("mse") / n, "psnr": self.total("psnr") / n}
        if self.denoising:
            out.update({"mse_corrupted": self.total("mse_corrupted") / n,
                        "psnr_corrupted": self.total("psnr_corrupted") / n})
            out["psnr_gain"] = out["psnr"] - out["psnr_corrupted"]
        for name in self.extra_corruptions:
            out[f"psnr_{name}"] = self.total(f"psnr_{name}") / n
            out[f"psnr_corrupted_{name}"] = self.total(f"psnr_corrupted_{name}") / n
            out[f"psnr_gain_{name}"] = out[f"psnr_{name}"] - out[f"psnr_corrupted_{name}"]
        return out


class VAEAccumulator(_SumAccumulator):
    keys = ("n", "elbo", "recon_nll", "kl", "n_iwae", "iwae", "iwae_squared", "elbo_iwae_images")

    def __init__(self, dims: int, dequantized: bool, k: int, binary_data: str = "binarised images (pixel > 0.5)"):
        super().__init__()
        self.dims, self.dequantized, self.k = dims, dequantized, k
        self.binary_data = binary_data  # how the binary images were made, for the card

    def update(self, batch, outputs, indices) -> None:
        terms, bound, keep = outputs  # keep: the batch positions whose bound L_k was computed
        self.add(n=torch.tensor(float(terms["elbo"].shape[0])), elbo=terms["elbo"], recon_nll=terms["recon_nll"],
                 kl=terms["kl"])
        if bound is not None:
            self.add(n_iwae=torch.tensor(float(bound.shape[0])), iwae=bound, iwae_squared=bound.double().pow(2),
                     elbo_iwae_images=terms["elbo"][keep])

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
            # the standard error of the mean over images (the spread of per-image bounds / sqrt(n))
            variance = max(self.total("iwae_squared") / n_iwae - out["iwae_bound"] ** 2, 0.0)
            out["nll_std_error"] = math.sqrt(variance * n_iwae / max(n_iwae - 1, 1) / n_iwae)
            out["bits_per_dim"] = bits_per_dim(out["nll"], self.dims, self.dequantized)
        out["data"] = "8-bit images dequantised to [0, 1]" if self.dequantized else self.binary_data
        return out


class GANAccumulator(Accumulator):
    """Features of real and generated images; FID/KID need every rank's features, so they are gathered.

    Beside the generator's FID/KID, two floors in the same feature space, the scores a perfect generator would
    get at this sample size: the evaluation images split into two random halves (seeded by `seed`) scored
    against each other, and, when `reference` (a callable giving the training images' features) is set, the
    training images against the evaluation images. Conditional models: `correct` marks the samples that the
    extractor's own classifier head assigns to the class they were drawn for."""

    def __init__(self, extractor_name: str, kid_subsets: int, kid_subset_size: int, collapse_ratio: float,
                 seed: int, reference=None, classifier_name: str | None = None):
        self.extractor_name = extractor_name
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.collapse_ratio, self.seed = collapse_ratio, seed
        self.reference, self.classifier_name = reference, classifier_name
        self.real: list[torch.Tensor] = []
        self.fake: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []
        self.correct: list[torch.Tensor] = []

    def update(self, batch, outputs, indices) -> None:
        real, fake, correct = outputs
        self.real.append(real.detach().double().cpu())
        self.fake.append(fake.detach().double().cpu())
        self.indices.append(torch.as_tensor(indices).reshape(-1).cpu())
        if correct is not None:
            self.correct.append(correct.detach().cpu().bool())

    def synchronize(self) -> None:
        gathered: list = [None] * torch.distributed.get_world_size()
        mine = (torch.cat(self.real), torch.cat(self.fake), torch.cat(self.indices),
                torch.cat(self.correct) if self.correct else None)
        torch.distributed.all_gather_object(gathered, mine)
        self.real = [g[0] for g in gathered]
        self.fake = [g[1] for g in gathered]
        self.indices = [g[2] for g in gathered]
        self.correct = [g[3] for g in gathered if g[3] is not None]

    def _scores(self, real: torch.Tensor, fake: torch.Tensor, floor: bool = False) -> tuple[float, float, float]:
        fid = fid_from_features(real, fake, extractor_name=self.extractor_name)
        # a floor's halves may be smaller than the subsets the generator's score uses
        size = min(self.kid_subset_size, real.shape[0], fake.shape[0]) if floor else self.kid_subset_size
        kid, kid_std = kid_from_features(real, fake, subsets=self.kid_subsets, subset_size=size, seed=self.seed)
        return fid, kid, kid_std

    def compute(self) -> dict:
        real, fake = torch.cat(self.real), torch.cat(self.fake)
        fid, kid, kid_std = self._scores(real, fake)
        div_real, div_fake = sample_diversity(real), sample_diversity(fake)
        ratio = div_fake / max(div_real, 1e-12)
        out = {"fid": fid, "kid": kid, "kid_std": kid_std, "diversity_ratio": ratio,
               "num_real": int(real.shape[0]), "num_generated": int(fake.shape[0]),
               "feature_extractor": self.extractor_name}
        half = real.shape[0] // 2
        if half > real.shape[1]:  # FID needs more samples than dimensions
            # a seeded random split, not the first and second halves: MNIST's test set is ordered by writer
            # population (its halves differ: FID 27 in lenet5.mnist space against 1.8 for a random split)
            ordered = real[torch.cat(self.indices).argsort()]
            ordered = ordered[torch.randperm(len(ordered), generator=torch.Generator().manual_seed(self.seed))]
            out["fid_floor_halves"], out["kid_floor_halves"], _ = self._scores(
                ordered[:half], ordered[half:2 * half], floor=True)
            out["fid_over_floor_halves"] = fid / max(out["fid_floor_halves"], 1e-12)
        if self.reference is not None:
            reference = self.reference()
            out["fid_floor_train"], out["kid_floor_train"], _ = self._scores(reference, real, floor=True)
            out["num_train_reference"] = int(reference.shape[0])
        if self.correct:
            correct = torch.cat(self.correct)
            out["conditional_accuracy"] = float(correct.float().mean())
            out["conditional_classifier"] = self.classifier_name or self.extractor_name
        if ratio < self.collapse_ratio:
            out["warnings"] = [f"generated samples look collapsed: their mean pairwise feature distance is "
                               f"{ratio:.3f} of the real images' (threshold eval.collapse_ratio = "
                               f"{self.collapse_ratio}); FID {fid:.2f}"]
        return out
