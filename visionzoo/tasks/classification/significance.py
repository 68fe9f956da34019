"""McNemar's exact test for two classifiers scored on the same images: the statistics only. The command that
runs the models and prints the test is `python -m visionzoo.cli.significance`.

b01 = images A got right and B wrong, b10 = the reverse. Under the null hypothesis that both err equally often,
min(b01, b10) follows Binomial(b01 + b10, 1/2); the two-sided exact p-value is written by hand (math.comb, a few
lines) so that the package needs no SciPy; the tests check it against scipy.stats.binomtest.
"""
from __future__ import annotations

import math

import torch


def mcnemar_exact(b01: int, b10: int) -> float:
    """Two-sided exact McNemar p-value for b01 and b10 discordant pairs (1.0 when there are none)."""
    n = b01 + b10
    if n == 0:
        return 1.0
    k = min(b01, b10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def discordant(correct_a: torch.Tensor, correct_b: torch.Tensor) -> tuple[int, int]:
    """(A right and B wrong, A wrong and B right) counts of two boolean vectors over the same images."""
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"the two prediction sets cover different images: {tuple(correct_a.shape)} vs "
                         f"{tuple(correct_b.shape)}")
    return int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())
