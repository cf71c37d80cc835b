"""Analytic test functions (to minimize) with their known minima.

Each takes ``w`` of shape ``(..., d)`` and returns ``(...)``, so a whole population scores in one
call. ``MINIMA[name](d)`` lists the global minimizers (Himmelblau has four, all with value 0).

The ill-conditioned quadratics (ellipsoid, cigar and their rotations) are the ones the
covariance-learning literature measures on (Hansen & Ostermeier 2001; Akimoto, Auger & Hansen
2014 for VD-CMA), with pycma's constants (``cma.ff.elli``, ``cma.ff.cigar``: condition 1e6), so
evaluation counts compare with pycma's and the published ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

CONDITION = 1e6  # ellipsoid and cigar: ratio of the largest to the smallest Hessian eigenvalue
ROTATION_SEED = 20140712  # fixes every rotated function's Q (one per dimension)
MAX_ROTATED_DIM = 5_000  # Q is d x d float64 (200 MB here); its QR, O(d^3), takes minutes


def sphere(w: np.ndarray) -> np.ndarray:
    """``sum w_i^2``; minimum 0 at the origin."""
    w = np.asarray(w, dtype=np.float64)
    return np.sum(w * w, axis=-1)


def rosenbrock(w: np.ndarray) -> np.ndarray:
    """``sum 100 (w_{i+1} - w_i^2)^2 + (1 - w_i)^2``; minimum 0 at ``(1, ..., 1)``."""
    w = np.asarray(w, dtype=np.float64)
    x, y = w[..., :-1], w[..., 1:]
    return np.sum(100.0 * (y - x * x) ** 2 + (1.0 - x) ** 2, axis=-1)


def rastrigin(w: np.ndarray) -> np.ndarray:
    """``10 d + sum w_i^2 - 10 cos(2 pi w_i)``; minimum 0 at the origin, many local minima."""
    w = np.asarray(w, dtype=np.float64)
    return 10.0 * w.shape[-1] + np.sum(w * w - 10.0 * np.cos(2 * np.pi * w), axis=-1)


def himmelblau(w: np.ndarray) -> np.ndarray:
    """``(x^2 + y - 11)^2 + (x + y^2 - 7)^2`` (d = 2); four minima of value 0."""
    w = np.asarray(w, dtype=np.float64)
    if w.shape[-1] != 2:
        raise ValueError(f"himmelblau is defined for d = 2, got d = {w.shape[-1]}")
    x, y = w[..., 0], w[..., 1]
    return (x * x + y - 11.0) ** 2 + (x + y * y - 7.0) ** 2


def ellipsoid(w: np.ndarray) -> np.ndarray:
    """``sum_i 10^(6 (i-1)/(d-1)) w_i^2`` (i = 1..d), condition 1e6; minimum 0 at the origin.

    Axis-parallel, so a diagonal covariance can learn it. Same as pycma's ``cma.ff.elli``; for
    d = 1 (no ``d - 1`` to divide by) it is ``w_1^2``, as there.
    """
    w = np.asarray(w, dtype=np.float64)
    d = w.shape[-1]
    scale = CONDITION ** (np.arange(d) / max(d - 1, 1))
    return np.sum(scale * w * w, axis=-1)


def cigar(w: np.ndarray) -> np.ndarray:
    """``w_1^2 + 1e6 sum_{i>1} w_i^2``; minimum 0 at the origin. Same as pycma's ``cma.ff.cigar``.

    One long axis among d - 1 short ones: a rank-one covariance term learns it.
    """
    w = np.asarray(w, dtype=np.float64)
    return w[..., 0] ** 2 + CONDITION * np.sum(w[..., 1:] ** 2, axis=-1)


@functools.cache
def rotation(d: int) -> np.ndarray:
    """The fixed orthogonal ``Q`` (d x d, read-only) of the rotated functions: a pure function of
    ``d``, identical in every process (each Ray worker builds its own).

    Haar-distributed (Mezzadri 2007): ``Q R = G`` for a Gaussian ``G`` drawn from
    ``(ROTATION_SEED, d)``, with each column of ``Q`` multiplied by the sign of ``R``'s diagonal
    so that the factorization, hence ``Q``, is unique. Built once per process and dimension.
    """
    if not 1 <= d <= MAX_ROTATED_DIM:
        raise ValueError(f"rotated functions are defined for 1 <= d <= {MAX_ROTATED_DIM}, got {d}")
    g = np.random.default_rng([ROTATION_SEED, d]).standard_normal((d, d))
    q, r = np.linalg.qr(g)
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    q.flags.writeable = False
    return q


def _rotated(w: np.ndarray) -> np.ndarray:
    """``Q w`` for every row of ``w`` (..., d)."""
    w = np.asarray(w, dtype=np.float64)
    return w @ rotation(w.shape[-1]).T


def rotated_ellipsoid(w: np.ndarray) -> np.ndarray:
    """``ellipsoid(Q w)``, ``Q = rotation(d)``; minimum 0 at the origin.

    The same spectrum as ``ellipsoid`` with axes no diagonal covariance can follow.
    """
    return ellipsoid(_rotated(w))


def rotated_cigar(w: np.ndarray) -> np.ndarray:
    """``cigar(Q w)``, ``Q = rotation(d)``; minimum 0 at the origin.

    The long axis ``Q^T e_1`` is oblique, so a diagonal covariance cannot learn it and a rank-one
    term (R1-NES, VD-CMA) can.
    """
    return cigar(_rotated(w))


HIMMELBLAU_MINIMA = np.array(
    [
        [3.0, 2.0],
        [-2.805118086952745, 3.131312518250573],
        [-3.779310253377747, -3.283185991286170],
        [3.584428340330492, -1.848126526964404],
    ]
)

FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sphere": sphere,
    "rosenbrock": rosenbrock,
    "rastrigin": rastrigin,
    "himmelblau": himmelblau,
    "ellipsoid": ellipsoid,
    "cigar": cigar,
    "rotated_ellipsoid": rotated_ellipsoid,
    "rotated_cigar": rotated_cigar,
}

MINIMA: dict[str, Callable[[int], np.ndarray]] = {
    "sphere": lambda d: np.zeros((1, d)),
    "rosenbrock": lambda d: np.ones((1, d)),
    "rastrigin": lambda d: np.zeros((1, d)),
    "himmelblau": lambda d: HIMMELBLAU_MINIMA,
    "ellipsoid": lambda d: np.zeros((1, d)),
    "cigar": lambda d: np.zeros((1, d)),
    "rotated_ellipsoid": lambda d: np.zeros((1, d)),
    "rotated_cigar": lambda d: np.zeros((1, d)),
}
