"""GymObjective.evaluate / evaluate_mean: determinism, CRN, chunking, lockstep, obs statistics,
failures, and export -> load -> run_episodes (its videos: test_video.py)."""

import json

import numpy as np
import pytest

from esvo.core.noise import NoiseGenerator, perturbation_ids
from esvo.core.running_stat import RunningStat
from esvo.objectives.gym import GymObjective, export_policy, load_policy, run_episodes
from esvo.objectives.gym.rollout import eval_seed, train_seed
from esvo.protocol import GenerationSpec, Results, chunk_tasks
from tests.toy_env import ToyEnv

TOY = "tests.toy_env:ToyEnv-v0"
SEED = 7

# (env id, options): every action space, both policies, sampling and action noise.
CASES = {
    "toy-box-mlp": (TOY, {"policy": {"kind": "mlp", "hidden_sizes": [5]}, "box_action": "tanh"}),
    "toy-discrete-sample": ("tests.toy_env:ToyDiscreteEnv-v0", {"discrete_action": "sample"}),
    "toy-multidiscrete-noise": ("tests.toy_env:ToyMultiDiscreteEnv-v0", {"action_noise": 0.3}),
    "cartpole-mlp": (
        "CartPole-v1",
        {
            "policy": {"kind": "mlp", "hidden_sizes": [8], "activation": "relu"},
            "episodes_per_eval": 2,
            "max_episode_steps": 60,
        },
    ),
}


def make(case: str, **override) -> GymObjective:
    env_id, options = CASES[case]
    return GymObjective(env_id, **{**options, **override})


def spec_for(obj: GymObjective, generation: int = 3, normalized: bool = True, sigma: float = 0.5):
    mean = obj.initial_params(0) + 0.1
    k = obj.policy.obs_dim
    obs_mean = np.linspace(-0.1, 0.1, k) if normalized else None
    obs_std = np.linspace(0.5, 2.0, k) if normalized else None
    return GenerationSpec(generation, mean, np.asarray(sigma), SEED, obs_mean, obs_std)


def evaluate(obj: GymObjective, spec: GenerationSpec, num_pairs: int, chunk: int | None = None):
    noise = NoiseGenerator(obj.num_params)
    ids = perturbation_ids(SEED, spec.generation, num_pairs)
    tasks = chunk_tasks(spec.generation, ids, chunk or num_pairs)
    return Results.concat([obj.evaluate(spec, t, noise) for t in tasks])


def assert_same(a: Results, b: Results) -> None:
    """Bitwise equality of everything a worker returns."""
    assert a.fitness.tobytes() == b.fitness.tobytes()
    assert np.array_equal(a.steps, b.steps) and np.array_equal(a.indices, b.indices)
    assert (a.episodes, a.failures) == (b.episodes, b.failures)
    assert (a.obs_stats is None) == (b.obs_stats is None)
    if a.obs_stats is not None:
        for x, y in zip(
            (a.obs_stats.count, a.obs_stats.sum, a.obs_stats.sumsq),
            (b.obs_stats.count, b.obs_stats.sum, b.obs_stats.sumsq),
            strict=True,
        ):
            assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("case", CASES)
def test_same_spec_gives_the_same_results_in_a_fresh_objective(case):
    spec = spec_for(make(case))
    first, second = evaluate(make(case), spec, 4), evaluate(make(case), spec, 4)
    assert_same(first, second)
    assert np.all(np.isfinite(first.fitness))
    assert first.episodes == 4 * 2 * make(case).episodes_per_eval
    third = evaluate(make(case), spec_for(make(case), generation=4), 4)  # other seeds
    assert third.fitness.tobytes() != first.fitness.tobytes()


@pytest.mark.parametrize("case", CASES)
def test_results_do_not_depend_on_the_chunking(case):
    obj = make(case)
    spec = spec_for(obj)
    whole = evaluate(obj, spec, 7)
    for chunk in (1, 2, 3):
        assert_same(evaluate(obj, spec, 7, chunk), whole)


@pytest.mark.parametrize("case", CASES)
def test_lockstep_is_bitwise_equal_to_one_by_one(case):
    spec = spec_for(make(case))
    one_by_one = evaluate(make(case, lockstep=1), spec, 5)
    for lockstep in (2, 3, 8, 64):
        assert_same(evaluate(make(case, lockstep=lockstep), spec, 5), one_by_one)
    mean_one = make(case, lockstep=1).evaluate_mean(spec, 5)
    mean_many = make(case, lockstep=4).evaluate_mean(spec, 5)
    assert mean_one[0].tobytes() == mean_many[0].tobytes() and mean_one[1] == mean_many[1]


