"""What every search distribution shares: the protocol, sigma clamps, gradients, and the
parameters of the diagonal Gaussians.

A distribution ``p(w | mean, params)`` draws ``w = mean + step(z)`` with ``z`` standard-normal
noise rebuilt from a perturbation id (``esvo.core.noise``); antithetic pairs are
``mean ± step(z)`` (every ``step`` here is linear in ``z``). The distribution owns its
``params`` (a frozen dataclass of arrays) and answers the same few questions (style.md §9):

- ``params.step(z)``: the transform workers and driver apply to ``z``, in numpy;
- ``gradients(params, noise, ids, a, b)``: natural gradients from a generation's ids and pair
  utilities (``a_k = u_k+ - u_k-``, ``b_k = u_k+ + u_k-``);
- ``update(params, grads, ...)``: the new parameters (the mean is moved by the optimizer);
- ``log_density(params, z)``: log-density of the sample named by ``z`` (importance weights);
- ``whiten(params, x)``: a noise vector whose step is ``x`` (the inverse of ``step``), to
  place a sample drawn from another distribution of the family in this one's frame;
- ``params.to_arrays()`` / ``from_arrays``: checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from esvo.core.noise import Noise

LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class SigmaBounds:
    """Clamps on sigma: absolute bounds and the largest relative change per step."""

    min: float = 1e-12
    max: float = 1e6
    max_change: float = 1.0  # |log(sigma'/sigma)| <= log(1 + max_change)

    def apply(self, sigma: np.ndarray, log_step: np.ndarray) -> np.ndarray:
        limit = math.log1p(self.max_change)
        return np.clip(sigma * np.exp(np.clip(log_step, -limit, limit)), self.min, self.max)


def snes_sigma_lr(dim: int) -> float:
    """SNES default ``(3 + ln d) / (5 sqrt d)`` (Schaul et al. 2011; Wierstra et al. 2014)."""
    return (3 + math.log(dim)) / (5 * math.sqrt(dim))


def nes_num_pairs(dim: int) -> int:
    """Half the NES population ``4 + floor(3 ln d)``, rounded up."""
    return math.ceil((4 + math.floor(3 * math.log(max(dim, 1)))) / 2)


@dataclass(frozen=True)
class Gradients:
    """Natural-gradient estimates of one generation.

    ``mean``: of the mean, ``(d,)`` (the optimizer's input); ``log_sigma``: of log sigma,
    ``()`` or ``(d,)``; ``cov``: of the distribution's shape (``full``: ``G_B / 2``, ``(d, d)``;
    ``lowrank``: ``dU``, ``(d, k)``), None for the diagonal Gaussians.
    """

    mean: np.ndarray
    log_sigma: np.ndarray
    cov: np.ndarray | None = None


class SearchParams(Protocol):
    """A distribution's parameters besides the mean: a frozen dataclass of arrays."""

    kind: ClassVar[str]
    sigma: np.ndarray  # the global scale: () or (d,)

    def step(self, z: np.ndarray) -> np.ndarray:
        """``(..., noise_dim)`` noise -> ``(..., d)`` float64 steps (candidate ``mean ± step``)."""
        ...

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything but ``sigma`` (saved as ``search/sigma``), by name."""
        ...

    def scale_stats(self) -> tuple[float, float, float]:
        """Mean, min and max standard deviation along the covariance's principal axes
        (``sigma_mean`` / ``sigma_min`` / ``sigma_max`` in the metrics)."""
        ...


class Distribution(Protocol):
    """A family of search distributions; static settings only (the state is ``params``)."""

    name: ClassVar[str]

    def noise_dim(self, dim: int) -> int:
        """Entries of ``z`` per perturbation (``d``, or ``d + k`` for ``lowrank``)."""
        ...

    def init(self, dim: int, sigma0: float | np.ndarray, seed: int) -> SearchParams: ...

    def from_arrays(self, sigma: np.ndarray, arrays: Mapping[str, np.ndarray]) -> SearchParams: ...

    def default_num_pairs(self, dim: int) -> int: ...

    def default_sigma_lr(self, dim: int) -> float: ...

    def default_cov_lr(self, dim: int) -> float:
        """The shape's learning rate (``eta_B``, ``eta_U``); 0 if it has no shape."""
        ...

    def gradients(
        self,
        params: SearchParams,
        noise: Noise,
        ids: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        with_sigma: bool = True,
    ) -> Gradients: ...

    def update(
        self,
        params: SearchParams,
        grads: Gradients,
        sigma_lr: float,
        cov_lr: float,
        bounds: SigmaBounds,
    ) -> tuple[SearchParams, dict[str, float]]:
        """New parameters; a non-finite shape is rejected (the old one kept, counted in the
        metrics as ``cov_rejected``)."""
        ...

    def cov_times(self, params: SearchParams, v: np.ndarray) -> np.ndarray:
        """``Sigma v``: the natural gradient of ``-1/2 ||mean||^2``'s scale (weight decay)."""
        ...

    def log_density(self, params: SearchParams, z: np.ndarray) -> np.ndarray:
        """``log p(mean + step(z))`` of samples ``(..., noise_dim)`` -> ``(...)``."""
        ...

    def whiten(self, params: SearchParams, x: np.ndarray) -> np.ndarray:
        """Noise ``(..., noise_dim)`` with ``params.step(z) == x`` for steps ``x (..., d)``
        (``x = w - mean``); with ``log_density`` it gives any point's density, and
        ``gradients`` estimated from it equal those of the point itself."""
        ...

    def condition(self, params: SearchParams) -> float:
        """Condition number of the covariance (restarts)."""
        ...


