"""Full covariance: exponential NES (xNES; Glasmachers, Schaul, Sun, Wierstra, Schmidhuber,
GECCO 2010; Wierstra et al., JMLR 15, 2014).

``w = mean + sigma B z`` with ``z ~ N(0, I)`` and ``det B = 1`` (``A = sigma B``,
``Sigma = A A^T``). From the utilities ``u_i`` of the samples ``s_i`` (in ``z`` coordinates),
the natural gradients in the local coordinates of ``A`` are

    G_delta = sum_i u_i s_i                      G_M = sum_i u_i (s_i s_i^T - I)
    G_sigma = tr(G_M) / d                        G_B = G_M - G_sigma I

and the updates ``mean += eta_mean sigma B G_delta`` (the optimizer: SGD with lr 1 is
``eta_mean = 1``), ``sigma *= exp(eta_sigma / 2 G_sigma)``, ``B <- B expm(eta_B / 2 G_B)``:
a true matrix exponential of the symmetric, traceless ``G_B`` (so ``det B`` stays 1; an
element-wise ``exp`` there, as one widely used library has it, is a different and wrong
update). Defaults as published: ``eta_sigma = eta_B = (9 + 3 ln d) / (5 d sqrt d)``,
population ``4 + floor(3 ln d)``.

Antithetic pairs: pair ``k`` contributes ``s = +z_k`` with ``u_k+`` and ``s = -z_k`` with
``u_k-``. In ``G_delta`` the signs make it ``(u_k+ - u_k-) z_k = a_k z_k``; in ``G_M`` the
outer product is the same for both members, so it is ``(u_k+ + u_k-)(z_k z_k^T - I) =
b_k (z_k z_k^T - I)``: the sums over all ``2n`` samples equal the sums over pairs exactly
(``tests/core/test_full.py`` checks it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from esvo.core.distributions.base import (
    LOG_2PI,
    Gradients,
    SigmaBounds,
    checked_bounds,
    nes_num_pairs,
)
from esvo.core.noise import Noise


def fixed_order_matvec(m: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``m @ z`` for ``z (..., d)`` summed in a fixed pairwise order with elementwise ufuncs.

    A BLAS matvec may sum in another order for another thread count or memory alignment; a
    worker (1 thread) and the driver (several) must build bit-identical candidates."""
    z = np.asarray(z, dtype=np.float64)
    p = m * z[..., None, :]  # (..., d, d): p[i, j] = m[i, j] z[j]
    n = p.shape[-1]
    while n > 1:
        half = n // 2
        s = p[..., :half] + p[..., half : 2 * half]
        if n % 2:
            s[..., 0] += p[..., n - 1]
        p, n = s, half
    return p[..., 0].copy()


@dataclass(frozen=True)
class FullParams:
    """``w = mean + sigma B z``: ``sigma`` ``()``, ``B`` ``(d, d)`` with ``det B = 1``."""

    kind: ClassVar[str] = "full"
    sigma: np.ndarray
    B: np.ndarray

    def step(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z)
        if z.ndim == 1:
            return self.sigma * fixed_order_matvec(self.B, z)
        rows = [self.step(row) for row in z.reshape(-1, z.shape[-1])]  # (d, d) temporaries only
        return np.stack(rows).reshape(*z.shape[:-1], self.B.shape[0])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"B": self.B}

    def scale_stats(self) -> tuple[float, float, float]:
        axes = float(self.sigma) * np.linalg.svd(self.B, compute_uv=False)
        return float(axes.mean()), float(axes.min()), float(axes.max())


# Below this size scipy's expm is dominated by a fixed ~6 ms (scipy 1.17, this machine), an
# eigendecomposition takes ~0.1 ms; above it expm is as fast or faster (d = 100: 7 vs 19 ms,
# d = 1000: 0.9 vs 1.2 s). Both agree to 1e-15.
EIGH_MAX_DIM = 32


def sym_expm(s: np.ndarray) -> np.ndarray:
    """The matrix exponential of a symmetric ``s``: ``Q diag(exp(w)) Q^T`` from ``eigh``
    (small d), else ``scipy.linalg.expm``."""
    if s.shape[0] <= EIGH_MAX_DIM:
        w, q = np.linalg.eigh(s)
        return (q * np.exp(w)) @ q.T
    import scipy.linalg  # here: ~0.2 s at import, for large full covariances only

    return scipy.linalg.expm(s)


