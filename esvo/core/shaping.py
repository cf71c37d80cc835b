"""Fitness shaping: raw scores of the whole population -> utilities (higher is better).

Computed once on the driver over all ``2n`` scores, never per worker (a per-worker ranking
would change the algorithm with the number of workers). Non-finite scores (NaN, ±inf) count as
the worst score: they get the lowest rank, or the worst finite value for the value-based
shapings, so they can never push the parameters anywhere.

Scores arrive in pair order: entries ``2k`` and ``2k + 1`` are pair ``k``'s ``+z`` and ``-z``
members (``Strategy.utilities``); only ``raw`` uses that (its baseline leaves the pair out).

Scale conventions (design.md §2): ``raw`` is ``(f - baseline) / N`` so that ``sum_i u_i z_i``
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
    """NES log-utilities by rank (best rank k=1): ``max(0, ln(N/2+1) - ln k) / sum - 1/N``.

    Tied scores share the average of the utilities of the ranks they occupy, so a tie changes
    only the tied members' utilities (evaluating the formula at a fractional average rank and
    renormalizing would shift everyone's: ``[4, 2, 2, 1]`` would give the best 0.5008, not
    0.4804).
    """
    n = fitness.size
    f = _worst_for_nonfinite(fitness)
    order = np.argsort(-f, kind="stable")  # best first
    k = np.arange(1, n + 1)
    raw_u = np.maximum(0.0, np.log(n / 2 + 1) - np.log(k))
    by_rank = raw_u / raw_u.sum() - 1.0 / n
    s = f[order]
    group = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1  # runs of equal scores
    if group[-1] == 0:  # all equal: no ranking at all
        return np.zeros(n)
    shared = np.bincount(group, by_rank) / np.bincount(group)
    u = np.empty(n)
    u[order] = shared[group]
    return u


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
    """``(f_i - b_i) / N`` with a leave-one-pair-out baseline: the unbiased Monte-Carlo weights.

    ``b_i`` is the mean of the *other* pairs' scores (entries ``2k, 2k + 1`` are one pair). A
    mean over all scores would include the pair's own, which correlate with its ``z``: the
    log-sigma estimate ``sum_k (u_k+ + u_k-)(z_k^2 - 1)`` would then be biased by ``1 - 1/n``
    (half its size at n = 2). The baseline cancels from the mean's estimate ``u_k+ - u_k-``.
    With one pair there is no other to compare with: its utilities are ``±(f+ - f-)/4`` (no
    sigma signal). An odd number of scores (not pairs) leaves out each score alone.
    """
    f = _finite_or_worst(fitness)
    size = f.size
    if size < 2:
        return np.zeros_like(f)
    group = 2 if size % 2 == 0 else 1
    if size == group:  # one pair: its own mean
        return (f - f.mean()) / size
    own = f.reshape(-1, group).sum(axis=1).repeat(group)  # the score's pair (or itself)
    baseline = (f.sum() - own) / (size - group)
    return (f - baseline) / size


SHAPINGS: dict[str, Shaping] = {
    "centered_ranks": centered_ranks,
    "nes": nes_utilities,
    "zscore": zscore,
    "raw": raw,
}
