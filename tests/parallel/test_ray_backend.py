"""RayEvaluator on a real local Ray (2 CPUs): same trajectories as SerialEvaluator, bit for bit,
with 1 or 2 workers, after a worker is killed mid-generation, and when joining a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esvo.core import NoiseGenerator, NoiseTable, Strategy, make_distribution, make_optimizer
from esvo.core.adaptation import AdaptationSampling
from esvo.core.mixing import ImportanceMixing
from esvo.core.running_stat import RunningStat
from esvo.objectives.base import make_objective
from esvo.parallel import SerialEvaluator
from esvo.parallel.ray_backend import EvaluatorError, RayEvaluator
from esvo.protocol import GenerationSpec
from tests.parallel.slow_objective import kill_when_blocked
from tests.ray_cluster import local_cluster

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]
SEED = 7
SPHERE = {"kind": "function", "name": "sphere", "dim": 20}
CARTPOLE = {"kind": "gym", "env_id": "CartPole-v1", "policy": {"kind": "linear"}}
SLOW = "tests.parallel.slow_objective:make"


def make_strategy(
    objective_spec: dict,
    noise_kind: str = "generator",
    num_pairs: int = 12,
    distribution: str = "separable",
    adaptation: AdaptationSampling | None = None,
    mixing: bool = False,
):
    objective = make_objective(**objective_spec)
    dim = objective.num_params
    dist = make_distribution(distribution)
    nd = dist.noise_dim(dim)
    noise = NoiseTable(nd, seed=3, size=1 << 16) if noise_kind == "table" else NoiseGenerator(nd)
    strategy = Strategy(
        dim,
        maximize=objective.maximize,
        distribution=dist,
        num_pairs=num_pairs,
        noise=noise,
        seed=SEED,
        adaptation_sampling=adaptation,
        importance_mixing=ImportanceMixing() if mixing else None,
        # with adaptation of the mean, its step is Adam's scaled by lr_mean / lr
        optimizer=None if adaptation is None else make_optimizer("adam", lr=0.05),
    )
    return strategy, objective


def trajectory(
    evaluator,
    objective_spec: dict,
    generations: int = 4,
    noise_kind="generator",
    distribution="separable",
    adaptation=None,
    mixing=False,
):
    """The trainer's loop in miniature (ask, evaluate, tell, merge obs stats): per generation
    the arrays that must match bitwise, and the evaluator's stats."""
    strategy, objective = make_strategy(
        objective_spec, noise_kind, distribution=distribution, adaptation=adaptation, mixing=mixing
    )
    state = strategy.init(objective.initial_params(SEED))
    obs = RunningStat.zeros(objective.obs_dim) if objective.obs_dim else None
    arrays, stats = [], []
    for _ in range(generations):
        ask = strategy.ask(state)
        spec = GenerationSpec(
            state.generation,
            state.mean,
            state.sigma,
            seed=SEED,
            obs_mean=None if obs is None else obs.mean,
            obs_std=None if obs is None else obs.std(),
            search=state.dist,
        )
        if ask.members is None:
            results = evaluator.evaluate(spec, ask.ids)
        else:
            results = evaluator.evaluate(spec, ask.ids, members=ask.members)
        state, _ = strategy.tell(state, ask, results.fitness)
        row = [state.mean, state.sigma, *state.dist.to_arrays().values()]
        row += [results.fitness, results.steps]
        if adaptation is not None:  # the adapted rates
            row += [np.array([state.lr_sigma or -1.0, state.lr_mean or -1.0])]
        if obs is not None:
            s = results.obs_stats
            obs = obs.merge_sums(s.count.sum(), s.sum.sum(axis=0), s.sumsq.sum(axis=0))
            row += [obs.mean, obs.m2]
        if mixing:  # which members were asked for and kept
            row += [ask.ids, ask.members if ask.members is not None else np.ones(1), ask.kept]
        arrays.append(row)
        stats.append(dict(getattr(evaluator, "last_stats", {})))
    return arrays, stats


