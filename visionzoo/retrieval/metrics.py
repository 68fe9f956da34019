"""Retrieval metrics: rank a gallery for each query by feature similarity, then recall@k, precision@k and
mean average precision, with relevance = same label.

Similarity is the inner product (the cosine for L2-normalised features). Queries are processed in blocks
of at most `block_elements` query-gallery similarities, so the full (queries x gallery) matrix is never
held at once; results do not depend on the block size.

Definitions (per query, over the whole ranked gallery):
  * recall@k: 1 if at least one relevant item is among the top k, else 0 (the image-retrieval "R@k" of
    e.g. the Stanford Online Products benchmark; not the fraction of relevant items retrieved).
  * precision@k: relevant items among the top k, divided by k (k capped at the gallery size).
  * AP: the area under the precision-recall curve as a sum over score thresholds,
    sum_n (R_n - R_{n-1}) P_n, i.e. the mean of the precision at the rank of each relevant item. Tied
    scores form one threshold, as in sklearn.metrics.average_precision_score, so AP does not depend on
    how ties are ordered. (The top-k lists order ties by gallery index.)
Queries without any relevant gallery item have no AP; they are left out of every mean and counted in
`queries_without_relevant`. With `exclude_self`, query i is not matched against gallery item i (the same
split used as gallery and queries: leave-one-out).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["RetrievalResult", "average_precision_sorted", "retrieval_metrics"]

DEFAULT_KS = (1, 5, 10)


def average_precision_sorted(scores: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """AP of each row of (B, G) `scores` sorted in descending order, with `relevant` (B, G) bool in the
    same order; tied scores count as one threshold. Rows without a relevant item give NaN.

    Hand-written because sklearn's average_precision_score handles one query at a time on the CPU and
    is not installed by default; this is its definition, vectorised over a block of queries."""
    rel = relevant.to(torch.float64)
    hits = rel.cumsum(1)
    n = scores.shape[1]
    positions = torch.arange(n, device=scores.device).expand_as(scores)
    # every item is credited with the precision at the end of its block of tied scores
    group_end = torch.ones_like(relevant)
    group_end[:, :-1] = scores[:, :-1] != scores[:, 1:]
    end_index = torch.where(group_end, positions, torch.full_like(positions, n))
    end_index = end_index.flip(1).cummin(1).values.flip(1)  # the first group end at or after each position
    precision_at_end = hits.gather(1, end_index) / (end_index + 1).to(torch.float64)
    n_relevant = rel.sum(1)
    return (rel * precision_at_end).sum(1) / n_relevant  # 0 / 0 = NaN for queries without relevant items


@dataclass
class RetrievalResult:
    """Metrics plus per-query details for reports."""

    metrics: dict  # scalars, per-class means and counts (JSON-ready)
    average_precision: np.ndarray  # (Q,) float64, NaN for queries without a relevant item
    first_relevant_rank: np.ndarray  # (Q,) 0-based rank of the first relevant item; -1 when there is none
    top_indices: np.ndarray  # (Q, top) gallery indices, best first
    top_scores: np.ndarray  # (Q, top) similarities

    def recall_at(self, ks: Sequence[int]) -> list[float]:
        """recall@k for each k (over the queries that have a relevant item)."""
        scored = self.first_relevant_rank >= 0
        if not scored.any():
            return [float("nan")] * len(ks)
        ranks = self.first_relevant_rank[scored]
        return [float((ranks < k).mean()) for k in ks]


def _check(features: torch.Tensor, labels, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    features = torch.as_tensor(features)
    labels = torch.as_tensor(labels)
    if features.ndim != 2:
        raise ValueError(f"{what} features must be (N, D), got shape {tuple(features.shape)}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"{what} labels must be (N,) = ({features.shape[0]},), got shape {tuple(labels.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError(f"{what} features contain NaN or Inf")
    return features, labels.long()


@torch.no_grad()
def retrieval_metrics(
    query_features, query_labels, gallery_features, gallery_labels, *,
    ks: Sequence[int] = DEFAULT_KS, top: int = 10, exclude_self: bool = False,
    class_names: Sequence[str] | None = None, block_elements: int = 1 << 21,
) -> RetrievalResult:
    """Rank the gallery for every query and score the rankings (see the module docstring).

    Returns the metrics ("mAP", "recall@k", "precision@k", counts, "per_class" means when the labels are
    class indices with `class_names`) and each query's AP, first relevant rank and `top` results."""
    q, q_labels = _check(query_features, query_labels, "query")
    g, g_labels = _check(gallery_features, gallery_labels, "gallery")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query features are {q.shape[1]}-d but gallery features {g.shape[1]}-d")
    if len(g) == 0 or len(q) == 0:
        raise ValueError(f"retrieval needs a non-empty gallery and queries (got {len(g)} and {len(q)})")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {list(ks)}")
    if exclude_self and len(q) != len(g):
        raise ValueError(f"exclude_self needs the same items as queries and gallery ({len(q)} vs {len(g)})")
    gallery_size = len(g) - (1 if exclude_self else 0)
    if gallery_size < 1:
        raise ValueError("exclude_self leaves an empty gallery")
    top = max(1, min(int(top), gallery_size))
    q, g = q.float(), g.float()
    block = max(1, int(block_elements) // len(g))

    ap_parts, first_parts, idx_parts, score_parts = [], [], [], []
    hits_at = {k: [] for k in ks}
    for start in range(0, len(q), block):
        stop = min(start + block, len(q))
        scores = q[start:stop] @ g.T
        rows = torch.arange(stop - start)
        if exclude_self:  # the query itself sorts last (all other scores are finite); its column is dropped
            scores[rows, rows + start] = float("-inf")
        sorted_scores, order = scores.sort(dim=1, descending=True, stable=True)
        relevant = g_labels[order] == q_labels[start:stop, None]
        if exclude_self:
            sorted_scores, order, relevant = sorted_scores[:, :-1], order[:, :-1], relevant[:, :-1]
        ap_parts.append(average_precision_sorted(sorted_scores, relevant))
        any_hit = relevant.any(1)
        first_parts.append(torch.where(any_hit, relevant.to(torch.int8).argmax(1), torch.full_like(rows, -1)))
        for k in ks:
            hits_at[k].append(relevant[:, :min(k, gallery_size)].sum(1))
        idx_parts.append(order[:, :top])
        score_parts.append(sorted_scores[:, :top])

    ap = torch.cat(ap_parts).numpy()
    first = torch.cat(first_parts).numpy()
    scored = ~np.isnan(ap)
    n_scored = int(scored.sum())
    metrics: dict = {}

    def mean(values: np.ndarray) -> float | None:
        return float(values[scored].mean()) if n_scored else None

    metrics["mAP"] = mean(ap)
    for k in ks:
        metrics[f"recall@{k}"] = mean((first >= 0) & (first < k))
    for k in ks:
        metrics[f"precision@{k}"] = mean(torch.cat(hits_at[k]).numpy() / min(k, gallery_size))
    metrics.update({"num_queries": len(q), "num_queries_scored": n_scored,
                    "queries_without_relevant": len(q) - n_scored, "gallery_size": len(g),
                    "exclude_self": bool(exclude_self), "ks": ks,
                    "similarity": "inner product (cosine for L2-normalised features)"})
    if class_names is not None:
        per_class = {}
        labels = q_labels.numpy()
        for c, name in enumerate(class_names):
            mask = (labels == c) & scored
            if mask.any():
                per_class[str(name)] = {"AP": float(ap[mask].mean()), "recall@1": float((first[mask] == 0).mean()),
                                        "queries": int(mask.sum())}
        metrics["per_class"] = per_class
    return RetrievalResult(metrics=metrics, average_precision=ap, first_relevant_rank=first,
                           top_indices=torch.cat(idx_parts).numpy(), top_scores=torch.cat(score_parts).numpy())
