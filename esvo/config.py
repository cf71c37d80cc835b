"""Experiment configs: one YAML file per experiment, loaded into frozen dataclasses.

Every key is optional except the objective's (``env_id``, ``name`` or ``target``); each field below
documents its default and its allowed values. Everything is checked before anything runs: unknown
keys (with a "did you mean"), wrong types (``true`` is not an integer, ``1.5`` is not an integer, an
integer is a valid float), out-of-range values and a few cross-field rules all raise a
``ConfigError`` that names the file, the key path, the value and what is allowed.

``--set key.path=value`` overrides are applied to the YAML data before validation; the value is
parsed as YAML (``8`` is an int, ``null`` is None). YAML is read as YAML 1.2 reads numbers (``1e-3``
is a float, not a string) and a key repeated in one mapping is an error.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from esvo.core.distributions import DISTRIBUTIONS
from esvo.core.optimizers import OPTIMIZERS, Optimizer, make_optimizer
from esvo.core.shaping import SHAPINGS
from esvo.core.strategy import (
    DEFAULT_DISTRIBUTION,
    DEFAULT_OPTIMIZER,
    DEFAULT_SHAPING,
    DEFAULT_SIGMA_INIT,
)
from esvo.objectives.functions import FUNCTIONS

__all__ = [
    "MAX_SWEEP_TRIALS",
    "AdaptationSamplingConfig",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "EpisodeCutoffConfig",
    "EvaluationConfig",
    "FunctionObjectiveConfig",
    "GymObjectiveConfig",
    "ImportanceMixingConfig",
    "LoggingConfig",
    "ObjectiveConfig",
    "OptimizerConfig",
    "ParallelConfig",
    "PolicyConfig",
    "PopulationConfig",
    "PythonObjectiveConfig",
    "RestartsConfig",
    "RunConfig",
    "StrategyConfig",
    "SweepConfig",
    "check_grid_entry",
    "config_from_dict",
    "dump_config",
    "error_source",
    "load_config",
    "parse_override",
    "parse_seeds",
    "read_config_data",
    "set_path",
]


class ConfigError(ValueError):
    """A config that cannot run. ``str(e)`` is one line naming the source and the key.

    Attributes:
        source: the file, ``"--set k=v"`` for an override, or ``"<dict>"``.
        key: dotted key path (``"strategy.num_pairs"``); ``""`` for the file as a whole.
        value: the offending value (None when there is none, e.g. a missing key).
        allowed: what would have been accepted, in words.
    """

    def __init__(self, source: str, key: str, value: Any, allowed: str, problem: str | None = None):
        self.source, self.key, self.value, self.allowed = source, key, value, allowed
        self.problem = problem
        if problem is None:
            problem = f"{key} = {_show(value)} is invalid; expected {allowed}"
        super().__init__(f"{source}: {problem}")

    def __reduce__(self):
        return type(self), (self.source, self.key, self.value, self.allowed, self.problem)

    def with_source(self, source: str) -> ConfigError:
        """The same error attributed to ``source`` (e.g. the ``--set`` that caused it)."""
        if source == self.source:
            return self
        return ConfigError(source, self.key, self.value, self.allowed, self.problem)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 60, 60
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = 4


def _show(value: Any, limit: int = 60) -> str:
    """A short repr for messages: bounded however large or deeply shared ``value`` is (a YAML
    alias bomb expands to billions of items if printed whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        text = f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
    else:
        text = _REPR.repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Free-form mappings (env_kwargs, a python objective's options) may hold at most this many
# values counted as a tree (aliases expanded), nested at most this deep: a few dozen are real.
MAX_FREE_FORM_VALUES = 10_000
MAX_FREE_FORM_DEPTH = 50


def _check_free_form(value: Any, key: str, source: str) -> None:
    """Reject a free-form value that expands past ``MAX_FREE_FORM_VALUES`` (an alias bomb:
    YAML shares aliased nodes, so it loads small, but every later copy, dump or message
    expands it) or nests past ``MAX_FREE_FORM_DEPTH``. Linear in the distinct nodes."""
    sizes: dict[int, int] = {}

    def size(x: Any, depth: int) -> int:
        if depth > MAX_FREE_FORM_DEPTH:
            allowed = f"at most {MAX_FREE_FORM_DEPTH} levels of nesting"
            problem = f"{key} is nested more than {MAX_FREE_FORM_DEPTH} levels deep"
            raise ConfigError(source, key, None, allowed, problem)
        if not isinstance(x, (Mapping, list, tuple)):
            return 1
        if id(x) in sizes:
            return sizes[id(x)]
        total = 1
        for child in x.values() if isinstance(x, Mapping) else x:
            total += size(child, depth + 1)
            if total > MAX_FREE_FORM_VALUES:
                allowed = f"at most {MAX_FREE_FORM_VALUES:,} values (aliases expanded)"
                problem = (
                    f"{key} expands to more than {MAX_FREE_FORM_VALUES:,} values "
                    "(YAML aliases counted where they are used); expected a small mapping"
                )
                raise ConfigError(source, key, None, allowed, problem)
        sizes[id(x)] = total
        return total

    size(value, 0)


# ---------------------------------------------------------------------------- field constraints
# Constraints live in the field metadata and are read by the parser: bounds (ge/gt/le/lt) for
# numbers and the items of a tuple, `choices` for strings, `pattern` (regex, description).


def _f(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    return field(default=default, metadata=meta)


_NAME = (r"[A-Za-z0-9][A-Za-z0-9._-]*", "a name of letters, digits, '.', '_' or '-'")
_ADDRESS = (r"auto|(ray://)?[A-Za-z0-9._-]+:[0-9]{1,5}", "'auto', 'host:port' or 'ray://host:port'")
_TARGET = (r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", "'package.module:factory'")
_NONEMPTY = (r"\S.*", "a non-empty string")

# ---------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class RunConfig:
    """When a run stops, where it is written, and its seed."""

    name: str = _f("run", pattern=_NAME)
    """experiment name; the run directory is ``<out_dir>/<name>/<timestamp>``"""
    seed: int = _f(0, ge=0, lt=2**63)
    """run seed: with (generation, pair index) it names every perturbation and env seed"""
    generations: int | None = _f(100, ge=1)
    """stop after this many generations (null: no limit)"""
    max_env_steps: int | None = _f(None, ge=1)
    """stop after this many training env steps (null: no limit)"""
    max_wall_s: float | None = _f(None, gt=0)
    """stop after this many seconds of wall time (null: no limit)"""
    target: float | None = None
    """stop when reached (gym/python: ``eval_return_mean >= target``; function: ``f <= target``)"""
    max_failure_rate: float = _f(0.1, ge=0, le=1)
    """fraction of failed rollouts in a generation above which the run stops with an error"""
    out_dir: str = _f("runs", pattern=_NONEMPTY)
    """parent directory of the runs (``esvo train --out`` replaces it)"""


@dataclass(frozen=True)
class PolicyConfig:
    """The policy network of a gym objective (observation -> action)."""

    kind: Literal["linear", "mlp"] = "linear"
    """``linear`` (ARS-style ``W obs + b``) or ``mlp``"""
    hidden_sizes: tuple[int, ...] = _f((64, 64), ge=1)
    """hidden layer widths of the mlp"""
    activation: Literal["tanh", "relu"] = "tanh"
    """hidden activation of the mlp"""
    bias: bool = True
    """whether layers have a bias"""


@dataclass(frozen=True)
class EpisodeCutoffConfig:
    """The adaptive episode cutoff of OpenAI ES (``episode_cutoff_mode: adaptive``): training
    episodes are truncated at a step cap that grows, ``cap <- max(cap + 1, int(growth * cap))``
    up to the environment's own limit, after a generation in which at least ``threshold`` of
    the training episodes reached it. The mean is always evaluated to the environment's limit."""

    initial: int | None = _f(None, ge=1)
    """the first generation's cap in steps (null: no cutoff; at most the env's own limit)"""
    growth: float = _f(2.0, gt=1, le=1000)
    """factor the cap grows by"""
    threshold: float = _f(0.5, gt=0, le=1)
    """fraction of a generation's training episodes that must reach the cap for it to grow"""


@dataclass(frozen=True)
class GymObjectiveConfig:
    """A gymnasium environment: fitness is the episode return of a policy (maximized)."""

    kind: ClassVar[str] = "gym"
    env_id: str = _f(pattern=_NONEMPTY)
    """gymnasium id (``CartPole-v1``, or ``module:Env-v0`` to import the module first); required"""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """keyword arguments of ``gymnasium.make``"""
    max_episode_steps: int | None = _f(None, ge=1)
    """episode step limit (null: the env's own)"""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """the policy network"""
    discrete_action: Literal["argmax", "sample"] = "argmax"
    """how logits become a Discrete action"""
    box_action: Literal["clip", "tanh"] = "clip"
    """how outputs are mapped into a Box action space"""
    episodes_per_eval: int = _f(1, ge=1, le=10_000)
    """episodes averaged per candidate"""
    reward_shift: float = 0.0
    """added to every step's reward during training (ARS's survival-bonus removal)"""
    action_noise: float = _f(0.0, ge=0)
    """std of Gaussian noise added to actions during training"""
    obs_norm: bool = True
    """normalize observations with running statistics"""
    obs_norm_prob: float = _f(1.0, gt=0, le=1)
    """fraction of rollouts whose observations update the statistics"""
    obs_clip: float = _f(5.0, gt=0)
    """normalized observations are clipped to ``±obs_clip``"""
    obs_std_floor: float = _f(0.01, gt=0)
    """lower bound on the observation std used for normalization"""
    lockstep: int = _f(8, ge=1, le=4096)
    """environments stepped together per worker (batched policy forward)"""
    episode_cutoff: EpisodeCutoffConfig = field(default_factory=EpisodeCutoffConfig)
    """adaptive step cap of training episodes (off by default: ``initial: null``)"""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **_plain_fields(self)}

    def to_spec(self) -> dict[str, Any]:
        """Arguments of ``esvo.objectives.base.make_objective`` (the cutoff is the trainer's:
        its cap travels in each generation's spec)."""
        spec = self.to_dict()
        del spec["episode_cutoff"]
        return spec


@dataclass(frozen=True)
class FunctionObjectiveConfig:
    """An analytic test function of ``esvo.objectives.functions`` (minimized)."""

    kind: ClassVar[str] = "function"
    name: str = _f(choices=tuple(FUNCTIONS))
    """the function; required"""
    dim: int = _f(10, ge=1)
    """number of parameters (default 10; himmelblau: 2, rosenbrock: >= 2)"""
    init: float = 1.0
    """every coordinate of the initial mean"""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **_plain_fields(self)}

    def to_spec(self) -> dict[str, Any]:
        """Arguments of ``esvo.objectives.base.make_objective``."""
        return self.to_dict()


@dataclass(frozen=True)
class PythonObjectiveConfig:
    """A user objective: ``target`` names a factory called with ``options``."""

    kind: ClassVar[str] = "python"
    target: str = _f(pattern=_TARGET)
    """``"package.module:factory"``; required"""
    options: dict[str, Any] = field(default_factory=dict)
    """every other key of the section, passed to the factory as-is"""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, **_plain(self.options)}

    def to_spec(self) -> dict[str, Any]:
        """Arguments of ``esvo.objectives.base.make_objective``."""
        return self.to_dict()


ObjectiveConfig = GymObjectiveConfig | FunctionObjectiveConfig | PythonObjectiveConfig
_OBJECTIVES: dict[str, type] = {
    c.kind: c for c in (GymObjectiveConfig, FunctionObjectiveConfig, PythonObjectiveConfig)
}


@dataclass(frozen=True)
class RestartsConfig:
    """IPOP restarts (``esvo.core.Restarts``): when the search has converged or stalled, start
    again from a random mean in ``[low, high]^d`` with a larger population, keeping the best."""

    max: int = _f(0, ge=0, le=100)
    """restarts at most (0: none)"""
    popsize_factor: float = _f(2.0, ge=1, le=100)
    """each restart multiplies the population by this"""
    low: float = -5.0
    """the box new means are drawn from, uniformly: lower bound of every coordinate"""
    high: float = 5.0
    """upper bound of every coordinate (> low)"""
    sigma_tol: float = _f(1.0e-12, gt=0)
    """restart when the largest standard deviation of the search falls below this"""
    stall_generations: int | None = _f(None, ge=1)
    """restart when the best fitness has not improved by stall_tol for this many generations
    (null: int(100 + 100 d^1.5 / population), pycma's tolstagnation window)"""
    stall_tol: float = _f(1.0e-12, ge=0)
    """smallest improvement of the best fitness that counts"""
    max_condition: float = _f(1.0e14, gt=1)
    """restart when the covariance's condition number exceeds this"""


@dataclass(frozen=True)
class ImportanceMixingConfig:
    """Importance mixing (``esvo.core.mixing``; Sun et al. 2009): keep members of the previous
    population, with their fitness, when they are likely under the new distribution, and
    evaluate only the fresh ones; mixed member by member (antithetic pairs are split)."""

    enabled: bool = False
    """reuse the previous population's members"""
    min_refresh: float = _f(0.01, gt=0, le=1)
    """alpha: the least fraction of fresh members (and of accepted fresh candidates)"""


@dataclass(frozen=True)
class PopulationConfig:
    """A population budgeted by environment steps (OpenAI ES's ``timesteps_per_batch``,
    EvoTorch's ``num_interactions``): pairs are scored in waves until the generation has used
    at least ``env_steps`` training steps or has ``max_pairs`` pairs. The first wave has
    ``min_pairs`` pairs; each later one the pairs the steps per pair seen so far say are
    missing, ``ceil((env_steps - S) * n / S)`` after ``n`` pairs and ``S`` steps (at least
    ``ceil(min_pairs / 4)``, at most what is left to ``max_pairs``; all of it when ``S = 0``).
    A pure function of the returned step counts: independent of workers, timing and resume."""

    env_steps: int | None = _f(None, ge=1)
    """training env steps per generation, at least (null: a fixed population, num_pairs);
    not for ``objective.kind: function`` (no env steps)"""
    min_pairs: int | None = _f(None, ge=1)
    """pairs of the first wave (null: strategy.num_pairs, or its default from d)"""
    max_pairs: int | None = _f(None, ge=1)
    """most pairs of a generation (null: 8 * min_pairs; >= min_pairs)"""


@dataclass(frozen=True)
class AdaptationSamplingConfig:
    """Adaptation sampling (``esvo.core.adaptation``): each generation, test on the current
    samples whether a 1.5x longer last step would have been better (importance weights and a
    weighted Mann-Whitney test); grow the rate by ``(1 + c)`` (at most ``max(1, initial)``) if
    it would not have been worse, else relax it towards its initial value by ``(1 - c)``."""

    enabled: bool = False
    """adapt the learning rates online (off: the configured rates, unchanged)"""
    c: float = _f(0.1, gt=0, lt=1)
    """growth ``(1 + c)`` and relaxation ``(1 - c)`` factor per generation"""
    target: Literal["sigma", "mean", "both"] = "sigma"
    """which rate adapts: ``sigma`` (strategy.sigma_lr, metric lr_sigma), ``mean`` (a
    multiplier on the optimizer's step, in optimizer.lr units, metric lr_mean) or ``both``"""


@dataclass(frozen=True)
class StrategyConfig:
    """The search distribution and its update (arguments of ``esvo.core.Strategy``, with the
    same defaults: NES log-utilities; OpenAI-ES settings are ``shaping: centered_ranks`` with
    ``optimizer: {kind: adam, lr: 0.01}`` and ``sigma_lr: 0``)."""

    distribution: str = _f(DEFAULT_DISTRIBUTION, choices=tuple(DISTRIBUTIONS))
    """``isotropic`` (one sigma), ``separable`` (one sigma per parameter), ``full`` (xNES: a
    full covariance, O(d^2) memory, d <= max_full_dim) or ``lowrank`` (sigma^2 (I + U U^T),
    linear in d; R1-NES for rank 1)"""
    rank: int = _f(1, ge=1)
    """rank k of ``lowrank``'s U (1 <= k < d)"""
    cov_lr: float | None = _f(None, ge=0)
    """learning rate of the covariance's shape (full: eta_B, lowrank: eta_U; null: the
    published default; 0: a fixed shape)"""
    max_full_dim: int = _f(1000, ge=1)
    """``full`` is refused above this many parameters (d^2 memory and d^3 time per
    generation): use ``lowrank`` or ``separable`` there"""
    num_pairs: int | None = _f(None, ge=1)
    """antithetic pairs per generation, population ``2 * num_pairs`` (null: NES default from d)"""
    sigma_init: float = _f(DEFAULT_SIGMA_INIT, gt=0)
    """initial sigma"""
    sigma_lr: float | None = _f(None, ge=0)
    """log-sigma learning rate (null: NES default; 0: fixed sigma as in OpenAI-ES)"""
    sigma_min: float = _f(1.0e-12, gt=0)
    """lower clamp on sigma"""
    sigma_max: float = _f(1.0e6, gt=0)
    """upper clamp on sigma (> sigma_min)"""
    sigma_max_change: float = _f(1.0, gt=0)
    """per step ``|log(sigma'/sigma)| <= log(1 + sigma_max_change)``"""
    shaping: str = _f(DEFAULT_SHAPING, choices=tuple(SHAPINGS))
    """fitness shaping (nes: log-utilities by rank; centered_ranks: OpenAI-ES; zscore; raw)"""
    top_k: int | None = _f(None, ge=1)
    """update from the best ``top_k`` pairs only, by ``max(f+, f-)`` (ARS V2-t; null: all)"""
    weight_decay: float = _f(0.0, ge=0)
    """L2 coefficient lambda in natural-gradient units: ``g <- g - lambda * sigma^2 * mean``
    (the natural gradient of ``U - lambda/2 ||mean||^2``)"""
    maximize: bool | None = None
    """direction (null: from the objective; gym/python maximize, functions minimize)"""
    noise: Literal["auto", "table", "generator"] = "auto"
    """noise source (auto: chosen by d)"""
    noise_table_size: int | None = _f(None, ge=1)
    """float32 entries of the noise table (null: default from d)"""
    noise_seed: int = _f(0, ge=0, lt=2**63)
    """seed of the noise table"""
    restarts: RestartsConfig = field(default_factory=RestartsConfig)
    """IPOP restarts (off by default: ``max: 0``)"""
    importance_mixing: ImportanceMixingConfig = field(default_factory=ImportanceMixingConfig)
    """reuse of the previous population's samples (off by default)"""
    population: PopulationConfig = field(default_factory=PopulationConfig)
    """a population budgeted by env steps (off by default: ``env_steps: null``)"""
    adaptation_sampling: AdaptationSamplingConfig = field(default_factory=AdaptationSamplingConfig)
    """online learning rates for sigma and/or the mean (off by default)"""


# Ranges of optimizer options by name (their types come from the optimizer's dataclass).
_OPTIMIZER_BOUNDS: dict[str, dict[str, float]] = {
    "lr": {"gt": 0},
    "momentum": {"ge": 0, "lt": 1},
    "beta1": {"ge": 0, "lt": 1},
    "beta2": {"ge": 0, "lt": 1},
    "rho": {"ge": 0, "lt": 1},
    "eps": {"gt": 0},
    "max_speed": {"gt": 0},
}


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer on the mean's natural gradient and its options (defaults filled in;
    default SGD with lr 1, NES's update)."""

    kind: str = _f(DEFAULT_OPTIMIZER, choices=tuple(OPTIMIZERS))
    """optimizer name in ``esvo.core.optimizers.OPTIMIZERS``"""
    options: dict[str, float | None] = field(default_factory=dict)
    """the optimizer's dataclass fields (``lr``, ``momentum``, ...), written flat in YAML"""

    def build(self) -> Optimizer:
        """The optimizer (``esvo.core.optimizers.make_optimizer``)."""
        return make_optimizer(self.kind, **self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.options}


@dataclass(frozen=True)
class ParallelConfig:
    """Where candidates are scored."""

    backend: Literal["ray", "serial"] = "ray"
    """``ray`` (actors) or ``serial`` (in the driver)"""
    num_workers: int | None = _f(None, ge=1, le=100_000)
    """Ray evaluator actors (null: all cores)"""
    address: str | None = _f(None, pattern=_ADDRESS)
    """Ray cluster (null: an embedded local Ray)"""
    chunks_per_worker: int = _f(4, ge=1, le=10_000)
    """tasks per worker and generation (smaller chunks balance load); fewer when chunks would
    not fill the objective's lockstep batch, never fewer than workers"""
    max_consecutive_failures: int = _f(3, ge=1)
    """consecutive failed generations before the run stops with an error"""
    dashboard: bool = False
    """start the Ray dashboard"""


@dataclass(frozen=True)
class EvaluationConfig:
    """Noise-free evaluation of the mean."""

    every: int = _f(10, ge=0)
    """generations between evaluations (0: only at the end)"""
    episodes: int = _f(10, ge=1, le=100_000)
    """episodes per evaluation"""


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints of the run."""

    every: int = _f(10, ge=1)
    """generations between checkpoints"""
    keep: int = _f(3, ge=1)
    """most recent checkpoints kept (plus the best)"""


@dataclass(frozen=True)
class LoggingConfig:
    """What is printed and logged besides ``metrics.jsonl``."""

    progress: Literal["auto", "tty", "plain", "none"] = "auto"
    """progress display (auto: tty on a terminal, else plain)"""
    tensorboard: bool = False
    """also write TensorBoard event files"""


MAX_SWEEP_TRIALS = 10_000
_KEY_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class SweepConfig:
    """Seeds and a grid of settings for ``esvo sweep`` (``esvo train`` runs the base config).

    Every combination of the grid's values, with every seed, is one run: the base config with
    ``key.path = value`` set for each grid key and ``run.seed`` set to the seed.
    """

    seeds: tuple[int, ...] = (0,)
    """run seeds: a list, or a string of ranges and numbers (``"0-4"``, ``"0-2,7"``)"""
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """``key.path: [value, ...]`` per swept key; the settings are the product, in this order"""

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "grid": {k: list(v) for k, v in self.grid}}

    @property
    def num_settings(self) -> int:
        return math.prod(len(v) for _, v in self.grid)


def parse_seeds(value: Any, key: str = "sweep.seeds", source: str = "<dict>") -> tuple[int, ...]:
    """Seeds from ``"0-4"``, ``"0-2,7"``, ``3`` or a list of integers; sorted order kept as given.

    Raises:
        ConfigError: a malformed range, a negative or repeated seed, or no seed at all.
    """
    allowed = "a seed range like '0-4', a list like '0,3,7' or [0, 3, 7] (integers >= 0)"
    if isinstance(value, int) and not isinstance(value, bool):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(source, key, value, allowed)
    seeds: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            span = [item]
        elif isinstance(item, str) and (m := re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", item)):
            lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
            if hi < lo:
                problem = f"{key} = {_show(value)}: the range {item!r} runs backwards"
                raise ConfigError(source, key, value, allowed, problem)
            if hi - lo >= MAX_SWEEP_TRIALS:
                problem = f"{key} = {_show(value)}: more than {MAX_SWEEP_TRIALS:,} seeds"
                raise ConfigError(source, key, value, allowed, problem)
            span = list(range(lo, hi + 1))
        else:
            what = f"{_show(item)} is not a seed or a range"
            problem = f"{key} = {_show(value)}: {what}; expected {allowed}"
            raise ConfigError(source, key, value, allowed, problem)
        for seed in span:
            if not 0 <= seed < 2**63:
                raise ConfigError(source, key, value, allowed)
            if seed in seeds:
                problem = f"{key} = {_show(value)}: seed {seed} is listed twice"
                raise ConfigError(source, key, value, allowed, problem)
            seeds.append(seed)
    if not seeds:
        raise ConfigError(source, key, value, allowed)
    return tuple(seeds)


def _parse_sweep(data: Any, source: str, base: Mapping[str, Any]) -> SweepConfig | None:
    """The ``sweep`` section; each grid value is checked by validating the base config with it."""
    if data is None:
        return None
    data = _mapping(data, "sweep", source)
    _check_keys(data, ["seeds", "grid"], "sweep", source)
    seeds = parse_seeds(data["seeds"], "sweep.seeds", source) if "seeds" in data else (0,)
    grid_data = _mapping(data.get("grid"), "sweep.grid", source)
    _check_str_keys(grid_data, "sweep.grid", source)
    grid = []
    for path, values in grid_data.items():
        key = f"sweep.grid.{path}"
        check_grid_entry(path, values, key, source)
        for value in values:
            try:
                _with_value(base, path, value, source)
            except ConfigError as e:
                why = e.problem or f"{e.key} = {_show(value)} is invalid; expected {e.allowed}"
                raise ConfigError(source, key, value, e.allowed, f"{key}: {why}") from None
        grid.append((path, tuple(values)))
    cfg = SweepConfig(seeds=seeds, grid=tuple(grid))
    if len(seeds) * cfg.num_settings > MAX_SWEEP_TRIALS:
        runs = f"{len(seeds)} seeds x {cfg.num_settings} settings"
        problem = f"sweep: {runs} is over {MAX_SWEEP_TRIALS:,} runs"
        raise ConfigError(source, "sweep", None, f"at most {MAX_SWEEP_TRIALS:,} runs", problem)
    return cfg


def check_grid_entry(path: Any, values: Any, key: str, source: str) -> None:
    """A grid entry is ``key.path: [distinct values]`` naming a config key other than the seed."""
    allowed = "key.path: [value, ...] with a dotted config key, e.g. strategy.sigma_init"
    if not isinstance(path, str) or not _KEY_PATH.fullmatch(path):
        raise ConfigError(source, key, path, allowed, f"{key}: {_show(path)} is not a key path")
    if path == "run.seed" or path.startswith("sweep"):
        what = "use sweep.seeds (--seeds) for seeds" if path == "run.seed" else "not sweepable"
        raise ConfigError(source, key, path, allowed, f"{key}: {path} cannot be swept: {what}")
    if not isinstance(values, (list, tuple)) or not values:
        problem = f"{key} = {_show(values)}: expected a non-empty list of values"
        raise ConfigError(source, key, values, "a non-empty list", problem)
    for i, value in enumerate(values):
        if any(_same_value(value, other) for other in values[:i]):
            problem = f"{key} = {_show(values)}: {_show(value)} is listed twice"
            raise ConfigError(source, key, values, "distinct values", problem)


def _same_value(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _with_value(base: Mapping[str, Any], path: str, value: Any, source: str) -> Config:
    data = {k: v for k, v in base.items() if k != "sweep"}
    set_path(data, tuple(path.split(".")), value, source)
    return config_from_dict(data, source)


@dataclass(frozen=True, kw_only=True)
class Config:
    """One experiment."""

    run: RunConfig = field(default_factory=RunConfig)
    """stopping, seed, output"""
    objective: ObjectiveConfig
    """what is optimized"""
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    """search distribution"""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """optimizer on the mean"""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """evaluators"""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """evaluation of the mean"""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """checkpoints"""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """progress and loggers"""
    sweep: SweepConfig | None = None
    """seeds and grid for ``esvo sweep`` (null: none; ``esvo train`` ignores it)"""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (dicts, lists, scalars); ``config_from_dict(cfg.to_dict()) == cfg``."""
        return _plain_fields(self)


# ---------------------------------------------------------------------------- to plain data


def _plain(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return _plain_fields(obj)
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _plain_fields(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def dump_config(cfg: Config) -> str:
    """YAML text of ``cfg.to_dict()`` (sections in schema order; no ``sweep`` when it is null)."""
    data = cfg.to_dict()
    if data["sweep"] is None:
        del data["sweep"]
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# ---------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.2) and rejects repeated keys."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"repeated key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


MAX_INT_DIGITS = 100


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """YAML ints up to ``MAX_INT_DIGITS`` digits (Python refuses to parse more than 4300, with
    an error that is not a YAML error; no config value needs more than 20)."""
    text = loader.construct_scalar(node)
    digits = sum(c.isalnum() for c in text)
    if digits > MAX_INT_DIGITS:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {digits} digits is too large", node.start_mark
        )
    return yaml.SafeLoader.construct_yaml_int(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(text: str, source: str, key: str = "") -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = f"{key}: " if key else ""
        problem = f"{what}invalid YAML{where}: {e.problem or e.context}"
        raise ConfigError(source, key, text, "valid YAML", problem) from None
    except yaml.YAMLError as e:
        problem = f"invalid YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        raise ConfigError(source, key, text, "valid YAML", problem) from None
    except RecursionError:
        what = f"{key}: " if key else ""
        problem = f"{what}invalid YAML: nested too deeply (more than a few hundred levels)"
        raise ConfigError(source, key, None, "valid YAML", problem) from None


# ---------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Load, override and validate a config file.

    Args:
        path: the YAML file.
        overrides: ``"key.path=value"`` strings, applied in order; values are parsed as YAML.

    Returns:
        The validated config.

    Raises:
        ConfigError: the file cannot be read or parsed, or the config is invalid.
    """
    source = str(path)
    data = read_config_data(path, overrides)
    try:
        return config_from_dict(data, source)
    except ConfigError as e:
        # An error at or below an overridden path is reported against the override.
        raise e.with_source(error_source(source, overrides, e.key)) from None


def read_config_data(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The YAML data of a config file with ``--set`` overrides applied, not yet validated.

    Raises:
        ConfigError: the file cannot be read or parsed, or an override is malformed.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", None, "an existing file", "file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        problem = f"cannot read: {e.strerror if isinstance(e, OSError) else e}"
        raise ConfigError(source, "", None, "a readable UTF-8 file", problem) from None
    data = _load_yaml(text, source)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        problem = f"the top level is a {type(data).__name__}; expected a mapping of sections"
        raise ConfigError(source, "", data, "a mapping", problem)
    data = dict(data)
    for text_override in overrides:
        keys, value = parse_override(text_override)
        set_path(data, keys, value, f"--set {text_override}")
    return data


def error_source(path: str | Path, overrides: Sequence[str], key: str) -> str:
    """Where the value at ``key`` came from: the last ``--set`` at, above or below that key
    path, else the file. Also for errors found after loading (e.g. an env id that does not
    build), so that a bad ``--set`` is never blamed on the file."""
    for text in reversed(overrides):
        keys = tuple(text.partition("=")[0].strip().split("."))
        if key and _is_prefix(keys, key):
            return f"--set {text}"
    return str(path)


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """``"a.b=value"`` -> ``(("a", "b"), value parsed as YAML)``; raises ``ConfigError``."""
    source = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep:
        problem = f"{text!r} is not key.path=value (e.g. strategy.num_pairs=8)"
        raise ConfigError(source, key, text, "key.path=value", problem)
    keys = tuple(key.split("."))
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in keys):
        problem = f"bad key path {key!r}; expected dot-separated names like strategy.num_pairs"
        raise ConfigError(source, key, key, "key.path", problem)
    return keys, _load_yaml(raw, source, key)


def set_path(data: dict, keys: tuple[str, ...], value: Any, source: str) -> None:
    """``data[k0][k1]... = value``, copying the sections on the way (``data`` is not shared)."""
    node = data
    for i, k in enumerate(keys[:-1]):
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif isinstance(child, Mapping):
            child = node[k] = dict(child)
        else:
            path = ".".join(keys[: i + 1])
            problem = f"cannot set {'.'.join(keys)}: {path} = {_show(child)} is not a section"
            raise ConfigError(source, ".".join(keys), child, "a key inside a section", problem)
        node = child
    node[keys[-1]] = value


def _is_prefix(keys: tuple[str, ...], key: str) -> bool:
    parts = re.split(r"[.\[]", key)
    return tuple(parts[: len(keys)]) == keys or tuple(keys[: len(parts)]) == tuple(parts)


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Validate plain data (as read from YAML) into a ``Config``.

    Args:
        data: the sections; missing keys take their defaults.
        source: names the origin in error messages.

    Raises:
        ConfigError: the first problem found.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            source, "", data, "a mapping of sections", "expected a mapping of sections"
        )
    _check_keys(data, [f.name for f in dataclasses.fields(Config)], "", source)
    sections: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        value = data.get(f.name)
        if f.name == "objective":
            sections[f.name] = _parse_objective(value, source)
        elif f.name == "optimizer":
            sections[f.name] = _parse_optimizer(value, source)
        elif f.name == "sweep":
            continue  # below: its grid values are checked against the rest
        else:
            sections[f.name] = _parse_section(_SECTIONS[f.name], value, f.name, source)
    cfg = Config(**sections)
    _check_cross_fields(cfg, source)
    if data.get("sweep") is not None:
        cfg = dataclasses.replace(cfg, sweep=_parse_sweep(data["sweep"], source, data))
    return cfg


_SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "strategy": StrategyConfig,
    "parallel": ParallelConfig,
    "evaluation": EvaluationConfig,
    "checkpoint": CheckpointConfig,
    "logging": LoggingConfig,
}


def _check_cross_fields(cfg: Config, source: str) -> None:
    run, strategy, obj = cfg.run, cfg.strategy, cfg.objective
    if run.generations is None and run.max_env_steps is None and run.max_wall_s is None:
        problem = (
            "run.generations, run.max_env_steps and run.max_wall_s are all null: "
            "set at least one stop condition"
        )
        raise ConfigError(source, "run.generations", None, "at least one stop condition", problem)
    k, n = strategy.top_k, strategy.num_pairs
    if k is not None and n is not None and k > n:
        allowed = f"an integer <= strategy.num_pairs = {n}, or null"
        raise ConfigError(source, "strategy.top_k", k, allowed)
    if strategy.importance_mixing.enabled and strategy.population.env_steps is not None:
        allowed = "null with strategy.importance_mixing.enabled (importance mixing keeps a "
        allowed += "population of a fixed size, strategy.num_pairs pairs)"
        raise ConfigError(
            source, "strategy.population.env_steps", strategy.population.env_steps, allowed
        )
    if strategy.importance_mixing.enabled and strategy.adaptation_sampling.enabled:
        allowed = "false with strategy.importance_mixing.enabled (adaptation sampling weights "
        allowed += "the generation's own pairs; importance mixing replaces them with single "
        allowed += "members and kept old ones)"
        raise ConfigError(source, "strategy.adaptation_sampling.enabled", True, allowed)
    if k is not None and strategy.importance_mixing.enabled:
        allowed = "null with strategy.importance_mixing.enabled (top_k ranks pairs; importance "
        allowed += "mixing splits them into members)"
        raise ConfigError(source, "strategy.top_k", k, allowed)
    if strategy.restarts.high <= strategy.restarts.low:
        allowed = f"a number > strategy.restarts.low = {strategy.restarts.low!r}"
        raise ConfigError(source, "strategy.restarts.high", strategy.restarts.high, allowed)
    adapt = strategy.adaptation_sampling
    if adapt.enabled and adapt.target != "mean" and strategy.sigma_lr == 0:
        allowed = "'mean' while strategy.sigma_lr = 0 (a rate of 0 cannot grow), or sigma_lr > 0"
        key = "strategy.adaptation_sampling.target"
        raise ConfigError(source, key, adapt.target, allowed)
    if strategy.sigma_max <= strategy.sigma_min:
        allowed = f"a number > strategy.sigma_min = {strategy.sigma_min!r}"
        raise ConfigError(source, "strategy.sigma_max", strategy.sigma_max, allowed)
    pop = strategy.population
    if pop.env_steps is not None:
        if isinstance(obj, FunctionObjectiveConfig):
            problem = (
                f"strategy.population.env_steps = {pop.env_steps!r} needs an objective that "
                "takes environment steps; objective.kind 'function' takes none (use "
                "strategy.num_pairs, or null)"
            )
            allowed = "null for objective.kind 'function'"
            raise ConfigError(
                source, "strategy.population.env_steps", pop.env_steps, allowed, problem
            )
        if strategy.restarts.max > 0:
            problem = (
                "strategy.population.env_steps cannot be combined with strategy.restarts "
                f"(max = {strategy.restarts.max}): restarts set the population themselves"
            )
            allowed = "null with strategy.restarts.max > 0"
            raise ConfigError(
                source, "strategy.population.env_steps", pop.env_steps, allowed, problem
            )
    low = pop.min_pairs if pop.min_pairs is not None else n
    if pop.max_pairs is not None and low is not None and pop.max_pairs < low:
        what = (
            "strategy.population.min_pairs" if pop.min_pairs is not None else "strategy.num_pairs"
        )
        allowed = f"an integer >= {what} = {low}, or null"
        raise ConfigError(source, "strategy.population.max_pairs", pop.max_pairs, allowed)
    if pop.env_steps is not None and k is not None and low is not None and k > low:
        what = (
            "strategy.population.min_pairs" if pop.min_pairs is not None else "strategy.num_pairs"
        )
        allowed = f"an integer <= {what} = {low} (the smallest population), or null"
        raise ConfigError(source, "strategy.top_k", k, allowed)
    if isinstance(obj, GymObjectiveConfig):
        cut = obj.episode_cutoff
        limit = obj.max_episode_steps
        if cut.initial is not None and limit is not None and cut.initial > limit:
            allowed = f"an integer in [1, objective.max_episode_steps = {limit}], or null"
            raise ConfigError(source, "objective.episode_cutoff.initial", cut.initial, allowed)
    if isinstance(obj, FunctionObjectiveConfig):
        if obj.name == "himmelblau" and obj.dim != 2:
            raise ConfigError(source, "objective.dim", obj.dim, "2 (himmelblau is 2-D)")
        if obj.name == "rosenbrock" and obj.dim < 2:
            raise ConfigError(source, "objective.dim", obj.dim, "an integer >= 2 for rosenbrock")


def _parse_objective(data: Any, source: str) -> ObjectiveConfig:
    data = _mapping(data, "objective", source)
    kind = _parse_value(
        Literal["gym", "function", "python"], data.get("kind", "gym"), "objective.kind", source, {}
    )
    cls = _OBJECTIVES[kind]
    rest = {k: v for k, v in data.items() if k != "kind"}
    if cls is PythonObjectiveConfig:
        _check_str_keys(rest, "objective", source)
        if "target" not in rest:
            raise _missing("objective.target", _TARGET[1], source)
        target = _parse_value(
            str, rest.pop("target"), "objective.target", source, {"pattern": _TARGET}
        )
        _check_free_form(rest, "objective", source)
        return PythonObjectiveConfig(target=target, options=rest)
    if cls is FunctionObjectiveConfig and "dim" not in rest and rest.get("name") == "himmelblau":
        rest["dim"] = 2
    what = f"key for objective kind {kind!r}:"
    return _parse_section(cls, rest, "objective", source, extra_keys=("kind",), what=what)


def _parse_optimizer(data: Any, source: str) -> OptimizerConfig:
    data = _mapping(data, "optimizer", source)
    kind_field = next(f for f in dataclasses.fields(OptimizerConfig) if f.name == "kind")
    kind = _parse_value(
        str, data.get("kind", kind_field.default), "optimizer.kind", source, kind_field.metadata
    )
    cls = OPTIMIZERS[kind]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    rest = {k: v for k, v in data.items() if k != "kind"}
    _check_keys(
        rest, names, "optimizer", source, extra=("kind",), what=f"option for optimizer {kind!r}:"
    )
    options = {f.name: f.default for f in dataclasses.fields(cls)}
    for name, value in rest.items():
        key = f"optimizer.{name}"
        options[name] = _parse_value(
            hints[name], value, key, source, _OPTIMIZER_BOUNDS.get(name, {})
        )
    return OptimizerConfig(kind=kind, options=options)


def _mapping(data: Any, path: str, source: str) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(source, path, data, "a mapping (a section of key: value lines)")
    return data


def _missing(key: str, allowed: str, source: str) -> ConfigError:
    return ConfigError(source, key, None, allowed, f"{key} is required; expected {allowed}")


def _check_str_keys(data: Mapping, path: str, source: str) -> None:
    for k in data:
        if not isinstance(k, str):
            key = f"{path}.{k}" if path else str(k)
            raise ConfigError(
                source,
                key,
                k,
                "string keys",
                f"key {_show(k)} in {path or 'the top level'} is not a string",
            )


def _check_keys(
    data: Mapping,
    names: Sequence[str],
    path: str,
    source: str,
    extra: Sequence[str] = (),
    what: str = "key",
) -> None:
    _check_str_keys(data, path, source)
    allowed = [*extra, *names]
    for k in data:
        if k in allowed:
            continue
        key = f"{path}.{k}" if path else k
        close = difflib.get_close_matches(k, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = f"in {path}" if path else "at the top level"
        problem = f"unknown {what} {key!r}{hint}; allowed {where}: {', '.join(allowed)}"
        raise ConfigError(source, key, data[k], ", ".join(allowed), problem)


_HINTS: dict[type, dict[str, Any]] = {}


def _parse_section(
    cls: type,
    data: Any,
    path: str,
    source: str,
    extra_keys: Sequence[str] = (),
    what: str = "key",
) -> Any:
    data = _mapping(data, path, source)
    fields = dataclasses.fields(cls)
    _check_keys(data, [f.name for f in fields], path, source, extra=extra_keys, what=what)
    hints = _HINTS.get(cls) or _HINTS.setdefault(cls, typing.get_type_hints(cls))
    kwargs = {}
    for f in fields:
        key = f"{path}.{f.name}"
        if f.name in data:
            kwargs[f.name] = _parse_value(hints[f.name], data[f.name], key, source, f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _missing(key, _describe(hints[f.name], f.metadata), source)
    return cls(**kwargs)


def _parse_value(tp: Any, value: Any, key: str, source: str, meta: Mapping[str, Any]) -> Any:
    """``value`` checked against type ``tp`` and the constraints ``meta``, converted."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else typing.Union[tuple(inner)]  # noqa: UP007
        try:
            return _parse_value(tp, value, key, source, meta)
        except ConfigError as e:
            if e.key != key:
                raise
            raise ConfigError(source, key, value, e.allowed + " or null") from None

    def bad() -> ConfigError:
        return ConfigError(source, key, value, _describe(tp, meta))

    if dataclasses.is_dataclass(tp):
        return _parse_section(tp, value, key, source)
    if origin is Literal or "choices" in meta:
        choices = args if origin is Literal else meta["choices"]
        if isinstance(value, str) and value in choices:
            return value
        close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        allowed = _describe(tp, meta)
        raise ConfigError(
            source,
            key,
            value,
            allowed,
            f"{key} = {_show(value)} is invalid; expected {allowed}{hint}",
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if tp is int:
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or not _in_bounds(value, meta):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(value) or not _in_bounds(value, meta):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        if "pattern" in meta and not re.fullmatch(meta["pattern"][0], value):
            raise bad()
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        return tuple(
            _parse_value(args[0], v, f"{key}[{i}]", source, meta) for i, v in enumerate(value)
        )
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad()
        _check_str_keys(value, key, source)
        _check_free_form(value, key, source)
        return dict(value)
    raise TypeError(f"config field {key} has an unsupported type {tp!r}")  # a bug in this module


def _in_bounds(x: float, meta: Mapping[str, Any]) -> bool:
    return (
        ("ge" not in meta or x >= meta["ge"])
        and ("gt" not in meta or x > meta["gt"])
        and ("le" not in meta or x <= meta["le"])
        and ("lt" not in meta or x < meta["lt"])
    )


def _bounds_text(meta: Mapping[str, Any]) -> str:
    """`` >= 1``, `` in (0, 1]`` or ``""``."""
    lo = next(((k, meta[k]) for k in ("ge", "gt") if k in meta), None)
    hi = next(((k, meta[k]) for k in ("le", "lt") if k in meta), None)

    def num(x: float) -> str:
        return "2**63" if x == 2**63 else f"{x:,}" if isinstance(x, int) and x >= 10_000 else str(x)

    if lo and hi:
        left, right = "[" if lo[0] == "ge" else "(", "]" if hi[0] == "le" else ")"
        return f" in {left}{num(lo[1])}, {num(hi[1])}{right}"
    ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    return "".join(f" {ops[b[0]]} {num(b[1])}" for b in (lo, hi) if b)


def _describe(tp: Any, meta: Mapping[str, Any]) -> str:
    """What ``tp`` with ``meta`` accepts, in words."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a, meta) for a in inner) + " or null"
    if origin is Literal or "choices" in meta:
        choices = args if origin is Literal else meta["choices"]
        return "one of " + ", ".join(repr(c) for c in choices)
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer" + _bounds_text(meta)
    if tp is float:
        return "a finite number" + _bounds_text(meta)
    if tp is str:
        return meta["pattern"][1] if "pattern" in meta else "a string"
    if origin is tuple:
        return "a list of integers" + _bounds_text(meta)  # the only tuple fields hold ints
    if origin is dict:
        return "a mapping with string keys"
    return str(tp)
