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


def test_ties_share_utilities_and_order_does_not_matter():
    f = np.array([1.0, 5.0, 5.0, 2.0])
    for shape in SHAPINGS.values():
        u = shape(f)
        assert u[1] == u[2]
        perm = np.array([3, 1, 0, 2])
        np.testing.assert_allclose(shape(f[perm]), u[perm], atol=1e-15)


@pytest.mark.parametrize("name", sorted(SHAPINGS))
def test_nonfinite_scores_are_the_worst(name):
    f = np.array([1.0, np.nan, 3.0, -np.inf, np.inf, 2.0])
    u = SHAPINGS[name](f)
    assert np.all(np.isfinite(u))
    worst_finite = u[0]
    assert np.all(u[[1, 3, 4]] <= worst_finite)
    assert u[2] > u[5] > u[0]


@pytest.mark.parametrize("name", sorted(SHAPINGS))
def test_all_equal_or_all_nonfinite_gives_zero_utilities(name):
    np.testing.assert_array_equal(SHAPINGS[name](np.full(4, 2.0)), 0.0)
    np.testing.assert_array_equal(SHAPINGS[name](np.full(4, np.nan)), 0.0)
