"""Low-rank covariance ``sigma^2 (I + U U^T)``: a natural ES linear in d (R1-NES for rank 1:
Sun, Schaul, Gomez, Schmidhuber, "A Linear Time Natural Evolution Strategy for
Non-Separable Functions", GECCO 2013 companion / arXiv:1106.1998).

Sampling: ``w = mean + sigma (y + U c)`` with ``y ~ N(0, I_d)``, ``c ~ N(0, I_k)``: the noise of
a perturbation is ``z = [y; c]`` (``d + k`` entries, rebuilt from its id), and workers need only
``sigma`` and ``U`` (``d k`` floats). Memory O(k d), time per generation O(n k d).

The update (any rank ``k``). ``U`` is kept with orthogonal columns ``U = V diag(r)`` (a gauge:
``U U^T`` is unchanged by rotating ``U``'s columns), so ``C = I + U U^T`` has eigenvalues
``1 + r_j^2`` along ``v_j`` and 1 elsewhere. xNES's natural gradient of the covariance in
ambient coordinates is ``Delta = sum_i u_i (w_i w_i^T - C)`` (in units of ``sigma^2``); the
natural gradient of ``(log sigma, U)`` is its projection onto the model's tangent space
``J(dl, dU) = 2 dl C + dU U^T + U dU^T`` in the Fisher metric ``1/2 tr(C^-1 P C^-1 Q)``,
i.e. the solution of ``(J - Delta) U = 0`` and ``tr(C^-1 (J - Delta)) = 0``. With
``vw_k = V^T w_k``, ``X = sum_k b_k vw_k vw_k^T`` (k x k) and ``R = diag(r)``:

    dl   = [sum_k b_k (w_k^T C^-1 w_k - d) - sum_j (X_jj / (1 + r_j^2) - sum_k b_k)] / (2 (d - k))
    dU   = U S / 2 + D,   S = R^-1 X R^-1 - (sum_k b_k + 2 dl)(R^-2 + I)      (symmetric gauge)
    D_j  = P_perp (sum_k b_k vw_kj y_k) / r_j                                 (P_perp = I - V V^T)

For ``k = 1`` these are exactly R1-NES's equations (5)-(6) (``tests/core/test_lowrank.py``
re-derives them from the paper's form). The step follows R1-NES per eigen-direction ``j``:
with ``dc_j = v_j^T dU_j / r_j`` and ``eps_j = min(eta_U, 2 r_j / ||dU_j||)``, an additive step
``U_j += eps_j dU_j`` when it grows (``dc_j > 0``), else a multiplicative one (``log r_j +=
eps_j dc_j``, ``v_j <- normalize(v_j + eps_j (dU_j / r_j - dc_j v_j))``), which keeps it
stable; then ``U`` is re-orthogonalized. ``sigma *= exp(eta_sigma dl)``. Defaults as published
(PyBrain's ``Rank1NES``): ``eta_sigma = eta_U = 0.1``, population ``max(5, 4 log2 d, 0.2 d)``,
``U`` starting as random orthonormal directions (from the run seed) of length 1.

The driver's reductions (two passes over the noise, as the separable update's two):
projections ``V^T y_k`` and ``||y_k||^2``, then ``k + 1`` weighted sums of the ``y_k``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from esvo.core.distributions.base import LOG_2PI, Gradients, SigmaBounds, checked_bounds
from esvo.core.noise import Noise


@dataclass(frozen=True)
class LowRankParams:
    """``w = mean + sigma (y + U c)``: ``sigma`` ``()``, ``U`` ``(d, k)`` with orthogonal
    columns."""

    kind: ClassVar[str] = "lowrank"
    sigma: np.ndarray
    U: np.ndarray

    def step(self, z: np.ndarray) -> np.ndarray:
        # sigma (y + sum_j c_j U_j): elementwise, in a fixed order (bit-identical anywhere)
        z = np.asarray(z)
        d, k = self.U.shape
        out = z[..., :d].astype(np.float64)
        for j in range(k):
            out += self.U[:, j] * z[..., d + j, None].astype(np.float64)
        return self.sigma * out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"U": self.U}

    def scale_stats(self) -> tuple[float, float, float]:
        d, k = self.U.shape
        axes = float(self.sigma) * np.sqrt(1 + _col_dots(self.U, self.U))  # (k,)
        mean = (axes.sum() + (d - k) * float(self.sigma)) / d
        return mean, float(self.sigma), float(max(axes.max(), self.sigma))


def _col_dots(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``sum_i x[i, j] y[i, j]`` per column of ``(d, k)`` arrays (4x faster than ``np.sum(x * y,
    axis=0)`` or ``norm(axis=0)`` at d = 1e6: no temporary, no strided reduction)."""
    return np.einsum("ij,ij->j", x, y)


