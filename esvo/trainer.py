"""The training loop: ask -> evaluate -> tell, with metrics, evaluations and checkpoints.

One generation (style.md §8.3): ``ask`` names the population by ids, the evaluator scores the
pairs (serially or on Ray workers; the trainer sees only the ``Evaluator`` protocol), ``tell``
updates the search distribution, the workers' observation statistics are merged in pair order.
With ``strategy.population`` the pairs are scored in waves until a step budget is used, and with
``objective.episode_cutoff`` training episodes run to a cap that grows with the run
(``esvo.budget``: both are rules of the returned counts only).
Every ``evaluation.every`` generations the mean itself is scored; every ``checkpoint.every``
generations the ``TrainState`` is saved. All randomness comes from ``(seed, generation, pair
index)``, so the run is a pure function of the config: resuming from any checkpoint, with any
evaluator or number of workers, gives the same parameters and metrics bit for bit (except
times).

The run directory (design.md §6) holds ``config.yaml``, ``metrics.jsonl``,
``checkpoints/gen_NNNNNN/`` and, for gym objectives, ``policy/{best,latest}.{npz,json}``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from esvo.budget import EpisodeCutoff, StepBudget
from esvo.checkpoint import (
    META_FILE,
    CheckpointError,
    DiskFullError,
    best_generation,
    latest_checkpoint,
    latest_valid_path,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    write_text_atomic,
)
from esvo.config import Config, ConfigError, dump_config, load_config
from esvo.core.adaptation import AdaptationSampling
from esvo.core.distributions import SigmaBounds, make_distribution
from esvo.core.mixing import ImportanceMixing
from esvo.core.noise import (
    TABLE_MIN_DIM,
    Noise,
    default_table_size,
    make_noise,
    perturbation_ids,
)
from esvo.core.running_stat import RunningStat
from esvo.core.strategy import Ask, Restarts, SearchState, Strategy, default_num_pairs
from esvo.loggers import (
    JsonlLogger,
    Logger,
    ProgressLogger,
    close_loggers,
    make_tensorboard_logger,
    truncate_jsonl,
)
from esvo.objectives.base import Objective, make_objective
from esvo.parallel import Evaluator, SerialEvaluator
from esvo.protocol import GenerationSpec, ObsStats, Results
from esvo.trace import mark

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
POLICY_DIR = "policy"
# Metrics that depend on the machine's speed; everything else is a function of (config, seed).
TIME_FIELDS = frozenset({"wall_s", "gen_time_s", "steps_per_s", "gens_per_s"})
# Metrics that depend on the evaluator (transport), not on the trajectory.
EVALUATOR_FIELDS = frozenset({"bytes_in", "bytes_out", "num_tasks"})


class TrainingError(RuntimeError):
    """The run cannot continue (failed rollouts, evaluator gave up, non-finite update)."""


@dataclass(frozen=True)
class TrainResult:
    generation: int  # completed generations
    reason: str  # generations | target | env_steps | wall_time | interrupted
    best_eval_return: float | None
    exit_code: int
    run_dir: Path


# ---------------------------------------------------------------------------- state
@dataclass(frozen=True)
class Counters:
    """Cumulative counts; evaluation steps are counted apart from training steps."""

    env_steps: int = 0
    episodes: int = 0
    eval_env_steps: int = 0
    eval_episodes: int = 0
    wall_s: float = 0.0
    evaluations: int = 0  # candidates evaluated (importance mixing reuses the others)


@dataclass(frozen=True)
class TrainState:
    """Everything a checkpoint holds: the search state, the observation normalizer, the
    counters and the best evaluation so far (with the policy that achieved it)."""

    search: SearchState
    obs: RunningStat | None
    counters: Counters = field(default_factory=Counters)
    best_eval_return: float | None = None
    best_theta: np.ndarray | None = None  # the mean at the best evaluation
    best_obs: RunningStat | None = None  # the normalizer at the best evaluation
    episode_cap: int | None = None  # the adaptive cutoff's cap of the next generation

    @property
    def generation(self) -> int:
        return self.search.generation

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = self.search.to_arrays()
        if self.obs is not None:
            out.update(self.obs.to_arrays("obs/"))
        for name, value in dataclasses.asdict(self.counters).items():
            out[f"counters/{name}"] = np.asarray(value)
        if self.best_eval_return is not None:
            out["best/eval_return"] = np.asarray(self.best_eval_return, dtype=np.float64)
            out["best/theta"] = self.best_theta
            if self.best_obs is not None:
                out.update(self.best_obs.to_arrays("best/obs/"))
        if self.episode_cap is not None:
            out["cutoff/episode_cap"] = np.asarray(self.episode_cap, dtype=np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> TrainState:
        counters = Counters(
            env_steps=int(arrays["counters/env_steps"]),
            episodes=int(arrays["counters/episodes"]),
            eval_env_steps=int(arrays["counters/eval_env_steps"]),
            eval_episodes=int(arrays["counters/eval_episodes"]),
            wall_s=float(arrays["counters/wall_s"]),
            evaluations=int(arrays.get("counters/evaluations", 0)),
        )
        has_best = "best/eval_return" in arrays
        return cls(
            search=SearchState.from_arrays(arrays),
            obs=RunningStat.from_arrays(arrays, "obs/") if "obs/count" in arrays else None,
            counters=counters,
            best_eval_return=float(arrays["best/eval_return"]) if has_best else None,
            best_theta=np.array(arrays["best/theta"]) if has_best else None,
            best_obs=RunningStat.from_arrays(arrays, "best/obs/")
            if "best/obs/count" in arrays
            else None,
            episode_cap=int(arrays["cutoff/episode_cap"])
            if "cutoff/episode_cap" in arrays
            else None,
        )


# ---------------------------------------------------------------------------- wiring
@dataclass(frozen=True)
class _Run:
    """The fixed machinery of a run (built once; the changing part is ``TrainState``)."""

    cfg: Config
    run_dir: Path
    objective: Objective
    strategy: Strategy
    evaluator: Evaluator
    metrics: JsonlLogger
    loggers: tuple[Logger, ...]
    signals: _SignalGuard
    obs_floor: float
    warned: set[str] = field(default_factory=set)  # warnings already printed (once per run)
    budget: StepBudget | None = None  # strategy.population
    cutoff: EpisodeCutoff | None = None  # objective.episode_cutoff

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR


def noise_dim(cfg: Config, num_params: int) -> int:
    """Entries of noise per perturbation: ``d``, or ``d + rank`` for ``lowrank``."""
    s = cfg.strategy
    return make_distribution(s.distribution, s.rank).noise_dim(num_params)


def make_noise_source(cfg: Config, num_params: int) -> Noise:
    """The noise of ``cfg.strategy`` (``auto``: by dimension, see ``make_noise``)."""
    s = cfg.strategy
    dim = noise_dim(cfg, num_params)
    return make_noise(s.noise, dim, seed=s.noise_seed, size=s.noise_table_size)


def make_strategy(cfg: Config, objective: Objective) -> Strategy:
    s, r = cfg.strategy, cfg.strategy.restarts
    restarts = None
    if r.max > 0:
        restarts = Restarts(
            r.max,
            r.popsize_factor,
            r.low,
            r.high,
            r.sigma_tol,
            r.stall_generations,
            r.stall_tol,
            r.max_condition,
        )
    num_pairs = s.num_pairs
    if s.population.env_steps is not None and s.population.min_pairs is not None:
        num_pairs = s.population.min_pairs  # the smallest population (top_k is checked on it)
    a = s.adaptation_sampling
    adaptation = AdaptationSampling(a.c, a.target) if a.enabled else None
    return Strategy(
        objective.num_params,
        maximize=objective.maximize if s.maximize is None else s.maximize,
        distribution=s.distribution,
        num_pairs=num_pairs,
        sigma_init=s.sigma_init,
        sigma_lr=s.sigma_lr,
        sigma_bounds=SigmaBounds(s.sigma_min, s.sigma_max, s.sigma_max_change),
        rank=s.rank,
        cov_lr=s.cov_lr,
        shaping=s.shaping,
        top_k=s.top_k,
        optimizer=cfg.optimizer.build(),
        weight_decay=s.weight_decay,
        restarts=restarts,
        importance_mixing=ImportanceMixing(s.importance_mixing.min_refresh)
        if s.importance_mixing.enabled
        else None,
        adaptation_sampling=adaptation,
        seed=cfg.run.seed,
        noise=make_noise_source(cfg, objective.num_params),
    )


def make_budget(cfg: Config, strategy: Strategy) -> StepBudget | None:
    """``strategy.population`` resolved (``min_pairs``: the strategy's population; ``max_pairs``:
    8 of those); None without ``env_steps``."""
    p = cfg.strategy.population
    if p.env_steps is None:
        return None
    low = strategy.num_pairs
    return StepBudget(p.env_steps, low, 8 * low if p.max_pairs is None else p.max_pairs)


def make_cutoff(cfg: Config, objective: Objective) -> EpisodeCutoff | None:
    """``objective.episode_cutoff`` with the environment's own limit; None when off."""
    c = getattr(cfg.objective, "episode_cutoff", None)
    if c is None or c.initial is None:
        return None
    return EpisodeCutoff(
        c.initial, c.growth, c.threshold, getattr(objective, "episode_limit", None)
    )


