"""Separable Gaussian ``w = mean + sigma ⊙ z``: one sigma per coordinate (SNES; Schaul,
Glasmachers, Schmidhuber 2011).

Natural gradients (design.md §2), with ``a_k = u_k+ - u_k-`` and ``b_k = u_k+ + u_k-``:
``g_mean = sigma ⊙ sum_k a_k z_k`` (Fisher ``diag(1 / sigma^2)``) and
``g_log_sigma_i = 1/2 sum_k b_k (z_ki^2 - 1)`` (Fisher ``2``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from esvo.core.distributions.base import Diagonal, DiagonalParams, Gradients
from esvo.core.noise import Noise


class Separable(Diagonal):
    """One sigma per coordinate (diagonal covariance); ``params.sigma`` is ``(d,)``."""

    name: ClassVar[str] = "separable"

    def init(self, dim: int, sigma0: float | np.ndarray, seed: int = 0) -> DiagonalParams:
        s = np.asarray(sigma0, dtype=np.float64)
        if s.ndim == 0:
            return DiagonalParams(np.full(dim, float(s)))
        if s.shape != (dim,):
            raise ValueError(f"separable sigma must be a scalar or have shape ({dim},)")
        return DiagonalParams(s.copy())

    def gradients(
        self,
        params: DiagonalParams,
        noise: Noise,
        ids: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        with_sigma: bool = True,
    ) -> Gradients:
        sums = noise.weighted_sums(ids, a, b if with_sigma else None)
        if not with_sigma:
            return Gradients(params.sigma * sums.s1, np.zeros_like(params.sigma))
        return Gradients(params.sigma * sums.s1, 0.5 * (sums.s2 - b.sum()))

    def condition(self, params: DiagonalParams) -> float:
        s2 = np.square(params.sigma)
        return float(s2.max() / s2.min())
