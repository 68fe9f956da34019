"""Binarised grey images for likelihood models with a Bernoulli decoder (binarised MNIST).

Two kinds, as in the IWAE paper (Burda, Grosse and Salakhutdinov 2015): *dynamic* binarisation for training
(a fresh Bernoulli sample of the grey levels every time an image is seen) and one *fixed*, seeded draw for
evaluation, so every evaluation of a model scores the same binary images.
"""
from __future__ import annotations

import torch


def binarize_fixed(images: torch.Tensor, seed: int) -> torch.Tensor:
    """One seeded Bernoulli draw of uint8 grey images (N, C, H, W): pixel = 255 with probability value / 255,
    else 0, drawn by ``torch.bernoulli`` under ``torch.Generator().manual_seed(seed)`` over the whole tensor in
    index order. The fixed binarisation of an evaluation set (the same on every machine and every call)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"binarize_fixed expects uint8 images, got {images.dtype}")
    g = torch.Generator().manual_seed(int(seed))
    return (torch.bernoulli(images.float() / 255, generator=g) * 255).to(torch.uint8)


class DynamicBinarize:
    """Transform of float images in [0, 1]: a Bernoulli sample of the grey levels under torch's default
    generator, which the trainer seeds per sample and epoch (engine/data.SeededDataset), so each epoch sees a
    fresh, reproducible binarisation ("dynamic binarisation")."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
