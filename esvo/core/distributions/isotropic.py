"""Isotropic Gaussian ``w = mean + sigma z``: one sigma for every coordinate.

Natural gradients (design.md §2), with ``a_k = u_k+ - u_k-`` and ``b_k = u_k+ + u_k-``:
``g_mean = sigma sum_k a_k z_k`` (Fisher ``I / sigma^2``) and
``g_log_sigma = 1/(2d) sum_k b_k (||z_k||^2 - d)`` (Fisher ``2d``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from esvo.core.distributions.base import (
    DiagonalParams,
    Gradients,
    SigmaBounds,
    checked_bounds,
    diagonal_log_density,
    nes_num_pairs,
    snes_sigma_lr,
)
from esvo.core.noise import Noise


class Isotropic:
    """One sigma for every coordinate; ``params.sigma`` is a 0-d array."""

    name: ClassVar[str] = "isotropic"

    def noise_dim(self, dim: int) -> int:
        return dim

    def init(self, dim: int, sigma0: float | np.ndarray, seed: int = 0) -> DiagonalParams:
        s = np.asarray(sigma0, dtype=np.float64)
        if s.ndim != 0:
            raise ValueError("isotropic sigma must be a scalar")
        return DiagonalParams(s.copy())

    def from_arrays(self, sigma: np.ndarray, arrays: Mapping[str, np.ndarray]) -> DiagonalParams:
        return DiagonalParams(np.array(sigma, dtype=np.float64))

    def default_num_pairs(self, dim: int) -> int:
        return nes_num_pairs(dim)

    def default_sigma_lr(self, dim: int) -> float:
        # The same rate as SNES: the isotropic estimate averages d coordinates' signals, so at
        # the SNES rate it drifts like SNES with sqrt(d) less noise (tests/core verify it).
        return snes_sigma_lr(dim)

    def default_cov_lr(self, dim: int) -> float:
        return 0.0

    def gradients(
        self,
        params: DiagonalParams,
        noise: Noise,
        ids: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        with_sigma: bool = True,
    ) -> Gradients:
        sums = noise.weighted_sums(ids, a, None, sq_norms=with_sigma)
        if not with_sigma:
            return Gradients(params.sigma * sums.s1, np.zeros(()))
        d = noise.dim
        g_log_sigma = np.dot(b, sums.sq_norms - d) / (2 * d)
        return Gradients(params.sigma * sums.s1, np.asarray(g_log_sigma))

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

    def condition(self, params: DiagonalParams) -> float:
        return 1.0