def _orthogonalize(u: np.ndarray) -> np.ndarray:
    """The same ``U U^T`` with orthogonal columns, longest first (eigenvectors of ``U^T U``)."""
    g = u.T @ u
    _, vecs = np.linalg.eigh(0.5 * (g + g.T))
    return u @ vecs[:, ::-1]


def project(noise: Noise, ids: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(V^T y_k (n, k), ||y_k||^2 (n,))`` of the first ``d = len(V)`` entries of each ``z``."""
    fast = getattr(noise, "project", None)
    if fast is not None:
        return fast(ids, v)
    d = v.shape[0]
    rows = max(1, (1 << 21) // max(noise.dim, 1))
    q, yy = [], []
    for k0 in range(0, len(ids), rows):
        y = np.stack([noise.get(p)[:d] for p in ids[k0 : k0 + rows]]).astype(np.float64)
        q.append(y @ v)
        yy.append(np.einsum("ij,ij->i", y, y))
    return np.concatenate(q), np.concatenate(yy)


def combine(noise: Noise, ids: np.ndarray, w: np.ndarray, d: int) -> np.ndarray:
    """``sum_k w[k, m] y_k`` for every column ``m`` of ``w (n, M)``: ``(M, d)``."""
    fast = getattr(noise, "combine", None)
    if fast is not None:
        return fast(ids, w, d)
    rows = max(1, (1 << 21) // max(noise.dim, 1))
    out = np.zeros((w.shape[1], d))
    for k0 in range(0, len(ids), rows):
        y = np.stack([noise.get(p)[:d] for p in ids[k0 : k0 + rows]]).astype(np.float64)
        out += w[k0 : k0 + rows].T @ y
    return out


def r1nes_num_pairs(dim: int) -> int:
    """PyBrain's R1-NES population ``max(5, 4 log2 d, 0.2 d)``, in pairs (rounded up)."""
    return math.ceil(max(5.0, 4 * math.log2(max(dim, 2)), 0.2 * dim) / 2)


class LowRank:
    """Covariance ``sigma^2 (I + U U^T)`` of rank ``k`` (``rank``) above the isotropic part.

    Args:
        rank: ``k``, ``1 <= k < d`` (1: R1-NES).
    """

    name: ClassVar[str] = "lowrank"

    def __init__(self, rank: int = 1):
        if int(rank) < 1:
            raise ValueError(f"lowrank: rank must be >= 1, got {rank}")
        self.rank = int(rank)

    def noise_dim(self, dim: int) -> int:
        return dim + self.rank

    def init(self, dim: int, sigma0: float | np.ndarray, seed: int = 0) -> LowRankParams:
        if not self.rank < dim:
            raise ValueError(f"lowrank: rank must be < d = {dim}, got {self.rank}")
        s = np.asarray(sigma0, dtype=np.float64)
        if s.ndim != 0:
            raise ValueError("lowrank: sigma_init must be a scalar")
        rng = np.random.default_rng([int(seed), 0x10C0FF])  # the run seed names U's start
        q, r = np.linalg.qr(rng.standard_normal((dim, self.rank)))
        return LowRankParams(s.copy(), q * np.sign(np.diag(r)))  # unit length, orthogonal

    def from_arrays(self, sigma: np.ndarray, arrays: Mapping[str, np.ndarray]) -> LowRankParams:
        return LowRankParams(np.array(sigma, dtype=np.float64), np.array(arrays["U"], np.float64))

    def default_num_pairs(self, dim: int) -> int:
        return r1nes_num_pairs(dim)

    def default_sigma_lr(self, dim: int) -> float:
        return 0.1

    def default_cov_lr(self, dim: int) -> float:
        return 0.1

    def gradients(
        self,
        params: LowRankParams,
        noise: Noise,
        ids: np.ndarray,
        a: np.ndarray,
        b: np.ndarray,
        with_sigma: bool = True,
    ) -> Gradients:
        u = params.U
        d, k = u.shape
        r = np.sqrt(_col_dots(u, u))  # (k,)
        v = u / r
        c = np.stack([noise.get(p)[d:] for p in ids]).astype(np.float64)  # (n, k)
        q, yy = project(noise, ids, v)  # V^T y_k, ||y_k||^2
        vw = q + r * c  # V^T w_k
        ww = yy + 2 * np.sum(r * q * c, axis=1) + np.sum((r * c) ** 2, axis=1)  # ||w_k||^2
        p = r * vw  # U^T w_k
        wcw = ww - np.sum(p * p / (1 + r * r), axis=1)  # w_k^T C^-1 w_k
        sums = combine(noise, ids, np.column_stack([a, b[:, None] * vw]), d)  # (1 + k, d)
        g_mean = params.sigma * (sums[0] + u @ (a @ c))  # sigma sum_k a_k w_k
        sb = b.sum()
        x = (vw.T * b) @ vw  # (k, k)
        tr_m = np.sum(np.diag(x) / (1 + r * r)) - k * sb
        dl = (np.dot(b, wcw) - sb * d - tr_m) / (2 * (d - k))
        s = x / np.outer(r, r) - (sb + 2 * dl) * np.diag(1 / r**2 + 1)
        t = sums[1:].T  # (d, k): sum_k b_k vw_kj y_k
        perp = t - v @ (v.T @ t)
        du = u @ (0.5 * s) + perp / r
        return Gradients(g_mean, np.asarray(dl), du)

    def update(
        self,
        params: LowRankParams,
        grads: Gradients,
        sigma_lr: float,
        cov_lr: float,
        bounds: SigmaBounds,
    ) -> tuple[LowRankParams, dict[str, float]]:
        sigma = checked_bounds(params.sigma, sigma_lr * grads.log_sigma, bounds)
        if not cov_lr or grads.cov is None:
            return LowRankParams(sigma, params.U), {"cov_rejected": 0}
        u, du = params.U, grads.cov
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            r = np.sqrt(_col_dots(u, u))
            dn = np.sqrt(_col_dots(du, du))
            dc = _col_dots(u, du) / (r * r)  # v_j^T dU_j / r_j
            eps = np.minimum(cov_lr, 2 * r / np.where(dn > 0, dn, np.inf))
            new = np.empty_like(u)
            for j in range(u.shape[1]):  # one column at a time: no (d, k) temporaries
                if dc[j] > 0:  # additive
                    new[:, j] = u[:, j] + eps[j] * du[:, j]
                else:  # multiplicative: length and direction apart
                    v = u[:, j] / r[j]
                    v_new = v + eps[j] * (du[:, j] / r[j] - dc[j] * v)
                    v_new *= np.exp(np.log(r[j]) + eps[j] * dc[j]) / np.sqrt(v_new @ v_new)
                    new[:, j] = v_new
            new = _orthogonalize(new) if np.all(np.isfinite(new)) else new
        if not (np.all(np.isfinite(new)) and np.all(_col_dots(new, new) > 0)):
            return LowRankParams(sigma, params.U), {"cov_rejected": 1}
        return LowRankParams(sigma, new), {"cov_rejected": 0}

    def cov_times(self, params: LowRankParams, v: np.ndarray) -> np.ndarray:
        u = params.U
        return np.square(params.sigma) * (v + u @ (u.T @ v))

    def log_density(self, params: LowRankParams, z: np.ndarray) -> np.ndarray:
        # x = sigma w, Sigma = sigma^2 C: -w^T C^-1 w / 2 - log det(sigma^2 C) / 2 - d/2 log 2 pi
        u = params.U
        d = u.shape[0]
        z = np.asarray(z, dtype=np.float64)
        w = z[..., :d] + z[..., d:] @ u.T
        r2 = _col_dots(u, u)
        p = w @ u  # U^T w
        wcw = np.sum(w * w, axis=-1) - np.sum(p * p / (1 + r2), axis=-1)
        log_det = 2 * d * np.log(params.sigma) + np.sum(np.log1p(r2))
        return -0.5 * wcw - 0.5 * log_det - 0.5 * d * LOG_2PI

    def whiten(self, params: LowRankParams, x: np.ndarray) -> np.ndarray:
        # step((x / sigma, 0)) = x. The gradients and the density depend on z only through
        # w = z[:d] + U z[d:], so every z with the same w gives the same answers.
        x = np.asarray(x, dtype=np.float64) / params.sigma
        return np.concatenate([x, np.zeros((*x.shape[:-1], params.U.shape[1]))], axis=-1)

    def condition(self, params: LowRankParams) -> float:
        return float(1 + np.max(_col_dots(params.U, params.U)))
