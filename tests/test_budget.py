"""Step-budgeted populations and the adaptive episode cutoff (issue 12, parts 3 and 4).

The trainer runs real CartPole-v1 episodes through a ``SerialEvaluator`` wrapped to record what
it was asked and what came back; the tests re-derive the documented rules (``esvo.budget``'s
docstring) from those returned counts, independently of the shipped code, and compare.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from esvo.budget import EpisodeCutoff, StepBudget
from esvo.checkpoint import latest_checkpoint
from esvo.config import config_from_dict
from esvo.core.noise import perturbation_ids
from esvo.loggers import read_jsonl
from esvo.objectives.base import make_objective
from esvo.objectives.gym.policies import ActionHead, Policy, PolicySpec
from esvo.objectives.gym.rollout import EnvPool, EnvSpec, Episode, run_lockstep, train_seed
from esvo.parallel import SerialEvaluator
from esvo.protocol import GenerationSpec
from esvo.trainer import TrainState, resume, train
from tests.test_resume import assert_same_run, interrupt_at

pytest.importorskip("gymnasium")

SEED = 3


# ---------------------------------------------------------------- the rules, re-derived here
def reference_waves(pair_steps, env_steps, min_pairs, max_pairs):
    """The documented rule written out again: first ``min_pairs``; then, after n pairs and S
    steps, ceil((B - S) n / S) pairs, at least ceil(min_pairs / 4), at most max_pairs - n."""
    sizes, n, s = [], 0, 0
    while s < env_steps and n < max_pairs:
        if n == 0:
            size = min(min_pairs, max_pairs)
        elif s == 0:
            size = max_pairs - n
        else:
            size = min(max_pairs - n, max(math.ceil((env_steps - s) * n / s), -(-min_pairs // 4)))
        sizes.append(size)
        s += sum(pair_steps[n : n + size])
        n += size
    return sizes


def reference_caps(initial, growth, threshold, limit, hits, episodes):
    """The cap of every generation: it grows (to max(cap + 1, int(growth cap)), at most
    ``limit``) after a generation where hits >= threshold * episodes."""
    caps = [initial]
    for h, e in zip(hits, episodes, strict=True):
        cap = caps[-1]
        if h >= threshold * e:
            cap = min(max(cap + 1, int(growth * cap)), limit)
        caps.append(cap)
    return caps


class Recorder(SerialEvaluator):
    """A real serial evaluator that keeps every call: (spec, start, ids, results)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list = []

    def evaluate(self, spec, ids, start=0):
        results = super().evaluate(spec, ids, start)
        self.calls.append((spec, start, np.asarray(ids), results))
        return results

    def by_generation(self):
        out: dict[int, list] = {}
        for call in self.calls:
            out.setdefault(call[0].generation, []).append(call)
        return out


def cartpole_cfg(strategy=None, objective=None, **run):
    return config_from_dict(
        {
            "run": {"name": "b", "seed": SEED, "generations": 6, **run},
            "objective": {
                "kind": "gym",
                "env_id": "CartPole-v1",
                "max_episode_steps": 200,
                "lockstep": 4,
                **(objective or {}),
            },
            "strategy": {
                "num_pairs": 4,
                "sigma_init": 0.5,
                "noise": "generator",
                **(strategy or {}),
            },
            "parallel": {"backend": "serial"},
            "evaluation": {"every": 3, "episodes": 3},
            "checkpoint": {"every": 3, "keep": 1},
            "logging": {"progress": "none"},
        }
    )


def recorder_for(cfg):
    objective = make_objective(**cfg.objective.to_spec())
    return Recorder(cfg.objective.to_spec(), {"kind": "generator", "dim": objective.num_params})


# ---------------------------------------------------------------- step budget
BUDGET = {"env_steps": 700, "min_pairs": 4, "max_pairs": 24}


def test_budgeted_pairs_are_the_documented_rule_of_the_returned_steps(tmp_path):
    cfg = cartpole_cfg(strategy={"population": BUDGET})
    ev = recorder_for(cfg)
    train(cfg, tmp_path, evaluator=ev, loggers=[])
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    calls = ev.by_generation()
    assert sorted(calls) == [r["generation"] for r in rows] == list(range(6))
    all_steps, several_waves, obs_count = [], 0, 0
    for row in rows:
        waves = calls[row["generation"]]
        steps = np.concatenate([r.steps for _, _, _, r in waves]).sum(axis=1)  # per pair
        expected = reference_waves(list(steps), **BUDGET)
        assert [len(ids) for _, _, ids, _ in waves] == expected
        assert row["num_pairs"] == sum(expected) == len(steps)
        assert row["waves"] == len(expected)
        assert row["gen_env_steps"] == int(steps.sum())
        assert row["gen_env_steps"] >= BUDGET["env_steps"] or row["num_pairs"] == 24
        # the waves are one fixed sequence of pairs: indices and ids continue
        starts = [start for _, start, _, _ in waves]
        assert starts == list(np.cumsum([0, *expected[:-1]]))
        ids = np.concatenate([i for _, _, i, _ in waves])
        assert np.array_equal(ids, perturbation_ids(SEED, row["generation"], len(ids)))
        idx = np.concatenate([r.indices for _, _, _, r in waves])
        assert np.array_equal(idx, np.arange(len(ids)))
        assert len({id(spec) for spec, _, _, _ in waves}) == 1  # one frozen spec (normalizer)
        several_waves += len(expected) > 1
        all_steps.append(steps)
        obs_count += sum(int(r.obs_stats.count.sum()) for _, _, _, r in waves)
    assert several_waves >= 3, "the budget never needed a second wave: raise env_steps"
    assert np.std(np.concatenate(all_steps)) > 10, "episode lengths should vary"
    assert len({r["num_pairs"] for r in rows}) > 1, "the population never changed"
    # the normalizer merged every wave's observations; counters are training steps only
    arrays = latest_checkpoint(tmp_path / "checkpoints").arrays
    assert int(arrays["obs/count"]) == obs_count
    assert int(arrays["counters/env_steps"]) == sum(r["gen_env_steps"] for r in rows)
    assert rows[-1]["env_steps"] == int(arrays["counters/env_steps"])
    assert rows[-1]["eval_env_steps"] > 0


