"""Policies on a flat theta, action heads per space, and the errors for unsupported setups."""

import itertools

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

import tests.toy_env  # noqa: F401  (registers the toy variants)
from esvo.objectives.base import make_objective
from esvo.objectives.gym import ActionHead, GymObjective, Policy, PolicySpec
from esvo.objectives.gym.policies import normalize, ordered_sum

SPECS = [
    PolicySpec("linear", bias=True),
    PolicySpec("linear", bias=False),
    PolicySpec("mlp", (7,), "tanh"),
    PolicySpec("mlp", (16, 5), "relu", bias=False),
    PolicySpec("mlp", (64, 64), "tanh"),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_layout_views_and_output_shape(spec):
    policy = Policy(5, 3, spec)
    sizes = (5, *spec.hidden, 3)
    expected = sum(i * o + (o if spec.bias else 0) for i, o in itertools.pairwise(sizes))
    assert policy.num_params == expected
    theta = np.arange(policy.num_params, dtype=np.float32)
    views = policy.views(theta)
    assert sum(v.size for v in views.values()) == policy.num_params
    assert views["layer0/weight"].shape == (5, sizes[1])
    assert np.shares_memory(views["layer0/weight"], theta)  # views, not copies
    out = policy.forward(policy.stack(theta[None]), np.ones((1, 5), np.float32))
    assert out.shape == (1, 3) and out.dtype == np.float32


def test_linear_forward_is_the_affine_map():
    policy = Policy(4, 2, PolicySpec("linear"))
    rng = np.random.default_rng(0)
    theta = rng.standard_normal(policy.num_params).astype(np.float32)
    x = rng.standard_normal((1, 4)).astype(np.float32)
    v = policy.views(theta)
    expected = x.astype(np.float64) @ v["layer0/weight"] + v["layer0/bias"]
    np.testing.assert_allclose(
        policy.forward(policy.stack(theta[None]), x)[0], expected[0], rtol=1e-5
    )


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("obs_dim", [1, 3, 17, 40])
def test_batched_forward_is_bitwise_the_one_by_one_forward(spec, obs_dim):
    """Row c of any batch equals candidate c alone, bit for bit, for batch sizes 1..13."""
    policy = Policy(obs_dim, 6, spec)
    rng = np.random.default_rng(obs_dim)
    thetas = rng.standard_normal((13, policy.num_params)).astype(np.float32)
    x = (10 * rng.standard_normal((13, obs_dim))).astype(np.float32)
    alone = np.concatenate(
        [policy.forward(policy.stack(thetas[c : c + 1]), x[c : c + 1]) for c in range(13)]
    )
    for size in (2, 3, 5, 8, 13):
        batched = np.concatenate(
            [
                policy.forward(policy.stack(thetas[s : s + size]), x[s : s + size])
                for s in range(0, 13, size)
            ]
        )
        assert batched.tobytes() == alone.tobytes()


def test_initial_params_are_zero_for_linear_and_seeded_for_mlp():
    assert not Policy(3, 2, PolicySpec("linear")).initial_params(1).any()
    mlp = Policy(3, 2, PolicySpec("mlp", (8,)))
    a, b, c = mlp.initial_params(1), mlp.initial_params(1), mlp.initial_params(2)
    assert a.dtype == np.float64 and np.array_equal(a, b) and not np.array_equal(a, c)


def test_box_heads_stay_in_bounds():
    space = spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, 3.0]), dtype=np.float64)
    rng = np.random.default_rng(0)
    for mode in ("clip", "tanh"):
        head = ActionHead.for_space(space, "argmax", mode)
        for out in (np.array([100.0, -100.0]), np.array([-5.0, 5.0]), rng.standard_normal(2)):
            a = head.act(out.astype(np.float32), None)
            assert a.shape == (2,) and space.contains(a)
    tanh = ActionHead.for_space(space, "argmax", "tanh")
    np.testing.assert_allclose(tanh.act(np.zeros(2, np.float32), None), [0.0, 1.5])  # midpoint


def test_discrete_and_multidiscrete_heads():
    disc = ActionHead.for_space(spaces.Discrete(4, start=2), "argmax", "clip")
    assert disc.out_dim == 4
    assert disc.act(np.array([0, 3, 1, 2], np.float32), None) == 3  # start + argmax
    multi = ActionHead.for_space(spaces.MultiDiscrete([2, 3]), "argmax", "clip")
    assert multi.out_dim == 5
    assert multi.act(np.array([0, 1, 5, 0, 1], np.float32), None).tolist() == [1, 0]


_BOX = spaces.Box(np.array([-1.0, 0.0]), np.array([1.0, 3.0]), dtype=np.float64)


@pytest.mark.parametrize(
    "space, mode",
    [
        (_BOX, "clip"),
        (_BOX, "tanh"),
        (spaces.Discrete(4, start=1), "argmax"),
        (spaces.Discrete(4, start=1), "sample"),
        (spaces.MultiDiscrete([3, 2]), "argmax"),
        (spaces.MultiDiscrete([3, 2]), "sample"),
    ],
    ids=str,
)
def test_batched_actions_equal_row_by_row_actions(space, mode):
    """The lockstep loop maps all slots at once: each row must get exactly the action of its
    own row and generator, and an idle row (generator None) must not consume any draws."""
    box = isinstance(space, spaces.Box)
    head = ActionHead.for_space(space, "argmax" if box else mode, mode if box else "clip")
    out = np.random.default_rng(0).standard_normal((5, head.out_dim)).astype(np.float32)
    seeds = [3, None, 4, 5, None]
    rngs = [None if s is None else np.random.default_rng(s) for s in seeds]
    batch = head.act_batch(out, rngs, noise_std=0.3)
    for row, seed in enumerate(seeds):
        rng = None if seed is None else np.random.default_rng(seed)
        one = head.act(out[row], rng, noise_std=0.3 if seed is not None else 0.0)
        assert np.array_equal(np.asarray(batch[row]), np.asarray(one))
        if box and seed is not None:  # the reference: clip / squash the noisy outputs
            o = out[row] + 0.3 * np.random.default_rng(seed).standard_normal(head.out_dim)
            lo, hi = np.array(head.low), np.array(head.high)
            ref = np.clip(o, lo, hi) if mode == "clip" else lo + 0.5 * (np.tanh(o) + 1) * (hi - lo)
            np.testing.assert_allclose(batch[row], ref, rtol=1e-6)


