"""Seed-and-grid sweeps: every setting × seed is one ordinary esvo run, scheduled by Ray Tune.

A sweep is the base config, a list of seeds and a grid ``key.path: [values]`` (from ``--seeds`` /
``--grid`` or the config's ``sweep:`` section). Each combination of grid values is a *setting*;
each setting with each seed is a *trial*: the base config with the setting's keys set and
``run.seed`` set to the seed, run by the same ``train`` as ``esvo train`` into its own run
directory. Results are therefore bitwise those of running the trial alone (esvo's trajectories
depend only on the config and the seed, not on the workers or on where they run).

Layout (paths in ``sweep.json`` are relative to the sweep directory)::

    SWEEP_DIR/
      sweep.json                       the plan: seeds, grid, settings, trials (format_version 1)
      trials/<setting>/seed_<k>/       an esvo run directory (config.yaml, metrics.jsonl, ...),
                                       plus result.json when the trial has ended
      tune/                            Ray Tune's own experiment state (progress, errors)

Scheduling: Tune runs each pending trial as a function trainable whose placement group holds one
bundle for the trial's driver (``driver_cpus``, default 0 CPUs: like ``esvo train``, the driver is
not counted) and one 1-CPU bundle per evaluator worker (``parallel.num_workers``; null means 1 in
a sweep, so that trials rather than workers fill the cores) or a single 1-CPU bundle for the
serial backend. The evaluator's actors are placed in the trial's bundles, so trials share a
cluster without oversubscribing it, and at most as many trials run as the CPUs allow.

Resuming: the plan is recomputed from the same command and checked against what is on disk (a
trial directory that holds a different config is an error, not overwritten). Trials with a
``result.json`` of exit code 0 are skipped; the others continue from their own latest checkpoint
(``esvo resume``), so killing the sweep's driver loses at most ``checkpoint.every`` generations
per running trial and the rerun ends with the same per-trial results. A trial whose training fails
(``TrainingError``) gets a ``result.json`` with exit code 1 and is retried by the next rerun.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from esvo.config import (
    MAX_SWEEP_TRIALS,
    Config,
    ConfigError,
    check_grid_entry,
    config_from_dict,
    load_config,
    parse_seeds,
    read_config_data,
    set_path,
)

SWEEP_FILE = "sweep.json"
RESULT_FILE = "result.json"
TRIALS_DIR = "trials"
TUNE_DIR = "tune"
FORMAT_VERSION = 1
MAX_DIR_NAME = 120


class SweepError(ValueError):
    """A sweep that cannot run as asked (a directory holding another sweep): bad input."""


@dataclass(frozen=True)
class Setting:
    """One combination of the grid's values."""

    name: str
    """``key=value,key=value`` in grid order (``base`` without a grid)"""
    dir: str
    """its directory name under ``trials/``"""
    overrides: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Trial:
    """One setting with one seed: an esvo run."""

    setting: str
    seed: int
    dir: str
    """run directory relative to the sweep directory"""
    config: Config


@dataclass(frozen=True)
class SweepPlan:
    """Every trial of a sweep with its resolved config."""

    name: str
    seeds: tuple[int, ...]
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    settings: tuple[Setting, ...]
    trials: tuple[Trial, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "seeds": list(self.seeds),
            "grid": {k: list(v) for k, v in self.grid},
            "settings": [
                {"name": s.name, "dir": s.dir, "overrides": dict(s.overrides)}
                for s in self.settings
            ],
            "trials": [{"setting": t.setting, "seed": t.seed, "dir": t.dir} for t in self.trials],
        }


# ---------------------------------------------------------------------------- planning


def parse_grid_arg(text: str) -> tuple[str, tuple[Any, ...]]:
    """``"key.path=v1,v2"`` -> ``("key.path", (v1, v2))``; the values are read as one YAML flow
    list, so ``"a=[1, 2],[3, 4]"`` gives two lists and ``"a=x,'y,z'"`` two strings."""
    source = f"--grid {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not raw.strip():
        problem = f"{text!r} is not key.path=value,value (e.g. strategy.sigma_init=0.1,0.5)"
        raise ConfigError(source, key, text, "key.path=v1,v2", problem)
    try:
        values = yaml.safe_load(f"[{raw}]")
    except yaml.YAMLError:
        problem = f"{text!r}: the values {raw!r} are not a comma-separated list of YAML values"
        raise ConfigError(source, key, raw, "v1,v2,... (YAML values)", problem) from None
    values = [_yaml12(v) for v in values]
    check_grid_entry(key, values, key, source)
    return key, tuple(values)


def _yaml12(value: Any) -> Any:
    """Numbers as esvo's configs read them (YAML 1.2: ``1e-3`` is a float, not a string)."""
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value):
        return float(value)
    if isinstance(value, list):
        return [_yaml12(v) for v in value]
    return value