def test_later_waves_seed_their_environments_by_their_own_pair_index():
    # pair k of a later wave must not replay pair k of the first wave's episodes
    cfg = cartpole_cfg()
    objective = make_objective(**cfg.objective.to_spec())
    noise = {"kind": "generator", "dim": objective.num_params}
    ev = SerialEvaluator(cfg.objective.to_spec(), noise, chunk_size=3)
    spec = GenerationSpec(0, np.zeros(objective.num_params), np.asarray(0.5), seed=SEED)
    ids = perturbation_ids(SEED, 0, 8)
    whole = ev.evaluate(spec, ids)
    parts = [ev.evaluate(spec, ids[:3]), ev.evaluate(spec, ids[3:], start=3)]
    assert np.array_equal(np.concatenate([p.indices for p in parts]), whole.indices)
    assert np.array_equal(np.concatenate([p.fitness for p in parts]), whole.fitness)
    shifted = ev.evaluate(spec, ids[3:])  # the same ids seeded as pairs 0..4: other episodes
    assert not np.array_equal(shifted.steps, whole.steps[3:])


@pytest.mark.parametrize(
    ("steps", "pairs", "waves"),
    [
        # 4 pairs x 20 steps = 80 < 100; ceil(20 * 4 / 80) = 1 = ceil(4 / 4): 5 pairs, 100 steps
        (10, 5, 2),
        # no steps at all: the budget is never reached, max_pairs in two waves
        (0, 12, 2),
        # 4 pairs x 200 steps: the first wave is enough
        (100, 4, 1),
    ],
)
def test_budget_with_fixed_step_counts_gives_the_closed_form(tmp_path, steps, pairs, waves):
    cfg = config_from_dict(
        {
            "run": {"name": "f", "seed": 1, "generations": 2},
            "objective": {
                "kind": "python",
                "target": "tests.test_trainer:steps_sphere",
                "dim": 3,
                "steps": steps,
            },
            "strategy": {
                "num_pairs": 4,
                "noise": "generator",
                "population": {"env_steps": 100, "max_pairs": 12},
            },
            "parallel": {"backend": "serial"},
            "logging": {"progress": "none"},
        }
    )
    train(cfg, tmp_path, loggers=[])
    for row in read_jsonl(tmp_path / "metrics.jsonl"):
        assert (row["num_pairs"], row["waves"]) == (pairs, waves)
        assert row["gen_env_steps"] == 2 * steps * pairs


def test_step_budget_rule_edges():
    b = StepBudget(env_steps=100, min_pairs=8, max_pairs=20)
    assert b.next_wave(0, 0) == 8
    assert b.next_wave(8, 100) == 0  # budget reached by the first wave
    assert b.next_wave(8, 0) == 12  # no steps at all (an analytic objective): up to max_pairs
    assert b.next_wave(20, 0) == 0
    assert b.next_wave(8, 80) == 2  # ceil(20 * 8 / 80) = 2 = ceil(8 / 4)
    assert b.next_wave(8, 90) == 2  # ceil(10 * 8 / 90) = 1, at least ceil(8 / 4) = 2
    assert b.next_wave(8, 10) == 12  # ceil(90 * 8 / 10) = 72, capped at 20 - 8
    assert b.waves([0] * 40) == [8, 12]
    assert StepBudget(5, 3, 3).waves([1] * 3) == [3]
    with pytest.raises(ValueError, match="min_pairs <= max_pairs"):
        StepBudget(100, 9, 8)


# ---------------------------------------------------------------- episode cutoff
CUTOFF = {"initial": 6, "growth": 1.5, "threshold": 0.6}