def make_evaluator(cfg: Config, noise: Noise, batch_pairs: int = 1) -> Evaluator:
    """``SerialEvaluator`` or ``RayEvaluator`` per ``cfg.parallel`` (Ray imported only here);
    ``batch_pairs``: the objective's, the smallest chunk worth sending."""
    spec = cfg.objective.to_spec()
    p = cfg.parallel
    if p.backend == "serial":
        return SerialEvaluator(spec, noise)
    from esvo.parallel.ray_backend import RayEvaluator

    mark("ray_import")
    return RayEvaluator(
        spec,
        noise,  # a NoiseTable travels once through the object store instead of being rebuilt
        num_workers=p.num_workers,
        address=p.address,
        chunks_per_worker=p.chunks_per_worker,
        min_chunk_pairs=batch_pairs,
        max_consecutive_failures=p.max_consecutive_failures,
        include_dashboard=p.dashboard,
    )


def default_loggers(cfg: Config, run_dir: Path) -> list[Logger]:
    """Progress line per ``logging.progress``, plus TensorBoard if asked and installed."""
    out: list[Logger] = []
    if cfg.logging.progress != "none":
        r = cfg.run
        out.append(
            ProgressLogger(
                cfg.logging.progress,
                generations=r.generations,
                max_env_steps=r.max_env_steps,
                max_wall_s=r.max_wall_s,
            )
        )
    if cfg.logging.tensorboard:
        tb = make_tensorboard_logger(run_dir / "tensorboard")
        if tb is not None:
            out.append(tb)
    return out