def render_value(value: Any) -> str:
    """A grid value as one line of YAML (what ``--grid`` and ``--set`` accept)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=math.inf).strip()
    return text.removesuffix("...").strip()


def _dir_name(name: str, index: int, taken: set[str]) -> str:
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)
    if len(safe) > MAX_DIR_NAME or safe in taken or safe.startswith("."):
        safe = f"setting_{index:04d}"
    taken.add(safe)
    return safe


def plan_sweep(
    path: str | Path,
    overrides: Sequence[str] = (),
    seeds: str | None = None,
    grid: Sequence[str] = (),
) -> SweepPlan:
    """Every trial of a sweep, each config validated; nothing is written.

    Args:
        path: the base config file (its ``sweep:`` section, if any, gives seeds and grid).
        overrides: ``--set key.path=value`` applied to the base config.
        seeds: ``--seeds`` (e.g. ``"0-4"``); replaces the section's seeds.
        grid: ``--grid key.path=v1,v2`` entries; each replaces the section's entry for that key
            or is appended after the section's keys.

    Raises:
        ConfigError: a bad config, seed range or grid entry (which one is named).
    """
    base = load_config(path, overrides)  # validates the base and its sweep section
    data = read_config_data(path, overrides)
    data.pop("sweep", None)
    section = base.sweep
    plan_seeds = section.seeds if section is not None else (base.run.seed,)
    if seeds is not None:
        plan_seeds = parse_seeds(seeds, "--seeds", f"--seeds {seeds}")
    entries: dict[str, tuple[Any, ...]] = dict(section.grid) if section is not None else {}
    given: set[str] = set()
    for text in grid:
        key, values = parse_grid_arg(text)
        if key in given:
            problem = f"--grid {key} is given twice"
            raise ConfigError(f"--grid {text}", key, text, "each key once", problem)
        given.add(key)
        for value in values:  # each value alone on the base config: errors name the --grid
            _trial_config(data, [(key, value)], 0, f"--grid {text}", "")
        entries[key] = values
    num_settings = math.prod(len(v) for v in entries.values())
    if num_settings * len(plan_seeds) > MAX_SWEEP_TRIALS:
        runs = f"{len(plan_seeds)} seeds x {num_settings} settings"
        problem = f"{runs}: more than {MAX_SWEEP_TRIALS:,} runs"
        allowed = f"at most {MAX_SWEEP_TRIALS:,} runs"
        raise ConfigError(str(path), "sweep", None, allowed, problem)
    combos = list(itertools.product(*entries.values())) if entries else [()]
    settings: list[Setting] = []
    trials: list[Trial] = []
    taken: set[str] = set()
    for i, combo in enumerate(combos):
        pairs = tuple(zip(entries, combo, strict=True))
        name = ",".join(f"{k}={render_value(v)}" for k, v in pairs) or "base"
        setting = Setting(name, _dir_name(name, i, taken), pairs)
        settings.append(setting)
        for seed in plan_seeds:
            cfg = _trial_config(data, pairs, seed, str(path), name)
            rel = f"{TRIALS_DIR}/{setting.dir}/seed_{seed}"
            trials.append(Trial(name, seed, rel, cfg))
    return SweepPlan(base.run.name, tuple(plan_seeds), tuple(entries.items()), tuple(settings),
                     tuple(trials))


def _trial_config(
    data: Mapping[str, Any], pairs: Sequence[tuple[str, Any]], seed: int, source: str, name: str
) -> Config:
    trial = dict(data)
    for key, value in pairs:
        set_path(trial, tuple(key.split(".")), value, source)
    set_path(trial, ("run", "seed"), seed, source)
    if (trial.get("parallel") or {}).get("num_workers") is None and _backend(trial) == "ray":
        set_path(trial, ("parallel", "num_workers"), 1, source)
    try:
        return config_from_dict(trial, source)
    except ConfigError as e:  # a combination that is invalid although each value is valid
        where = f"{source} (setting {name}, seed {seed})" if name else source
        raise ConfigError(where, e.key, e.value, e.allowed, e.problem) from None


def _backend(data: Mapping[str, Any]) -> str:
    return str((data.get("parallel") or {}).get("backend", "ray"))


def trial_bundles(cfg: Config, driver_cpus: float = 0.0) -> list[dict[str, float]]:
    """The trial's placement group: the driver's bundle, then one 1-CPU bundle per worker."""
    if cfg.parallel.backend == "serial":
        return [{"CPU": max(1.0, driver_cpus)}]
    return [{"CPU": float(driver_cpus)}] + [{"CPU": 1.0}] * int(cfg.parallel.num_workers or 1)


# ---------------------------------------------------------------------------- state on disk


def read_result(run_dir: Path) -> dict[str, Any] | None:
    """A trial's ``result.json`` (None if it has not ended or the file is unreadable)."""
    try:
        data = json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(run_dir: Path) -> bool:
    result = read_result(run_dir)
    return result is not None and result.get("exit_code") == 0


