"""Importance mixing (``esvo.core.mixing``) against its defining properties.

- The mixed population is a sample of the new distribution: over many independent generations
  the whitened members have mean 0 and variance 1 within K standard errors (batch means over
  generations: members of one generation are correlated, antithetic partners and all), and a
  Kolmogorov-Smirnov test of one random member per generation does not reject N(0, 1); the
  same statistics of the unmixed old population do reject (the tests have power).
- The reuse rate is the expected overlap ``E_old[min(1, (1 - alpha) p_new / p_old)]``: a
  closed form for equal covariances (derived below), a quadrature otherwise.
- ``tell`` with kept members is the per-member natural-gradient formula, re-derived here.
"""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from esvo.core import Strategy
from esvo.core.distributions import DiagonalParams, Separable, SigmaBounds
from esvo.core.mixing import ImportanceMixing, Origin, Pool, mix, pool_points
from esvo.core.noise import NoiseGenerator, perturbation_ids
from esvo.core.optimizers import SGD

K = 4.0  # standard errors
ALPHA = 0.01
SEED = 11


def old_population(old: Origin, size: int, seed: int = SEED) -> Pool:
    """The previous population: ``size / 2`` antithetic pairs drawn from ``old``."""
    ids = perturbation_ids(seed, old.generation, size // 2)
    return Pool(
        np.full(size, old.generation, np.int64),
        np.repeat(ids, 2),
        np.tile(np.array([1, -1], np.int8), size // 2),
        np.zeros(size),
        (old,),
    )


def mixed(old: Origin, new: Origin, noise, size: int, alpha: float = ALPHA):
    """The mixed population's points: kept old members, then the accepted fresh ones."""
    pool = old_population(old, size)
    m = mix(Separable(), ImportanceMixing(alpha), pool, new, old, noise, SEED, size)
    kept = pool_points(pool, m.kept, noise)
    z = np.stack([noise.get(int(i)) for i in m.ids]).astype(np.float64)
    step = new.params.step(z)
    fresh = np.concatenate([new.mean + step[m.members[:, 0]], new.mean - step[m.members[:, 1]]])
    return kept, fresh, pool


CASES = {
    "1d": (np.zeros(1), np.ones(1), np.array([0.8]), np.array([0.7])),
    "5d": (
        np.zeros(5),
        np.ones(5),
        np.full(5, 0.3),
        np.array([0.8, 1.1, 1.0, 0.9, 1.2]),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_mixed_population_is_distributed_as_the_new_distribution(case):
    mu_o, s_o, mu_n, s_n = case
    d, size, gens = len(mu_o), 20, 1500
    noise = NoiseGenerator(d, seed=1)
    rng = np.random.default_rng(0)
    means, squares, one, old_one, reused = [], [], [], [], []
    for g in range(1, gens + 1):
        old = Origin(g - 1, mu_o, DiagonalParams(s_o))
        new = Origin(g, mu_n, DiagonalParams(s_n))
        kept, fresh, pool = mixed(old, new, noise, size)
        w = np.concatenate([kept, fresh])
        assert len(w) == size
        y = (w - mu_n) / s_n  # N(0, I) if the population is a sample of the new distribution
        means.append(y.mean(axis=0))
        squares.append((y * y).mean(axis=0))
        one.append(y[rng.integers(size), 0])
        old_y = (pool_points(pool, np.arange(size), noise) - mu_n) / s_n
        old_one.append(old_y[rng.integers(size), 0])
        reused.append(len(kept) / size)
    means, squares = np.array(means), np.array(squares)
    se_m = means.std(axis=0, ddof=1) / math.sqrt(gens)
    se_s = squares.std(axis=0, ddof=1) / math.sqrt(gens)
    assert np.all(np.abs(means.mean(axis=0)) < K * se_m), (means.mean(axis=0), se_m)
    assert np.all(np.abs(squares.mean(axis=0) - 1) < K * se_s), (squares.mean(axis=0), se_s)
    assert stats.kstest(one, "norm").pvalue > 1e-3
    # power: the old population itself is far from the new distribution by the same test
    assert stats.kstest(old_one, "norm").pvalue < 1e-6
    assert 0.2 < np.mean(reused) < 0.9  # and a good part of it was reused


def expected_reuse_equal_cov(delta: float, c: float) -> float:
    """``E_old[min(1, c r)]`` with ``r = p_new / p_old`` for two Gaussians of one covariance
    whose means are ``delta`` apart (Mahalanobis). ``log r`` is linear in ``w``: under
    ``p_old`` it is ``N(-delta^2/2, delta^2)``, under ``p_new`` ``N(delta^2/2, delta^2)``, and
    ``E_old[min(1, c r)] = P_old(c r >= 1) + c P_new(c r < 1)``."""
    t = -math.log(c)  # c r >= 1  <=>  log r >= t
    p_old = stats.norm.sf((t + delta**2 / 2) / delta)
    p_new = stats.norm.cdf((t - delta**2 / 2) / delta)
    return p_old + c * p_new


@pytest.mark.parametrize("shift", [0.2, 0.5, 1.0])
def test_reuse_rate_matches_the_expected_overlap_equal_covariances(shift):
    d, size, gens = 5, 200, 150
    noise = NoiseGenerator(d, seed=2)
    s = np.full(d, 0.5)
    mu_n = np.full(d, shift * 0.5)  # delta = shift * sqrt(d)
    rates = []
    for g in range(1, gens + 1):
        old = Origin(g - 1, np.zeros(d), DiagonalParams(s))
        new = Origin(g, mu_n, DiagonalParams(s))
        kept, _, _ = mixed(old, new, noise, size)
        rates.append(len(kept) / size)
    expect = expected_reuse_equal_cov(shift * math.sqrt(d), 1 - ALPHA)
    se = np.std(rates, ddof=1) / math.sqrt(gens)
    assert abs(np.mean(rates) - expect) < K * se + 1e-12, (np.mean(rates), expect, se)


def test_reuse_rate_matches_the_expected_overlap_by_quadrature():
    mu_o, s_o, mu_n, s_n = CASES["1d"]
    size, gens = 200, 150
    noise = NoiseGenerator(1, seed=3)
    rates = []
    for g in range(1, gens + 1):
        old = Origin(g - 1, mu_o, DiagonalParams(s_o))
        new = Origin(g, mu_n, DiagonalParams(s_n))
        rates.append(len(mixed(old, new, noise, size)[0]) / size)
    p_o = stats.norm(mu_o[0], s_o[0]).pdf
    p_n = stats.norm(mu_n[0], s_n[0]).pdf
    expect, _ = integrate.quad(lambda w: min(p_o(w), (1 - ALPHA) * p_n(w)), -12, 12, limit=200)
    se = np.std(rates, ddof=1) / math.sqrt(gens)
    assert abs(np.mean(rates) - expect) < K * se, (np.mean(rates), expect, se)


def test_tell_with_kept_members_is_the_per_member_natural_gradient():
    # separable, zscore utilities (order-free), SGD(1): the mean moves by
    # sigma * sum_i u_i y_i and log sigma by sigma_lr / 2 * sum_i u_i (y_i^2 - 1), y_i the
    # members whitened in the current distribution, kept ones included
    d = 4
    s = Strategy(
        d,
        maximize=False,
        num_pairs=6,
        sigma_init=0.3,
        sigma_lr=0.5,
        shaping="zscore",
        optimizer=SGD(1.0),
        importance_mixing=ImportanceMixing(),
        noise=NoiseGenerator(d),
        sigma_bounds=SigmaBounds(max_change=100.0),
        seed=4,
    )

    def f(w):
        return np.sum((w - 0.2) ** 2, axis=-1)

    st = s.init(np.ones(d))
    for _ in range(3):
        ask = s.ask(st)
        prev = st
        fit = f(s.population(st, ask))
        st, metrics = s.tell(st, ask, fit)
    assert metrics["reused"] > 0 and ask.members is not None and not ask.members.all()
    kept = prev.pool.take(ask.kept)
    fresh = s.population(prev, ask)[ask.members]  # (asked, d), pair order, +z before -z
    w = np.concatenate([fresh, pool_points(kept, np.arange(len(kept)), s.noise)])
    scores = -np.concatenate([fit[ask.members], kept.fitness])
    u = (scores - scores.mean()) / (scores.std() * len(scores))
    y = (w - prev.mean) / prev.sigma
    np.testing.assert_allclose(st.mean - prev.mean, prev.sigma * (u @ y), rtol=1e-10)
    g_log_sigma = 0.5 * (u @ (y * y - 1))
    np.testing.assert_allclose(np.log(st.sigma / prev.sigma), 0.5 * g_log_sigma, rtol=1e-10)
    # the kept members' fitness is the one they got when they were evaluated
    np.testing.assert_array_equal(f(w[len(fresh) :]), kept.fitness)


def evaluations_to(target, fn, d, mixing, seed, budget=100_000):
    s = Strategy(
        d,
        maximize=False,
        seed=seed,
        importance_mixing=ImportanceMixing() if mixing else None,
        noise="generator",
    )
    st, used = s.init(np.ones(d)), 0
    while used < budget and st.best_fitness >= target:
        ask = s.ask(st)
        used += ask.evaluations
        st, _ = s.tell(st, ask, fn(s.population(st, ask)))
    return used


def test_mixing_needs_fewer_new_evaluations_on_the_sphere():
    # the target (>= 25% fewer new evaluations on sphere d = 10), on 5 seeds
    def sphere(w):
        return np.sum(w * w, axis=-1)

    plain = [evaluations_to(1e-8, sphere, 10, False, k) for k in range(5)]
    mixed_ = [evaluations_to(1e-8, sphere, 10, True, k) for k in range(5)]
    assert np.median(mixed_) <= 0.75 * np.median(plain), (plain, mixed_)
