"""Gaussian search distributions ``w = mean + sigma * z`` and their natural gradients.

Variational optimization (Staines & Barber 2012) maximizes ``U(theta) = E_{p(w|theta)}[f(w)]``;
NES (Wierstra et al. 2014) follows the natural gradient, the plain gradient preconditioned by the
inverse Fisher information. With utilities ``u_i`` over the ``2n`` samples (antithetic pairs
``+z_k``, ``-z_k``), ``a_k = u_k+ - u_k-`` and ``b_k = u_k+ + u_k-`` (design.md §2):

- mean:                 ``g_mean = sigma * sum_k a_k z_k``                    (Fisher ``I/sigma^2``)
- log-sigma, separable: ``g_i = 1/2 * sum_k b_k (z_ki^2 - 1)``               (Fisher ``2``)
- log-sigma, isotropic: ``g = 1/(2d) * sum_k b_k (||z_k||^2 - d)``            (Fisher ``2d``)

and ``sigma <- clip(sigma * exp(clip(lr_sigma * g, ±log(1 + max_change))), min, max)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from esvo.core.noise import Noise


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


class Isotropic:
    """One sigma for every coordinate; ``scale`` is a 0-d array."""

    name = "isotropic"

    def init_sigma(self, dim: int, sigma0: float | np.ndarray) -> np.ndarray:
        s = np.asarray(sigma0, dtype=np.float64)
        if s.ndim != 0:
            raise ValueError("isotropic sigma must be a scalar")
        return s.copy()

    def default_sigma_lr(self, dim: int) -> float:
        # The same rate as SNES: the isotropic estimate averages d coordinates' signals, so at
        # the SNES rate it drifts like SNES with sqrt(d) less noise (tests/core verify it).
        return snes_sigma_lr(dim)

    def gradients(
        self,
        noise: Noise,
        ids: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        sigma: np.ndarray,
        with_sigma: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(g_mean, g_log_sigma)``; without ``with_sigma`` the second is 0 (not computed)."""
        sums = noise.weighted_sums(ids, a, None, sq_norms=with_sigma)
        if not with_sigma:
            return sigma * sums.s1, np.zeros(())
        d = noise.dim
        g_log_sigma = np.dot(b, sums.sq_norms - d) / (2 * d)
        return sigma * sums.s1, np.asarray(g_log_sigma)


class Separable:
    """One sigma per coordinate (diagonal covariance, SNES); ``scale`` is ``(d,)``."""

    name = "separable"

    def init_sigma(self, dim: int, sigma0: float | np.ndarray) -> np.ndarray:
        s = np.asarray(sigma0, dtype=np.float64)
        if s.ndim == 0:
            return np.full(dim, float(s))
        if s.shape != (dim,):
            raise ValueError(f"separable sigma must be a scalar or have shape ({dim},)")
        return s.copy()

    def default_sigma_lr(self, dim: int) -> float:
        return snes_sigma_lr(dim)

    def gradients(
        self,
        noise: Noise,
        ids: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        sigma: np.ndarray,
        with_sigma: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(g_mean, g_log_sigma)``; without ``with_sigma`` the second is 0 (not computed)."""
        sums = noise.weighted_sums(ids, a, b if with_sigma else None)
        if not with_sigma:
            return sigma * sums.s1, np.zeros_like(sigma)
        return sigma * sums.s1, 0.5 * (sums.s2 - b.sum())


DISTRIBUTIONS = {"isotropic": Isotropic, "separable": Separable}