def _machine_memory() -> int:
    """Physical memory of this machine in bytes (0 if unknown)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n < 2**50 else f"{n / 2**40:,.0f} TiB"


def _params_key(cfg: Config) -> str:
    """The config key that sets the parameter count, for messages."""
    obj = cfg.objective
    if obj.kind == "function":
        return "objective.dim"
    if obj.kind == "gym":
        return "objective.policy.hidden_sizes" if obj.policy.kind == "mlp" else "objective.env_id"
    return "objective.target"


def check_config(
    cfg: Config, num_params: int, source: str = "<config>", episode_limit: int | None = None
) -> None:
    """What ``train`` will need, checked before anything is created: the distribution fits
    the parameter count (``full`` up to ``strategy.max_full_dim``, ``lowrank``'s rank below
    d), the noise table holds a slice of the noise dimension, and the driver's memory (the
    search state and covariance, the noise table and its derived arrays, the population's
    per-pair arrays, the candidates workers on this machine materialize) fits in this machine.
    Approximate and deliberately generous: it exists to turn absurd sizes (``num_pairs: 1e12``,
    a 10^12-parameter MLP) into a clear error. With the budgeted population, the smallest
    population is at most ``max_pairs`` and sizes memory by ``max_pairs``; the adaptive
    cutoff's first cap is at most ``episode_limit``, the environment's own.

    Raises:
        ConfigError: naming the key that is too large, its value and what is allowed.
    """
    s, d = cfg.strategy, int(num_params)
    if s.distribution == "full" and d > s.max_full_dim:
        allowed = f"'lowrank' or 'separable' for d = {d:,} (or raise strategy.max_full_dim)"
        problem = (
            f"strategy.distribution = 'full' needs d^2 memory and d^3 time per generation; "
            f"d = {d:,} parameters is above strategy.max_full_dim = {s.max_full_dim:,}: use "
            "'lowrank' (linear in d) or 'separable', or raise strategy.max_full_dim"
        )
        raise ConfigError(source, "strategy.distribution", s.distribution, allowed, problem)
    if s.distribution == "lowrank" and s.rank >= d:
        allowed = f"an integer in [1, d) = [1, {d:,})"
        raise ConfigError(source, "strategy.rank", s.rank, allowed)
    nd = noise_dim(cfg, d)
    n = s.num_pairs or default_num_pairs(d, s.distribution)
    pop = s.population
    if pop.env_steps is not None:
        low = pop.min_pairs or n
        if pop.max_pairs is not None and pop.max_pairs < low:
            allowed = f"an integer >= the smallest population, {low} pairs, or null"
            raise ConfigError(source, "strategy.population.max_pairs", pop.max_pairs, allowed)
        if s.top_k is not None and s.top_k > low:
            allowed = f"an integer <= the smallest population {low}, or null"
            raise ConfigError(source, "strategy.top_k", s.top_k, allowed)
        n = pop.max_pairs or 8 * low
    cut = getattr(cfg.objective, "episode_cutoff", None)
    initial = None if cut is None else cut.initial
    if initial is not None and episode_limit is not None and initial > episode_limit:
        allowed = f"an integer in [1, {episode_limit}] (the environment's episode limit)"
        raise ConfigError(source, "objective.episode_cutoff.initial", initial, allowed)
    if s.restarts.max:  # the population grows with every restart
        n = math.ceil(n * s.restarts.popsize_factor**s.restarts.max)
    table_kind = s.noise == "table" or (s.noise == "auto" and nd >= TABLE_MIN_DIM)
    size = (s.noise_table_size or default_table_size(nd)) if table_kind else 0
    workers = (
        1 if cfg.parallel.backend == "serial" else cfg.parallel.num_workers or (os.cpu_count() or 1)
    )
    chunk = -(-n // (workers * cfg.parallel.chunks_per_worker))
    shape = {"full": 8 * d * d * 6, "lowrank": 8 * d * s.rank * 8}.get(s.distribution, 0)
    parts = {  # bytes, by the key that sets them
        _params_key(cfg): 16 * 8 * d + shape + min(workers, n) * 2 * chunk * 4 * d,
        "strategy.noise_table_size": 2 * 4 * size,  # the table, and derived arrays <= its size
        "strategy.num_pairs": 512 * n,
    }
    total, memory = sum(parts.values()), _machine_memory()
    if memory and total > memory:
        key = max(parts, key=lambda k: parts[k])
        value = {
            "objective.dim": d,
            "strategy.noise_table_size": size,
            "strategy.num_pairs": n,
        }.get(key, d)
        what = {"strategy.noise_table_size": "noise table entries", "strategy.num_pairs": "pairs"}
        problem = (
            f"{key}: {value:,} {what.get(key, 'parameters')} would need about {_gib(total)} of "
            f"memory on the driver; this machine has {_gib(memory)}"
        )
        raise ConfigError(source, key, value, f"a size that fits in {_gib(memory)}", problem)
    if table_kind and size < nd:  # a slice of the noise dimension must fit in the table
        key = "strategy.noise_table_size"
        allowed = f"an integer >= the noise dimension {nd:,} (or noise: generator)"
        if s.noise_table_size is None:
            problem = (
                f"{_params_key(cfg)}: d = {d:,} parameters exceed the largest default noise "
                f"table ({size:,} entries); set {key} >= {nd:,} or strategy.noise: generator"
            )
            raise ConfigError(source, _params_key(cfg), d, allowed, problem)
        raise ConfigError(source, key, s.noise_table_size, allowed)


def initial_state(cfg: Config, objective: Objective, strategy: Strategy) -> TrainState:
    search = strategy.init(objective.initial_params(cfg.run.seed))
    obs = RunningStat.zeros(objective.obs_dim) if _uses_obs_norm(cfg, objective) else None
    cut = getattr(cfg.objective, "episode_cutoff", None)
    return TrainState(search, obs, episode_cap=None if cut is None else cut.initial)


def _uses_obs_norm(cfg: Config, objective: Objective) -> bool:
    return objective.obs_dim is not None and bool(getattr(cfg.objective, "obs_norm", True))


# ---------------------------------------------------------------------------- one generation
class _GenerationFailed(Exception):
    """A generation that cannot be used; the last good state is checkpointed."""


class _Abort(BaseException):
    """A second SIGINT/SIGTERM: abandon the current generation."""


def _spec(run: _Run, state: TrainState, episode_cap: int | None = None) -> GenerationSpec:
    obs_mean = obs_std = None
    if state.obs is not None:
        obs_mean, obs_std = state.obs.mean, state.obs.std(run.obs_floor)
    s = state.search
    return GenerationSpec(
        s.generation,
        s.mean,
        s.sigma,
        run.cfg.run.seed,
        obs_mean,
        obs_std,
        search=s.dist,
        episode_cap=episode_cap,
    )


def _merge_obs(obs: RunningStat | None, stats: ObsStats | None) -> RunningStat | None:
    """Sum the per-pair rows in pair order, then merge (independent of the chunking)."""
    if obs is None or stats is None or len(stats.count) == 0:
        return obs
    return obs.merge_sums(
        float(np.sum(stats.count)), stats.sum.sum(axis=0), stats.sumsq.sum(axis=0)
    )


def _say(message: str) -> None:
    """One line on the console (stderr), where the progress line goes."""
    print(f"esvo: {message}", file=sys.stderr, flush=True)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1].strip() if lines else "no traceback"


def _check_failures(
    run: _Run, generation: int, results: Results, members: np.ndarray | None = None
) -> None:
    """A candidate failed if a rollout raised or its fitness is not finite (NaN rewards, a
    diverging simulator): too many stop the run, whatever the reason. Only the ``members``
    asked for count (importance mixing)."""
    fitness = np.asarray(results.fitness)
    asked = np.ones(fitness.shape, bool) if members is None else np.asarray(members, bool)
    bad, total = int((~np.isfinite(fitness) & asked).sum()), int(asked.sum())
    if bad / max(total, 1) > run.cfg.run.max_failure_rate:
        if results.errors:
            first = _last_line(results.errors[0])
            why = f"{results.failures} rollouts raised; first error: {first}"
        else:
            why = "no rollout raised: the objective returned NaN or inf (e.g. NaN rewards)"
        raise _GenerationFailed(
            f"generation {generation}: {bad}/{total} candidates failed "
            f"(> run.max_failure_rate {run.cfg.run.max_failure_rate}); {why}"
        )


def _evaluator_stats(run: _Run) -> dict[str, Any]:
    return dict(getattr(run.evaluator, "last_stats", None) or {})


def _evaluate_waves(
    run: _Run, spec: GenerationSpec, budget: StepBudget
) -> tuple[Ask, Results, int, dict[str, Any]]:
    """Score pairs ``0, 1, ...`` in waves until ``budget`` says the generation is complete
    (``esvo.budget``): the ask of all of them, their results in pair order, the number of
    waves, the evaluator's transport stats summed over the waves."""
    gen, seed = spec.generation, run.strategy.seed
    ids, parts, stats = [], [], {}
    pairs = steps = 0
    while size := budget.next_wave(pairs, steps):
        wave = perturbation_ids(seed, gen, np.arange(pairs, pairs + size))
        if pairs == 0:
            part = run.evaluator.evaluate(spec, wave)
        else:  # pair indices continue: they seed the pairs' environments
            part = run.evaluator.evaluate(spec, wave, start=pairs)
        for key, value in _evaluator_stats(run).items():
            if key in EVALUATOR_FIELDS:
                stats[key] = stats.get(key, 0) + value
        ids.append(wave)
        parts.append(part)
        pairs, steps = pairs + size, steps + int(part.steps.sum())
    return Ask(gen, np.concatenate(ids)), Results.concat(parts), len(parts), stats


