"""Adaptation sampling (``esvo.core.adaptation``): the weighted Mann-Whitney test against scipy
and the textbook normal approximation, the importance weights against scipy's densities, the
rate update's arithmetic, and what the rates do on the sphere (d = 10) and why."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from esvo.core import NoiseGenerator, SearchState, Strategy, make_distribution, make_optimizer
from esvo.core.adaptation import (
    AdaptationSampling,
    adapt_rate,
    hypothetical,
    log_weights,
    midranks,
    significance_level,
    weighted_mann_whitney,
)
from esvo.core.noise import ArrayNoise
from esvo.objectives.functions import sphere

D = 10
RHO = 0.5 - 1 / (3 * (D + 1))  # 0.4697


# ------------------------------------------------------------------ the test statistic
@pytest.mark.parametrize("seed", range(5))
def test_integer_weights_give_the_mann_whitney_statistic_of_the_replicated_sample(seed):
    # U of the hypothetical sample (member i repeated w_i times) against the current one, as
    # scipy counts it: pairs where the first is larger, ties counting 1/2
    rng = np.random.default_rng(seed)
    n = 16
    fitness = rng.integers(0, 6, n).astype(float)  # many ties
    weights = rng.integers(0, 5, n)
    weights[0] = max(weights[0], 1)
    with np.errstate(divide="ignore"):
        mw = weighted_mann_whitney(fitness, np.log(weights))
    replicated = np.repeat(fitness, weights)
    u = stats.mannwhitneyu(replicated, fitness, alternative="greater").statistic
    assert mw.u == pytest.approx(u, rel=1e-12)
    assert mw.n_weighted == pytest.approx(weights.sum(), rel=1e-12)
    # the normal approximation as in the textbook (no tie correction): n1 = sum w, n2 = n
    n1, n2 = weights.sum(), n
    z = (u - n1 * n2 / 2) / math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    assert mw.z == pytest.approx(z, rel=1e-12, abs=1e-12)
    assert mw.p == pytest.approx(stats.norm.cdf(z), rel=1e-12)
    assert mw.ess == pytest.approx(weights.sum() ** 2 / np.sum(weights**2), rel=1e-12)


def test_weights_equal_to_one_compare_a_sample_with_itself():
    # U = n^2 / 2 exactly, z = 0, p = 1/2, whatever the fitness
    f = np.random.default_rng(3).standard_normal((8, 2))
    mw = weighted_mann_whitney(f, np.zeros((8, 2)))
    assert (mw.u, mw.z, mw.p) == (128.0, 0.0, 0.5)


def test_huge_weights_stay_finite_and_reach_the_one_point_limit():
    # one weight e^800 dominates: z -> (R - 1/2 - n/2) / sqrt(n / 12) with R its rank
    f = np.arange(12.0)
    lw = np.zeros(12)
    lw[9] = 800.0  # rank R = 10
    mw = weighted_mann_whitney(f, lw)
    assert math.isfinite(mw.z)
    assert mw.z == pytest.approx((10 - 0.5 - 6) / math.sqrt(12 / 12), rel=1e-12)
    assert mw.ess == pytest.approx(1.0)


def test_midranks_match_scipy_and_non_finite_fitness_is_the_worst():
    x = np.array([3.0, 1.0, 3.0, -2.0, 7.0, 1.0, 3.0])
    np.testing.assert_array_equal(midranks(x), stats.rankdata(x))
    lw = np.random.default_rng(0).standard_normal(4)
    a = weighted_mann_whitney(np.array([np.nan, 1.0, 2.0, -np.inf]), lw)
    b = weighted_mann_whitney(np.array([-1e300, 1.0, 2.0, -1e300]), lw)
    assert a.z == b.z


def test_significance_level_and_the_rate_update():
    assert significance_level(D) == pytest.approx(RHO)
    assert significance_level(1) == pytest.approx(1 / 3, rel=1e-15)
    # growth by (1 + c), not (1 - c) (the bug of evosax's old version), capped at max(1, init)
    assert adapt_rate(0.4, 0.3, True, 0.1) == pytest.approx(0.44)
    assert adapt_rate(0.95, 0.3, True, 0.1) == 1.0
    assert adapt_rate(1.5, 1.5, True, 0.1) == 1.5  # a rate configured above 1 is the cap
    # relaxation towards the initial rate: (1 - c) eta + c eta_init
    assert adapt_rate(1.0, 0.3, False, 0.1) == pytest.approx(0.93)
    assert adapt_rate(0.3, 0.3, False, 0.1) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="c must be"):
        AdaptationSampling(c=1.0)
    with pytest.raises(ValueError, match="target"):
        AdaptationSampling(target="cov")  # type: ignore[arg-type]


# ------------------------------------------------------------------ the hypothetical distribution
def _params(name, rng, d=6):
    dist = make_distribution(name, rank=2)
    if name == "separable":
        return dist, dist.init(d, rng.uniform(0.2, 2.0, d))
    params = dist.init(d, 0.7, seed=3)
    if name == "full":
        return dist, dataclasses.replace(params, B=params.B + 0.3 * rng.standard_normal((d, d)))
    return dist, params


def _cov(params, noise_dim):
    s = np.stack([params.step(e) for e in np.eye(noise_dim)], axis=1)
    return s @ s.T


@pytest.mark.parametrize("name", ["isotropic", "separable", "full", "lowrank"])
@pytest.mark.parametrize("which", ["sigma", "mean"])
def test_log_weights_are_density_ratios_of_the_candidates(name, which):
    rng = np.random.default_rng(7)
    d = 6
    dist, params = _params(name, rng, d)
    prev = dataclasses.replace(
        params, sigma=params.sigma * rng.uniform(0.6, 0.9, np.shape(params.sigma))
    )
    mean, prev_mean = rng.standard_normal(d), rng.standard_normal(d)
    hyp_mean, hyp = hypothetical(mean, params, prev_mean, prev, which)
    if which == "sigma":  # log sigma' - log sigma = (log sigma - log sigma_prev) / 2
        np.testing.assert_allclose(
            np.log(hyp.sigma / params.sigma), 0.5 * np.log(params.sigma / prev.sigma), rtol=1e-12
        )
        assert hyp_mean is mean
    else:
        np.testing.assert_allclose(hyp_mean - mean, 0.5 * (mean - prev_mean), rtol=1e-12)
        assert hyp is params
    nd = dist.noise_dim(d)
    z = rng.standard_normal((5, nd))
    got = log_weights(dist, ArrayNoise(z), np.arange(5), mean, params, hyp_mean, hyp)
    now = stats.multivariate_normal(mean, _cov(params, nd))
    then = stats.multivariate_normal(hyp_mean, _cov(hyp, nd))
    for col, sign in enumerate((1, -1)):
        w = mean + sign * params.step(z)
        np.testing.assert_allclose(got[:, col], then.logpdf(w) - now.logpdf(w), rtol=1e-9)


# ------------------------------------------------------------------ on the sphere, d = 10
def sphere_run(strategy, state, generations):
    rows = []
    for _ in range(generations):
        ask = strategy.ask(state)
        state, m = strategy.tell(state, ask, sphere(strategy.population(state, ask)))
        rows.append(m)
    return state, rows


def snes(distribution="separable", sigma_init=1e-4, seed=0, **kw):
    kw.setdefault("adaptation_sampling", AdaptationSampling())
    return Strategy(
        D,
        maximize=False,
        distribution=distribution,
        sigma_init=sigma_init,
        seed=seed,
        noise=NoiseGenerator(D),
        **kw,
    )


X0 = np.full(D, 1 / math.sqrt(D))  # distance 1 from the optimum


@pytest.mark.parametrize("distribution", ["separable", "isotropic"])
@pytest.mark.parametrize("seed", range(5))
def test_sigma_rate_grows_every_generation_while_sigma_is_far_too_small(distribution, seed):
    # sigma0 = 1e-4 at distance 1: the sphere is linear at the scale of the samples, so a
    # wider distribution has the same expected rank; with antithetic pairs the ranks of +z
    # and -z mirror (R+ + R- = 2n + 1) and sigma's weights are even in z, so U = mu_U and
    # p = 1/2 up to the curvature term sigma |z|^2 << |mean . z| (below 0.01 here, exactly
    # 1/2 for isotropic). p = 1/2 >= rho = 0.47: the rate grows by 1.1 every generation
    # from the first with a previous distribution (generation 1) until the cap 1.
    s = snes(distribution, seed=seed)
    _, rows = sphere_run(s, s.init(X0), 20)
    init = s.sigma_lr  # SNES's (3 + ln 10) / (5 sqrt 10) = 0.335
    expect = [min(1.0, init * 1.1**g) for g in range(20)]
    np.testing.assert_allclose([m["lr_sigma"] for m in rows], expect, rtol=1e-12)
    assert max(abs(m["as_p_sigma"] - 0.5) for m in rows[1:]) < 0.01
    assert "as_p_sigma" not in rows[0]  # no previous distribution yet


def test_the_grown_rate_makes_sigma_escape_faster():
    # the point of it: 40 generations from sigma0 = 1e-4, seeds 0-4, sigma ends larger with
    # the adapted rate on every seed (measured: median 17.0e-4 vs 2.4e-4 without)
    for seed in range(5):
        fixed, adapted = (
            snes(seed=seed, adaptation_sampling=a) for a in (None, AdaptationSampling())
        )
        sig = [sphere_run(s, s.init(X0), 40)[1][-1]["sigma_mean"] for s in (fixed, adapted)]
        assert sig[1] > 2 * sig[0], (seed, sig)


@pytest.mark.parametrize("distribution", ["separable", "isotropic"])
@pytest.mark.parametrize(("factor", "grows"), [(2.0, False), (0.5, True)])
def test_at_the_optimum_only_a_step_towards_smaller_sigma_is_worth_extending(
    distribution, factor, grows
):
    # mean at the optimum: f = sigma^2 |z|^2 ranks the samples by |z|^2 alone. A last step
    # that doubled sigma makes the hypothetical distribution wider (sqrt 2): its weights rise
    # with |z|^2, i.e. towards the worst samples, p << rho and the rate relaxes from the cap
    # to 0.9 + 0.1 init. A last step that halved sigma: narrower is better, p >> 1/2, grow.
    # 20 pairs (40 samples, 20 distinct |z|^2): |z| ~ 4 (measured 4.2 and 4.4); with the
    # default 5 pairs the same test reads p = 0.05 and 0.89: the right side, little power.
    s = snes(distribution, sigma_init=0.1, seed=3, num_pairs=20)
    st = s.init(np.zeros(D))
    st = dataclasses.replace(st, prev_mean=st.mean, prev_dist=st.dist, lr_sigma=1.0)
    st = dataclasses.replace(st, dist=dataclasses.replace(st.dist, sigma=st.dist.sigma * factor))
    ask = s.ask(st)
    _, m = s.tell(st, ask, sphere(s.population(st, ask)))
    if grows:
        assert m["as_p_sigma"] > 0.999 and m["lr_sigma"] == 1.0
    else:
        assert m["as_p_sigma"] < 0.001
        assert m["lr_sigma"] == pytest.approx(0.9 + 0.1 * s.sigma_lr, rel=1e-12)


def test_the_mean_rate_grows_while_its_steps_point_downhill():
    # target mean, SGD lr 0.2, fixed sigma 1. From distance 100 the sphere is linear at the
    # samples' scale and the last step points downhill: the hypothetical mean half a step
    # further on is better, so p > 1/2 on average (the step is short against sigma, so each
    # test has little power: measured p in 0.3-0.99). lr_mean starts at the optimizer's lr,
    # grows by exactly 1.1 while p >= rho and reaches the cap 1 after at least 17 growths
    # (ln 5 / ln 1.1 = 16.9); measured by generation 19-21 on seeds 0-2.
    for seed in range(3):
        s = snes(
            "isotropic",
            sigma_init=1.0,
            seed=seed,
            sigma_lr=0,
            optimizer=make_optimizer("sgd", lr=0.2),
            adaptation_sampling=AdaptationSampling(target="mean"),
        )
        _, rows = sphere_run(s, s.init(X0 * 100), 25)
        lr = [m["lr_mean"] for m in rows]
        assert lr[:3] == pytest.approx([0.2, 0.22, 0.242], rel=1e-12)
        assert max(lr) == 1.0 and "lr_sigma" not in rows[-1]
        assert np.mean([m["as_p_mean"] for m in rows[1:]]) > 0.6


def test_rates_are_state_round_trip_through_npz_and_resume_bitwise(tmp_path):
    s = snes(adaptation_sampling=AdaptationSampling(target="both"))
    assert s.keeps_prev and not snes(adaptation_sampling=None).keeps_prev
    st, _ = sphere_run(s, s.init(X0), 6)
    assert st.lr_sigma != s.sigma_lr and st.lr_mean is not None
    np.savez(tmp_path / "s.npz", **st.to_arrays())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        back = SearchState.from_arrays(z)
    assert (back.lr_sigma, back.lr_mean) == (st.lr_sigma, st.lr_mean)
    a, ra = sphere_run(s, st, 4)
    b, rb = sphere_run(s, back, 4)
    assert ra == rb
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.sigma, b.sigma)
    with pytest.raises(ValueError, match="sigma_lr > 0"):
        snes(sigma_lr=0)


def test_lr_mean_scales_the_optimizers_step_and_lr_sigma_is_sigmas_rate():
    # generation 0 has no previous distribution: no test, the state's rates are used as they
    # are. Adam's step (lr 0.2) scaled by lr_mean / lr = 2.5; sigma's log-step by 0.5 / init.
    kw = {
        "distribution": "separable",
        "sigma_init": 0.3,
        "optimizer": make_optimizer("adam", lr=0.2),
    }
    plain = snes(adaptation_sampling=None, **kw)
    adapted = snes(adaptation_sampling=AdaptationSampling(target="both"), **kw)
    st0 = plain.init(X0)
    st1 = dataclasses.replace(adapted.init(X0), lr_mean=0.5, lr_sigma=0.5)
    ask = plain.ask(st0)
    f = sphere(plain.population(st0, ask))
    a, _ = plain.tell(st0, ask, f)
    b, m = adapted.tell(st1, ask, f)
    np.testing.assert_allclose(b.mean - X0, 2.5 * (a.mean - X0), rtol=1e-12)
    log_step = np.log(a.sigma / 0.3) / plain.sigma_lr
    np.testing.assert_allclose(np.log(b.sigma / 0.3), 0.5 * log_step, rtol=1e-10)
    assert (m["lr_mean"], m["lr_sigma"]) == (0.5, 0.5) and (b.lr_mean, b.lr_sigma) == (0.5, 0.5)
