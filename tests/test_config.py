"""esvo.config: example configs, type rules, round trips, and no traceback on any input."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from esvo.config import (
    Config,
    ConfigError,
    FunctionObjectiveConfig,
    GymObjectiveConfig,
    PythonObjectiveConfig,
    RunConfig,
    StrategyConfig,
    config_from_dict,
    dump_config,
    load_config,
    parse_override,
)
from esvo.core.optimizers import OPTIMIZERS, Adam, ClipUp
from esvo.objectives.base import make_objective
from esvo.objectives.functions import FUNCTIONS
from esvo.trainer import check_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
SPHERE = {"objective": {"kind": "function", "name": "sphere", "dim": 3}}


def test_every_objective_kind_has_an_example():
    kinds = {load_config(p).objective.kind for p in CONFIGS}
    assert {"gym", "function"} <= kinds
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_loads_round_trips_and_builds(path):
    cfg = load_config(path)
    assert config_from_dict(cfg.to_dict()) == cfg
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg
    objective = make_objective(**cfg.objective.to_spec())
    try:
        assert objective.num_params >= 1
        check_config(cfg, objective.num_params, str(path))  # what `esvo validate` checks
        if cfg.strategy.distribution == "lowrank":  # the example of a policy this size
            assert objective.num_params >= 1000
    finally:
        if hasattr(objective, "close"):
            objective.close()


def test_defaults_and_frozen():
    cfg = config_from_dict(SPHERE)
    assert cfg.run.generations == 100 and cfg.strategy.shaping == "nes"
    assert cfg.optimizer.kind == "sgd" and cfg.parallel.backend == "ray"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.seed = 1  # type: ignore[misc]


def test_gym_defaults_and_spec():
    cfg = config_from_dict({"objective": {"env_id": "CartPole-v1", "policy": {"kind": "mlp"}}})
    assert isinstance(cfg.objective, GymObjectiveConfig)
    spec = cfg.objective.to_spec()
    assert spec["kind"] == "gym" and spec["env_id"] == "CartPole-v1"
    assert spec["policy"] == {
        "kind": "mlp",
        "hidden_sizes": [64, 64],
        "activation": "tanh",
        "bias": True,
    }


def test_himmelblau_dim_defaults_to_2():
    cfg = config_from_dict({"objective": {"kind": "function", "name": "himmelblau"}})
    assert cfg.objective == FunctionObjectiveConfig(name="himmelblau", dim=2)


def test_python_objective_passes_other_keys_to_the_factory():
    data = {
        "objective": {
            "kind": "python",
            "target": "esvo.objectives.base:FunctionObjective",
            "name": "rastrigin",
            "dim": 4,
        }
    }
    cfg = config_from_dict(data)
    assert cfg.objective == PythonObjectiveConfig(
        target="esvo.objectives.base:FunctionObjective", options={"name": "rastrigin", "dim": 4}
    )
    assert config_from_dict(cfg.to_dict()) == cfg
    assert make_objective(**cfg.objective.to_spec()).num_params == 4


def test_numbers():
    cfg = config_from_dict(
        {**SPHERE, "strategy": {"sigma_init": 1}, "run": {"max_env_steps": 1.0e7}}
    )
    assert cfg.strategy.sigma_init == 1.0 and isinstance(cfg.strategy.sigma_init, float)
    assert cfg.run.max_env_steps == 10_000_000 and isinstance(cfg.run.max_env_steps, int)
    for bad in (
        {"run": {"seed": True}},
        {"strategy": {"num_pairs": 1.5}},
        {"strategy": {"sigma_init": True}},
        {"strategy": {"sigma_init": float("nan")}},
    ):
        with pytest.raises(ConfigError):
            config_from_dict({**SPHERE, **bad})


def test_yaml_1e_notation_is_a_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("objective: {kind: function, name: sphere}\nstrategy: {sigma_init: 1e-3}\n")
    assert load_config(path).strategy.sigma_init == 1e-3


def test_optimizer_options_are_checked_and_filled_in():
    cfg = config_from_dict({**SPHERE, "optimizer": {"kind": "adam", "lr": 0.05}})
    assert cfg.optimizer.options == {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    assert cfg.optimizer.build() == Adam(lr=0.05)
    clipup = config_from_dict({**SPHERE, "optimizer": {"kind": "clipup"}})
    assert clipup.optimizer.build() == ClipUp()
    with pytest.raises(
        ConfigError, match=r"optimizer\.beta1.*allowed in optimizer: kind, lr, momentum"
    ):
        config_from_dict({**SPHERE, "optimizer": {"kind": "momentum", "beta1": 0.9}})
    with pytest.raises(ConfigError, match=r"optimizer\.lr"):
        config_from_dict({**SPHERE, "optimizer": {"kind": "sgd", "lr": -1}})


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_every_optimizer_builds_with_defaults(kind):
    cfg = config_from_dict({**SPHERE, "optimizer": {"kind": kind}})
    assert type(cfg.optimizer.build()) is OPTIMIZERS[kind]


def test_error_attributes_and_pickle():
    with pytest.raises(ConfigError) as info:
        config_from_dict({**SPHERE, "strategy": {"num_pairs": -4}}, source="x.yaml")
    e = info.value
    assert (e.source, e.key, e.value) == ("x.yaml", "strategy.num_pairs", -4)
    assert "integer >= 1" in e.allowed
    assert str(e).startswith("x.yaml: strategy.num_pairs = -4") and "\n" not in str(e)
    assert str(pickle.loads(pickle.dumps(e))) == str(e)


def test_did_you_mean():
    with pytest.raises(ConfigError, match=r"did you mean 'sigma_init'\?"):
        config_from_dict({**SPHERE, "strategy": {"sigma_inti": 0.1}})
    with pytest.raises(ConfigError, match=r"did you mean 'centered_ranks'\?"):
        config_from_dict({**SPHERE, "strategy": {"shaping": "centred_ranks"}})


def test_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(SPHERE))
    cfg = load_config(path, ["strategy.num_pairs=8", "run.target=null", "objective.dim=5"])
    assert cfg.strategy.num_pairs == 8 and cfg.run.target is None and cfg.objective.dim == 5
    assert parse_override("a.b=[1, 2]") == (("a", "b"), [1, 2])
    with pytest.raises(ConfigError, match=r"^--set run.seed=x: run.seed = 'x'"):
        load_config(path, ["run.seed=x"])
    with pytest.raises(ConfigError, match=r"key\.path=value"):
        load_config(path, ["run.seed"])
    with pytest.raises(ConfigError, match="bad key path"):
        load_config(path, ["run..seed=1"])


# ---------------------------------------------------------------------------- no tracebacks

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(
        [*FUNCTIONS, *OPTIMIZERS, "gym", "function", "python", "serial", "m:f", "mlp"]
    )
)
SECTIONS = (Config, RunConfig, StrategyConfig, GymObjectiveConfig, FunctionObjectiveConfig)
KNOWN_KEYS = sorted({f.name for c in SECTIONS for f in dataclasses.fields(c)} | {"kind", "lr"})
keys = st.text(max_size=10) | st.sampled_from(KNOWN_KEYS)
documents = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(keys | st.integers(), children, max_size=5)
    ),
    max_leaves=20,
)


def _check(data):
    try:
        cfg = config_from_dict(data)
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert isinstance(cfg, Config)
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


@settings(max_examples=150, deadline=None)
@given(documents)
def test_random_documents_never_raise_anything_else(data):
    _check(data)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(CONFIGS), st.data())
def test_mutated_example_configs_never_raise_anything_else(path, data):
    doc = yaml.safe_load(path.read_text())
    doc = copy.deepcopy(doc)
    target = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    parent = doc
    for k in target[:-1]:
        parent = parent[k]
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[target[-1]] = data.draw(documents)
    elif action == "delete":
        del parent[target[-1]]
    elif isinstance(parent[target[-1]], dict):
        parent[target[-1]][data.draw(keys)] = data.draw(scalars)
    _check(doc)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80) | documents.map(lambda d: yaml.safe_dump(d)))
def test_random_text_never_raises_anything_else(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "random.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path)
    except ConfigError as e:
        assert "\n" not in str(e)


@pytest.mark.parametrize("sections", [{}, {"strategy": None, "optimizer": None}])
def test_omitted_strategy_and_optimizer_run_the_librarys_defaults(sections):
    from esvo.core import Strategy
    from esvo.trainer import make_strategy

    cfg = config_from_dict({**SPHERE, **sections})
    assert (cfg.strategy.shaping, cfg.optimizer.kind, cfg.optimizer.options) == (
        "nes",
        "sgd",
        {"lr": 1.0},
    )
    objective = make_objective(**cfg.objective.to_spec())
    from_config = make_strategy(cfg, objective)
    library = Strategy(objective.num_params, maximize=False, seed=cfg.run.seed)
    # the same algorithm: the same trajectory, bit for bit
    states = []
    for es in (from_config, library):
        st = es.init(objective.initial_params(cfg.run.seed))
        for _ in range(5):
            ask = es.ask(st)
            st, _ = es.tell(st, ask, objective.f(es.population(st, ask)))
        states.append(st)
    np.testing.assert_array_equal(states[0].mean, states[1].mean)
    np.testing.assert_array_equal(states[0].sigma, states[1].sigma)
    assert from_config.shaping is library.shaping and from_config.optimizer == library.optimizer
