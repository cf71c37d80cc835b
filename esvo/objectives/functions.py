"""Analytic test functions (to minimize) with their known minima.

Each takes ``w`` of shape ``(..., d)`` and returns ``(...)``, so a whole population scores in one
call. ``MINIMA[name](d)`` lists the global minimizers (Himmelblau has four, all with value 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


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
}

MINIMA: dict[str, Callable[[int], np.ndarray]] = {
    "sphere": lambda d: np.zeros((1, d)),
    "rosenbrock": lambda d: np.ones((1, d)),
    "rastrigin": lambda d: np.zeros((1, d)),
    "himmelblau": lambda d: HIMMELBLAU_MINIMA,
}