def test_both_members_of_a_pair_reset_with_the_same_seed():
    obj = GymObjective(TOY, episodes_per_eval=2, lockstep=1)
    spec = spec_for(obj)
    ToyEnv.seed_log.clear()
    evaluate(obj, spec, 3)
    expected = []
    for pair in range(3):
        episodes = [train_seed(SEED, spec.generation, pair, e) for e in range(2)]
        expected += episodes + episodes  # member +z, then member -z: the same seeds
    assert ToyEnv.seed_log == expected
    assert len(set(expected)) == 6  # pairs and episodes differ


def test_mean_is_evaluated_on_fixed_seeds_without_noise_or_shift():
    obj = GymObjective(TOY, reward_shift=100.0, action_noise=1.0, lockstep=1)
    a = obj.evaluate_mean(spec_for(obj, generation=1), 4)
    ToyEnv.seed_log.clear()
    b = obj.evaluate_mean(spec_for(obj, generation=9), 4)
    assert ToyEnv.seed_log == [eval_seed(SEED, e) for e in range(4)]
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1]
    plain = GymObjective(TOY).evaluate_mean(spec_for(obj, generation=5), 4)
    assert plain[0].tobytes() == a[0].tobytes()  # no shift, no action noise
    assert np.all(a[0] <= 0)  # the toy reward is -distance: not shifted by -100


def test_cartpole_steps_are_counted_exactly():
    obj = GymObjective(
        "CartPole-v1", episodes_per_eval=3, policy={"kind": "mlp", "hidden_sizes": [4]}
    )
    res = evaluate(obj, spec_for(obj, normalized=False, sigma=2.0), 6)
    # CartPole pays 1 per step: the mean return times the episodes is the step count.
    np.testing.assert_array_equal(res.fitness * 3, res.steps)
    assert len(np.unique(res.steps)) > 1 and res.episodes == 6 * 2 * 3
    shifted = evaluate(
        GymObjective(
            "CartPole-v1",
            episodes_per_eval=3,
            reward_shift=1.0,
            policy={"kind": "mlp", "hidden_sizes": [4]},
        ),
        spec_for(obj, normalized=False, sigma=2.0),
        6,
    )
    assert not shifted.fitness.any() and np.array_equal(shifted.steps, res.steps)


def test_observation_statistics_merge_to_those_of_all_observations_seen():
    obj = GymObjective(TOY, policy={"kind": "mlp", "hidden_sizes": [4]}, episodes_per_eval=2)
    spec = spec_for(obj)
    ToyEnv.obs_log.clear()
    res = evaluate(obj, spec, 5, chunk=2)
    seen = np.stack(ToyEnv.obs_log)  # every observation a policy acted on
    stats = res.obs_stats
    assert stats.count.shape == (5,) and stats.sum.shape == (5, 3) == stats.sumsq.shape
    np.testing.assert_array_equal(stats.count.sum(), len(seen))
    assert stats.count.sum() == res.steps.sum()  # one policy call per step
    merged = RunningStat.zeros(3)
    for k in range(5):  # the driver's merge, pair by pair
        merged = merged.merge_sums(stats.count[k], stats.sum[k], stats.sumsq[k])
    whole = RunningStat.of(seen)
    assert merged.count == whole.count
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(merged.var, whole.var, rtol=1e-10, atol=1e-14)


def test_observation_sampling_is_deterministic_and_can_be_off():
    full = evaluate(GymObjective(TOY), spec_for(GymObjective(TOY)), 16).obs_stats
    half_obj = GymObjective(TOY, obs_norm_prob=0.5)
    half = evaluate(half_obj, spec_for(half_obj), 16).obs_stats
    again = evaluate(half_obj, spec_for(half_obj), 16).obs_stats
    assert np.array_equal(half.count, again.count) and np.array_equal(half.sum, again.sum)
    assert 0.2 * full.count.sum() < half.count.sum() < 0.8 * full.count.sum()
    none = GymObjective(TOY, obs_norm_prob=0.0)
    assert evaluate(none, spec_for(none), 4).obs_stats.count.sum() == 0
    off = GymObjective(TOY, obs_norm=False)
    assert evaluate(off, spec_for(off), 4).obs_stats is None