def assert_bitwise(a, b):
    assert len(a) == len(b)
    for g, (row_a, row_b) in enumerate(zip(a, b, strict=True)):
        for x, y in zip(row_a, row_b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            nan = x.dtype.kind == "f"  # NaN: a member importance mixing did not ask for
            assert np.array_equal(x, y, equal_nan=nan), f"generation {g} differs"


def serial_trajectory(
    objective_spec,
    noise_kind="generator",
    generations=4,
    distribution="separable",
    adaptation=None,
    mixing=False,
):
    strategy, _ = make_strategy(objective_spec, noise_kind, distribution=distribution)
    return trajectory(
        SerialEvaluator(objective_spec, strategy.noise.spec()),
        objective_spec,
        generations,
        noise_kind,
        distribution,
        adaptation,
        mixing,
    )[0]


@pytest.mark.parametrize("noise_kind", ["generator", "table"])
def test_function_serial_equals_ray_1_and_2_workers(ray_session, noise_kind):
    expected = serial_trajectory(SPHERE, noise_kind)
    strategy, _ = make_strategy(SPHERE, noise_kind)
    for num_workers, chunks in [(1, 4), (2, 3)]:
        with RayEvaluator(
            SPHERE, strategy.noise.spec(), num_workers=num_workers, chunks_per_worker=chunks
        ) as ev:
            assert ev.num_workers == len(ev.worker_pids()) == num_workers
            got, stats = trajectory(ev, SPHERE, noise_kind=noise_kind)
            spec = GenerationSpec(0, got[-1][0], got[-1][1], seed=SEED)
            mean_serial = SerialEvaluator(SPHERE, strategy.noise.spec()).evaluate_mean(spec, 1)
            mean_ray = ev.evaluate_mean(spec, 1)
            assert np.array_equal(mean_ray[0], mean_serial[0]) and mean_ray[1] == mean_serial[1]
        assert_bitwise(expected, got)
        last = stats[-1]
        assert last["num_tasks"] == min(12, num_workers * chunks)
        assert last["retries"] == 0
        # one spec out (d floats), small ids out, scalars back: bounded independently of d
        assert 0 < last["bytes_in"] < 12 * 2 * 2 * 8 + 2000 * last["num_tasks"]


def test_cartpole_with_obs_stats_serial_equals_ray(ray_session):
    pytest.importorskip("gymnasium")
    expected = serial_trajectory(CARTPOLE, generations=3)
    assert expected[-1][-2].any(), "observation statistics were not collected"
    strategy, _ = make_strategy(CARTPOLE)
    for num_workers in (1, 2):
        with RayEvaluator(CARTPOLE, strategy.noise.spec(), num_workers=num_workers) as ev:
            got, stats = trajectory(ev, CARTPOLE, generations=3)
        assert_bitwise(expected, got)
        assert stats[-1]["env_steps"] == int(got[-1][3].sum()) > 0


@pytest.mark.parametrize(
    ("distribution", "noise_kind"), [("full", "generator"), ("lowrank", "table")]
)
def test_correlated_distributions_serial_equal_ray_1_and_2_workers(
    ray_session, distribution, noise_kind
):
    # B (d x d) or U (d x k) travels in the spec; workers build candidates with the same
    # fixed-order numpy as the driver, whatever their thread count or memory alignment
    expected = serial_trajectory(SPHERE, noise_kind, distribution=distribution)
    assert not np.array_equal(expected[0][2], expected[-1][2])  # the shape did change
    strategy, _ = make_strategy(SPHERE, noise_kind, distribution=distribution)
    for num_workers, chunks in [(1, 4), (2, 3)]:
        with RayEvaluator(
            SPHERE, strategy.noise.spec(), num_workers=num_workers, chunks_per_worker=chunks
        ) as ev:
            got, _ = trajectory(ev, SPHERE, noise_kind=noise_kind, distribution=distribution)
        assert_bitwise(expected, got)


# adaptation sampling: rates decided on the driver from ids and fitness, so the same bits
ADAPT = {"sigma": AdaptationSampling(target="sigma"), "both": AdaptationSampling(target="both")}


@pytest.mark.parametrize(
    ("distribution", "target"), [("separable", "both"), ("isotropic", "sigma"), ("full", "both")]
)
def test_adaptation_sampling_serial_equals_ray_1_and_2_workers(ray_session, distribution, target):
    adaptation = ADAPT[target]
    expected = serial_trajectory(SPHERE, "table", 6, distribution, adaptation)
    rates = [row[-1] for row in expected]
    assert len({tuple(r) for r in rates}) > 2, rates  # the rates did move
    strategy, _ = make_strategy(SPHERE, "table", distribution=distribution)
    for num_workers, chunks in [(1, 4), (2, 3)]:
        with RayEvaluator(
            SPHERE, strategy.noise.spec(), num_workers=num_workers, chunks_per_worker=chunks
        ) as ev:
            got, _ = trajectory(ev, SPHERE, 6, "table", distribution, adaptation)
        assert_bitwise(expected, got)


@pytest.mark.parametrize("objective", [SPHERE, CARTPOLE], ids=["sphere", "cartpole"])
def test_importance_mixing_serial_equals_ray_1_and_2_workers(ray_session, objective):
    # only the members asked for travel back scored; which ones, and which old members are
    # kept, is decided on the driver from ids: the same with any number of workers
    if objective is CARTPOLE:
        pytest.importorskip("gymnasium")
    expected = serial_trajectory(objective, generations=4, mixing=True)
    kept = [len(row[-1]) for row in expected]
    assert kept[0] == 0 and min(kept[1:]) > 0, kept  # old members were reused
    asked = expected[-1][-2]
    assert not asked.all(), "every fresh member was evaluated: no single members asked for"
    strategy, _ = make_strategy(objective, mixing=True)
    for num_workers, chunks in [(1, 4), (2, 3)]:
        with RayEvaluator(
            objective, strategy.noise.spec(), num_workers=num_workers, chunks_per_worker=chunks
        ) as ev:
            got, _ = trajectory(ev, objective, mixing=True)
        assert_bitwise(expected, got)


@pytest.mark.parametrize(
    ("distribution", "target"),
    [
        ("separable", None),
        ("full", None),
        ("lowrank", None),
        ("separable", "both"),
        ("separable", "mixing"),
    ],
)
def test_worker_killed_mid_generation_same_trajectory(ray_session, tmp_path, distribution, target):
    spec = {
        "kind": "python",
        "target": SLOW,
        "dim": 20,
        "delay_s": 0.02,
        "block_dir": str(tmp_path),
        "block_generation": 1,
        "block_pair": 4,  # the middle of chunk [3, 4, 5]
    }
    mixing = target == "mixing"  # importance mixing: single members asked for, old ones kept
    adaptation = None if target in (None, "mixing") else ADAPT[target]
    expected = serial_trajectory(
        SPHERE, generations=3, distribution=distribution, adaptation=adaptation, mixing=mixing
    )
    strategy, _ = make_strategy(SPHERE, distribution=distribution)
    with RayEvaluator(spec, strategy.noise.spec(), num_workers=2, chunks_per_worker=2) as ev:
        # the worker scoring pair 4 of generation 1 waits to be killed
        killer, killed = kill_when_blocked(tmp_path)
        got, stats = trajectory(
            ev, spec, 3, distribution=distribution, adaptation=adaptation, mixing=mixing
        )
        killer.join(timeout=5)
        pids = ev.worker_pids()
    assert killed, "the blocking pair was never reached"
    assert killed[0] not in pids and len(pids) == 2
    assert stats[1]["workers_lost"] == 1 and stats[1]["retries"] >= 1
    assert stats[0]["workers_lost"] == stats[2]["workers_lost"] == 0
    assert_bitwise(expected, got)


def test_consecutive_failures_raise_instead_of_hanging(ray_session):
    spec = {"kind": "python", "target": SLOW, "dim": 4, "exit_pair": 1}
    noise = {"kind": "generator", "dim": 4, "seed": 0}
    gen = GenerationSpec(0, np.zeros(4), np.full(4, 0.1), seed=0)
    with RayEvaluator(spec, noise, num_workers=2, chunks_per_worker=1) as ev:
        with pytest.raises(EvaluatorError, match="3 consecutive worker failures"):
            ev.evaluate(gen, np.arange(4, dtype=np.uint64))
        assert len(ev.worker_pids()) == 2  # the pool was refilled


def test_bad_objective_fails_at_start(ray_session):
    bad = {"kind": "function", "name": "no_such_function", "dim": 3}
    with pytest.raises(EvaluatorError, match="no_such_function"):
        RayEvaluator(bad, {"kind": "generator", "dim": 3}, num_workers=1)


# ---------------------------------------------------------------------- joining a cluster
@pytest.fixture
def head():
    """A throwaway ``ray start --head`` with its own temp dir and auth token (tests/ray_cluster)."""
    with local_cluster(num_cpus=2, dashboard=False) as cluster:
        yield cluster.gcs_address, cluster.env


def test_join_running_cluster_auto_and_explicit(head):
    # A fresh process: this one may hold the session's embedded Ray (one ray.init per process).
    address, env = head
    out = subprocess.run(
        [sys.executable, "-m", "tests.parallel.join_cluster", "auto", address],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"OK auto 1\nOK {address} 1\n" in out.stdout
