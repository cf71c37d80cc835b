import numpy as np

from esvo.core.running_stat import RunningStat


def test_merge_equals_statistics_of_the_concatenation():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(3, 2, size=(m, 4)) for m in (5, 17, 1))
    merged = RunningStat.of(a).merge(RunningStat.of(b)).merge(RunningStat.of(c))
    whole = np.concatenate([a, b, c])
    assert merged.count == len(whole)
    np.testing.assert_allclose(merged.mean, whole.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.var, whole.var(0), rtol=1e-12)


def test_merge_sums_matches_batch_and_ignores_empty():
    rng = np.random.default_rng(1)
    x = rng.normal(-1, 0.5, size=(50, 3))
    s = RunningStat.zeros(3).merge_sums(0, np.zeros(3), np.zeros(3))
    assert s.count == 0
    s = s.merge_sums(len(x), x.sum(0), (x * x).sum(0))
    np.testing.assert_allclose(s.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s.var, x.var(0), rtol=1e-10)


def test_std_is_floored_and_defaults_to_one():
    assert np.all(RunningStat.zeros(2).std() == 1.0)
    const = RunningStat.of(np.ones((10, 2)))
    assert np.all(const.std(floor=1e-2) == 1e-2)


def test_round_trip_arrays():
    s = RunningStat.of(np.arange(12.0).reshape(4, 3))
    back = RunningStat.from_arrays(s.to_arrays())
    assert back.count == s.count
    np.testing.assert_array_equal(back.mean, s.mean)
    np.testing.assert_array_equal(back.m2, s.m2)