def test_episode_cap_grows_exactly_when_the_rule_says(tmp_path):
    cfg = cartpole_cfg(objective={"episode_cutoff": CUTOFF}, generations=8)
    ev = recorder_for(cfg)
    train(cfg, tmp_path, evaluator=ev, loggers=[])
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    calls = ev.by_generation()
    hits, episodes = [], []
    for row in rows:
        ((spec, _, _, r),) = calls[row["generation"]]
        cap = spec.episode_cap
        assert row["episode_cap"] == cap
        # no training episode runs past the cap; one cut there ran exactly cap steps
        assert r.steps.max() <= cap
        assert np.all(r.steps[r.capped > 0] == cap)
        assert row["capped_episodes"] == int(r.capped.sum())
        hits.append(int(r.capped.sum()))
        episodes.append(r.episodes)
    caps = reference_caps(**CUTOFF, limit=200, hits=hits, episodes=episodes)
    assert [row["episode_cap"] for row in rows] == caps[:-1]
    assert int(latest_checkpoint(tmp_path / "checkpoints").arrays["cutoff/episode_cap"]) == caps[-1]
    grew = sum(b > a for a, b in itertools.pairwise(caps))
    assert 0 < grew < len(rows), f"the cap should both grow and stay: {caps}"


def test_the_mean_is_evaluated_without_the_cap(tmp_path):
    # train with a tiny cap, then evaluate the checkpointed mean ourselves, without any cap
    cfg = cartpole_cfg(
        objective={"episode_cutoff": {"initial": 2, "growth": 2.0, "threshold": 1.0}},
        strategy={"sigma_init": 0.05},
        generations=3,
    )
    train(cfg, tmp_path, loggers=[])
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    state = TrainState.from_arrays(latest_checkpoint(tmp_path / "checkpoints").arrays)
    objective = make_objective(**cfg.objective.to_spec())
    spec = GenerationSpec(
        state.generation,
        state.search.mean,
        state.search.sigma,
        seed=SEED,
        obs_mean=state.obs.mean,
        obs_std=state.obs.std(cfg.objective.obs_std_floor),
    )
    returns, steps, _ = objective.evaluate_mean(spec, 3)
    assert rows[-1]["eval_return_mean"] == float(np.mean(returns))
    assert rows[-1]["eval_env_steps"] == steps
    assert returns.max() > rows[-1]["episode_cap"], "the evaluation should outlast the cap"


def test_run_lockstep_truncates_at_the_cap_and_marks_it():
    env = EnvSpec("CartPole-v1")
    policy = Policy(4, 2, PolicySpec.from_dict({"kind": "linear"}))
    head = ActionHead.for_space(env.make().action_space, "argmax", "clip")
    thetas = np.random.default_rng(0).normal(0, 1.0, (12, policy.num_params)).astype(np.float32)
    episodes = [Episode(i, train_seed(1, 0, i, 0)) for i in range(12)]
    pool = EnvPool(env.make)
    free = run_lockstep(pool, policy, head, thetas, episodes, lockstep=4)
    lengths = np.array([r.steps for r in free])
    cap = (int(lengths.min()) + int(lengths.max())) // 2
    assert lengths.min() < cap < lengths.max()
    cut = run_lockstep(pool, policy, head, thetas, episodes, lockstep=4, max_steps=cap)
    for a, b in zip(free, cut, strict=True):
        assert b.steps == min(a.steps, cap)
        assert b.ret == min(a.ret, float(cap))  # CartPole: one reward per step
        assert b.capped == (a.steps > cap)
        assert not a.capped


def test_episode_cutoff_rule_edges():
    c = EpisodeCutoff(initial=10, growth=1.05, threshold=0.5, limit=15)
    assert c.next_cap(10, 5, 10) == 11  # int(10.5) = 10 would never grow: at least + 1
    assert c.next_cap(10, 4, 10) == 10
    assert c.next_cap(14, 10, 10) == 15  # never beyond the environment's limit
    assert c.next_cap(15, 10, 10) == 15
    assert c.next_cap(10, 0, 0) == 10
    assert EpisodeCutoff(10, 2.0, 0.5).next_cap(10, 1, 2) == 20  # no limit


# ---------------------------------------------------------------- exact resume of both
@pytest.mark.parametrize(
    "sections",
    [
        {"strategy": {"population": BUDGET}},
        {"objective": {"episode_cutoff": CUTOFF}},
        {"strategy": {"population": BUDGET}, "objective": {"episode_cutoff": CUTOFF}},
    ],
    ids=["budget", "cutoff", "both"],
)
def test_resume_is_exact_with_budget_and_cutoff(tmp_path, sections):
    cfg = cartpole_cfg(**sections)
    train(cfg, tmp_path / "full", loggers=[])
    part = train(cfg, tmp_path / "part", loggers=[interrupt_at(1)])
    assert part.generation == 2  # checkpointed between checkpoint.every boundaries
    resume(tmp_path / "part", loggers=[])
    assert_same_run(tmp_path / "full", tmp_path / "part")
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    if "episode_cutoff" in sections.get("objective", {}):
        assert len({r["episode_cap"] for r in rows}) > 1  # the cap changed, and was resumed
    if "population" in sections.get("strategy", {}):
        assert len({r["num_pairs"] for r in rows}) > 1
