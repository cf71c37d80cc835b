import numpy as np
import pytest

from esvo.core import SearchState, Strategy
from esvo.core.optimizers import make_optimizer
from esvo.objectives.functions import sphere


def make(**kw):
    kw.setdefault("maximize", False)
    return Strategy(4, sigma_init=0.5, seed=1, **kw)


def run(strategy, gens, f=sphere):
    st = strategy.init(np.ones(4))
    for _ in range(gens):
        a = strategy.ask(st)
        st, m = strategy.tell(st, a, f(strategy.population(st, a)))
    return st, m


def test_population_is_antithetic():
    s = make()
    st = s.init(np.arange(4.0))
    pop = s.population(st, s.ask(st))
    np.testing.assert_allclose(pop[:, 0] - st.mean, -(pop[:, 1] - st.mean), atol=1e-15)


def test_maximize_flag_is_a_sign_flip():
    st_min, _ = run(make(maximize=False), 5)
    st_max, _ = run(make(maximize=True), 5, f=lambda w: -sphere(w))
    np.testing.assert_array_equal(st_min.mean, st_max.mean)
    np.testing.assert_array_equal(st_min.sigma, st_max.sigma)
    assert st_min.best_fitness == -st_max.best_fitness


def test_same_seed_same_trajectory_other_seed_other():
    a, _ = run(make(), 10)
    b, _ = run(make(), 10)
    np.testing.assert_array_equal(a.mean, b.mean)
    c, _ = run(Strategy(4, maximize=False, sigma_init=0.5, seed=2), 10)
    assert not np.array_equal(a.mean, c.mean)


def test_nonfinite_fitness_never_reaches_the_parameters():
    s = make()
    st = s.init(np.ones(4))
    a = s.ask(st)
    f = sphere(s.population(st, a))
    f[0, 0], f[1, 1] = np.nan, np.inf  # inf is the worst when minimizing
    nxt, m = s.tell(st, a, f)
    assert m["nonfinite"] == 2
    assert np.all(np.isfinite(nxt.mean)) and np.all(np.isfinite(nxt.sigma))
    assert np.isfinite(m["fitness_mean"])
    # all scores non-finite: no information, no move
    nxt, m = s.tell(st, a, np.full_like(f, np.nan))
    np.testing.assert_array_equal(nxt.mean, st.mean)
    np.testing.assert_array_equal(nxt.sigma, st.sigma)
    assert m["nonfinite"] == f.size


def test_best_is_tracked_in_the_users_sense():
    s = make()
    st = s.init(np.ones(4))
    a = s.ask(st)
    pop = s.population(st, a)
    f = sphere(pop)
    nxt, _ = s.tell(st, a, f)
    k, side = np.unravel_index(np.argmin(f), f.shape)
    assert nxt.best_fitness == f[k, side]
    np.testing.assert_allclose(nxt.best_theta, pop[k, side], atol=1e-15)
    np.testing.assert_allclose(sphere(nxt.best_theta), nxt.best_fitness)


def test_metrics_against_an_independent_computation():
    # separable, raw shaping, Adam: every metric recomputed here from the noise and the formulas
    lr, sigma_lr = 0.05, 0.4
    s = make(shaping="raw", optimizer=make_optimizer("adam", lr=lr), sigma_lr=sigma_lr)
    st = s.init(np.array([1.0, -2.0, 0.5, 3.0]))
    ask = s.ask(st)
    f = sphere(s.population(st, ask))  # minimized
    f[2, 1] = np.nan
    nxt, m = s.tell(st, ask, f)

    n = len(ask.ids)
    z = np.stack([s.noise.get(p) for p in ask.ids]).astype(np.float64)  # (n, d)
    h = -np.where(np.isfinite(f), f, np.nanmax(f))  # higher is better; NaN = worst value
    pair = h.sum(axis=1)
    baseline = (pair.sum() - pair) / (2 * n - 2)  # mean of the other pairs' scores
    u = (h - baseline[:, None]) / (2 * n)
    g = st.sigma * ((u[:, 0] - u[:, 1]) @ z)
    delta = lr * g / (np.abs(g) + 1e-8)  # Adam's first step: m_hat = g, v_hat = g^2
    g_log_sigma = 0.5 * ((u[:, 0] + u[:, 1]) @ (z**2 - 1))
    sigma = st.sigma * np.exp(np.clip(sigma_lr * g_log_sigma, -np.log(2), np.log(2)))

    np.testing.assert_allclose(nxt.mean, st.mean + delta, rtol=1e-12)
    np.testing.assert_allclose(nxt.sigma, sigma, rtol=1e-12)
    fin = f[np.isfinite(f)]
    expect = {
        "fitness_mean": fin.mean(),
        "fitness_max": fin.max(),
        "fitness_min": fin.min(),
        "sigma_mean": sigma.mean(),
        "sigma_min": sigma.min(),
        "sigma_max": sigma.max(),
        "grad_norm": np.linalg.norm(g),
        "update_ratio": np.linalg.norm(delta) / np.linalg.norm(st.mean),
        "nonfinite": 1,
    }
    assert set(expect) <= set(m)
    for key, value in expect.items():
        assert m[key] == pytest.approx(value, rel=1e-12), key


