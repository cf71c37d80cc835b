"""Convergence with sigma adapted by the natural gradient (NES defaults, fixed seeds).

Budgets are the issue's (a textbook SNES meets them with 2x to spare); measured evaluation
counts for these seeds are in BENCHMARKS.md.
"""

import numpy as np
import pytest

from esvo.core import Strategy
from esvo.objectives.functions import FUNCTIONS, HIMMELBLAU_MINIMA


def minimize(name, dim, distribution, theta0, budget, done, seed=0, **kw):
    f = FUNCTIONS[name]
    s = Strategy(dim, maximize=False, distribution=distribution, sigma_init=0.5, seed=seed, **kw)
    st = s.init(np.full(dim, theta0, dtype=float))
    evals = 0
    while evals < budget and not done(st, f):
        a = s.ask(st)
        fit = f(s.population(st, a))
        evals += fit.size
        st, _ = s.tell(st, a, fit)
    return st, evals


def below(target):
    return lambda st, f: f(st.mean) < target


DISTS = ["isotropic", "separable"]


@pytest.mark.parametrize("distribution", DISTS)
@pytest.mark.parametrize(
    ("name", "dim", "theta0", "budget"),
    [("sphere", 10, 1.0, 4_000), ("sphere", 100, 1.0, 50_000), ("rosenbrock", 2, 0.0, 400_000)],
)
def test_reaches_1e_8(name, dim, theta0, budget, distribution):
    st, evals = minimize(name, dim, distribution, theta0, budget, below(1e-8))
    assert FUNCTIONS[name](st.mean) < 1e-8, f"{evals} evaluations"


@pytest.mark.parametrize("distribution", DISTS)
def test_himmelblau_finds_a_minimum(distribution):
    def done(st, f):
        gap = np.min(np.linalg.norm(HIMMELBLAU_MINIMA - st.mean, axis=1))
        return gap < 1e-4 and np.max(st.sigma) < 1e-4

    st, evals = minimize("himmelblau", 2, distribution, 0.0, 1_000, done)
    assert done(st, None), (st.mean, st.sigma, evals)


@pytest.mark.slow
def test_rosenbrock_10_separable():
    st, evals = minimize("rosenbrock", 10, "separable", 0.0, 1_500_000, below(1e-6))
    assert FUNCTIONS["rosenbrock"](st.mean) < 1e-6, f"{evals} evaluations"


def test_fixed_sigma_stalls_at_a_floor_set_by_sigma():
    """OpenAI-ES (sigma_lr = 0) on the same sphere: the mean jitters at a level ~ sigma^2."""

    def floor(sigma):
        s = Strategy(10, maximize=False, sigma_init=sigma, sigma_lr=0.0, seed=0)
        st, tail = s.init(np.ones(10)), []
        for g in range(800):
            a = s.ask(st)
            st, _ = s.tell(st, a, FUNCTIONS["sphere"](s.population(st, a)))
            if g >= 400:
                tail.append(FUNCTIONS["sphere"](st.mean))
        return float(np.median(tail))

    big, small = floor(0.5), floor(0.05)
    assert big > 1e-2  # the adaptive run above reaches 1e-8 with 4,000 evaluations
    # the floor scales like sigma^2 (a 10x smaller sigma: ~100x lower), within 4x either way
    assert 25 < big / small < 400, (big, small)
