"""Importance mixing (Sun, Wierstra, Schaul & Schmidhuber, GECCO 2009): reuse the previous
generation's samples, and their fitness, when they are likely under the new distribution.

Let ``p_old`` be the distribution the previous population is distributed as and ``p_new`` the
current one; ``alpha`` is the minimal refresh rate. Each generation:

1. every member ``w`` of the previous population is kept, fitness and all, with probability
   ``min(1, (1 - alpha) p_new(w) / p_old(w))``, visiting the members in a random order and
   stopping once ``max(1, ceil(alpha * N))`` places are left (PyBrain's rule: the population is
   never all old);
2. fresh candidates are drawn from ``p_new`` and accepted with probability
   ``max(alpha, 1 - p_old(w) / p_new(w))`` until the population has ``N`` members again.

The kept density ``min(p_old, (1 - alpha) p_new)`` plus the accepted density
``max(alpha p_new, p_new - p_old)`` is ``p_new`` everywhere, so the mixed population is a
sample of ``p_new`` while only the accepted candidates are evaluated.

**Antithetic pairs are mixed member by member.** A pair ``mean ± step(z)`` is symmetric about
the mean it was drawn around; kept as a unit, an old pair is symmetric about the old mean, and
no acceptance rule that treats pairs as units (whatever joint density it uses) can make the
members of the mixed population marginally ``p_new``: that would need the kept members'
density ``p_old(w) k(w - mean_old)``, with ``k`` even about the old mean, to be completed to
``p_new`` by accepted members whose acceptance is even about the new mean, which fails as
soon as the means differ. Per member, the rule above is exact. The natural-gradient estimate
is a sum of per-member terms ``u_i grad log p(w_i)`` (a pair's ``a_k z_k`` and
``b_k (z_k^2 - 1)`` are its two members' terms added), so it stays an estimate over a sample
of ``p_new``; members whose partner was refused or not kept lose the antithetic variance
reduction, the price of the reuse. Fresh pairs are drawn in a fixed sequence of ids; a member
that is not accepted is not evaluated (``Ask.members``).

Everything is named, never stored: a member is ``(origin generation, id, sign)`` and its point
``mean_g + sign step_g(z(id))`` is rebuilt on the driver from the origin's distribution, kept in
the ``Pool`` while a member refers to it. Density ratios cost O(d) per member (``whiten``,
``log_density``); the random decisions come from ``(seed, generation)``.

For a population drawn independently of the step, the reuse is
``(1 - alpha)(1 - TV(p_old, p_new))``: for equal covariances ``(1 - alpha) 2 Phi(-delta / 2)``
with ``delta`` the Mahalanobis length of the mean's step (research.md §(c)), which collapses as
``delta`` grows like ``sqrt(d)``. The previous population is not independent of the step,
though: the natural gradient ``sigma sum_j u_j z_j`` is made of it, so member ``k``'s log-ratio
is about ``d (u_k - 1/2 sum_j u_j^2)``, large for every member of positive utility. In high d
mixing keeps the previous generation's better members (with their fitness) and refreshes the
rest: elitism, as in the published algorithm, which reuses the population that made the step.
The mixed population is then distributed as ``p_new`` marginally over the history, not given
the step. scripts/bench_convergence.py --suite mixing measures both (BENCHMARKS.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from esvo.core.distributions import PARAMS, Distribution, SearchParams
from esvo.core.noise import SMALL, Noise, perturbation_ids

_TAG = 0x1A7E  # stream of the mixing decisions, apart from every other use of the seed


@dataclass(frozen=True)
class ImportanceMixing:
    """Settings: ``min_refresh`` is ``alpha``, the least fraction of fresh candidates."""

    min_refresh: float = 0.01

    def __post_init__(self) -> None:
        if not 0.0 < self.min_refresh <= 1.0:
            raise ValueError(f"min_refresh must be in (0, 1], got {self.min_refresh}")


@dataclass(frozen=True)
class Origin:
    """The distribution a generation sampled from."""

    generation: int
    mean: np.ndarray
    params: SearchParams


@dataclass(frozen=True)
class Pool:
    """A generation's population, member by member, with the fitness each was given.

    ``origin[i]``: the generation whose distribution drew member ``i``; ``ids[i]``, ``sign[i]``
    (+1 / -1): its noise and side; ``fitness[i]``: its raw score. ``origins``: the
    distributions of the generations still referred to, in increasing order.
    """

    origin: np.ndarray  # (m,) int64
    ids: np.ndarray  # (m,) uint64
    sign: np.ndarray  # (m,) int8
    fitness: np.ndarray  # (m,) float64
    origins: tuple[Origin, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def origin_of(self, generation: int) -> Origin:
        for o in self.origins:
            if o.generation == generation:
                return o
        raise KeyError(f"no origin for generation {generation}")

    def take(self, index: np.ndarray) -> Pool:
        """The members ``index``, with only the origins they refer to."""
        origin = self.origin[index]
        used = set(origin.tolist())
        return Pool(
            origin,
            self.ids[index],
            self.sign[index],
            self.fitness[index],
            tuple(o for o in self.origins if o.generation in used),
        )

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {
            "pool/origin": self.origin,
            "pool/ids": self.ids,
            "pool/sign": self.sign,
            "pool/fitness": self.fitness,
            "pool/origins": np.array([o.generation for o in self.origins], dtype=np.int64),
        }
        for o in self.origins:
            key = f"pool/o{o.generation}"
            out[f"{key}/mean"] = o.mean
            out[f"{key}/sigma"] = o.params.sigma
            out.update({f"{key}/dist/{k}": v for k, v in o.params.to_arrays().items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], kind: str) -> Pool | None:
        if "pool/ids" not in arrays:
            return None
        origins = []
        for g in np.asarray(arrays["pool/origins"]).tolist():
            key = f"pool/o{g}"
            extra = {
                k.removeprefix(f"{key}/dist/"): np.array(arrays[k])
                for k in arrays
                if k.startswith(f"{key}/dist/")
            }
            params = PARAMS[kind](np.array(arrays[f"{key}/sigma"], dtype=np.float64), **extra)
            origins.append(Origin(int(g), np.array(arrays[f"{key}/mean"], np.float64), params))
        return cls(
            np.array(arrays["pool/origin"], dtype=np.int64),
            np.array(arrays["pool/ids"], dtype=np.uint64),
            np.array(arrays["pool/sign"], dtype=np.int8),
            np.array(arrays["pool/fitness"], dtype=np.float64),
            tuple(origins),
        )


def block_rows(dim: int) -> int:
    """Members handled at once: ``(rows, d)`` float64 blocks of at most ``SMALL`` entries."""
    return max(1, SMALL // max(dim, 1))


def pool_points(pool: Pool, index: np.ndarray, noise: Noise) -> np.ndarray:
    """The points ``mean_g + sign step_g(z(id))`` of members ``index``, ``(len(index), d)``."""
    out = []
    for i in np.asarray(index, dtype=np.int64):
        o = pool.origin_of(int(pool.origin[i]))
        out.append(o.mean + float(pool.sign[i]) * o.params.step(noise.get(int(pool.ids[i]))))
    d = len(pool.origins[0].mean) if pool.origins else 0
    return np.stack(out) if out else np.empty((0, d))


def log_density_at(dist: Distribution, mean: np.ndarray, params: SearchParams, w: np.ndarray):
    """``log p(w)`` of points ``(m, d)`` under the distribution ``(mean, params)``."""
    return dist.log_density(params, dist.whiten(params, w - mean))


def pool_log_ratios(
    dist: Distribution, pool: Pool, new: Origin, old: Origin, noise: Noise
) -> np.ndarray:
    """``log p_new(w) - log p_old(w)`` for every member of ``pool``, in blocks of rows."""
    out = np.empty(len(pool))
    rows = block_rows(len(new.mean))
    for k0 in range(0, len(pool), rows):
        idx = np.arange(k0, min(k0 + rows, len(pool)))
        w = pool_points(pool, idx, noise)
        out[idx] = log_density_at(dist, new.mean, new.params, w) - log_density_at(
            dist, old.mean, old.params, w
        )
    return out


def fresh_log_ratios(
    dist: Distribution, ids: np.ndarray, new: Origin, old: Origin, noise: Noise
) -> np.ndarray:
    """``log p_old(w) - log p_new(w)`` of both members of fresh pairs ``ids``: ``(n, 2)``."""
    z = np.stack([noise.get(int(p)) for p in ids]).astype(np.float64)
    step = new.params.step(z)
    out = np.empty((len(ids), 2))
    for c, sign in enumerate((1.0, -1.0)):
        lp_new = dist.log_density(new.params, sign * z)
        lp_old = log_density_at(dist, old.mean, old.params, new.mean + sign * step)
        out[:, c] = lp_old - lp_new
    return out


@dataclass(frozen=True)
class Mix:
    """One generation's mixing decisions: members ``kept`` of the previous population (sorted
    indices), the fresh pairs ``ids`` with ``members[k, c]`` true for the members to evaluate
    (each pair has at least one), and ``draws``, the fresh pairs looked at."""

    kept: np.ndarray
    ids: np.ndarray
    members: np.ndarray
    draws: int


def mix(
    dist: Distribution,
    settings: ImportanceMixing,
    pool: Pool,
    new: Origin,
    old: Origin,
    noise: Noise,
    seed: int,
    size: int,
) -> Mix:
    """The importance-mixing decisions for a population of ``size`` members (module doc)."""
    alpha = settings.min_refresh
    gen = new.generation
    rng_keep = np.random.default_rng([seed, gen, _TAG, 0])
    rng_new = np.random.default_rng([seed, gen, _TAG, 1])
    max_keep = size - max(1, math.ceil(alpha * size))
    order = rng_keep.permutation(len(pool))
    u_keep = rng_keep.random(len(pool))
    log_r = pool_log_ratios(dist, pool, new, old, noise)
    keep = []
    with np.errstate(over="ignore"):
        for i in order:
            if len(keep) >= max_keep:
                break
            if u_keep[i] < (1 - alpha) * math.exp(min(log_r[i], 700.0)):
                keep.append(int(i))
    need = size - len(keep)
    ids: list[np.ndarray] = []
    members: list[np.ndarray] = []
    draws = 0
    block = max(8, min(block_rows(len(new.mean)), need))
    while need > 0:
        bids = perturbation_ids(seed, gen, np.arange(draws, draws + block))
        log_r_fresh = np.minimum(fresh_log_ratios(dist, bids, new, old, noise), 700.0)
        accept_p = np.maximum(alpha, 1 - np.exp(log_r_fresh))
        u = rng_new.random((block, 2))
        for j in range(block):
            take = np.zeros(2, dtype=bool)
            for c in range(2):
                if need > 0 and u[j, c] < accept_p[j, c]:
                    take[c] = True
                    need -= 1
            draws += 1
            if take.any():
                ids.append(bids[j : j + 1])
                members.append(take[None])
            if need == 0:
                break
    return Mix(
        np.sort(np.array(keep, dtype=np.int64)),
        np.concatenate(ids) if ids else np.empty(0, np.uint64),
        np.concatenate(members) if members else np.empty((0, 2), bool),
        draws,
    )