def xnes_rate(dim: int) -> float:
    """``eta_sigma = eta_B = 0.6 (3 + ln d) / (d sqrt d) = (9 + 3 ln d) / (5 d sqrt d)``."""
    return (9 + 3 * math.log(dim)) / (5 * dim * math.sqrt(dim))


class Full:
    """xNES: full covariance ``sigma^2 B B^T``; O(d^2) memory, O(n d^2 + d^3) per generation.
    Workers receive ``B`` (d^2 floats, through the object store once per generation)."""

    name: ClassVar[str] = "full"

    def noise_dim(self, dim: int) -> int:
        return dim

    def init(self, dim: int, sigma0: float | np.ndarray, seed: int = 0) -> FullParams:
        s = np.asarray(sigma0, dtype=np.float64)
        if s.ndim != 0:
            raise ValueError("full: sigma_init must be a scalar (the shape starts as B = I)")
        return FullParams(s.copy(), np.eye(dim))

    def from_arrays(self, sigma: np.ndarray, arrays: Mapping[str, np.ndarray]) -> FullParams:
        return FullParams(np.array(sigma, dtype=np.float64), np.array(arrays["B"], np.float64))

    def default_num_pairs(self, dim: int) -> int:
        return nes_num_pairs(dim)

    def default_sigma_lr(self, dim: int) -> float:
        return xnes_rate(dim)

    def default_cov_lr(self, dim: int) -> float:
        return xnes_rate(dim)

    def gradients(
        self,
        params: FullParams,
        noise: Noise,
        ids: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        with_sigma: bool = True,
    ) -> Gradients:
        z = np.stack([noise.get(p) for p in ids]).astype(np.float64)  # (n, d)
        d = z.shape[1]
        g_delta = a @ z
        g_m = (z.T * b) @ z - b.sum() * np.eye(d)  # sum_k b_k (z_k z_k^T - I)
        g_m = 0.5 * (g_m + g_m.T)  # exactly symmetric
        g_sigma = np.trace(g_m) / d
        g_b = g_m - g_sigma * np.eye(d)
        g_mean = params.sigma * (params.B @ g_delta)
        return Gradients(g_mean, np.asarray(0.5 * g_sigma), 0.5 * g_b)

    def update(
        self,
        params: FullParams,
        grads: Gradients,
        sigma_lr: float,
        cov_lr: float,
        bounds: SigmaBounds,
    ) -> tuple[FullParams, dict[str, float]]:
        sigma = checked_bounds(params.sigma, sigma_lr * grads.log_sigma, bounds)
        if not cov_lr or grads.cov is None:
            return FullParams(sigma, params.B), {"cov_rejected": 0}
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                B = params.B @ sym_expm(cov_lr * grads.cov)  # B expm(eta_B/2 G_B)
            except (ValueError, np.linalg.LinAlgError):
                B = None
        if B is None or not np.all(np.isfinite(B)):
            return FullParams(sigma, params.B), {"cov_rejected": 1}
        return FullParams(sigma, B), {"cov_rejected": 0}

    def cov_times(self, params: FullParams, v: np.ndarray) -> np.ndarray:
        return np.square(params.sigma) * (params.B @ (params.B.T @ v))

    def log_density(self, params: FullParams, z: np.ndarray) -> np.ndarray:
        # w = mean + sigma B z: log N = -|z|^2/2 - log|det(sigma B)| - d/2 log 2 pi
        z = np.asarray(z, dtype=np.float64)
        d = z.shape[-1]
        _, log_det_b = np.linalg.slogdet(params.B)
        log_det = d * np.log(params.sigma) + log_det_b
        return -0.5 * np.sum(z * z, axis=-1) - log_det - 0.5 * d * LOG_2PI

    def whiten(self, params: FullParams, x: np.ndarray) -> np.ndarray:
        # z = (sigma B)^-1 x, rows of x at once
        x = np.asarray(x, dtype=np.float64)
        flat = x.reshape(-1, x.shape[-1])
        return (np.linalg.solve(params.B, flat.T).T / params.sigma).reshape(x.shape)

    def condition(self, params: FullParams) -> float:
        s = np.linalg.svd(params.B, compute_uv=False)
        return float((s.max() / s.min()) ** 2)
