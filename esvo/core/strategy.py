"""Strategy: distribution + shaping + optimizer + noise behind ``init / ask / tell``.

Static settings live on the ``Strategy``; everything that changes per generation lives in a
frozen ``SearchState`` of plain arrays and numbers, so ``tell`` is a pure function and the state
checkpoints with ``np.savez`` (``SearchState.to_arrays`` / ``from_arrays``). Randomness comes only
from perturbation ids ``(seed, generation, pair index)``, so there is no RNG state to save and a
resumed run continues bit-exactly.

``fitness`` passed to ``tell`` is raw, in the user's sense; ``maximize`` says which way is better.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from esvo.core.distributions import DISTRIBUTIONS, Isotropic, Separable, SigmaBounds
from esvo.core.noise import Noise, make_noise, perturbation_ids
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
class SearchState:
    """Everything that changes per generation (with obs statistics: the checkpoint)."""

    generation: int
    mean: np.ndarray  # (d,) float64
    sigma: np.ndarray  # () isotropic | (d,) separable, float64
    opt: OptState
    best_theta: np.ndarray  # (d,) best sampled candidate so far
    best_fitness: float  # its raw fitness; -inf/inf (worst) until a finite score is seen

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``name -> array`` for ``np.savez`` (no pickle)."""
        out = {
            "search/generation": np.asarray(self.generation, dtype=np.int64),
            "search/mean": self.mean,
            "search/sigma": self.sigma,
            "search/best_theta": self.best_theta,
            "search/best_fitness": np.asarray(self.best_fitness, dtype=np.float64),
            "opt/step": np.asarray(self.opt.step, dtype=np.int64),
        }
        out.update({f"opt/slot/{k}": v for k, v in self.opt.slots.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays) -> SearchState:
        slots = {
            k.removeprefix("opt/slot/"): np.array(arrays[k])
            for k in arrays
            if k.startswith("opt/slot/")
        }
        return cls(
            generation=int(arrays["search/generation"]),
            mean=np.array(arrays["search/mean"], dtype=np.float64),
            sigma=np.array(arrays["search/sigma"], dtype=np.float64),
            opt=OptState(int(arrays["opt/step"]), slots),
            best_theta=np.array(arrays["search/best_theta"], dtype=np.float64),
            best_fitness=float(arrays["search/best_fitness"]),
        )


@dataclass(frozen=True)
class Ask:
    """A whole population named by ids: candidates ``mean ± sigma * z(ids[k])``."""

    generation: int
    ids: np.ndarray  # (num_pairs,) uint64

    @property
    def num_pairs(self) -> int:
        return len(self.ids)


def default_num_pairs(dim: int) -> int:
    """Half the NES population ``4 + floor(3 ln d)``, rounded up."""
    return math.ceil((4 + math.floor(3 * math.log(max(dim, 1)))) / 2)


class Strategy:
    """Natural-gradient ES on a Gaussian search distribution (ask/tell).

    Args:
        dim: number of parameters ``d``.
        maximize: True if higher fitness is better (RL returns), False to minimize.
        distribution: ``"isotropic"`` or ``"separable"``.
        num_pairs: antithetic pairs per generation (population ``2 * num_pairs``);
            default half the NES population ``4 + floor(3 ln d)``.
        sigma_init: initial sigma (scalar, or ``(d,)`` for separable).
        sigma_lr: log-sigma learning rate; ``None`` for the NES default, ``0`` for fixed sigma.
        sigma_bounds: clamps on sigma (default ``SigmaBounds()``).
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
        seed: run seed; with the generation and pair index it names every perturbation.
        noise: a ``Noise``, or ``"table"`` / ``"generator"`` / ``"auto"`` (by ``dim``).
    """

    def __init__(
        self,
        dim: int,
        *,
        maximize: bool,
        distribution: str = DEFAULT_DISTRIBUTION,
        num_pairs: int | None = None,
        sigma_init: float | np.ndarray = DEFAULT_SIGMA_INIT,
        sigma_lr: float | None = None,
        sigma_bounds: SigmaBounds | None = None,
        shaping: str | Shaping = DEFAULT_SHAPING,
        top_k: int | None = None,
        optimizer: Optimizer | None = None,
        weight_decay: float = 0.0,
        seed: int = 0,
        noise: Noise | str = "auto",
    ):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution must be one of {sorted(DISTRIBUTIONS)}, got {distribution!r}"
            )
        self.dim = int(dim)
        self.maximize = bool(maximize)
        self.distribution: Isotropic | Separable = DISTRIBUTIONS[distribution]()
        self.num_pairs = default_num_pairs(dim) if num_pairs is None else int(num_pairs)
        if self.num_pairs < 1:
            raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
        self.sigma_init = sigma_init
        self.sigma_lr = self.distribution.default_sigma_lr(dim) if sigma_lr is None else sigma_lr
        self.sigma_bounds = SigmaBounds() if sigma_bounds is None else sigma_bounds
        self.shaping = SHAPINGS[shaping] if isinstance(shaping, str) else shaping
        if top_k is not None and not 1 <= top_k <= self.num_pairs:
            raise ValueError(f"top_k must be in [1, num_pairs={self.num_pairs}], got {top_k}")
        self.top_k = top_k
        self.optimizer = make_optimizer(DEFAULT_OPTIMIZER) if optimizer is None else optimizer
        self.weight_decay = float(weight_decay)
        self.seed = int(seed)
        if isinstance(noise, str):
            noise = make_noise(noise, dim)
        if noise.dim != self.dim:
            raise ValueError(f"noise has dim {noise.dim}, strategy {self.dim}")
        self.noise: Noise = noise

    # ------------------------------------------------------------------ ask/tell
    def init(self, theta0: np.ndarray) -> SearchState:
        mean = np.array(theta0, dtype=np.float64).reshape(-1)
        if mean.shape != (self.dim,):
            raise ValueError(f"theta0 must have {self.dim} entries, got {mean.size}")
        sigma = self.distribution.init_sigma(self.dim, self.sigma_init)
        if np.any(sigma <= 0) or not np.all(np.isfinite(sigma)):
            raise ValueError("sigma_init must be finite and > 0")
        worst = -np.inf if self.maximize else np.inf
        return SearchState(0, mean, sigma, self.optimizer.init(self.dim), mean.copy(), worst)

    def ask(self, state: SearchState) -> Ask:
        return Ask(state.generation, perturbation_ids(self.seed, state.generation, self.num_pairs))

    def population(self, state: SearchState, ask: Ask) -> np.ndarray:
        """The candidates as an array ``(num_pairs, 2, d)``: ``[k, 0] = mean + sigma z_k``,
        ``[k, 1] = mean - sigma z_k``. For small problems and library users; the evaluators
        rebuild candidates from ids instead."""
        z = np.stack([self.noise.get(p) for p in ask.ids]).astype(np.float64)
        step = state.sigma * z
        return np.stack([state.mean + step, state.mean - step], axis=1)

    def utilities(self, signed: np.ndarray) -> np.ndarray:
        """Shaped utilities ``(n, 2)`` of higher-is-better scores ``(n, 2)``; with ``top_k``,
        shaped over the best pairs only (a stable sort: ties go to the lower pair index)."""
        if self.top_k is None or self.top_k == len(signed):
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
        finite = np.isfinite(signed)
        u = self.utilities(signed)
        a, b = u[:, 0] - u[:, 1], u[:, 0] + u[:, 1]

        g_mean, g_log_sigma = self.distribution.gradients(
            self.noise, ask.ids, a, b, state.sigma, with_sigma=self.sigma_lr != 0
        )
        if self.weight_decay:  # natural gradient of -lambda/2 ||mean||^2: -lambda Sigma mean
            g_mean = g_mean - self.weight_decay * np.square(state.sigma) * state.mean
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            delta, opt = self.optimizer.step(state.opt, g_mean)
            mean = state.mean + delta
            sigma = self.sigma_bounds.apply(state.sigma, self.sigma_lr * g_log_sigma)
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(sigma))):
            raise FloatingPointError(
                f"generation {state.generation}: update produced non-finite parameters; "
                "the state was left unchanged (lower the learning rate?)"
            )

        best_theta, best_fitness = state.best_theta, state.best_fitness
        if finite.any():
            k, side = np.unravel_index(np.argmax(np.where(finite, signed, -np.inf)), f.shape)
            best_signed = signed[k, side]
            if best_signed > (best_fitness if self.maximize else -best_fitness):
                z = self.noise.get(ask.ids[k]).astype(np.float64)
                best_theta = state.mean + (1 - 2 * side) * state.sigma * z
                best_fitness = float(f[k, side])

        next_state = SearchState(state.generation + 1, mean, sigma, opt, best_theta, best_fitness)
        fin = f[finite]
        # ||delta|| / ||mean||, the old mean's norm, or the new one's from a zero start
        mean_norm = float(np.linalg.norm(state.mean)) or float(np.linalg.norm(mean))
        metrics = {
            "fitness_mean": float(fin.mean()) if fin.size else float("nan"),
            "fitness_max": float(fin.max()) if fin.size else float("nan"),
            "fitness_min": float(fin.min()) if fin.size else float("nan"),
            "sigma_mean": float(np.mean(sigma)),
            "sigma_min": float(np.min(sigma)),
            "sigma_max": float(np.max(sigma)),
            "grad_norm": float(np.linalg.norm(g_mean)),
            "update_ratio": float(np.linalg.norm(delta)) / mean_norm if mean_norm else 0.0,
            "nonfinite": int((~finite).sum()),
        }
        return next_state, metrics