def train_generation(run: _Run, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
    """ask -> evaluate (in waves with a step budget) -> tell -> merge observation statistics
    -> grow the episode cap if due."""
    gen = state.generation
    spec = _spec(run, state, state.episode_cap if run.cutoff is not None else None)
    try:
        if run.budget is None:
            ask = run.strategy.ask(state.search)
            if ask.members is None:
                results = run.evaluator.evaluate(spec, ask.ids)
            else:  # importance mixing: only the asked members
                results = run.evaluator.evaluate(spec, ask.ids, members=ask.members)
            waves = 1
            transport = {k: v for k, v in _evaluator_stats(run).items() if k in EVALUATOR_FIELDS}
        else:
            ask, results, waves, transport = _evaluate_waves(run, spec, run.budget)
    except Exception as e:
        raise _GenerationFailed(f"generation {gen}: evaluator failed: {e}") from e
    _check_failures(run, gen, results, ask.members)
    try:
        search, metrics = run.strategy.tell(state.search, ask, results.fitness)
    except FloatingPointError as e:
        raise _GenerationFailed(str(e)) from e
    steps = int(results.steps.sum())
    c = state.counters
    counters = dataclasses.replace(
        c,
        env_steps=c.env_steps + steps,
        episodes=c.episodes + int(results.episodes),
        evaluations=c.evaluations + ask.evaluations,
    )
    metrics["failures"] = int(results.failures)
    metrics["gen_env_steps"] = steps
    metrics["waves"] = waves
    if results.collapsed is not None:
        metrics["collapsed_pairs"] = int(np.sum(results.collapsed))
    metrics.update(transport)
    cap = state.episode_cap
    if run.cutoff is not None and cap is not None:
        hits = 0 if results.capped is None else int(np.sum(results.capped))
        metrics["episode_cap"] = cap
        metrics["capped_episodes"] = hits
        metrics["capped_fraction"] = hits / results.episodes if results.episodes else 0.0
        cap = run.cutoff.next_cap(cap, hits, int(results.episodes))
    new = dataclasses.replace(
        state,
        search=search,
        obs=_merge_obs(state.obs, results.obs_stats),
        counters=counters,
        episode_cap=cap,
    )
    return new, metrics


def _better(run: _Run, a: float, b: float | None) -> bool:
    if b is None:
        return bool(np.isfinite(a))
    return a > b if run.strategy.maximize else a < b


def evaluate_mean(run: _Run, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
    """Score the mean itself (steps counted apart); keep and export the best policy."""
    gen = state.generation - 1
    try:
        returns, steps, *rest = run.evaluator.evaluate_mean(
            _spec(run, state), run.cfg.evaluation.episodes
        )
    except Exception as e:
        raise _GenerationFailed(f"generation {gen}: evaluation of the mean failed: {e}") from e
    returns = np.asarray(returns, dtype=np.float64)
    value = float(returns.mean())
    bad = int((~np.isfinite(returns)).sum())
    if bad:
        errors = rest[0] if rest else ()
        why = (
            f"first error: {_last_line(errors[0])}"
            if errors
            else "the objective returned NaN or inf"
        )
        _say(
            f"warning: generation {gen}: evaluating the mean failed in {bad} of "
            f"{returns.size} episodes (eval_return_mean is null); {why}"
        )
    c = state.counters
    state = dataclasses.replace(
        state,
        counters=dataclasses.replace(
            c,
            eval_env_steps=c.eval_env_steps + int(steps),
            eval_episodes=c.eval_episodes + len(returns),
        ),
    )
    if _better(run, value, state.best_eval_return):
        state = dataclasses.replace(
            state, best_eval_return=value, best_theta=state.search.mean.copy(), best_obs=state.obs
        )
        _export_policy(run, "best", state.best_theta, state.best_obs)
    _export_policy(run, "latest", state.search.mean, state.obs)
    metrics = {"eval_return_mean": value, "eval_return_std": float(returns.std())}
    if state.best_eval_return is not None:
        metrics["best_eval_return"] = state.best_eval_return
    return state, metrics


def _export_policy(run: _Run, name: str, theta: np.ndarray, obs: RunningStat | None) -> None:
    if run.cfg.objective.kind != "gym":
        return
    from esvo.objectives.gym import export_policy

    obs_mean, obs_std = (None, None) if obs is None else (obs.mean, obs.std(run.obs_floor))
    export_policy(run.run_dir / POLICY_DIR, theta, run.objective, obs_mean, obs_std, name=name)


def stop_reason(cfg: Config, state: TrainState, maximize: bool) -> str | None:
    """The first limit reached, if any."""
    r, c = cfg.run, state.counters
    if r.generations is not None and state.generation >= r.generations:
        return "generations"
    if r.max_env_steps is not None and c.env_steps >= r.max_env_steps:
        return "env_steps"
    if r.max_wall_s is not None and c.wall_s >= r.max_wall_s:
        return "wall_time"
    best = state.best_eval_return
    if (
        r.target is not None
        and best is not None
        and (best - r.target) * (1 if maximize else -1) >= 0
    ):
        return "target"
    return None


def save(run: _Run, state: TrainState, eval_return: float | None = None) -> Path:
    """Checkpoint ``state`` (metrics synced first), then prune to the last N plus the best."""
    run.metrics.sync()
    meta = {
        "counters": dataclasses.asdict(state.counters),
        "best_eval_return": state.best_eval_return,
        "eval_return": eval_return,
        "config": run.cfg.to_dict(),
    }
    path = save_checkpoint(run.checkpoints, state.generation, state.to_arrays(), meta)
    best = best_generation(run.checkpoints, run.strategy.maximize)
    prune_checkpoints(run.checkpoints, run.cfg.checkpoint.keep, () if best is None else (best,))
    return path


# ---------------------------------------------------------------------------- the loop
def _log(run: _Run, generation: int, metrics: dict[str, Any]) -> None:
    run.metrics(generation, metrics)
    for log in run.loggers:
        log(generation, metrics)


def _add_wall(state: TrainState, seconds: float) -> TrainState:
    c = state.counters
    return dataclasses.replace(state, counters=dataclasses.replace(c, wall_s=c.wall_s + seconds))


def _step(run: _Run, state: TrainState) -> tuple[TrainState, dict[str, Any], str | None]:
    """One generation, its evaluation if due, its metrics line; returns the stop reason."""
    t0 = time.perf_counter()
    gen = state.generation
    state, metrics = train_generation(run, state)
    state = _add_wall(state, time.perf_counter() - t0)
    reason = stop_reason(run.cfg, state, run.strategy.maximize) or _collapse(run, gen, metrics)
    every = run.cfg.evaluation.every
    if reason is not None or (every > 0 and state.generation % every == 0):
        t1 = time.perf_counter()
        state, eval_metrics = evaluate_mean(run, state)
        metrics.update(eval_metrics)
        state = _add_wall(state, time.perf_counter() - t1)
        reason = reason or stop_reason(run.cfg, state, run.strategy.maximize)
    dt = time.perf_counter() - t0
    c = state.counters
    metrics.update(
        env_steps=c.env_steps,
        eval_env_steps=c.eval_env_steps,
        episodes=c.episodes,
        evaluations=c.evaluations,
        wall_s=c.wall_s,
        gen_time_s=dt,
        steps_per_s=metrics["gen_env_steps"] / dt if dt > 0 else 0.0,
        gens_per_s=1 / dt if dt > 0 else 0.0,
    )
    _log(run, gen, metrics)
    return state, metrics, reason


def _collapse(run: _Run, generation: int, metrics: Mapping[str, Any]) -> str | None:
    """Warn once when pairs lose their two candidates to rounding; "collapsed" (a stop
    reason) when every pair has: the mean can no longer move."""
    collapsed, pairs = metrics.get("collapsed_pairs", 0), metrics["num_pairs"]
    if collapsed == pairs:
        _say(
            f"generation {generation}: every pair's two candidates are the same point in the "
            "objective's precision (sigma * z is below the resolution of the mean, float32 "
            "for policies): the search cannot move; stopping (raise strategy.sigma_min)"
        )
        return "collapsed"
    if collapsed and "collapsed" not in run.warned:
        run.warned.add("collapsed")
        _say(
            f"warning: generation {generation}: {collapsed} of {pairs} pairs have identical "
            "candidates (sigma * z below the resolution of the mean); they carry no signal "
            "for the mean (collapsed_pairs in metrics.jsonl)"
        )
    return None


def _loop(run: _Run, state: TrainState) -> tuple[TrainState, str]:
    start = state.generation
    try:
        reason = stop_reason(run.cfg, state, run.strategy.maximize)
        while reason is None and run.signals.received is None:
            try:
                new, metrics, reason = _step(run, state)
            except _Abort:
                break
            except _GenerationFailed as e:
                path = save(run, state)
                raise TrainingError(f"{e}; last good state saved to {path}") from e
            if state.generation == start:
                mark("first_generation")
            state = new
            if reason is not None or state.generation % run.cfg.checkpoint.every == 0:
                save(run, state, metrics.get("eval_return_mean"))
        if reason is None:
            reason = "interrupted"
            save(run, state)
    except DiskFullError as e:
        last = latest_valid_path(run.checkpoints)
        raise TrainingError(
            f"{e}; last good checkpoint: {last or 'none'}; free some space, then continue "
            f"with: esvo resume {run.run_dir}"
        ) from e
    return state, reason


class _SignalGuard:
    """SIGINT/SIGTERM: the first finishes the generation, a second abandons it; the previous
    handlers are restored on exit. Inactive outside the main thread."""

    def __init__(self, start_up: bool = False) -> None:
        self.received: int | None = None
        self.start_up = start_up  # before the first generation: nothing to finish
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise _Abort
        self.received = signum
        then = (
            "stopping once start-up is done"
            if self.start_up
            else "finishing the current generation, then checkpointing (send it again to "
            "abandon the generation)"
        )
        print(
            f"\nesvo: {signal.Signals(signum).name} received: {then}", file=sys.stderr, flush=True
        )

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            # None: the previous handler was not Python's (e.g. Ray's C++ one, gone with Ray)
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()


def _execute(
    cfg: Config,
    run_dir: Path,
    state: TrainState | None,
    evaluator: Evaluator | None,
    loggers: Sequence[Logger] | None,
) -> TrainResult:
    objective = make_objective(**cfg.objective.to_spec())
    check_config(cfg, objective.num_params, episode_limit=getattr(objective, "episode_limit", None))
    strategy = make_strategy(cfg, objective)
    cutoff = make_cutoff(cfg, objective)
    if state is None:
        state = initial_state(cfg, objective, strategy)
    elif state.search.mean.shape != (strategy.dim,):
        raise TrainingError(
            f"checkpoint has {state.search.mean.size} parameters, the config's objective "
            f"{strategy.dim}"
        )
    if cutoff is not None and state.episode_cap is None:  # a checkpoint from before the cutoff
        state = dataclasses.replace(state, episode_cap=cutoff.initial)
    mark("build")
    own_evaluator = evaluator is None
    extra = default_loggers(cfg, run_dir) if loggers is None else list(loggers)
    metrics = JsonlLogger(run_dir / METRICS_FILE)
    if own_evaluator:
        # ray.init replaces our SIGTERM handler with one that exits with status 15 at once:
        # a signal during start-up is recorded (ours) or arrives as SystemExit (Ray's).
        with _SignalGuard(start_up=True) as early:
            try:
                batch = getattr(objective, "batch_pairs", 1)
                evaluator = make_evaluator(cfg, strategy.noise, batch)
            except SystemExit as e:
                if e.code != signal.SIGTERM:
                    raise
                early.received = signal.SIGTERM
            except Exception as e:
                close_loggers([metrics, *extra])
                raise TrainingError(
                    f"cannot start the {cfg.parallel.backend} evaluator: {type(e).__name__}: {e}"
                ) from e
        if early.received is not None:
            if evaluator is not None:
                evaluator.close()
            close_loggers([metrics, *extra])
            name = signal.Signals(early.received).name
            print(
                f"esvo: interrupted by {name} during start-up, before generation "
                f"{state.generation}; nothing new to checkpoint",
                file=sys.stderr,
                flush=True,
            )
            reason, code = "interrupted", 128 + int(early.received)
            return TrainResult(state.generation, reason, state.best_eval_return, code, run_dir)
    # After the evaluator: ray.init installs a SIGTERM handler of its own, which would replace
    # ours (the run would die without its checkpoint).
    with _SignalGuard() as signals:
        run = _Run(
            cfg,
            run_dir,
            objective,
            strategy,
            evaluator,  # type: ignore[arg-type]
            metrics,
            tuple(extra),
            signals,
            float(getattr(cfg.objective, "obs_std_floor", 1e-2)),
            budget=make_budget(cfg, strategy),
            cutoff=cutoff,
        )
        try:
            state, reason = _loop(run, state)
            mark("loop")
        finally:
            close_loggers([metrics, *extra])
            if own_evaluator and evaluator is not None:
                evaluator.close()
            mark("shutdown")
    exit_code = 0
    if reason == "interrupted":
        signum = signals.received or signal.SIGINT
        exit_code = 128 + int(signum)
        print(
            f"esvo: interrupted by {signal.Signals(signum).name} after generation "
            f"{state.generation}; checkpoint saved; continue with: esvo resume {run_dir}",
            file=sys.stderr,
            flush=True,
        )
    return TrainResult(state.generation, reason, state.best_eval_return, exit_code, run_dir)


# ---------------------------------------------------------------------------- public API
def new_run_dir(cfg: Config, out: Path | None = None) -> Path:
    """Create ``<out or cfg.run.out_dir>/<cfg.run.name>/<timestamp>[-N]`` (never reused)."""
    base = Path(cfg.run.out_dir if out is None else out) / cfg.run.name
    base.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(10_000):
        path = base / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run directory under {base}")


def train(
    cfg: Config,
    run_dir: Path,
    *,
    evaluator: Evaluator | None = None,
    loggers: Sequence[Logger] | None = None,
) -> TrainResult:
    """Train from scratch into ``run_dir`` (usually from ``new_run_dir``).

    Args:
        cfg: the validated config; written to ``run_dir/config.yaml``.
        run_dir: the run directory (created if missing); its metrics start afresh.
        evaluator: an evaluator to use instead of the one ``cfg.parallel`` describes; the
            caller keeps ownership (it is not closed). Results do not depend on it.
        loggers: extra loggers ``log(generation, metrics)``; default: the progress line (and
            TensorBoard) per ``cfg.logging``. ``metrics.jsonl`` is always written.

    Returns:
        A ``TrainResult``; ``exit_code`` is 0, or ``128 + signal`` if interrupted.

    Raises:
        TrainingError: too many failed rollouts, evaluator failure or non-finite update; the
            last good state is checkpointed first.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / CONFIG_FILE, dump_config(cfg))
    truncate_jsonl(run_dir / METRICS_FILE, 0)
    return _execute(cfg, run_dir, None, evaluator, loggers)


def resume(
    run_dir: Path,
    *,
    evaluator: Evaluator | None = None,
    loggers: Sequence[Logger] | None = None,
) -> TrainResult:
    """Continue a run from its latest valid checkpoint with ``run_dir/config.yaml``.

    ``run_dir`` may also be one checkpoint, ``<run>/checkpoints/gen_NNNNNN``, to continue
    from that one (later checkpoints are then rewritten, identically).

    Invalid (truncated, corrupted) checkpoints are reported with a warning and skipped;
    without any valid one the run restarts from generation 0. ``metrics.jsonl`` is cut back
    to the checkpoint's generation, so it ends up as if the run had never stopped.
    """
    path = Path(run_dir)
    chosen = path.parent.name == CHECKPOINT_DIR and (path / META_FILE).is_file()
    run_dir = path.parent.parent if chosen else path
    if not (run_dir / CONFIG_FILE).is_file():
        raise TrainingError(f"{run_dir} is not a run directory (no {CONFIG_FILE})")
    cfg = load_config(run_dir / CONFIG_FILE)
    if chosen:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointError as e:
            raise TrainingError(str(e)) from e
    else:
        ckpt = latest_checkpoint(run_dir / CHECKPOINT_DIR)
    if ckpt is None:
        warnings.warn(f"{run_dir}: no valid checkpoint; restarting from generation 0", stacklevel=2)
        state = None
    else:
        state = TrainState.from_arrays(ckpt.arrays)
    truncate_jsonl(run_dir / METRICS_FILE, 0 if state is None else state.generation)
    return _execute(cfg, run_dir, state, evaluator, loggers)


__all__ = [
    "Counters",
    "TrainResult",
    "TrainState",
    "TrainingError",
    "check_config",
    "new_run_dir",
    "resume",
    "train",
]
