"""How a GAN's samples read to the classifier behind its FID features (e.g. lenet5.mnist on MNIST), and how
much of its FID is the class mix.

A feature space trained to separate classes punishes a lopsided class mix hard, so a FID alone does not say
whether a generator draws the wrong mixture of good images or a fair mixture of poor ones. This draws many
samples, labels each with the extractor's classifier, and computes three FIDs against the real images on an
equal number of samples (FID depends on the sample count): as drawn; resampled to equal class counts; and
resampled to equal class counts among the samples the classifier is sure of. The gap between the first two is
what the class mix costs; what is left in the third is the look of the images themselves.
"""
from __future__ import annotations

import torch

from visionzoo.engine.console import progress_bar
from visionzoo.tasks.generative.fid import fid_from_features


def balanced_indices(labels: torch.Tensor, num_classes: int, per_class: int,
                     keep: torch.Tensor | None = None) -> torch.Tensor:
    """The first `per_class` indices of each class among `labels` (restricted to `keep` where given), class by
    class; a ValueError names a class with fewer."""
    chosen = []
    for k in range(num_classes):
        mask = labels == k if keep is None else (labels == k) & keep
        idx = torch.nonzero(mask).flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {k} has {len(idx)} samples, fewer than the {per_class} asked for")
        chosen.append(idx[:per_class])
    return torch.cat(chosen)


def check_arguments(samples: int, per_class: int, sure: float) -> None:
    if samples < 1 or per_class < 1 or not 0 < sure < 1:
        raise ValueError(f"samples ({samples}) and per_class ({per_class}) must be >= 1 and sure ({sure}) in (0, 1)")


@torch.no_grad()
def class_balance(gan, extractor, real_features: torch.Tensor, *, samples: int = 60000, per_class: int = 1000,
                  sure: float = 0.9, batch_size: int = 1000, seed: int = 0, show_progress: bool = True) -> dict:
    """Class histogram of `samples` draws from `gan` as `extractor`'s classifier reads them, the share it is
    sure of (softmax > `sure`), and FIDs against `real_features` as drawn, class-balanced, and class-balanced
    among sure samples, each on 10 x m samples with m = min(`per_class`, the rarest class's sure count)."""
    head = getattr(extractor, "head", None)
    if head is None:
        raise ValueError(f"{extractor.name}: the class mix needs a classifier's features (e.g. "
                         f"'zoo:lenet5:mnist'), whose head labels the samples")
    check_arguments(samples, per_class, sure)
    num_classes = head.out_features
    generator = torch.Generator(device=extractor.device).manual_seed(seed)
    conditional = getattr(gan, "num_classes", None) is not None
    features, labels, confidence = [], [], []
    for start in progress_bar(range(0, samples, batch_size), desc="samples", disable=not show_progress):
        n = min(batch_size, samples - start)
        # a conditional model is asked for every class in turn: its mix is then its classifier agreement
        y = (torch.arange(start, start + n, device=extractor.device) % gan.num_classes) if conditional else None
        images = gan.sample(n, y=y, generator=generator).float() * 0.5 + 0.5
        f = extractor(images.clamp(0, 1))
        p = head(f).softmax(1)
        c, k = p.max(1)
        features.append(f.cpu())
        labels.append(k.cpu())
        confidence.append(c.cpu())
    features, labels, confidence = torch.cat(features), torch.cat(labels), torch.cat(confidence)
    counts = torch.bincount(labels, minlength=num_classes)
    is_sure = confidence > sure
    sure_counts = torch.bincount(labels[is_sure], minlength=num_classes)
    m = min(per_class, int(sure_counts.min()))
    result = {
        "samples": samples, "class_names": list(getattr(extractor, "class_names", []) or range(num_classes)),
        "class_counts": counts.tolist(), "sure_threshold": sure, "sure_fraction": float(is_sure.float().mean()),
        "sure_counts": sure_counts.tolist(), "per_class": m, "fid_samples": m * num_classes,
        "extractor": extractor.name,
    }
    if m < 2:
        result["note"] = (f"class {int(sure_counts.argmin())} has {int(sure_counts.min())} sure samples: "
                          f"too few for class-balanced FIDs; draw more samples")
        return result
    result["fid_as_drawn"] = fid_from_features(real_features, features[: m * num_classes], extractor.name)
    result["fid_class_balanced"] = fid_from_features(
        real_features, features[balanced_indices(labels, num_classes, m)], extractor.name)
    result["fid_class_balanced_sure"] = fid_from_features(
        real_features, features[balanced_indices(labels, num_classes, m, keep=is_sure)], extractor.name)
    return result


def summary_lines(result: dict) -> list[str]:
    counts = ", ".join(f"{name}: {n}" for name, n in zip(result["class_names"], result["class_counts"]))
    lines = [f"{result['samples']} samples read by {result['extractor']}",
             f"class counts: {counts}",
             f"sure (softmax > {result['sure_threshold']}): {100 * result['sure_fraction']:.1f} %"]
    if "note" in result:
        return lines + [result["note"]]
    return lines + [f"FID on {result['fid_samples']} samples each ({result['per_class']} per class where balanced):",
                    f"  as drawn                      {result['fid_as_drawn']:.2f}",
                    f"  class-balanced                {result['fid_class_balanced']:.2f}",
                    f"  class-balanced, sure samples  {result['fid_class_balanced_sure']:.2f}"]