def test_normalizer_is_applied_and_identity_without_statistics():
    obj = GymObjective(TOY, obs_clip=1e9)
    k = obj.policy.obs_dim
    raw = evaluate(obj, spec_for(obj, normalized=False), 4)
    unit = GenerationSpec(
        3, obj.initial_params(0) + 0.1, np.asarray(0.5), SEED, np.zeros(k), np.ones(k)
    )
    assert_same(evaluate(obj, unit, 4), raw)  # (obs - 0) / 1 is the identity
    shifted = evaluate(obj, spec_for(obj), 4)
    assert shifted.fitness.tobytes() != raw.fitness.tobytes()
    clipped = evaluate(GymObjective(TOY, obs_clip=1e-3), spec_for(obj), 4)
    assert clipped.fitness.tobytes() != shifted.fitness.tobytes()


def test_a_raising_environment_fails_only_that_member():
    obj = GymObjective("tests.toy_env:ToyRaiseEnv-v0", lockstep=3)
    spec = GenerationSpec(0, np.zeros(obj.num_params), np.asarray(1.0), SEED)
    res = evaluate(obj, spec, 12, chunk=5)
    bad = np.isnan(res.fitness)
    assert 0 < bad.sum() < bad.size
    assert not np.any(bad.all(axis=1))  # one member of a pair raises, the other does not
    assert res.failures == bad.sum()
    assert 1 <= len(res.errors) <= 3
    assert "RuntimeError: toy env failure at step 3" in res.errors[0]
    assert "Traceback" in res.errors[0]
    assert np.all(res.steps[bad] == 3)  # steps before the exception are counted
    assert res.obs_stats.count.sum() == res.steps[~bad].sum()  # failed episodes are dropped
    # The failures change nothing else: same numbers with one-by-one stepping, one chunk.
    assert_same(evaluate(GymObjective("tests.toy_env:ToyRaiseEnv-v0", lockstep=1), spec, 12), res)


@pytest.mark.parametrize("case", CASES)
def test_export_load_run_episodes_replays_evaluate_mean(case, tmp_path):
    obj = make(case)
    spec = spec_for(obj)
    returns, steps, _ = obj.evaluate_mean(spec, 6)
    path = export_policy(tmp_path / "out", spec.mean, obj, spec.obs_mean, spec.obs_std)
    meta = json.loads(path.read_text())
    assert meta["format_version"] == 1 and meta["env_id"] == CASES[case][0]
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as arrays:
        assert arrays["theta"].dtype == np.float32
    for where in (path, path.with_suffix(".npz"), tmp_path / "out"):
        policy = load_policy(where)
        replay, replay_steps = run_episodes(policy, 6, seed=SEED)
        assert replay.tobytes() == returns.tobytes() and replay_steps == steps
    assert run_episodes(policy, 6, seed=SEED + 1)[0].tobytes() != returns.tobytes()


def test_export_without_normalizer(tmp_path):
    obj = GymObjective("CartPole-v1", obs_norm=False)
    spec = GenerationSpec(0, np.full(obj.num_params, 0.3), np.asarray(0.1), SEED)
    path = export_policy(tmp_path, spec.mean, obj, None, None, name="plain")
    policy = load_policy(path)
    assert policy.obs_mean is None
    assert run_episodes(policy, 3, seed=SEED)[0].tolist() == obj.evaluate_mean(spec, 3)[0].tolist()


def test_halfcheetah_lockstep_and_chunking_are_bitwise_equal():
    """MuJoCo: a short episode cap keeps this fast."""

    def build(lockstep):
        return GymObjective("HalfCheetah-v5", max_episode_steps=20, lockstep=lockstep)

    obj = build(1)
    spec = spec_for(obj, sigma=0.1)
    ref = evaluate(obj, spec, 3)
    assert np.all(ref.steps == 20) and obj.num_params == 17 * 6 + 6
    assert_same(evaluate(build(4), spec, 3, chunk=2), ref)


@pytest.mark.parametrize("case", CASES)
def test_with_zero_sigma_both_members_are_the_same_rollout(case):
    """Common random numbers: same env seeds and same sampling / action-noise streams."""
    obj = make(case)
    res = evaluate(obj, spec_for(obj, sigma=0.0), 3)
    assert res.fitness[:, 0].tobytes() == res.fitness[:, 1].tobytes()
    assert np.array_equal(res.steps[:, 0], res.steps[:, 1])
    assert len(np.unique(res.fitness[:, 0])) == 3  # the pairs' seeds differ
