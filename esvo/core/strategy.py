"""Strategy: distribution + shaping + optimizer + noise behind ``init / ask / tell``.

Static settings live on the ``Strategy``; everything that changes per generation lives in a
frozen ``SearchState`` of plain arrays and numbers, so ``tell`` is a pure function and the state
checkpoints with ``np.savez`` (``SearchState.to_arrays`` / ``from_arrays``). Randomness comes only
from perturbation ids ``(seed, generation, pair index)``, so there is no RNG state to save and a
resumed run continues bit-exactly.

The search distribution is a ``esvo.core.distributions.Distribution``: the strategy asks it for
natural gradients and updates and never branches on its kind. Restarts (IPOP: Auger & Hansen,
CEC 2005) start the search again from a fresh mean with a larger population when it has
converged or stalled, keeping the best solution seen.

``fitness`` passed to ``tell`` is raw, in the user's sense; ``maximize`` says which way is better.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from esvo.core.adaptation import AdaptationSampling, adapt_rates, optimizer_lr
from esvo.core.distributions import (
    DISTRIBUTIONS,
    PARAMS,
    Distribution,
    Gradients,
    SearchParams,
    SigmaBounds,
    make_distribution,
    nes_num_pairs,
)
from esvo.core.mixing import ImportanceMixing, Origin, Pool, block_rows, mix, pool_points
from esvo.core.noise import ArrayNoise, Noise, make_noise, perturbation_ids
from esvo.core.optimizers import Optimizer, OptState, make_optimizer
from esvo.core.shaping import SHAPINGS, Shaping

# The defaults are NES's (Wierstra et al. 2014): log-utilities and plain SGD with rate 1 on the
# natural gradient. Configs read them from here, so a YAML that omits a key runs the same
# algorithm as the library (``esvo validate`` prints them).
DEFAULT_DISTRIBUTION = "separable"
DEFAULT_SHAPING = "nes"
DEFAULT_OPTIMIZER = "sgd"  # with its default lr = 1
DEFAULT_SIGMA_INIT = 0.1


@dataclass(frozen=True)
class Restarts:
    """IPOP restarts: when a stop criterion fires, start again from a mean drawn uniformly in
    ``[low, high]^d`` (from the run seed and the restart's number) with ``sigma_init``, a fresh
    shape and optimizer, and ``popsize_factor`` times the population; the best solution seen is
    kept. At most ``max`` restarts.

    Criteria: the largest standard deviation of the search distribution is below
    ``sigma_tol``; the best fitness of the current restart has not improved by more than
    ``stall_tol`` for ``stall_generations`` generations (default ``stall_window``: pycma's
    ``tolstagnation`` window ``int(100 + 100 d^1.5 / lambda)``); the covariance's condition
    number exceeds ``max_condition``.
    """

    max: int = 0
    popsize_factor: float = 2.0
    low: float = -5.0
    high: float = 5.0
    sigma_tol: float = 1e-12
    stall_generations: int | None = None
    stall_tol: float = 1e-12
    max_condition: float = 1e14

    def __post_init__(self) -> None:
        if self.max < 0 or self.popsize_factor < 1 or not self.low < self.high:
            raise ValueError(
                "restarts: need max >= 0, popsize_factor >= 1 and low < high, got "
                f"max={self.max}, popsize_factor={self.popsize_factor}, "
                f"[low, high]=[{self.low}, {self.high}]"
            )


def stall_window(dim: int, popsize: int) -> int:
    """Generations without improvement of the best before a restart: pycma's ``tolstagnation``
    window ``int(100 + 100 d^1.5 / lambda)``. (Its ``tolfun`` window ``10 + ceil(30 d /
    lambda)`` measures flatness, not progress: used as a no-improvement window it restarted
    xNES on Rastrigin d=10 while sigma was still ~2, and no seed reached 1e-8 in 2M
    evaluations; scripts/bench_convergence.py --suite compare.)"""
    return int(100 + 100 * dim**1.5 / popsize)


@dataclass(frozen=True)
class RestartState:
    """``count`` restarts so far; ``best``: the current restart's best (higher-is-better) score
    when it last improved by more than ``stall_tol``, at generation ``since``."""

    count: int = 0
    best: float = -math.inf
    since: int = 0


@dataclass(frozen=True)
class SearchState:
    """Everything that changes per generation (with obs statistics: the checkpoint)."""

    generation: int
    mean: np.ndarray  # (d,) float64
    dist: SearchParams  # the distribution's parameters: sigma, and B / U ...
    opt: OptState
    best_theta: np.ndarray  # (d,) best sampled candidate so far
    best_fitness: float  # its raw fitness; -inf/inf (worst) until a finite score is seen
    num_pairs: int = 0  # pairs of the next generation (grows with restarts)
    restart: RestartState = field(default_factory=RestartState)
    # The distribution the previous generation sampled from, kept when a feature compares
    # the two (``Strategy.keeps_prev``); None otherwise, at generation 0 and after a restart.
    prev_mean: np.ndarray | None = None
    prev_dist: SearchParams | None = None
    # Importance mixing: this generation's population, member by member (esvo.core.mixing)
    pool: Pool | None = None
    # Adaptation sampling's rates (``Strategy(adaptation_sampling=...)``): sigma's and the
    # mean's (in the optimizer's lr units); None when it is off.
    lr_sigma: float | None = None
    lr_mean: float | None = None

    @property
    def sigma(self) -> np.ndarray:
        """The distribution's global scale: ``()`` or ``(d,)``."""
        return self.dist.sigma

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``name -> array`` for ``np.savez`` (no pickle)."""
        out = {
            "search/generation": np.asarray(self.generation, dtype=np.int64),
            "search/mean": self.mean,
            "search/sigma": self.dist.sigma,
            "search/best_theta": self.best_theta,
            "search/best_fitness": np.asarray(self.best_fitness, dtype=np.float64),
            "search/num_pairs": np.asarray(self.num_pairs, dtype=np.int64),
            "dist/kind": np.asarray(self.dist.kind),  # a unicode array: no pickle
            "restart/count": np.asarray(self.restart.count, dtype=np.int64),
            "restart/best": np.asarray(self.restart.best, dtype=np.float64),
            "restart/since": np.asarray(self.restart.since, dtype=np.int64),
            "opt/step": np.asarray(self.opt.step, dtype=np.int64),
        }
        out.update({f"dist/{k}": v for k, v in self.dist.to_arrays().items()})
        out.update({f"opt/slot/{k}": v for k, v in self.opt.slots.items()})
        if self.prev_mean is not None and self.prev_dist is not None:
            out["prev/mean"] = self.prev_mean
            out["prev/sigma"] = self.prev_dist.sigma
            out.update({f"prev/dist/{k}": v for k, v in self.prev_dist.to_arrays().items()})
        if self.pool is not None:
            out.update(self.pool.to_arrays())
        for name in ("lr_sigma", "lr_mean"):  # adaptation sampling
            if getattr(self, name) is not None:
                out[f"adapt/{name}"] = np.asarray(getattr(self, name), dtype=np.float64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> SearchState:
        slots = {
            k.removeprefix("opt/slot/"): np.array(arrays[k])
            for k in arrays
            if k.startswith("opt/slot/")
        }
        kind = str(arrays["dist/kind"]) if "dist/kind" in arrays else "diagonal"
        extra = {k.removeprefix("dist/"): np.array(arrays[k]) for k in arrays if k[:5] == "dist/"}
        extra.pop("kind", None)
        params = PARAMS[kind](np.array(arrays["search/sigma"], dtype=np.float64), **extra)
        prev_mean = prev_dist = None
        if "prev/mean" in arrays:
            prev_mean = np.array(arrays["prev/mean"], dtype=np.float64)
            pextra = {
                k.removeprefix("prev/dist/"): np.array(arrays[k])
                for k in arrays
                if k.startswith("prev/dist/")
            }
            prev_dist = PARAMS[kind](np.array(arrays["prev/sigma"], dtype=np.float64), **pextra)
        restart = RestartState(
            int(arrays.get("restart/count", 0)),
            float(arrays.get("restart/best", -math.inf)),
            int(arrays.get("restart/since", 0)),
        )
        return cls(
            generation=int(arrays["search/generation"]),
            mean=np.array(arrays["search/mean"], dtype=np.float64),
            dist=params,
            opt=OptState(int(arrays["opt/step"]), slots),
            best_theta=np.array(arrays["search/best_theta"], dtype=np.float64),
            best_fitness=float(arrays["search/best_fitness"]),
            num_pairs=int(arrays.get("search/num_pairs", 0)),
            restart=restart,
            prev_mean=prev_mean,
            prev_dist=prev_dist,
            pool=Pool.from_arrays(arrays, kind),
            lr_sigma=float(arrays["adapt/lr_sigma"]) if "adapt/lr_sigma" in arrays else None,
            lr_mean=float(arrays["adapt/lr_mean"]) if "adapt/lr_mean" in arrays else None,
        )


@dataclass(frozen=True)
class Ask:
    """A population named by ids: candidates ``mean ± step(z(ids[k]))``.

    With importance mixing, only the members ``members[k, c]`` (``c = 0``: ``+z``, ``1``:
    ``-z``) are to be evaluated (``tell`` ignores the others' fitness), and the members
    ``kept`` of the previous population complete it with their old fitness.
    """

    generation: int
    ids: np.ndarray  # (num_pairs,) uint64
    members: np.ndarray | None = None  # (num_pairs, 2) bool; None: all
    kept: np.ndarray | None = None  # indices into the state's pool; None: no mixing
    draws: int = 0  # fresh pairs looked at by importance mixing

    @property
    def num_pairs(self) -> int:
        return len(self.ids)

    @property
    def evaluations(self) -> int:
        """Candidates to evaluate."""
        return 2 * len(self.ids) if self.members is None else int(self.members.sum())


def default_num_pairs(dim: int, distribution: str = DEFAULT_DISTRIBUTION) -> int:
    """The published population of ``distribution`` in pairs (NES: half of
    ``4 + floor(3 ln d)``, rounded up; ``lowrank``: R1-NES's ``max(5, 4 log2 d, 0.2 d)``)."""
    if distribution == "lowrank":
        return make_distribution("lowrank").default_num_pairs(dim)
    return nes_num_pairs(dim)


class Strategy:
    """Natural-gradient ES on a Gaussian search distribution (ask/tell).

    Args:
        dim: number of parameters ``d``.
        maximize: True if higher fitness is better (RL returns), False to minimize.
        distribution: ``"isotropic"``, ``"separable"``, ``"full"`` (xNES) or ``"lowrank"``
            (``sigma^2 (I + U U^T)``), or a ``Distribution``.
        num_pairs: antithetic pairs per generation (population ``2 * num_pairs``);
            default the distribution's published population (halved, rounded up).
        sigma_init: initial sigma (scalar, or ``(d,)`` for separable).
        sigma_lr: log-sigma learning rate; ``None`` for the distribution's default, ``0`` for
            fixed sigma.
        sigma_bounds: clamps on sigma (default ``SigmaBounds()``).
        rank: ``k`` of ``lowrank`` (``1 <= k < d``).
        cov_lr: learning rate of the distribution's shape (``eta_B`` of ``full``, ``eta_U`` of
            ``lowrank``); ``None`` for the published default, ``0`` to keep the shape fixed.
        shaping: a name in ``SHAPINGS`` or a callable ``(2n,) -> (2n,)``.
        top_k: update from the ``top_k`` best pairs only, ranked by ``max(f+, f-)`` (ARS V2-t,
            Mania et al. 2018); the others get zero utility. ``None``: all pairs.
        optimizer: acts on the mean's natural gradient (default SGD with ``lr = 1``, NES).
        weight_decay: L2 coefficient ``lambda`` in natural-gradient units: the update follows
            the natural gradient of ``U(theta) - lambda/2 ||mean||^2``, i.e.
            ``g <- g - lambda * Sigma mean`` with ``Sigma`` the search covariance (``sigma^2``).
            With ``raw`` shaping the mean then settles at the regularized optimum of ``f``
            itself; a decay not scaled by ``Sigma`` would grow like ``lambda / sigma^2``
            against the gradient as sigma shrinks and stall the search.
        restarts: IPOP restarts (``Restarts``); ``None``: none.
        importance_mixing: reuse the previous population's members and their fitness
            (``esvo.core.mixing``); ``None``: off. ``num_pairs`` then counts the population
            (``2 num_pairs`` members), of which only the fresh ones are evaluated.
        adaptation_sampling: adapt sigma's and/or the mean's learning rate online
            (``esvo.core.adaptation``); ``None``: fixed rates.
        seed: run seed; with the generation and pair index it names every perturbation.
        noise: a ``Noise`` (of the distribution's noise dimension), or ``"table"`` /
            ``"generator"`` / ``"auto"`` (by dimension).
    """

    def __init__(
        self,
        dim: int,
        *,
        maximize: bool,
        distribution: str | Distribution = DEFAULT_DISTRIBUTION,
        num_pairs: int | None = None,
        sigma_init: float | np.ndarray = DEFAULT_SIGMA_INIT,
        sigma_lr: float | None = None,
        sigma_bounds: SigmaBounds | None = None,
        rank: int = 1,
        cov_lr: float | None = None,
        shaping: str | Shaping = DEFAULT_SHAPING,
        top_k: int | None = None,
        optimizer: Optimizer | None = None,
        weight_decay: float = 0.0,
        restarts: Restarts | None = None,
        importance_mixing: ImportanceMixing | None = None,
        adaptation_sampling: AdaptationSampling | None = None,
        seed: int = 0,
        noise: Noise | str = "auto",
    ):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if isinstance(distribution, str):
            distribution = make_distribution(distribution, rank)
        self.dim = int(dim)
        self.maximize = bool(maximize)
        self.distribution: Distribution = distribution
        self.num_pairs = (
            distribution.default_num_pairs(dim) if num_pairs is None else int(num_pairs)
        )
        if self.num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        self.sigma_init = sigma_init
        self.sigma_lr = distribution.default_sigma_lr(dim) if sigma_lr is None else sigma_lr
        self.cov_lr = distribution.default_cov_lr(dim) if cov_lr is None else float(cov_lr)
        self.sigma_bounds = SigmaBounds() if sigma_bounds is None else sigma_bounds
        self.shaping = SHAPINGS[shaping] if isinstance(shaping, str) else shaping
        if top_k is not None and not 1 <= top_k <= self.num_pairs:
            raise ValueError(f"top_k must be in [1, num_pairs={self.num_pairs}], got {top_k}")
        self.top_k = top_k
        self.optimizer = make_optimizer(DEFAULT_OPTIMIZER) if optimizer is None else optimizer
        self.weight_decay = float(weight_decay)
        self.restarts = restarts
        if importance_mixing is not None and top_k is not None:
            raise ValueError("top_k ranks pairs; importance mixing mixes single members")
        if importance_mixing is not None and adaptation_sampling is not None:
            raise ValueError(
                "adaptation sampling weights the generation's own pairs; importance mixing "
                "replaces them with single members and kept old ones: use one of the two"
            )
        self.importance_mixing = importance_mixing
        self.adaptation_sampling = adaptation_sampling
        if adaptation_sampling is not None and adaptation_sampling.sigma and not self.sigma_lr:
            raise ValueError("adaptation_sampling of sigma needs sigma_lr > 0")
        self.seed = int(seed)
        noise_dim = distribution.noise_dim(self.dim)
        if isinstance(noise, str):
            noise = make_noise(noise, noise_dim)
        if noise.dim != noise_dim:
            raise ValueError(
                f"noise has dim {noise.dim}; the {distribution.name} distribution of d = "
                f"{self.dim} needs {noise_dim}"
            )
        self.noise: Noise = noise

    @property
    def keeps_prev(self) -> bool:
        """Whether states carry the previous generation's distribution (``prev_mean``,
        ``prev_dist``): features that compare the two distributions need it (importance
        mixing, adaptation sampling)."""
        return self.importance_mixing is not None or self.adaptation_sampling is not None

    # ------------------------------------------------------------------ ask/tell
    def init(self, theta0: np.ndarray) -> SearchState:
        mean = np.array(theta0, dtype=np.float64).reshape(-1)
        if mean.shape != (self.dim,):
            raise ValueError(f"theta0 must have {self.dim} entries, got {mean.size}")
        params = self._fresh_params(0)
        worst = -np.inf if self.maximize else np.inf
        opt = self.optimizer.init(self.dim)
        state = SearchState(0, mean, params, opt, mean.copy(), worst, self.num_pairs)
        return self._initial_rates(state)

    # ------------------------------------------------------------ adaptation sampling
    def _initial_rates(self, state: SearchState) -> SearchState:
        """The state with adaptation sampling's rates at their initial values (if it is on)."""
        a = self.adaptation_sampling
        if a is None:
            return state
        return dataclasses.replace(
            state,
            lr_sigma=float(self.sigma_lr) if a.sigma else None,
            lr_mean=optimizer_lr(self.optimizer) if a.mean else None,
        )

    def _adapt_rates(
        self, state: SearchState, ask: Ask, signed: np.ndarray
    ) -> tuple[float | None, float | None, dict[str, float]]:
        """Adaptation sampling: this generation's sigma and mean rates (None: not adapted)."""
        if self.adaptation_sampling is None:
            return None, None, {}
        return adapt_rates(
            self.adaptation_sampling,
            (state.lr_sigma, state.lr_mean),
            (float(self.sigma_lr), optimizer_lr(self.optimizer)),
            self.distribution,
            self.noise,
            ask.ids,
            signed,
            (state.mean, state.dist),
            None if state.prev_mean is None else (state.prev_mean, state.prev_dist),
        )

    def _fresh_params(self, restart: int) -> SearchParams:
        params = self.distribution.init(self.dim, self.sigma_init, _mix(self.seed, restart))
        if np.any(params.sigma <= 0) or not np.all(np.isfinite(params.sigma)):
            raise ValueError("sigma_init must be finite and > 0")
        return params

    def ask(self, state: SearchState) -> Ask:
        n = state.num_pairs or self.num_pairs
        im = self.importance_mixing
        if im is None or state.pool is None or state.prev_mean is None:
            ids = perturbation_ids(self.seed, state.generation, n)
            return Ask(state.generation, ids, kept=None if im is None else np.empty(0, np.int64))
        assert state.prev_dist is not None
        new = Origin(state.generation, state.mean, state.dist)
        old = Origin(state.generation - 1, state.prev_mean, state.prev_dist)
        m = mix(self.distribution, im, state.pool, new, old, self.noise, self.seed, 2 * n)
        return Ask(state.generation, m.ids, m.members, m.kept, m.draws)

    def population(self, state: SearchState, ask: Ask) -> np.ndarray:
        """The candidates as an array ``(num_pairs, 2, d)``: ``[k, 0] = mean + step(z_k)``,
        ``[k, 1] = mean - step(z_k)``. For small problems and library users; the evaluators
        rebuild candidates from ids instead."""
        step = state.dist.step(np.stack([self.noise.get(p) for p in ask.ids]))
        return np.stack([state.mean + step, state.mean - step], axis=1)

    def utilities(self, signed: np.ndarray) -> np.ndarray:
        """Shaped utilities ``(n, 2)`` of higher-is-better scores ``(n, 2)``; with ``top_k``,
        shaped over the best pairs only (a stable sort: ties go to the lower pair index)."""
        if self.top_k is None or self.top_k >= len(signed):
            return self.shaping(signed.reshape(-1)).reshape(-1, 2)
        best = np.where(np.isfinite(signed), signed, -np.inf).max(axis=1)  # (n,)
        keep = np.sort(np.argsort(-best, kind="stable")[: self.top_k])
        u = np.zeros_like(signed)
        u[keep] = self.shaping(signed[keep].reshape(-1)).reshape(-1, 2)
        return u

    def tell(
        self, state: SearchState, ask: Ask, fitness: np.ndarray
    ) -> tuple[SearchState, dict[str, float]]:
        """Update the search distribution from the pairs' raw fitness.

        Args:
            state: the state ``ask`` was made from.
            ask: the population that was scored.
            fitness: ``(num_pairs, 2)`` raw scores; column 0 for ``+z``, column 1 for ``-z``.
                Non-finite scores count as the worst.

        Returns:
            The next state and this generation's metrics.
        """
        if ask.generation != state.generation:
            raise ValueError(f"ask is for generation {ask.generation}, state {state.generation}")
        f = np.asarray(fitness, dtype=np.float64)
        if f.shape != (ask.num_pairs, 2):
            raise ValueError(f"fitness must have shape ({ask.num_pairs}, 2), got {f.shape}")
        signed = f if self.maximize else -f  # higher is better from here on
        asked = np.ones(f.shape, bool) if ask.members is None else np.asarray(ask.members, bool)
        finite = np.isfinite(signed) & asked
        mixing, pool = ask.kept is not None, None
        if mixing:  # the population is the kept members plus the asked fresh ones
            assert ask.kept is not None
            pool = state.pool.take(ask.kept) if state.pool is not None else None
            kept_signed = np.empty(0) if pool is None else pool.fitness.copy()
            if not self.maximize:
                kept_signed = -kept_signed
            scores = np.concatenate([signed[asked], kept_signed])
            u_all = self.shaping(scores)
            u = np.zeros_like(signed)
            u[asked] = u_all[: int(asked.sum())]
            u_kept = u_all[int(asked.sum()) :]
        else:
            u = self.utilities(signed)
        a, b = u[:, 0] - u[:, 1], u[:, 0] + u[:, 1]

        # -- adaptation sampling: this generation's rates (None: the configured ones)
        lr_sigma, lr_mean, as_metrics = self._adapt_rates(state, ask, signed)
        sigma_lr = self.sigma_lr if lr_sigma is None else lr_sigma
        # --

        dist = self.distribution
        with_sigma = sigma_lr != 0
        grads = dist.gradients(state.dist, self.noise, ask.ids, a, b, with_sigma=with_sigma)
        if mixing and pool is not None and len(pool):
            grads = _add(grads, self._kept_gradients(state, pool, u_kept, with_sigma))
        g_mean = grads.mean
        if self.weight_decay:  # natural gradient of -lambda/2 ||mean||^2: -lambda Sigma mean
            g_mean = g_mean - self.weight_decay * dist.cov_times(state.dist, state.mean)
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            delta, opt = self.optimizer.step(state.opt, g_mean)
            if lr_mean is not None:  # adaptation sampling: the step scaled to lr_mean
                delta = delta * (lr_mean / optimizer_lr(self.optimizer))
            mean = state.mean + delta
        params, dist_metrics = dist.update(
            state.dist, grads, sigma_lr, self.cov_lr, self.sigma_bounds
        )
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(params.sigma))):
            raise FloatingPointError(
                f"generation {state.generation}: update produced non-finite parameters; "
                "the state was left unchanged (lower the learning rate?)"
            )

        best_theta, best_fitness = state.best_theta, state.best_fitness
        if finite.any():
            k, side = np.unravel_index(np.argmax(np.where(finite, signed, -np.inf)), f.shape)
            best_signed = signed[k, side]
            if best_signed > (best_fitness if self.maximize else -best_fitness):
                step = state.dist.step(self.noise.get(ask.ids[k]))
                best_theta = state.mean + (1 - 2 * side) * step
                best_fitness = float(f[k, side])

        new_pool = None
        if mixing:
            new_pool = _next_pool(pool, Origin(state.generation, state.mean, state.dist), ask, f)
        n_pop = ask.num_pairs if not mixing else (state.num_pairs or self.num_pairs)
        next_state = SearchState(
            state.generation + 1,
            mean,
            params,
            opt,
            best_theta,
            best_fitness,
            n_pop,
            state.restart,
            state.mean if self.keeps_prev else None,
            state.dist if self.keeps_prev else None,
            new_pool,
            lr_sigma,
            lr_mean,
        )
        # the population's scores: the evaluated members, and the kept ones
        fin = f[finite]
        if mixing and pool is not None:
            fin = np.concatenate([fin, pool.fitness[np.isfinite(pool.fitness)]])
        scale_mean, scale_min, scale_max = params.scale_stats()
        # ||delta|| / ||mean||, the old mean's norm, or the new one's from a zero start
        mean_norm = float(np.linalg.norm(state.mean)) or float(np.linalg.norm(mean))
        metrics: dict[str, float] = {
            "fitness_mean": float(fin.mean()) if fin.size else float("nan"),
            "fitness_max": float(fin.max()) if fin.size else float("nan"),
            "fitness_min": float(fin.min()) if fin.size else float("nan"),
            "sigma_mean": scale_mean,
            "sigma_min": scale_min,
            "sigma_max": scale_max,
            "grad_norm": float(np.linalg.norm(g_mean)),
            "update_ratio": float(np.linalg.norm(delta)) / mean_norm if mean_norm else 0.0,
            "nonfinite": int((~finite & asked).sum()),
            "num_pairs": n_pop,
            "gen_evaluations": ask.evaluations,
            **dist_metrics,
            **as_metrics,
        }
        if mixing:
            metrics["reused"] = 0 if pool is None else len(pool)
            metrics["mix_draws"] = ask.draws
        if self.restarts is not None:
            gen_best = float(signed[finite].max()) if finite.any() else -math.inf
            next_state, restart_metrics = self._restart(next_state, gen_best)
            metrics.update(restart_metrics)
        return next_state, metrics

    def _kept_gradients(
        self, state: SearchState, pool: Pool, u: np.ndarray, with_sigma: bool
    ) -> Gradients:
        """The kept members' terms of the natural gradient: each member is placed in the
        current distribution's frame (``whiten``) and enters as a pair with one member
        (``a = b = u``), in blocks of rows."""
        dist, total = self.distribution, None
        rows = block_rows(self.dim)
        for k0 in range(0, len(pool), rows):
            idx = np.arange(k0, min(k0 + rows, len(pool)))
            z = dist.whiten(state.dist, pool_points(pool, idx, self.noise) - state.mean)
            g = dist.gradients(
                state.dist, ArrayNoise(z), np.arange(len(idx)), u[idx], u[idx], with_sigma
            )
            total = g if total is None else _add(total, g)
        assert total is not None
        return total

    # ------------------------------------------------------------------ restarts
    def _restart(self, state: SearchState, gen_best: float) -> tuple[SearchState, dict]:
        """IPOP: track the current restart's progress; start afresh when a criterion fires."""
        r, rs = self.restarts, state.restart
        assert r is not None
        if gen_best > rs.best + r.stall_tol:
            rs = RestartState(rs.count, gen_best, state.generation)
        window = r.stall_generations or stall_window(self.dim, 2 * state.num_pairs)
        reason = None
        if state.dist.scale_stats()[2] < r.sigma_tol:
            reason = "sigma"
        elif state.generation - rs.since >= window:
            reason = "stall"
        elif r.max_condition and self.distribution.condition(state.dist) > r.max_condition:
            reason = "condition"
        metrics: dict = {"restart": 0, "restarts": rs.count}
        if reason is None or rs.count >= r.max:
            return dataclasses.replace(state, restart=rs), metrics
        count = rs.count + 1
        rng = np.random.default_rng([self.seed, count, 0x1F0F])
        mean = rng.uniform(r.low, r.high, self.dim)
        pairs = math.ceil(self.num_pairs * r.popsize_factor**count)
        fresh = SearchState(
            state.generation,
            mean,
            self._fresh_params(count),
            self.optimizer.init(self.dim),
            state.best_theta,
            state.best_fitness,
            pairs,
            RestartState(count, -math.inf, state.generation),
        )
        fresh = self._initial_rates(fresh)  # adaptation sampling starts afresh too
        return fresh, {"restart": 1, "restarts": count, "restart_reason": reason}


def _add(g: Gradients, h: Gradients) -> Gradients:
    """The sum of two parts of one estimate (every estimate is linear in the utilities)."""
    cov = None if g.cov is None or h.cov is None else g.cov + h.cov
    return Gradients(g.mean + h.mean, g.log_sigma + h.log_sigma, cov)


def _next_pool(kept: Pool | None, origin: Origin, ask: Ask, fitness: np.ndarray) -> Pool:
    """The population just scored, member by member: the kept members, then the evaluated
    fresh ones (pair order, ``+z`` before ``-z``) drawn from ``origin``."""
    members = np.ones((ask.num_pairs, 2), bool) if ask.members is None else ask.members
    k, c = np.nonzero(members)
    fresh = Pool(
        np.full(len(k), origin.generation, np.int64),
        ask.ids[k].astype(np.uint64),
        (1 - 2 * c).astype(np.int8),
        fitness[k, c].astype(np.float64),
        (origin,),
    )
    if kept is None or not len(kept):
        return fresh
    return Pool(
        np.concatenate([kept.origin, fresh.origin]),
        np.concatenate([kept.ids, fresh.ids]),
        np.concatenate([kept.sign, fresh.sign]),
        np.concatenate([kept.fitness, fresh.fitness]),
        (*kept.origins, origin),
    )


def _mix(seed: int, restart: int) -> int:
    """The seed a distribution's random start (``lowrank``'s ``U``) is drawn from."""
    return int(np.random.SeedSequence([int(seed), int(restart)]).generate_state(1)[0])


__all__ = [
    "DEFAULT_DISTRIBUTION",
    "DISTRIBUTIONS",
    "AdaptationSampling",
    "Ask",
    "Restarts",
    "SearchState",
    "Strategy",
    "default_num_pairs",
]
