"""The ``esvo`` command, in process: bad input exits 2 with one line naming the key and creates
nothing; ``validate`` round-trips; a tiny serial run trains, plots and evaluates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esvo import trainer
from esvo.cli import main
from esvo.config import config_from_dict, load_config

BASE = {
    "run": {"name": "t", "generations": 2},
    "objective": {"kind": "function", "name": "sphere", "dim": 3},
    "parallel": {"backend": "serial"},
    "logging": {"progress": "none"},
}

# (id, document, --set overrides, substrings of the error). A dict document replaces BASE's
# sections; a str is the file's text; None means no file.
BROKEN = [
    ("missing_file", None, [], ["missing.yaml", "file not found"]),
    ("yaml_syntax", "run: [1, 2\nobjective: {}\n", [], ["invalid YAML", "line"]),
    ("top_level_list", "- run\n- objective\n", [], ["top level", "list", "mapping"]),
    ("repeated_key", "run: {seed: 1, seed: 2}\n", [], ["repeated key 'seed'"]),
    ("unknown_section", {"strategyy": {}}, [], ["'strategyy'", "did you mean 'strategy'"]),
    ("unknown_key", {"run": {"colour": "red", "generations": 2}}, [], ["'run.colour'", "seed"]),
    (
        "misspelt_key",
        {"strategy": {"num_pair": 8}},
        [],
        ["'strategy.num_pair'", "did you mean 'num_pairs'"],
    ),
    ("section_not_mapping", {"strategy": 3}, [], ["strategy = 3", "mapping"]),
    (
        "wrong_type",
        {"strategy": {"sigma_init": "big"}},
        [],
        ["strategy.sigma_init = 'big'", "number"],
    ),
    ("bool_for_int", {"run": {"seed": True}}, [], ["run.seed = True", "integer"]),
    ("float_for_int", {"strategy": {"num_pairs": 1.5}}, [], ["strategy.num_pairs = 1.5"]),
    (
        "negative_num_pairs",
        {"strategy": {"num_pairs": -4}},
        [],
        ["strategy.num_pairs = -4", ">= 1"],
    ),
    ("sigma_init_zero", {"strategy": {"sigma_init": 0}}, [], ["strategy.sigma_init = 0", "> 0"]),
    (
        "sigma_init_nan",
        "objective: {kind: function, name: sphere}\nstrategy: {sigma_init: .nan}\n",
        [],
        ["strategy.sigma_init = nan", "finite"],
    ),
    (
        "unknown_shaping",
        {"strategy": {"shaping": "rank"}},
        [],
        ["strategy.shaping = 'rank'", "centered_ranks"],
    ),
    (
        "unknown_optimizer",
        {"optimizer": {"kind": "adamw"}},
        [],
        ["optimizer.kind = 'adamw'", "did you mean 'adam'"],
    ),
    (
        "unknown_optimizer_option",
        {"optimizer": {"kind": "sgd", "momentum": 0.9}},
        [],
        ["'optimizer.momentum'", "'sgd'", "kind, lr"],
    ),
    (
        "no_stop_condition",
        {"run": {"generations": None}},
        [],
        ["run.generations", "run.max_env_steps", "run.max_wall_s"],
    ),
    (
        "sigma_max_below_min",
        {"strategy": {"sigma_min": 1.0, "sigma_max": 0.5}},
        [],
        ["strategy.sigma_max = 0.5", "sigma_min"],
    ),
    (
        "top_k_above_num_pairs",
        {"strategy": {"num_pairs": 4, "top_k": 5}},
        [],
        ["strategy.top_k = 5", "num_pairs = 4"],
    ),
    (
        "failure_rate_range",
        {"run": {"generations": 2, "max_failure_rate": 1.5}},
        [],
        ["run.max_failure_rate = 1.5", "[0, 1]"],
    ),
    (
        "bad_address",
        {"parallel": {"address": "localhost"}},
        [],
        ["parallel.address = 'localhost'", "host:port"],
    ),
    (
        "unknown_objective_kind",
        {"objective": {"kind": "gymnasium"}},
        [],
        ["objective.kind = 'gymnasium'", "'gym'"],
    ),
    ("missing_env_id", {"objective": {"kind": "gym"}}, [], ["objective.env_id", "required"]),
    (
        "key_of_other_kind",
        {"objective": {"kind": "gym", "env_id": "CartPole-v1", "dim": 3}},
        [],
        ["'objective.dim'", "'gym'"],
    ),
    (
        "unknown_env_id",
        {"objective": {"kind": "gym", "env_id": "NoSuchEnv-v0"}},
        [],
        ["objective.env_id = 'NoSuchEnv-v0'"],
    ),
    (
        "unsupported_space",
        {"objective": {"kind": "gym", "env_id": "Blackjack-v1"}},
        [],
        ["objective.env_id = 'Blackjack-v1'", "Tuple"],
    ),
    (
        "bad_policy_width",
        {
            "objective": {
                "kind": "gym",
                "env_id": "CartPole-v1",
                "policy": {"kind": "mlp", "hidden_sizes": [8, 0]},
            }
        },
        [],
        ["objective.policy.hidden_sizes[1] = 0", ">= 1"],
    ),
    (
        "python_target_missing",
        {"objective": {"kind": "python", "target": "no_such_mod:make"}},
        [],
        ["objective.target = 'no_such_mod:make'", "ModuleNotFoundError"],
    ),
    (
        "himmelblau_dim_3",
        {"objective": {"kind": "function", "name": "himmelblau", "dim": 3}},
        [],
        ["objective.dim = 3", "2"],
    ),
    (
        "set_bad_path",
        {},
        ["strategy.num_pair=8"],
        ["--set strategy.num_pair=8", "did you mean 'num_pairs'"],
    ),
    ("set_unknown_section", {}, ["stratgy.num_pairs=8"], ["'stratgy'", "did you mean 'strategy'"]),
    ("set_without_equals", {}, ["strategy.num_pairs"], ["strategy.num_pairs", "key.path=value"]),
    ("set_bad_value_type", {}, ["run.seed=abc"], ["--set run.seed=abc", "run.seed = 'abc'"]),
    ("set_bad_yaml", {}, ["run.seed=[1"], ["--set run.seed=[1", "invalid YAML"]),
    ("set_into_scalar", {}, ["run.seed.x=1"], ["run.seed"]),
    ("set_no_stop", {}, ["run.generations=null"], ["--set run.generations=null"]),
]


def _laughs(levels: int, width: int = 9) -> str:
    """A flow sequence of ``levels`` anchors, each ``width`` aliases of the one before: YAML
    loads it small, but it expands to ``width ** levels`` items ("billion laughs")."""
    parts = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
    parts += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


_HEAD = "run: {name: t, generations: 2}\nparallel: {backend: serial}\n"
_CARTPOLE = {"kind": "gym", "env_id": "CartPole-v1"}
_GYM = "objective: {kind: gym, env_id: 'tests.toy_env:ToyEnv-v0', "
BROKEN += [  # found by a hostile tester: each must fail fast, in one line, with exit 2
    ("alias_bomb_env_kwargs", _HEAD + _GYM + f"env_kwargs: {{x: {_laughs(9)}}}}}\n", [],
     ["objective.env_kwargs expands to more than 10,000 values"]),
    ("alias_bomb_python_options",
     _HEAD + f"objective: {{kind: python, target: 'tests.node_objective:make', x: {_laughs(9)}}}\n",
     [], ["objective expands to more than 10,000 values"]),
    ("alias_bomb_in_a_typed_field",
     f"run: {{name: {_laughs(5)}, generations: 2}}\nobjective: {{kind: function, name: sphere}}\n",
     [], ["run.name = [[", "...", "a name of letters"]),
    ("deep_nesting", "run: " + "[" * 3000 + "]" * 3000 + "\n", [], ["nested too deeply"]),
    ("huge_integer", "run: {seed: " + "7" * 5000 + "}\n", [], ["5000 digits", "too large"]),
    ("seed_out_of_range", {"run": {"name": "t", "seed": 1e30}}, [], ["run.seed", "2**63"]),
    ("num_pairs_huge", {"strategy": {"num_pairs": 1e12}}, [],
     ["strategy.num_pairs: 1,000,000,000,000 pairs", "memory", "this machine has"]),
    ("dim_huge", {"objective": {"kind": "function", "name": "sphere", "dim": 1e11}}, [],
     ["objective.dim: 100,000,000,000 parameters", "memory"]),
    ("mlp_huge", {"objective": {"kind": "gym", "env_id": "CartPole-v1",
                                "policy": {"kind": "mlp", "hidden_sizes": [1e6, 1e6]}}}, [],
     ["objective.policy.hidden_sizes", "memory"]),
    ("noise_table_huge", {"strategy": {"noise": "table", "noise_table_size": 1e12}}, [],
     ["strategy.noise_table_size: 1,000,000,000,000 noise table entries", "memory"]),
    ("noise_table_smaller_than_d",
     {"objective": {"kind": "function", "name": "sphere", "dim": 5000},
      "strategy": {"noise": "table", "noise_table_size": 1000}}, [],
     ["strategy.noise_table_size = 1000", "noise dimension 5,000"]),
    ("env_module_raises_on_import",
     {"objective": {"kind": "gym", "env_id": "tests.raising_module:Any-v0"}}, [],
     ["objective.env_id = 'tests.raising_module:Any-v0'", "module 'tests.raising_module'",
      "RuntimeError: raising_module: broken at import time"]),
    ("env_constructor_raises",
     {"objective": {"kind": "gym", "env_id": "tests.toy_env:ToyBrokenCtorEnv-v0"}}, [],
     ["objective.env_id", "constructor raised", "ValueError: toy env: bad constructor argument"]),
    ("python_factory_raises",
     {"objective": {"kind": "python", "target": "tests.raising_factory:make"}}, [],
     ["objective.target", "ZeroDivisionError: raising_factory"]),
    ("set_names_itself_for_a_bad_env",
     {"objective": {"kind": "gym", "env_id": "CartPole-v1"}}, ["objective.env_id=NoSuch-v9"],
     ["--set objective.env_id=NoSuch-v9: objective.env_id = 'NoSuch-v9'"]),
    ("set_names_itself_for_a_huge_size", {}, ["strategy.num_pairs=1e12"],
     ["--set strategy.num_pairs=1e12: strategy.num_pairs"]),
    # correlated distributions and restarts
    ("unknown_distribution", {"strategy": {"distribution": "ful"}}, [],
     ["strategy.distribution = 'ful'", "'isotropic', 'separable', 'full', 'lowrank'",
      "did you mean 'full'"]),
    ("rank_zero", {"strategy": {"distribution": "lowrank", "rank": 0}}, [],
     ["strategy.rank = 0", ">= 1"]),
    ("rank_not_below_d", {"strategy": {"distribution": "lowrank", "rank": 3}}, [],
     ["strategy.rank = 3", "[1, d) = [1, 3)"]),
    ("full_above_max_full_dim",
     {"objective": {"kind": "function", "name": "sphere", "dim": 1500},
      "strategy": {"distribution": "full"}}, [],
     ["strategy.distribution", "d = 1,500", "max_full_dim = 1,000", "'lowrank'", "'separable'"]),
    ("full_above_a_lowered_max_full_dim", {"strategy": {"distribution": "full"}},
     ["strategy.max_full_dim=2"],
     ["d = 3 parameters is above strategy.max_full_dim = 2"]),
    ("restarts_negative", {"strategy": {"restarts": {"max": -1}}}, [],
     ["strategy.restarts.max = -1", "[0, 100]"]),
    ("restarts_popsize_below_1", {"strategy": {"restarts": {"max": 2, "popsize_factor": 0.5}}},
     [], ["strategy.restarts.popsize_factor = 0.5", "[1, 100]"]),
    ("restarts_empty_box", {"strategy": {"restarts": {"low": 2.0, "high": 1.0}}}, [],
     ["strategy.restarts.high = 1.0", "strategy.restarts.low = 2.0"]),
    ("restarts_unknown_key", {"strategy": {"restarts": {"maxx": 2}}}, [],
     ["'strategy.restarts.maxx'", "did you mean 'max'"]),
    ("cov_lr_negative", {"strategy": {"cov_lr": -0.1}}, [], ["strategy.cov_lr = -0.1", ">= 0"]),
    # sample efficiency
    ("mixing_refresh_zero", {"strategy": {"importance_mixing": {"enabled": True,
                                                                "min_refresh": 0}}}, [],
     ["strategy.importance_mixing.min_refresh = 0", "(0, 1]"]),
    ("mixing_refresh_above_1", {}, ["strategy.importance_mixing.min_refresh=1.5"],
     ["strategy.importance_mixing.min_refresh = 1.5", "(0, 1]"]),
    ("mixing_enabled_not_bool", {"strategy": {"importance_mixing": {"enabled": "yes"}}}, [],
     ["strategy.importance_mixing.enabled = 'yes'"]),
    ("mixing_unknown_key", {"strategy": {"importance_mixing": {"min_refesh": 0.1}}}, [],
     ["'strategy.importance_mixing.min_refesh'", "did you mean 'min_refresh'"]),
    ("mixing_with_a_step_budget", {"objective": _CARTPOLE, "strategy": {
        "importance_mixing": {"enabled": True}, "population": {"env_steps": 100}}}, [],
     ["strategy.population.env_steps = 100", "importance mixing"]),
    ("mixing_with_adaptation_sampling", {"strategy": {
        "importance_mixing": {"enabled": True}, "adaptation_sampling": {"enabled": True}}}, [],
     ["strategy.adaptation_sampling.enabled = True", "importance mixing"]),
    ("mixing_with_top_k", {"strategy": {"importance_mixing": {"enabled": True}, "top_k": 2}},
     [], ["strategy.top_k = 2", "importance mixing"]),
    # step-budgeted populations and the adaptive episode cutoff (issue 12)
    ("population_env_steps_zero",
     {"objective": _CARTPOLE, "strategy": {"population": {"env_steps": 0}}}, [],
     ["strategy.population.env_steps = 0", ">= 1"]),
    ("population_min_pairs_zero", {"objective": _CARTPOLE,
                                   "strategy": {"population": {"env_steps": 100, "min_pairs": 0}}},
     [], ["strategy.population.min_pairs = 0", ">= 1"]),
    ("population_max_below_min", {"objective": _CARTPOLE, "strategy": {"population": {
        "env_steps": 100, "min_pairs": 8, "max_pairs": 4}}}, [],
     ["strategy.population.max_pairs = 4", "strategy.population.min_pairs = 8"]),
    ("population_max_below_num_pairs", {"objective": _CARTPOLE, "strategy": {
        "num_pairs": 8, "population": {"env_steps": 100, "max_pairs": 4}}}, [],
     ["strategy.population.max_pairs = 4", "strategy.num_pairs = 8"]),
    ("population_max_below_default_pairs", {"objective": _CARTPOLE},
     ["strategy.population.env_steps=100", "strategy.population.max_pairs=2"],
     ["--set strategy.population.max_pairs=2: strategy.population.max_pairs = 2",
      "smallest population, 5 pairs"]),
    ("population_for_a_function", {"strategy": {"population": {"env_steps": 100}}}, [],
     ["strategy.population.env_steps = 100", "objective.kind 'function' takes none"]),
    ("population_with_restarts", {"objective": _CARTPOLE, "strategy": {
        "population": {"env_steps": 100}, "restarts": {"max": 2}}}, [],
     ["strategy.population.env_steps", "strategy.restarts"]),
    ("population_top_k_above_min_pairs", {"objective": _CARTPOLE, "strategy": {
        "num_pairs": 8, "top_k": 6, "population": {"env_steps": 100, "min_pairs": 4}}}, [],
     ["strategy.top_k = 6", "strategy.population.min_pairs = 4"]),
    ("population_unknown_key", {"strategy": {"population": {"env_step": 100}}}, [],
     ["'strategy.population.env_step'", "did you mean 'env_steps'"]),
    ("cutoff_initial_zero", {"objective": {**_CARTPOLE, "episode_cutoff": {"initial": 0}}}, [],
     ["objective.episode_cutoff.initial = 0", ">= 1"]),
    ("cutoff_growth_one",
     {"objective": {**_CARTPOLE, "episode_cutoff": {"initial": 5, "growth": 1.0}}}, [],
     ["objective.episode_cutoff.growth = 1.0", "(1, 1000]"]),
    ("cutoff_threshold_zero", {"objective": {**_CARTPOLE, "episode_cutoff": {"threshold": 0}}},
     [], ["objective.episode_cutoff.threshold = 0", "(0, 1]"]),
    ("cutoff_threshold_above_one",
     {"objective": {**_CARTPOLE, "episode_cutoff": {"threshold": 1.5}}}, [],
     ["objective.episode_cutoff.threshold = 1.5", "(0, 1]"]),
    ("cutoff_above_max_episode_steps", {"objective": {
        **_CARTPOLE, "max_episode_steps": 100, "episode_cutoff": {"initial": 200}}}, [],
     ["objective.episode_cutoff.initial = 200", "objective.max_episode_steps = 100"]),
    ("cutoff_above_the_envs_limit",
     {"objective": {**_CARTPOLE, "episode_cutoff": {"initial": 600}}}, [],
     ["objective.episode_cutoff.initial = 600", "[1, 500]", "episode limit"]),
    ("cutoff_for_a_function", {"objective": {"kind": "function", "name": "sphere",
                                             "episode_cutoff": {"initial": 5}}}, [],
     ["'objective.episode_cutoff'", "'function'"]),
    ("cutoff_unknown_key", {"objective": {**_CARTPOLE, "episode_cutoff": {"grow": 2}}}, [],
     ["'objective.episode_cutoff.grow'", "did you mean 'growth'"]),
    # adaptation sampling
    ("adaptation_unknown_key", {"strategy": {"adaptation_sampling": {"enable": True}}}, [],
     ["'strategy.adaptation_sampling.enable'", "did you mean 'enabled'"]),
    ("adaptation_not_a_mapping", {"strategy": {"adaptation_sampling": True}}, [],
     ["strategy.adaptation_sampling = True", "a mapping"]),
    ("adaptation_enabled_not_bool", {"strategy": {"adaptation_sampling": {"enabled": "yes"}}},
     [], ["strategy.adaptation_sampling.enabled = 'yes'", "true or false"]),
    ("adaptation_c_zero", {"strategy": {"adaptation_sampling": {"c": 0}}}, [],
     ["strategy.adaptation_sampling.c = 0", "in (0, 1)"]),
    ("adaptation_c_above_1", {}, ["strategy.adaptation_sampling.c=1.5"],
     ["--set strategy.adaptation_sampling.c=1.5: strategy.adaptation_sampling.c = 1.5",
      "in (0, 1)"]),
    ("adaptation_bad_target", {"strategy": {"adaptation_sampling": {"target": "cov"}}}, [],
     ["strategy.adaptation_sampling.target = 'cov'", "'sigma', 'mean', 'both'"]),
    ("adaptation_of_a_fixed_sigma",
     {"strategy": {"sigma_lr": 0, "adaptation_sampling": {"enabled": True, "target": "both"}}},
     [], ["strategy.adaptation_sampling.target = 'both'", "strategy.sigma_lr = 0"]),
]  # fmt: skip


def _write(tmp_path: Path, doc) -> Path:
    path = tmp_path / ("missing.yaml" if doc is None else "config.yaml")
    if isinstance(doc, str):
        path.write_text(doc)
    elif isinstance(doc, dict):
        path.write_text(yaml.safe_dump({**BASE, **doc}))
    return path


@pytest.fixture
def no_hang():
    """Turns a hang (an alias bomb being expanded) into a failure instead of a stuck suite.
    Not a speed assertion: every case here takes milliseconds."""

    def timeout(signum, frame):
        raise TimeoutError("the command did not return within 30 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize(
    ("doc", "sets", "expected"), [c[1:] for c in BROKEN], ids=[c[0] for c in BROKEN]
)
@pytest.mark.parametrize("command", ["train", "validate"])
def test_bad_input_exits_2_naming_the_key_and_creates_nothing(
    tmp_path, capsys, no_hang, command, doc, sets, expected
):
    path = _write(tmp_path, doc)
    out = tmp_path / "out"
    argv = [command, str(path), *[a for s in sets for a in ("--set", s)]]
    code = main([*argv, "--out", str(out)] if command == "train" else argv)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err, err
    assert len(err) < 600, err  # a value is echoed in short, however large it is
    assert err.startswith(f"esvo {command}: error: ")
    for s in expected:
        assert s in err, (s, err)
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_out_in_the_way_of_a_file_exits_2(tmp_path, capsys, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    out = blocker if where == "file" else blocker / "sub"
    assert main(["train", str(_write(tmp_path, {})), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esvo train: error: --out ") and "\n" not in err, err
    assert str(blocker) in err
    assert blocker.read_text() == "not a directory"


def test_resuming_a_named_corrupt_checkpoint_exits_2(tmp_path, capsys):
    assert main(["train", str(_write(tmp_path, {})), "--out", str(tmp_path / "out")]) == 0
    (run_dir,) = (tmp_path / "out" / "t").iterdir()
    (ckpt,) = (run_dir / "checkpoints").iterdir()
    state = ckpt / "state.npz"
    state.write_bytes(state.read_bytes()[:-10])
    capsys.readouterr()
    assert main(["resume", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip()
    assert "checksum mismatch" in err and str(ckpt) in err and "\n" not in err


def test_the_esvo_script_imports_modules_from_the_working_directory(tmp_path):
    # as `python -m esvo` does: a module:Env-v0 id whose module sits in the working directory
    (tmp_path / "cwd_env_mod.py").write_text(
        "import gymnasium as gym\n"
        "gym.register(id='CwdEnv-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv')\n"
    )
    config = _write(tmp_path, {"objective": {"kind": "gym", "env_id": "cwd_env_mod:CwdEnv-v0"}})
    script = Path(sys.executable).with_name("esvo")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(script), "validate", str(config)], cwd=tmp_path, capture_output=True, text=True,
        env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "env_id: cwd_env_mod:CwdEnv-v0" in done.stdout


@pytest.mark.parametrize(
    "argv", [[], ["bogus"], ["train"], ["eval", "x", "--episodes", "0"], ["train", "c", "--x"]]
)
def test_bad_arguments_exit_2(capsys, argv):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_validate_prints_a_config_that_loads_back_equal(tmp_path, capsys):
    path = _write(tmp_path, {})
    assert main(["validate", str(path)]) == 0
    printed = capsys.readouterr().out
    assert config_from_dict(yaml.safe_load(printed)) == load_config(path)
    (tmp_path / "again.yaml").write_text(printed)
    assert load_config(tmp_path / "again.yaml") == load_config(path)


def test_validate_without_strategy_and_optimizer_prints_the_nes_defaults(tmp_path, capsys):
    from esvo.core.strategy import DEFAULT_OPTIMIZER, DEFAULT_SHAPING

    path = _write(tmp_path, {})  # BASE has neither a strategy nor an optimizer section
    assert "strategy" not in path.read_text() and "optimizer" not in path.read_text()
    assert main(["validate", str(path)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["strategy"]["shaping"] == DEFAULT_SHAPING == "nes"
    assert printed["optimizer"]["kind"] == DEFAULT_OPTIMIZER == "sgd"
    assert printed["optimizer"]["lr"] == 1.0
    # off by default, every key shown with its default
    assert printed["strategy"]["population"] == {
        "env_steps": None,
        "min_pairs": None,
        "max_pairs": None,
    }


def test_validate_prints_the_episode_cutoff_defaults(tmp_path, capsys):
    path = _write(tmp_path, {"objective": {"kind": "gym", "env_id": "CartPole-v1"}})
    assert main(["validate", str(path), "--set", "objective.episode_cutoff.initial=50"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    cutoff = {"initial": 50, "growth": 2.0, "threshold": 0.5}
    assert printed["objective"]["episode_cutoff"] == cutoff
    assert printed["strategy"]["adaptation_sampling"] == {
        "enabled": False,
        "c": 0.1,
        "target": "sigma",
    }


def test_validate_overrides_are_yaml_typed(tmp_path, capsys):
    path = _write(tmp_path, {"run": {"generations": 2, "target": 0.5}})
    sets = ["strategy.num_pairs=8", "run.target=null", "optimizer.lr=1e-3", "run.name=abc"]
    assert main(["validate", str(path), *[a for s in sets for a in ("--set", s)]]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert data["strategy"]["num_pairs"] == 8 and type(data["strategy"]["num_pairs"]) is int
    assert data["run"]["target"] is None
    assert data["optimizer"]["lr"] == 1e-3
    assert data["run"]["name"] == "abc"


def test_training_error_exits_1_with_one_line(tmp_path, capsys, monkeypatch):
    def fail(cfg, run_dir):
        raise trainer.TrainingError("too many failed rollouts in generation 3")

    monkeypatch.setattr(trainer, "train", fail)
    assert main(["train", str(_write(tmp_path, {})), "--out", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("esvo: run directory ")  # said first: where to resume from
    assert lines[1:] == ["esvo train: error: too many failed rollouts in generation 3"]


def test_train_returns_the_trainer_exit_code(tmp_path, monkeypatch):
    seen = {}

    def fake(cfg, run_dir):
        seen["run_dir"] = run_dir
        return trainer.TrainResult(1, "interrupted", None, 130, run_dir)

    monkeypatch.setattr(trainer, "train", fake)
    path = _write(tmp_path, {})
    assert main(["train", str(path), "--out", str(tmp_path / "out"), "--set", "run.name=x"]) == 130
    assert seen["run_dir"].parent == tmp_path / "out" / "x"


@pytest.mark.parametrize("sub", ["missing", "empty"])
def test_resume_eval_plot_reject_a_non_run(tmp_path, capsys, sub):
    path = tmp_path / sub
    if sub == "empty":
        path.mkdir()
    for argv in (["resume", str(path)], ["eval", str(path)], ["plot", str(path)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert str(path) in err and "\n" not in err


def test_train_plot_resume_on_a_tiny_serial_run(tmp_path, capsys):
    path = _write(tmp_path, {})
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 0
    (run_dir,) = (tmp_path / "out" / "t").iterdir()
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and all("generation" in json.loads(r) for r in rows)
    assert load_config(run_dir / "config.yaml") == load_config(path)
    assert main(["resume", str(run_dir)]) == 0
    pytest.importorskip("matplotlib")
    capsys.readouterr()
    assert main(["plot", str(run_dir), "--out", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0


def test_eval_a_cartpole_run(tmp_path, capsys):
    doc = {
        "objective": {"kind": "gym", "env_id": "CartPole-v1", "max_episode_steps": 50},
        "run": {"name": "cp", "generations": 1},
        "strategy": {"num_pairs": 2},
        "evaluation": {"every": 1, "episodes": 1},
    }
    assert main(["train", str(_write(tmp_path, doc)), "--out", str(tmp_path / "out")]) == 0
    (run_dir,) = (tmp_path / "out" / "cp").iterdir()
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "CartPole-v1" in out and "over 3 episodes" in out and "±" in out
