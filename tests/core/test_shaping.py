import numpy as np
import pytest

from esvo.core.shaping import SHAPINGS, centered_ranks, nes_utilities, raw, zscore

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("name", ["centered_ranks", "nes"])
def test_rank_shapings_are_invariant_to_monotone_transforms(name):
    f = RNG.standard_normal(40)
    shape = SHAPINGS[name]
    base = shape(f)
    for g in (np.exp(f), 3 * f + 7, f**3, np.arctan(f)):
        np.testing.assert_array_equal(shape(g), base)


def test_zscore_and_raw_are_invariant_to_affine_transforms():
    f = RNG.standard_normal(30)
    np.testing.assert_allclose(raw(4 * f), 4 * raw(f), atol=1e-15)
    np.testing.assert_allclose(zscore(4 * f + 1), zscore(f), atol=1e-15)
    np.testing.assert_allclose(raw(f + 100), raw(f), atol=1e-12)


def test_centered_ranks_values():
    u = centered_ranks(np.array([3.0, 1.0, 2.0, 10.0]))
    # ranks 2, 0, 1, 3 -> [1/6, -1/2, -1/6, 1/2], then scaled to sum |u| = 1
    np.testing.assert_allclose(u, np.array([1 / 6, -1 / 2, -1 / 6, 1 / 2]) / (4 / 3))
    assert abs(u.sum()) < 1e-15


def test_nes_utilities_match_the_published_formula():
    n = 6
    u = nes_utilities(np.arange(n, dtype=float))  # best is the last one
    k = np.arange(1, n + 1)
    raw_u = np.maximum(0, np.log(n / 2 + 1) - np.log(k))
    expect = (raw_u / raw_u.sum() - 1 / n)[::-1]
    np.testing.assert_allclose(u, expect)
    assert abs(u.sum()) < 1e-12


@pytest.mark.parametrize("name", ["centered_ranks", "nes", "zscore"])
def test_ties_share_utilities_and_order_does_not_matter(name):
    f = np.array([1.0, 5.0, 5.0, 2.0])
    shape = SHAPINGS[name]
    u = shape(f)
    assert u[1] == u[2]
    perm = np.array([3, 1, 0, 2])
    np.testing.assert_allclose(shape(f[perm]), u[perm], atol=1e-15)


def test_raw_depends_on_pairs_not_on_their_order():
    f = RNG.standard_normal(8)
    pairs = np.array([2, 0, 3, 1])
    perm = (2 * pairs[:, None] + np.arange(2)).reshape(-1)  # whole pairs moved
    np.testing.assert_allclose(raw(f[perm]), raw(f)[perm], atol=1e-15)


def test_nes_ties_average_the_tied_ranks_utilities():
    # lambda = 4, by rank: w_k = max(0, ln 3 - ln k) / sum - 1/4
    w = np.maximum(0, np.log(3) - np.log([1, 2, 3, 4]))
    w = w / w.sum() - 0.25
    u = nes_utilities(np.array([4.0, 2.0, 2.0, 1.0]))
    np.testing.assert_allclose(u, [w[0], (w[1] + w[2]) / 2, (w[1] + w[2]) / 2, w[3]])
    assert u[0] == pytest.approx(0.4804, abs=1e-4)  # the tie leaves the best's utility alone
    np.testing.assert_allclose(u[[0, 3]], nes_utilities(np.array([4.0, 3.0, 2.0, 1.0]))[[0, 3]])
    # all tied: nobody is better
    np.testing.assert_array_equal(nes_utilities(np.array([1.0, 1.0, 1.0])), 0.0)
    # three-way tie at the top, lambda = 6
    v = np.maximum(0, np.log(4) - np.log(np.arange(1, 7)))
    v = v / v.sum() - 1 / 6
    u = nes_utilities(np.array([7.0, 7.0, 7.0, 1.0, 0.0, -1.0]))
    np.testing.assert_allclose(u, [v[:3].mean()] * 3 + list(v[3:]))


@pytest.mark.parametrize("name", sorted(SHAPINGS))
def test_nonfinite_scores_are_the_worst(name):
    f = np.array([1.0, np.nan, 3.0, -np.inf, np.inf, 2.0])
    u = SHAPINGS[name](f)
    assert np.all(np.isfinite(u))
    if name in ("raw", "zscore"):  # value-based: they score as the worst finite value
        np.testing.assert_allclose(u, SHAPINGS[name](np.array([1.0, 1, 3, 1, 1, 2])))
        return
    worst_finite = u[0]
    assert np.all(u[[1, 3, 4]] <= worst_finite)
    assert u[2] > u[5] > u[0]


@pytest.mark.parametrize("n", [2, 3, 4])
def test_raw_log_sigma_estimate_is_unbiased_at_small_n(n):
    # Maximize f = -|w|^2 at mean 1, sigma s (separable, d = 2): the natural gradient of U in
    # log sigma_i is -s^2. Average the estimate 1/2 sum_k b_k (z_ki^2 - 1) over R independent
    # generations of n pairs; the old mean-over-all baseline gave (1 - 1/n) of it.
    d, s, reps = 2, 0.5, 40_000
    rng = np.random.default_rng(n)
    z = rng.standard_normal((reps, n, d))
    mean = np.ones(d)
    f = np.stack(
        [-np.sum((mean + s * z) ** 2, -1), -np.sum((mean - s * z) ** 2, -1)], axis=-1
    )  # (reps, n, 2)
    u = np.stack([raw(fr.reshape(-1)).reshape(n, 2) for fr in f])
    b = u.sum(axis=-1)  # (reps, n)
    g = 0.5 * np.einsum("rk,rkd->rd", b, z**2 - 1)  # (reps, d)
    est, se = g.mean(axis=0), g.std(axis=0, ddof=1) / np.sqrt(reps)
    assert np.all(np.abs(est + s**2) < 4 * se), (est, -(s**2), se)
    # the biased estimator this replaces is out of reach of the same tolerance
    biased = (1 - 1 / n) * -(s**2)
    assert np.all(np.abs(est - biased) > 4 * se), (est, biased, se)


@pytest.mark.parametrize("name", sorted(SHAPINGS))
def test_all_equal_or_all_nonfinite_gives_zero_utilities(name):
    np.testing.assert_array_equal(SHAPINGS[name](np.full(4, 2.0)), 0.0)
    np.testing.assert_array_equal(SHAPINGS[name](np.full(4, np.nan)), 0.0)
