"""Frechet Inception Distance (FID), Kernel Inception Distance (KID) and a mode-collapse check, in float64.

Everything here works on features that are already extracted (see `visionzoo.tasks.generative.features`);
a score is only meaningful next to the name of the extractor that produced the features: FIDs from a
custom extractor are not comparable to published Inception FIDs.

Arrays may be numpy arrays or torch tensors; statistics are returned as float64 numpy arrays and scores
as Python floats.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
    "kid_from_features",
    "sample_diversity",
]

# At most this many rows enter `sample_diversity` (the cost is quadratic in the row count).
_DIVERSITY_MAX_ROWS = 1000


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _as_feature_matrix(features, what: str) -> np.ndarray:
    x = _as_float64(features)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D (N, D) feature matrix, got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise ValueError(
            f"{what}: {bad} of {x.shape[0]} feature rows contain NaN or Inf; FID/KID need finite features "
            f"(check the generator's outputs and the feature extractor's input range)"
        )
    return x


def feature_statistics(features, extractor_name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, as float64 numpy arrays.

    The covariance has rank at most N - 1, so N must exceed D for it to be full-rank; with fewer samples
    FID is dominated by the rank deficiency (the usual source of NaN or imaginary FIDs), hence the error.
    """
    x = _as_feature_matrix(features, extractor_name)
    n, d = x.shape
    if n <= d:
        raise ValueError(
            f"FID with {extractor_name} ({d}-dim features) needs more samples than feature dimensions: "
            f"got {n}; use at least {d + 1} (more is better)"
        )
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (n - 1)
    return mu, sigma


def _trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2: the sum of the square roots of the eigenvalues of S1 S2.

    Those eigenvalues equal the eigenvalues of the symmetric PSD matrix F^T S2 F for any factor
    S1 = F F^T (AB and BA share eigenvalues), so `eigvalsh` applies; that is stable where an iterative
    sqrtm of the non-symmetric S1 S2 returns complex parts or NaN for near-singular covariances.
    F is the Cholesky factor when S1 is numerically positive definite (several times cheaper than an
    eigendecomposition at D = 2048), else the symmetric square root from `eigh` (rank-deficient S1,
    e.g. fewer distinct samples than dimensions).
    """
    try:
        factor = np.linalg.cholesky(s1)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(s1)
        factor = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = factor.T @ s2 @ factor
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    # Tiny negative eigenvalues are rounding of a PSD matrix's zeros.
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) in float64 (see `_trace_sqrt_product`)."""
    mu1, mu2 = _as_float64(mu1), _as_float64(mu2)
    s1, s2 = _as_float64(sigma1), _as_float64(sigma2)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be 1-D of equal length, got shapes {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}) to match the means, got {s1.shape} and {s2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise ValueError(f"frechet_distance: {name} contains NaN or Inf")
    # Symmetrise: covariances computed in floating point are symmetric only up to rounding.
    s1 = (s1 + s1.T) / 2
    s2 = (s2 + s2.T) / 2
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * _trace_sqrt_product(s1, s2))
    # A squared distance between PSD-parameterised Gaussians is >= 0; a negative value here is rounding only.
    return max(value, 0.0)


def fid_from_features(real, fake, extractor_name: str = "features") -> float:
    """FID between two (N, D) feature sets (N may differ between them, D may not)."""
    r = _as_feature_matrix(real, f"{extractor_name} (real)")
    f = _as_feature_matrix(fake, f"{extractor_name} (fake)")
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"real and fake features must have the same dimension, got {r.shape[1]} and {f.shape[1]} "
            f"(were they extracted with the same extractor?)"
        )
    mu1, s1 = feature_statistics(r, f"{extractor_name} (real)")
    mu2, s2 = feature_statistics(f, f"{extractor_name} (fake)")
    return frechet_distance(mu1, s1, mu2, s2)


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the kernel k(a, b) = (a.b / d + 1)^3 between two equally sized samples."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    # The within-sample terms drop the diagonal (k(a, a)) to remove the estimator's bias.
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid_from_features(
    real, fake, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: mean and standard deviation over `subsets` random subsets of the unbiased polynomial MMD^2.

    Each subset draws `subset_size` rows without replacement from each set, using numpy's generator seeded
    with `seed`, so the result is deterministic for a seed. A `subset_size` larger than either set is an
    error, as in torch-fidelity (a silently smaller subset would change the estimate's spread).
    """
    r = _as_feature_matrix(real, "KID real features")
    f = _as_feature_matrix(fake, "KID fake features")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real and fake features must have the same dimension, got {r.shape[1]} and {f.shape[1]}")
    if isinstance(subsets, bool) or int(subsets) != subsets or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    if isinstance(subset_size, bool) or int(subset_size) != subset_size or subset_size < 2:
        raise ValueError(f"KID needs at least 2 samples per subset: subset_size={subset_size!r}")
    m = int(subset_size)
    for label, n in (("real", r.shape[0]), ("fake", f.shape[0])):
        if m > n:
            raise ValueError(f"KID subset_size={m} is larger than the {n} {label} samples: lower the subset size "
                             f"(eval.kid_subset_size) or evaluate more samples")
    rng = np.random.default_rng(seed)
    values = np.empty(int(subsets), dtype=np.float64)
    for i in range(int(subsets)):
        x = r[rng.choice(r.shape[0], m, replace=False)]
        y = f[rng.choice(f.shape[0], m, replace=False)]
        values[i] = _polynomial_mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())


def sample_diversity(x) -> float:
    """Mean pairwise L2 distance between the rows of `x` (each row flattened), in float64.

    A value near 0 for a generator's samples means they are (almost) all the same image: mode collapse.
    With more than 1000 rows, 1000 evenly spaced rows are used (deterministic).
    """
    a = _as_float64(x)
    if a.ndim < 1 or a.shape[0] < 2:
        raise ValueError(f"sample_diversity needs at least 2 rows, got shape {tuple(a.shape)}")
    a = a.reshape(a.shape[0], -1)
    if not np.isfinite(a).all():
        raise ValueError("sample_diversity: the input contains NaN or Inf")
    if a.shape[0] > _DIVERSITY_MAX_ROWS:
        a = a[np.linspace(0, a.shape[0] - 1, _DIVERSITY_MAX_ROWS).round().astype(np.int64)]
    # Distances are translation invariant; centring first keeps |a|^2 + |b|^2 - 2 a.b from cancelling
    # badly (identical rows become exact zeros).
    a = a - a.mean(axis=0)
    sq = (a * a).sum(axis=1)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * (a @ a.T), 0.0, None)
    n = a.shape[0]
    upper = np.triu_indices(n, k=1)
    return float(np.sqrt(d2[upper]).mean())