@dataclass(frozen=True)
class DiagonalParams:
    """``w = mean + sigma * z``: sigma ``()`` (isotropic) or ``(d,)`` (separable)."""

    kind: ClassVar[str] = "diagonal"
    sigma: np.ndarray

    def step(self, z: np.ndarray) -> np.ndarray:
        return self.sigma * z

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def scale_stats(self) -> tuple[float, float, float]:
        return float(np.mean(self.sigma)), float(np.min(self.sigma)), float(np.max(self.sigma))


def diagonal_log_density(sigma: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``log N(sigma * z; 0, diag(sigma^2))`` for ``z (..., d)``."""
    z = np.asarray(z, dtype=np.float64)
    d = z.shape[-1]
    log_det = d * np.log(sigma) if np.ndim(sigma) == 0 else np.sum(np.log(sigma))
    return -0.5 * np.sum(z * z, axis=-1) - log_det - 0.5 * d * LOG_2PI


class Diagonal:
    """What the isotropic and separable distributions share: no shape beyond sigma (noise of
    ``d`` entries, nothing else to checkpoint, no shape rate), SNES's defaults, the sigma step.
    Subclasses give ``name``, ``init``, ``gradients`` and ``condition``."""

    def noise_dim(self, dim: int) -> int:
        return dim

    def from_arrays(self, sigma: np.ndarray, arrays: Mapping[str, np.ndarray]) -> DiagonalParams:
        return DiagonalParams(np.array(sigma, dtype=np.float64))

    def default_num_pairs(self, dim: int) -> int:
        return nes_num_pairs(dim)

    def default_sigma_lr(self, dim: int) -> float:
        # SNES's rate for both: the isotropic estimate averages d coordinates' signals, so at
        # the SNES rate it drifts like SNES with sqrt(d) less noise (tests/core verify it).
        return snes_sigma_lr(dim)

    def default_cov_lr(self, dim: int) -> float:
        return 0.0

    def update(
        self,
        params: DiagonalParams,
        grads: Gradients,
        sigma_lr: float,
        cov_lr: float,
        bounds: SigmaBounds,
    ) -> tuple[DiagonalParams, dict[str, float]]:
        # sigma <- clip(sigma * exp(lr * g), ...)
        return DiagonalParams(checked_bounds(params.sigma, sigma_lr * grads.log_sigma, bounds)), {}

    def cov_times(self, params: DiagonalParams, v: np.ndarray) -> np.ndarray:
        return np.square(params.sigma) * v

    def log_density(self, params: DiagonalParams, z: np.ndarray) -> np.ndarray:
        return diagonal_log_density(params.sigma, z)

    def whiten(self, params: DiagonalParams, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64) / params.sigma


def checked_bounds(sigma: np.ndarray, log_step: np.ndarray, bounds: SigmaBounds) -> np.ndarray:
    """``bounds.apply`` with overflow silenced (the caller checks finiteness)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bounds.apply(sigma, log_step)