def check_sweep_dir(plan: SweepPlan, sweep_dir: Path) -> list[Trial]:
    """The trials still to run; raises ``SweepError`` if ``sweep_dir`` holds something else."""
    from esvo.trainer import CONFIG_FILE

    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepError(f"{sweep_dir}: exists and is not a directory")
    if sweep_dir.is_dir() and any(sweep_dir.iterdir()) and not (sweep_dir / SWEEP_FILE).is_file():
        raise SweepError(
            f"{sweep_dir}: not empty and not a sweep directory (no {SWEEP_FILE}); "
            "pass another --out"
        )
    pending = []
    for trial in plan.trials:
        run_dir = sweep_dir / trial.dir
        if (run_dir / CONFIG_FILE).is_file():
            try:
                ran = load_config(run_dir / CONFIG_FILE)
            except ConfigError as e:
                raise SweepError(f"{run_dir}: its {CONFIG_FILE} is unreadable: {e}") from None
            if ran != trial.config:
                key = _first_difference(ran.to_dict(), trial.config.to_dict())
                raise SweepError(
                    f"{run_dir} was run with another config ({key} differs): this directory "
                    "holds a different sweep; pass another --out"
                )
        if not is_finished(run_dir):
            pending.append(trial)
    return pending


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in dict.fromkeys([*a, *b]):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    return path or "the config"


def write_plan(plan: SweepPlan, sweep_dir: Path) -> None:
    from esvo.checkpoint import write_text_atomic

    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep_dir / SWEEP_FILE, json.dumps(plan.to_json(), indent=1) + "\n")


# ---------------------------------------------------------------------------- one trial


def run_trial(cfg: Config, run_dir: Path, loggers: Sequence[Any] = ()) -> dict[str, Any]:
    """Train (or resume) one trial into ``run_dir`` and write its ``result.json``.

    Args:
        cfg: the trial's config (from the plan).
        run_dir: its run directory; if it already holds the run, it is resumed from its latest
            checkpoint (a finished trial is not run again).
        loggers: extra loggers besides TensorBoard (if configured); no progress line.

    Returns:
        The result: ``reason``, ``generation``, ``best_eval_return``, ``exit_code`` (and
        ``error`` when training failed).
    """
    from esvo.checkpoint import write_text_atomic
    from esvo.trainer import CONFIG_FILE, TrainingError, default_loggers, resume, train

    done = read_result(run_dir)
    if done is not None and done.get("exit_code") == 0:
        return done
    quiet = dataclasses.replace(cfg, logging=dataclasses.replace(cfg.logging, progress="none"))
    all_loggers = [*default_loggers(quiet, run_dir), *loggers]
    (run_dir / RESULT_FILE).unlink(missing_ok=True)
    try:
        if (run_dir / CONFIG_FILE).is_file():
            result = resume(run_dir, loggers=all_loggers)
        else:
            result = train(cfg, run_dir, loggers=all_loggers)
    except TrainingError as e:
        outcome = {"reason": "failed", "generation": None, "best_eval_return": None,
                   "exit_code": 1, "error": " ".join(str(e).split())}
    else:
        outcome = {"reason": result.reason, "generation": result.generation,
                   "best_eval_return": result.best_eval_return, "exit_code": result.exit_code}
    if outcome["exit_code"] in (0, 1):  # ended; an interrupted trial is resumed instead
        write_text_atomic(run_dir / RESULT_FILE, json.dumps(outcome) + "\n")
    return outcome


class _TuneReport:
    """Logger: a few of each generation's metrics to Tune (its per-trial progress table)."""

    KEYS = ("generation", "eval_return_mean", "best_eval_return", "fitness_mean", "env_steps")

    def __init__(self) -> None:
        from ray import tune

        self._report = tune.report
        self.last: dict[str, Any] = {}

    def log(self, generation: int, metrics: Mapping[str, Any]) -> None:
        self.last["generation"] = generation
        for k in self.KEYS[1:]:
            v = metrics.get(k)
            if isinstance(v, (int, float)) and math.isfinite(v):
                self.last[k] = v
        self._report(dict(self.last))

    __call__ = log

    def final(self, exit_code: int) -> None:
        self._report({**self.last, "exit_code": exit_code})

    def close(self) -> None:
        pass


def _tune_trial(spec: dict, *, sweep_dir: str, configs: dict, pythonpath: str) -> None:
    """Tune's function trainable: one trial, named by ``spec["trial"]``."""
    for p in reversed(pythonpath.split(os.pathsep)):  # the user's modules, as for the workers
        if p and p not in sys.path:
            sys.path.insert(0, p)
    rel = spec["trial"]
    cfg = config_from_dict(configs[rel])
    report = _TuneReport()
    outcome = run_trial(cfg, Path(sweep_dir) / rel, loggers=[report])
    report.final(outcome["exit_code"])


