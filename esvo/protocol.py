"""The wire format between the driver and the evaluators (no Ray here).

Per generation the driver publishes one ``GenerationSpec`` (the parameters once; with Ray, one
``ray.put``), and hands out ``Task``s: small chunks of pair indices with their perturbation ids.
A worker rebuilds each ``z`` from its id, scores ``mean + sigma z`` and ``mean - sigma z`` and
sends back a ``Results`` of scalars: nothing of size ``d`` travels back.

Results are keyed by pair index, so their concatenation is independent of how the pairs were
chunked, which worker ran them, and in which order they finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from esvo.core.distributions import DiagonalParams, SearchParams
from esvo.core.noise import Noise


@dataclass(frozen=True)
class GenerationSpec:
    """What every worker needs to score one generation (sent once per generation).

    ``search`` is the distribution's parameters (``sigma``, and ``B`` of ``full`` or ``U`` of
    ``lowrank``): workers turn each rebuilt ``z`` into a step with ``search.step`` (the same
    numpy code the driver uses). Without it, the step is ``sigma * z`` (diagonal Gaussians).
    """

    generation: int
    mean: np.ndarray  # (d,) float64
    sigma: np.ndarray  # () | (d,) float64: the global scale (search.sigma)
    seed: int  # run seed: with (generation, pair index, episode) it seeds the environments
    obs_mean: np.ndarray | None = None  # frozen observation normalizer (gym objectives)
    obs_std: np.ndarray | None = None
    search: SearchParams | None = None
    # Training episodes are truncated after this many steps (the adaptive episode cutoff,
    # counted as truncated, not terminated); None: the environment's own limit. Never set
    # for the evaluation of the mean.
    episode_cap: int | None = None

    def __post_init__(self) -> None:
        if self.search is None:
            object.__setattr__(self, "search", DiagonalParams(np.asarray(self.sigma)))

    def perturbation(self, z: np.ndarray) -> np.ndarray:
        """The step of noise ``z``: candidates are ``mean ± perturbation(z)``, float64."""
        return self.search.step(z)  # type: ignore[union-attr]

    def candidate(self, noise: Noise, pid: int, sign: int) -> np.ndarray:
        """``mean + sign * step(z(pid))``, float64 ``(d,)``."""
        return self.mean + sign * self.perturbation(noise.get(pid))


@dataclass(frozen=True)
class Task:
    """A chunk of pairs: their indices in the population and their perturbation ids.

    ``members[k, c]``: whether pair ``k``'s member ``c`` (0: ``+z``, 1: ``-z``) is to be
    evaluated (importance mixing asks for single members); None: both. An objective may skip
    the others (fitness NaN, 0 steps) or score them anyway; the driver ignores them.
    """

    generation: int
    indices: np.ndarray  # (m,) int64
    ids: np.ndarray  # (m,) uint64
    members: np.ndarray | None = None  # (m, 2) bool

    def wants(self, k: int, c: int) -> bool:
        """Whether member ``c`` of the task's ``k``-th pair is to be evaluated."""
        return self.members is None or bool(self.members[k, c])


@dataclass(frozen=True)
class ObsStats:
    """Per-pair observation statistics of one chunk: count ``(m,)``, sum and sum of squares
    ``(m, k)``. Kept per pair so that the driver sums them in pair-index order, whatever the
    chunking: the normalizer is then independent of the number of workers, bit for bit."""

    count: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray

    def take(self, order: np.ndarray) -> ObsStats:
        return ObsStats(self.count[order], self.sum[order], self.sumsq[order])

    @staticmethod
    def concat(parts: Sequence[ObsStats]) -> ObsStats:
        return ObsStats(
            np.concatenate([p.count for p in parts]),
            np.concatenate([p.sum for p in parts]),
            np.concatenate([p.sumsq for p in parts]),
        )


@dataclass(frozen=True)
class Results:
    """Scores of a chunk of pairs; column 0 is ``+z``, column 1 is ``-z``."""

    generation: int
    indices: np.ndarray  # (m,) int64
    fitness: np.ndarray  # (m, 2) float64, raw (non-finite = failed)
    steps: np.ndarray  # (m, 2) int64 environment steps (0 for analytic functions)
    episodes: int = 0
    obs_stats: ObsStats | None = None
    failures: int = 0  # rollouts that raised; their fitness is NaN
    errors: tuple[str, ...] = field(default_factory=tuple)  # first traceback(s), for the log
    # (m,) bool: the pair's two candidates were the same point in the objective's precision
    # (sigma z below the resolution of the mean, e.g. float32 policies): no mean signal.
    # None when the objective does not say.
    collapsed: np.ndarray | None = None
    # (m, 2) int64: per member, how many of its episodes were cut by ``spec.episode_cap``.
    # None when the spec had no cap (or the objective has no episodes).
    capped: np.ndarray | None = None

    @staticmethod
    def concat(parts: Sequence[Results]) -> Results:
        """All parts, ordered by pair index."""
        if not parts:
            raise ValueError("no results to concatenate")
        gens = {p.generation for p in parts}
        if len(gens) != 1:
            raise ValueError(f"results from several generations: {sorted(gens)}")
        indices = np.concatenate([p.indices for p in parts])
        order = np.argsort(indices, kind="stable")
        indices = indices[order]
        if np.any(np.diff(indices) == 0):
            raise ValueError("a pair was scored twice")
        return Results(
            generation=parts[0].generation,
            indices=indices,
            fitness=np.concatenate([p.fitness for p in parts])[order],
            steps=np.concatenate([p.steps for p in parts])[order],
            episodes=sum(p.episodes for p in parts),
            obs_stats=None
            if any(p.obs_stats is None for p in parts)
            else ObsStats.concat([p.obs_stats for p in parts]).take(order),
            failures=sum(p.failures for p in parts),
            errors=tuple(e for p in parts for e in p.errors)[:3],
            collapsed=None
            if any(p.collapsed is None for p in parts)
            else np.concatenate([p.collapsed for p in parts])[order],
            capped=None
            if any(p.capped is None for p in parts)
            else np.concatenate([p.capped for p in parts])[order],
        )


def chunk_tasks(
    generation: int,
    ids: np.ndarray,
    chunk_size: int,
    start: int = 0,
    members: np.ndarray | None = None,
) -> list[Task]:
    """Split a generation's pairs into contiguous chunks of at most ``chunk_size`` pairs;
    ``ids[k]`` is pair ``start + k`` of the generation (a later wave of a step-budgeted one)."""
    n = len(ids)
    return [
        Task(
            generation,
            np.arange(start + i, start + min(i + chunk_size, n)),
            ids[i : i + chunk_size],
            None if members is None else members[i : i + chunk_size],
        )
        for i in range(0, n, max(1, chunk_size))
    ]
