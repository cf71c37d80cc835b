"""Fitness shaping: raw scores of the whole population -> utilities (higher is better).

Computed once on the driver over all ``2n`` scores, never per worker (a per-worker ranking
would change the algorithm with the number of workers). Non-finite scores (NaN, ±inf) count as
the worst score: they get the lowest rank, or the worst finite value for the value-based
shapings, so they can never push the parameters anywhere.

Scale conventions (design.md §2): ``raw`` is ``(f - mean f) / N`` so that ``sum_i u_i z_i``
estimates ``E[f z]``; ``nes`` is the published log-utility (Wierstra et al. 2014, eq. 8);
``centered_ranks`` is normalized to ``sum |u| = 1``; ``zscore`` is ``(f - mean) / (std * N)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Shaping = Callable[[np.ndarray], np.ndarray]


def _worst_for_nonfinite(fitness: np.ndarray) -> np.ndarray:
    """Copy with non-finite entries replaced by -inf (ranks) — used by the rank shapings."""
    f = np.asarray(fitness, dtype=np.float64).copy()
    f[~np.isfinite(f)] = -np.inf
    return f


def _ranks(fitness: np.ndarray) -> np.ndarray:
    """0-based ranks, ascending; ties share their average rank (order-independent)."""
    f = _worst_for_nonfinite(fitness)
    order = np.argsort(f, kind="stable")
    s = f[order]
    first = np.r_[True, s[1:] != s[:-1]]  # start of each run of equal values
    starts = np.r_[np.flatnonzero(first), f.size]
    run = np.cumsum(first) - 1
    ranks = np.empty(f.size)
    ranks[order] = 0.5 * (starts[run] + starts[run + 1] - 1)
    return ranks


def centered_ranks(fitness: np.ndarray) -> np.ndarray:
    """Ranks mapped to ``[-0.5, 0.5]`` (Salimans et al. 2017), normalized to ``sum |u| = 1``."""
    n = fitness.size
    if n < 2:
        return np.zeros(n)
    u = _ranks(fitness) / (n - 1) - 0.5
    total = np.abs(u).sum()
    return u / total if total > 0 else u


def nes_utilities(fitness: np.ndarray) -> np.ndarray:
    """NES log-utilities by rank (best rank k=1): ``max(0, ln(N/2+1) - ln k) / sum - 1/N``."""
    n = fitness.size
    k = n - _ranks(fitness)  # 1 = best; ties get the average of their ranks
    raw = np.maximum(0.0, np.log(n / 2 + 1) - np.log(k))
    return raw / raw.sum() - 1.0 / n


def _finite_or_worst(fitness: np.ndarray) -> np.ndarray:
    f = np.asarray(fitness, dtype=np.float64).copy()
    bad = ~np.isfinite(f)
    if bad.all():
        return np.zeros_like(f)
    f[bad] = f[~bad].min()
    return f


def zscore(fitness: np.ndarray) -> np.ndarray:
    """``(f - mean) / (std * N)``; zero when all scores are equal."""
    f = _finite_or_worst(fitness)
    std = f.std()
    return (f - f.mean()) / (std * f.size) if std > 0 else np.zeros_like(f)


def raw(fitness: np.ndarray) -> np.ndarray:
    """``(f - mean f) / N``: the unbiased Monte-Carlo weights with a mean baseline."""
    f = _finite_or_worst(fitness)
    return (f - f.mean()) / f.size


SHAPINGS: dict[str, Shaping] = {
    "centered_ranks": centered_ranks,
    "nes": nes_utilities,
    "zscore": zscore,
    "raw": raw,
}