# ---------------------------------------------------------------------------- the sweep


def run_sweep(
    plan: SweepPlan,
    sweep_dir: Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    driver_cpus: float = 0.0,
    max_concurrent: int | None = None,
    max_failures: int = 2,
    verbose: int = 1,
) -> dict[str, dict[str, Any] | None]:
    """Run a sweep's pending trials on Ray Tune; returns every trial's result: its
    ``result.json``, an ``error`` entry if its process raised, or None if it did not end.

    Args:
        plan: from ``plan_sweep``.
        sweep_dir: the sweep directory (created; an existing one of the same plan is resumed).
        address: a Ray cluster to join (default: start an embedded Ray).
        num_cpus: CPUs of the embedded Ray (default: all cores).
        driver_cpus: CPUs reserved for each trial's driver (default 0, as ``esvo train``).
        max_concurrent: at most this many trials at once (default: as resources allow).
        max_failures: Tune retries a trial whose process died this many times (each retry
            resumes from the trial's checkpoint).
        verbose: Tune's verbosity (0 silent, 1 status tables, 2 also results).

    Raises:
        SweepError: ``sweep_dir`` holds another sweep (checked before anything is written).
    """
    sweep_dir = Path(sweep_dir).resolve()
    pending = check_sweep_dir(plan, sweep_dir)
    write_plan(plan, sweep_dir)
    errors: dict[str, str] = {}
    if pending:
        errors = _run_on_tune(
            pending, sweep_dir, address, num_cpus, driver_cpus, max_concurrent, max_failures,
            verbose,
        )
    results: dict[str, dict[str, Any] | None] = {}
    for t in plan.trials:
        result = read_result(sweep_dir / t.dir)
        if result is None and t.dir in errors:  # the trial's process raised (after retries)
            result = {"reason": "error", "exit_code": None, "error": errors[t.dir]}
        results[t.dir] = result
    return results


def _run_on_tune(
    pending: Sequence[Trial],
    sweep_dir: Path,
    address: str | None,
    num_cpus: int | None,
    driver_cpus: float,
    max_concurrent: int | None,
    max_failures: int,
    verbose: int,
) -> dict[str, str]:
    """Runs the trials; returns the last line of the error of each trial that raised."""
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials keep the driver's directory
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the compact table, one row per trial
    # Ctrl-C is a KeyboardInterrupt (esvo sweep says how to resume), not Tune's graceful stop
    # that saves Tune's own state and advises Tuner.restore: a rerun resumes from esvo's files.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    import ray
    from ray import tune

    from esvo.parallel.ray_backend import connect, driver_pythonpath, shutdown

    owns = connect(address, num_cpus or os.cpu_count() or 1, include_dashboard=False)
    try:
        configs = {t.dir: t.config.to_dict() for t in pending}
        bundles = {t.dir: trial_bundles(t.config, driver_cpus) for t in pending}
        largest = max(sum(b["CPU"] for b in v) for v in bundles.values())
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if largest > cpus:
            raise SweepError(
                f"a trial needs {largest:g} CPUs (parallel.num_workers workers"
                f"{' + driver' if driver_cpus else ''}) but the cluster has {cpus:g}"
            )
        trainable = tune.with_parameters(
            _tune_trial, sweep_dir=str(sweep_dir), configs=configs, pythonpath=driver_pythonpath()
        )
        trainable = tune.with_resources(
            trainable, lambda spec: tune.PlacementGroupFactory(bundles[spec["trial"]])
        )
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.dir for t in pending])},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
            run_config=tune.RunConfig(
                name=time.strftime("run-%Y%m%d-%H%M%S"),
                storage_path=str(sweep_dir / TUNE_DIR),
                failure_config=tune.FailureConfig(max_failures=max_failures),
                verbose=verbose,
                progress_reporter=tune.CLIReporter(
                    metric_columns={**{k: k for k in _TuneReport.KEYS}, "exit_code": "exit"},
                    parameter_columns={"trial": "trial"},
                    max_column_length=60,
                    max_report_frequency=10,
                ),
            ),
        )
        grid = tuner.fit()
        errors = {}
        for result in grid:
            if result.error is not None:
                lines = str(result.error).strip().splitlines() or [type(result.error).__name__]
                errors[(result.config or {}).get("trial", "?")] = lines[-1].strip()
        return errors
    finally:
        if owns:
            shutdown()


__all__ = [
    "Setting",
    "SweepError",
    "SweepPlan",
    "Trial",
    "check_sweep_dir",
    "parse_grid_arg",
    "plan_sweep",
    "read_result",
    "run_sweep",
    "run_trial",
    "trial_bundles",
]
