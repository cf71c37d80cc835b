"""IPOP restarts: each criterion fires, the restart is a pure function of the seed, the
population grows, the best solution survives, and restarts escape local optima."""

import numpy as np
import pytest

from esvo.core import Restarts, SearchState, Strategy
from esvo.core.optimizers import make_optimizer
from esvo.objectives.functions import rastrigin, sphere


def run(es, state, generations, f=sphere):
    rows = []
    for _ in range(generations):
        ask = es.ask(state)
        state, m = es.tell(state, ask, f(es.population(state, ask)))
        rows.append((ask.num_pairs, m))
    return state, rows


def test_a_sigma_restart_draws_a_fresh_mean_in_the_box_and_grows_the_population():
    r = Restarts(max=2, popsize_factor=3.0, low=-2.0, high=-1.0, sigma_tol=1e-3)
    es = Strategy(4, maximize=False, num_pairs=2, sigma_init=0.5, seed=5, restarts=r,
                  optimizer=make_optimizer("adam", lr=0.1))  # fmt: skip
    st = es.init(np.full(4, 2.0))
    st, rows = run(es, st, 400)
    restarts = [(g, m["restart_reason"]) for g, (_, m) in enumerate(rows) if m["restart"]]
    assert restarts[0][1] == "sigma" and len(restarts) == 2  # then max is reached
    assert restarts[1][1] in ("sigma", "stall")
    g1, g2 = restarts[0][0], restarts[1][0]
    assert [rows[g][0] for g in (g1, g1 + 1, g2 + 1)] == [2, 6, 18]  # pairs: 2, then x3, x3
    assert rows[-1][1]["restarts"] == 2
    # the mean the restart drew: uniform in the box, the same for the same seed
    again = Strategy(4, maximize=False, num_pairs=2, sigma_init=0.5, seed=5, restarts=r,
                     optimizer=make_optimizer("adam", lr=0.1))  # fmt: skip
    st2, _ = run(again, again.init(np.full(4, 2.0)), g1 + 1)
    assert np.all((st2.mean >= -2.0) & (st2.mean <= -1.0))
    np.testing.assert_array_equal(st2.sigma, 0.5)  # sigma_init again
    assert st2.opt.step == 0  # a fresh optimizer
    assert st2.best_fitness < 1e-4 and np.allclose(st2.best_theta, 0, atol=1e-2)  # kept


def test_a_stall_restart_after_the_window_and_none_without_restarts():
    flat = np.zeros  # nothing ever improves
    r = Restarts(max=1, stall_generations=7)
    es = Strategy(3, maximize=False, num_pairs=2, seed=1, restarts=r)
    _, rows = run(es, es.init(np.zeros(3)), 12, f=lambda w: flat(w.shape[:-1]))
    fired = [g for g, (_, m) in enumerate(rows) if m["restart"]]
    assert fired == [7] and rows[7][1]["restart_reason"] == "stall"
    plain = Strategy(3, maximize=False, num_pairs=2, seed=1)
    _, rows = run(plain, plain.init(np.zeros(3)), 12, f=lambda w: flat(w.shape[:-1]))
    assert all("restart" not in m for _, m in rows)


@pytest.mark.parametrize("dim, pairs", [(3, 2), (10, 5), (10, 80)])
def test_the_default_stall_window_is_pycmas_tolstagnation(dim, pairs):
    """Without stall_generations a restart fires after pycma's tolstagnation window, read
    from pycma's own option string (its tolfun window, 10 + 30 d / lambda, restarted xNES on
    Rastrigin long before it had converged)."""
    cma = pytest.importorskip("cma")
    rule = cma.CMAOptions()["tolstagnation"].split("#")[0]
    want = eval(rule, {"N": dim, "popsize": 2 * pairs})
    es = Strategy(dim, maximize=False, num_pairs=pairs, seed=1, restarts=Restarts(max=1))
    _, rows = run(es, es.init(np.zeros(dim)), want + 3, f=lambda w: np.zeros(w.shape[:-1]))
    fired = [g for g, (_, m) in enumerate(rows) if m["restart"]]
    assert fired == [want] and rows[want][1]["restart_reason"] == "stall"


def test_a_condition_restart():
    r = Restarts(max=1, max_condition=10.0)
    es = Strategy(3, maximize=False, distribution="separable", num_pairs=4, seed=2, restarts=r,
                  sigma_init=np.array([1.0, 1.0, 0.01]))  # fmt: skip
    _, rows = run(es, es.init(np.ones(3)), 1)
    assert rows[0][1]["restart_reason"] == "condition"


def test_restart_state_round_trips():
    r = Restarts(max=3, sigma_tol=1e9, popsize_factor=2.0)  # a restart every generation
    es = Strategy(3, maximize=False, distribution="full", num_pairs=2, seed=3, restarts=r)
    st, _ = run(es, es.init(np.ones(3)), 2)
    back = SearchState.from_arrays({k: np.asarray(v) for k, v in st.to_arrays().items()})
    assert (back.num_pairs, back.restart) == (st.num_pairs, st.restart) == (8, st.restart)
    a, _ = run(es, st, 3)
    b, _ = run(es, back, 3)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.dist.B, b.dist.B)


@pytest.mark.parametrize("bad", [{"max": -1}, {"popsize_factor": 0.5}, {"low": 1, "high": 1}])
def test_bad_restart_options(bad):
    with pytest.raises(ValueError, match="restarts"):
        Restarts(**bad)


def test_restarts_escape_rastrigins_local_minima():
    # d = 2 from the corner of the box, sigma 1: without restarts the search settles in a
    # local minimum on 4 of 5 seeds; IPOP (up to 6 restarts) finds the global one on all 5
    def solved(restarts, seed):
        es = Strategy(2, maximize=False, distribution="full", sigma_init=1.0, seed=seed,
                      restarts=restarts)  # fmt: skip
        st = es.init(np.full(2, 4.5))
        for _ in range(3000):
            ask = es.ask(st)
            st, _ = es.tell(st, ask, rastrigin(es.population(st, ask)))
            if st.best_fitness < 1e-8:
                return True
        return False

    ipop = Restarts(max=6, low=-5.0, high=5.0)
    assert sum(solved(ipop, seed) for seed in range(5)) == 5
    assert sum(solved(None, seed) for seed in range(5)) == 1


@pytest.mark.slow
def test_full_with_ipop_solves_rastrigin_10_on_four_of_five_seeds():
    """Issue 10's target, the setup of scripts/bench_convergence.py --suite compare: x0 uniform
    in [-5, 5]^10 from the seed, sigma0 2.5, 9 IPOP restarts x2, 2M evaluations; the best
    sample below 1e-8 on at least 4 of 5 seeds (measured: 4 of 5, BENCHMARKS.md)."""
    reached = 0
    for seed in range(5):
        es = Strategy(10, maximize=False, distribution="full", sigma_init=2.5, seed=seed,
                      restarts=Restarts(max=9, popsize_factor=2.0, low=-5.0, high=5.0))  # fmt: skip
        st = es.init(np.random.default_rng(seed).uniform(-5, 5, 10))
        evals = 0
        while not st.best_fitness < 1e-8 and evals < 2_000_000:
            ask = es.ask(st)
            fitness = rastrigin(es.population(st, ask))
            evals += fitness.size
            st, _ = es.tell(st, ask, fitness)
        reached += st.best_fitness < 1e-8
    assert reached >= 4