@pytest.mark.parametrize("opt", ["adam", "clipup", "momentum"])
def test_state_round_trips_through_npz_and_resumes_bitwise(tmp_path, opt):
    s = make(optimizer=make_optimizer(opt))
    st, _ = run(s, 3)
    np.savez(tmp_path / "s.npz", **st.to_arrays())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        back = SearchState.from_arrays(z)
    cont_a, cont_b = st, back
    for _ in range(3):
        for name in ("a", "b"):
            cur = cont_a if name == "a" else cont_b
            ask = s.ask(cur)
            nxt, _ = s.tell(cur, ask, sphere(s.population(cur, ask)))
            if name == "a":
                cont_a = nxt
            else:
                cont_b = nxt
    np.testing.assert_array_equal(cont_a.mean, cont_b.mean)
    np.testing.assert_array_equal(cont_a.sigma, cont_b.sigma)
    assert cont_a.generation == cont_b.generation == 6


def test_bad_arguments():
    with pytest.raises(ValueError, match="distribution"):
        Strategy(3, maximize=True, distribution="fulll")
    with pytest.raises(ValueError, match="num_pairs"):
        Strategy(3, maximize=True, num_pairs=0)
    s = Strategy(3, maximize=True)
    with pytest.raises(ValueError, match="theta0"):
        s.init(np.zeros(4))
    st = s.init(np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        s.tell(st, s.ask(st), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="sigma_init"):
        Strategy(3, maximize=True, sigma_init=0.0).init(np.zeros(3))


def test_runaway_update_leaves_state_unchanged():
    s = make(optimizer=make_optimizer("sgd", lr=1e308), shaping="raw")
    st = s.init(np.ones(4) * 1e10)
    with pytest.raises(FloatingPointError, match="unchanged"):
        s.tell(st, s.ask(st), sphere(s.population(st, s.ask(st))))


def test_top_k_updates_from_the_best_pairs_only():
    s = make(num_pairs=6, top_k=2, shaping="raw")
    f = np.array([[1.0, 2.0], [9.0, 0.0], [3.0, 3.5], [0.5, 8.0], [np.nan, 4.0], [2.0, 1.0]])
    u = s.utilities(-f)  # minimizing: the best pairs have the lowest min(f+, f-)
    kept = np.flatnonzero(np.any(u != 0, axis=1))
    np.testing.assert_array_equal(kept, [1, 3])  # min 0.0 and 0.5
    np.testing.assert_allclose(u[kept], s.shaping(-f[kept].reshape(-1)).reshape(-1, 2))
    # and the update equals one over those pairs alone
    st = s.init(np.ones(4))
    a = s.ask(st)
    nxt, _ = s.tell(st, a, f)
    only = make(num_pairs=2, shaping="raw")
    sub = type(a)(a.generation, a.ids[kept])
    nxt_only, _ = only.tell(only.init(np.ones(4)), sub, f[kept])
    np.testing.assert_allclose(nxt.mean, nxt_only.mean, atol=1e-15)
    with pytest.raises(ValueError, match="top_k"):
        make(num_pairs=3, top_k=4)