@pytest.mark.parametrize("space", [spaces.Discrete(3), spaces.MultiDiscrete([3, 2, 4])], ids=str)
def test_sampling_is_seeded_and_follows_the_logits(space):
    head = ActionHead.for_space(space, "sample", "clip")
    logits = np.zeros(head.out_dim, np.float32)
    draws = [head.act(logits, np.random.default_rng(s)) for s in range(200)]
    again = [head.act(logits, np.random.default_rng(s)) for s in range(200)]
    assert all(space.contains(np.asarray(d) if not np.isscalar(d) else d) for d in draws)
    assert [np.asarray(d).tolist() for d in draws] == [np.asarray(d).tolist() for d in again]
    assert len({np.asarray(d).tobytes() for d in draws}) > 1  # uniform logits: not constant
    sharp = np.full(head.out_dim, -50.0, np.float32)
    sharp[0] = 50.0  # the first action of the (first) sub-space is certain
    assert all(
        np.asarray(head.act(sharp, np.random.default_rng(s))).reshape(-1)[0] == 0 for s in range(20)
    )


@pytest.mark.parametrize(
    "env_id",
    [
        "tests.toy_env:ToyEnv-v0",
        "tests.toy_env:ToyDiscreteEnv-v0",
        "tests.toy_env:ToyMultiDiscreteEnv-v0",
        "CartPole-v1",
        "Pendulum-v1",
    ],
)
@pytest.mark.parametrize("box_action", ["clip", "tanh"])
def test_actions_of_a_random_policy_are_in_the_action_space(env_id, box_action):
    obj = GymObjective(env_id, policy={"kind": "mlp", "hidden_sizes": [4]}, box_action=box_action)
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    theta = (10 * rng.standard_normal((1, obj.num_params))).astype(np.float32)
    for _ in range(5):
        x = normalize(np.asarray(obs, np.float64).reshape(1, -1), None, None, 5.0)
        action = obj.head.act(obj.policy.forward(obj.policy.stack(theta), x)[0], None)
        assert env.action_space.contains(action)
        obs, *_ = env.step(action)


def test_normalize_is_identity_without_statistics_and_clips_with_them():
    obs = np.array([[1.0, -30.0]])
    assert np.array_equal(normalize(obs, None, None, 5.0), obs.astype(np.float32))
    out = normalize(obs, np.array([1.0, 0.0]), np.array([2.0, 1.0]), 5.0)
    assert out.tolist() == [[0.0, -5.0]]


@pytest.mark.parametrize(
    ("env_id", "match"),
    [
        ("NoSuchEnv-v0", "NoSuchEnv-v0"),
        ("no_such_module:Env-v0", "no_such_module"),
        ("tests.toy_env:ToyDictObsEnv-v0", "observation space Dict.*supported: Box"),
        ("tests.toy_env:ToyTupleActEnv-v0", "action space Tuple.*Discrete, MultiDiscrete, Box"),
    ],
)
def test_unknown_env_or_unsupported_space_is_a_one_line_value_error(env_id, match):
    with pytest.raises(ValueError, match=match) as info:
        GymObjective(env_id)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"env_kwargs": {"no_such_kwarg": 1}}, "no_such_kwarg"),
        ({"policy": {"kind": "cnn"}}, "policy kind"),
        ({"policy": {"kind": "mlp", "activation": "gelu"}}, "activation"),
        ({"policy": {"width": 3}}, "unknown policy option"),
        ({"discrete_action": "softmax"}, "discrete_action"),
        ({"box_action": "scale"}, "box_action"),
        ({"episodes_per_eval": 0}, "episodes_per_eval"),
        ({"obs_norm_prob": 1.5}, "obs_norm_prob"),
        ({"lockstep": 0}, "lockstep"),
    ],
)
def test_invalid_options_are_value_errors(options, match):
    with pytest.raises(ValueError, match=match):
        GymObjective("tests.toy_env:ToyEnv-v0", **options)


def test_tanh_squash_needs_finite_bounds():
    with pytest.raises(ValueError, match="finite"):
        ActionHead.for_space(spaces.Box(-np.inf, np.inf, (2,)), "argmax", "tanh")


def test_make_objective_builds_a_gym_objective():
    obj = make_objective(kind="gym", env_id="CartPole-v1", policy={"kind": "linear"})
    assert isinstance(obj, GymObjective)
    assert (obj.num_params, obj.obs_dim, obj.maximize) == (4 * 2 + 2, 4, True)
    assert GymObjective("CartPole-v1", obs_norm=False).obs_dim is None


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 9, 64, 65])
def test_ordered_sum_is_the_sum(n):
    p = np.random.default_rng(n).standard_normal((3, n, 4)).astype(np.float32)
    np.testing.assert_allclose(
        ordered_sum(p), p.astype(np.float64).sum(axis=1), rtol=1e-5, atol=1e-5
    )
