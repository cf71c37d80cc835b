"""Isotropic Gaussian ``w = mean + sigma z``: one sigma for every coordinate.

Natural gradients (design.md §2), with ``a_k = u_k+ - u_k-`` and ``b_k = u_k+ + u_k-``:
``g_mean = sigma sum_k a_k z_k`` (Fisher ``I / sigma^2``) and
``g_log_sigma = 1/(2d) sum_k b_k (||z_k||^2 - d)`` (Fisher ``2d``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from esvo.core.distributions.base import Diagonal, DiagonalParams, Gradients
from esvo.core.noise import Noise


class Isotropic(Diagonal):
    """One sigma for every coordinate; ``params.sigma`` is a 0-d array."""

    name: ClassVar[str] = "isotropic"

    def init(self, dim: int, sigma0: float | np.ndarray, seed: int = 0) -> DiagonalParams:
        s = np.asarray(sigma0, dtype=np.float64)
        if s.ndim != 0:
            raise ValueError("isotropic sigma must be a scalar")
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
        sums = noise.weighted_sums(ids, a, None, sq_norms=with_sigma)
        if not with_sigma:
            return Gradients(params.sigma * sums.s1, np.zeros(()))
        d = noise.dim
        g_log_sigma = np.dot(b, sums.sq_norms - d) / (2 * d)
        return Gradients(params.sigma * sums.s1, np.asarray(g_log_sigma))

    def condition(self, params: DiagonalParams) -> float:
        return 1.0
