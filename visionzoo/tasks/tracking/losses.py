"""The two Siamese trackers' training losses.

SiamFC (Bertinetto et al. 2016): each cell u of the response map is a logistic-regression output with
label y[u] = +1 within `radius` px (in the search crop) of the target centre, -1 elsewhere; the loss is
the mean of log(1 + exp(-y v)) with positives and negatives weighted to equal total weight (the paper's
class balancing), which is binary cross-entropy with logits under per-cell weights.

SINT (Tao et al. 2016): the marginal contrastive loss on the distance D = ||f(x_j) - f(x_k)||_2 between
two L2-normalised embeddings, y = 1 for the same object:
  "paper":   L = 1/2 y D^2 + 1/2 (1 - y) max(0, eps - D^2)      (Eq. 1 of the SINT paper: the margin
             bounds the squared distance)
  "hadsell": L = 1/2 y D^2 + 1/2 (1 - y) max(0, eps - D)^2      (Hadsell et al.'s contrastive loss, the
             form ../shared/REFERENCE.md and the course slides give)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def siamfc_labels(search_boxes: torch.Tensor, response_size: int, stride: int, search_size: int,
                  radius: float) -> torch.Tensor:
    """(B, R, R) float labels, 1 for positive cells: the cell's position in the search crop (response
    centre = crop centre, `stride` px per cell) within `radius` px of the target box centre."""
    centers = (search_boxes[:, :2] + search_boxes[:, 2:]) / 2  # (B, 2) x, y in crop px
    offsets = (torch.arange(response_size, device=search_boxes.device, dtype=torch.float32)
               - (response_size - 1) / 2) * stride + search_size / 2
    dx = offsets[None, None, :] - centers[:, 0, None, None]
    dy = offsets[None, :, None] - centers[:, 1, None, None]
    return ((dx ** 2 + dy ** 2) <= radius ** 2).float()


def siamfc_logistic_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Class-balanced logistic loss: positives and negatives each carry half the weight of the map."""
    pos = labels.sum(dim=(-2, -1), keepdim=True)
    neg = labels[0].numel() - pos
    weights = torch.where(labels > 0.5, 0.5 / pos.clamp(min=1), 0.5 / neg.clamp(min=1))
    loss = F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum")
    return loss / logits.shape[0]


def contrastive_loss(a: torch.Tensor, b: torch.Tensor, same: torch.Tensor, margin: float,
                     form: str = "paper") -> torch.Tensor:
    """Mean marginal contrastive loss over pairs (a[i], b[i]) with labels `same` (1 = same object)."""
    d2 = (a.float() - b.float()).pow(2).sum(-1)
    if form == "paper":
        negative = F.relu(margin - d2)
    elif form == "hadsell":
        negative = F.relu(margin - d2.clamp(min=1e-12).sqrt()).pow(2)
    else:
        raise ValueError(f"loss.form must be 'paper' or 'hadsell', got {form!r}")
    return (0.5 * same * d2 + 0.5 * (1 - same) * negative).mean()
