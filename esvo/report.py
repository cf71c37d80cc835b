"""Statistics of a sweep: one row per setting over its seeds (``esvo report SWEEP_DIR``).

A sweep directory (written by ``esvo sweep``) holds ``sweep.json`` and one ordinary run
directory per (setting, seed) trial, ``trials/<setting>/seed_<k>/``, with ``result.json`` once
the trial finished. Aggregates follow Agarwal et al. 2021, "Deep reinforcement learning at the
edge of the statistical precipice" (rliable): the interquartile mean with a percentile bootstrap
confidence interval, and the median.

Definitions (``v`` is a seed's evaluation of the mean, ``eval_return_mean`` in
``metrics.jsonl``; generations without an evaluation, or whose evaluation failed (null), are
skipped; "better" is higher for gym objectives and lower for functions, or as
``strategy.maximize`` says; python objectives say it themselves):

- final of a seed: its last ``v``; best: its best ``v``. Seeds with no ``v`` yet take no part.
- median: ``numpy.median``; IQM: ``scipy.stats.trim_mean(x, 0.25)``, the mean of the middle
  half (``int(0.25 n)`` values cut at each end: none for n < 4).
- 95% CI of the IQM: ``scipy.stats.bootstrap`` with the percentile method (as rliable),
  ``N_RESAMPLES`` resamples, a fresh ``numpy.random.default_rng(BOOTSTRAP_SEED)`` for every
  interval and the values sorted ascending first, so a report is reproducible and does not
  depend on the order of the seeds. One seed, or all values equal: the interval is the point.
- target (``run.target`` of the trials' ``config.yaml``): reached when ``v >= target``
  (``v <= target`` when minimizing), as the trainer's ``target`` stop; ``reached`` is k/n over
  the n seeds with an evaluation. At the first row whose ``v`` reaches it: ``env_steps``
  (training), ``env_steps + eval_env_steps`` (with the evaluations' steps), ``wall_s`` and the
  generations run (the row's ``generation + 1``, as ``result.json``); each column is the median
  over the seeds that reached the target. Function objectives have no env steps: those
  columns are empty.
- seeds: trials finished (``result.json`` of exit code 0) / trials in ``sweep.json``. Failed
  trials (another exit code) are named with their error under the table. An unfinished
  trial's metrics so far are used; the notes under the table name them.

``report.csv`` columns (one row per setting; empty cell: no value): ``setting``, one column
per grid key (the setting's value), ``num_trials``, ``num_finished``, ``num_evaluated`` (seeds
with an evaluation), ``maximize``, ``target``, ``final_median``, ``final_iqm``,
``final_iqm_ci_low``, ``final_iqm_ci_high``, the same four ``best_*``, ``num_reached``,
``reached_fraction``, ``env_steps_to_target``, ``total_env_steps_to_target``,
``wall_s_to_target``, ``generations_to_target`` (medians, as above).
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from esvo.loggers import read_jsonl
from esvo.sweep import FORMAT_VERSION, SWEEP_FILE, SweepError, read_result

N_RESAMPLES = 10_000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
TRIM = 0.25  # IQM: trim_mean(x, 0.25)

CSV_STATS = (
    "num_trials",
    "num_finished",
    "num_evaluated",
    "maximize",
    "target",
    "final_median",
    "final_iqm",
    "final_iqm_ci_low",
    "final_iqm_ci_high",
    "best_median",
    "best_iqm",
    "best_iqm_ci_low",
    "best_iqm_ci_high",
    "num_reached",
    "reached_fraction",
    "env_steps_to_target",
    "total_env_steps_to_target",
    "wall_s_to_target",
    "generations_to_target",
)


# ---------------------------------------------------------------------------- the directory


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """One seed of one setting, as found on disk."""

    setting: str
    seed: int
    dir: Path
    started: bool  # its directory exists
    finished: bool  # it has a result.json of exit code 0
    rows: list[dict[str, Any]]  # metrics.jsonl
    maximize: bool | None  # None: no config.yaml yet
    target: float | None
    failed: str | None = None  # the error of a result.json with another exit code


@dataclasses.dataclass(frozen=True)
class SettingRecord:
    """One point of the grid with its trials (in ``sweep.json`` order)."""

    name: str
    dir: str
    overrides: dict[str, Any]
    trials: list[TrialRecord]


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep directory's ``sweep.json`` and its trials."""

    root: Path
    name: str
    seeds: list[int]
    grid: dict[str, list[Any]]
    settings: list[SettingRecord]


def _need(doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise SweepError(f"{where}: missing key {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise SweepError(f"{where}: {key} = {value!r}: expected {names}")
    return value


def _relative(root: Path, text: str, where: str) -> Path:
    path = Path(text)
    if path.is_absolute() or ".." in path.parts:
        raise SweepError(f"{where}: dir = {text!r}: expected a path relative to {root}")
    return root / path


def _direction(cfg: Any, cache: dict[str, bool]) -> bool:
    """True if higher evaluations are better (``strategy.maximize``, else the objective's)."""
    if cfg.strategy.maximize is not None:
        return bool(cfg.strategy.maximize)
    if cfg.objective.kind != "python":
        return cfg.objective.kind == "gym"
    spec = cfg.objective.to_spec()
    key = json.dumps(spec, sort_keys=True, default=str)
    if key not in cache:
        from esvo.objectives.base import make_objective

        try:
            objective = make_objective(**spec)
        except Exception as e:
            raise SweepError(
                f"objective.target = {spec['target']!r}: cannot build it to learn whether it "
                f"maximizes ({type(e).__name__}: {e}); set strategy.maximize"
            ) from None
        cache[key] = bool(objective.maximize)
        close = getattr(objective, "close", None)
        if callable(close):
            close()
    return cache[key]


def _trial(root: Path, doc: Any, i: int, settings: Mapping[str, Any], cache: dict) -> TrialRecord:
    where = f"{root / SWEEP_FILE}: trials[{i}]"
    if not isinstance(doc, Mapping):
        raise SweepError(f"{where}: expected an object, got {type(doc).__name__}")
    setting = _need(doc, "setting", str, where)
    if setting not in settings:
        raise SweepError(f"{where}: setting = {setting!r}: not one of {sorted(settings)}")
    seed = _need(doc, "seed", int, where)
    path = _relative(root, _need(doc, "dir", str, where), where)
    rows: list[dict[str, Any]] = []
    maximize, target = None, None
    if path.is_dir() and (path / "config.yaml").is_file():
        from esvo.config import ConfigError, load_config

        try:
            cfg = load_config(path / "config.yaml")
        except ConfigError as e:
            raise SweepError(f"trial {setting} seed {seed}: {e}") from None
        maximize, target = _direction(cfg, cache), cfg.run.target
        rows = read_jsonl(path / "metrics.jsonl")
    result = read_result(path)
    finished = result is not None and result.get("exit_code") == 0
    failed = None if result is None or finished else str(result.get("error") or result)
    return TrialRecord(
        setting, seed, path, path.is_dir(), finished, rows, maximize, target, failed
    )


def load_sweep(sweep_dir: Path) -> Sweep:
    """Read ``sweep.json`` and every trial's config and metrics (nothing is written).

    Args:
        sweep_dir: the sweep directory.

    Returns:
        The sweep, settings in grid order, trials in ``sweep.json`` order.

    Raises:
        SweepError: no such directory, no or malformed ``sweep.json``, or a trial's config
            cannot be read; the message is one line.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise SweepError(f"{root}: no such sweep directory")
    path = root / SWEEP_FILE
    if not path.is_file():
        raise SweepError(f"{root}: not a sweep directory (no {SWEEP_FILE})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SweepError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise SweepError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise SweepError(f"{path}: format_version = {version!r}: expected {FORMAT_VERSION}")
    name = _need(doc, "name", str, str(path))
    seeds = _need(doc, "seeds", list, str(path))
    grid = _need(doc, "grid", dict, str(path))
    settings_doc = _need(doc, "settings", list, str(path))
    trials_doc = _need(doc, "trials", list, str(path))
    by_name: dict[str, dict[str, Any]] = {}
    for i, s in enumerate(settings_doc):
        where = f"{path}: settings[{i}]"
        if not isinstance(s, Mapping):
            raise SweepError(f"{where}: expected an object, got {type(s).__name__}")
        setting = _need(s, "name", str, where)
        if setting in by_name:
            raise SweepError(f"{where}: name = {setting!r} appears twice")
        _relative(root, _need(s, "dir", str, where), where)
        by_name[setting] = {
            "dir": s["dir"],
            "overrides": dict(_need(s, "overrides", dict, where)),
            "trials": [],
        }
    cache: dict[str, bool] = {}
    for i, t in enumerate(trials_doc):
        trial = _trial(root, t, i, by_name, cache)
        by_name[trial.setting]["trials"].append(trial)
    settings = [SettingRecord(n, s["dir"], s["overrides"], s["trials"]) for n, s in by_name.items()]
    return Sweep(root, name, list(seeds), dict(grid), settings)


# ---------------------------------------------------------------------------- one seed


@dataclasses.dataclass(frozen=True)
class SeedSummary:
    """One seed's evaluations: final and best, and where it first reached the target."""

    final: float
    best: float
    reached: bool
    env_steps: int | None = None  # training env steps at the first evaluation >= target
    total_env_steps: int | None = None  # + evaluation steps
    wall_s: float | None = None
    generations: int | None = None  # generation + 1


def evaluations(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The rows with a finite ``eval_return_mean``, in order."""
    out = []
    for r in rows:
        v = r.get("eval_return_mean")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(r)
    return out


def reaches(value: float, target: float, maximize: bool) -> bool:
    """The trainer's target test: ``value >= target`` (``<=`` when minimizing)."""
    return value >= target if maximize else value <= target


def summarize_seed(
    rows: Sequence[Mapping[str, Any]], maximize: bool, target: float | None
) -> SeedSummary | None:
    """Final, best and time to target of one seed's ``metrics.jsonl`` rows.

    Args:
        rows: the metrics rows (one per generation).
        maximize: whether higher evaluations are better.
        target: ``run.target``, or None.

    Returns:
        The summary, or None if the seed has no evaluation yet.
    """
    ev = evaluations(rows)
    if not ev:
        return None
    values = [float(r["eval_return_mean"]) for r in ev]
    best = max(values) if maximize else min(values)
    if target is not None:
        for r in ev:
            if reaches(float(r["eval_return_mean"]), target, maximize):
                steps = r.get("env_steps")
                total = None if steps is None else int(steps) + int(r.get("eval_env_steps") or 0)
                return SeedSummary(
                    values[-1],
                    best,
                    True,
                    None if steps is None else int(steps),
                    total,
                    None if r.get("wall_s") is None else float(r["wall_s"]),
                    int(r["generation"]) + 1,
                )
    return SeedSummary(values[-1], best, False)


# ---------------------------------------------------------------------------- statistics


def iqm(x: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean, ``scipy.stats.trim_mean(x, 0.25)``."""
    return float(stats.trim_mean(np.asarray(x, dtype=np.float64), TRIM))


def _iqm_axis(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return stats.trim_mean(x, TRIM, axis=axis)


def _rng_kw() -> dict[str, Any]:
    # scipy >= 1.15 names it rng; before, random_state (the same use of a Generator)
    has_rng = "rng" in inspect.signature(stats.bootstrap).parameters
    return {"rng" if has_rng else "random_state": np.random.default_rng(BOOTSTRAP_SEED)}


def iqm_ci(x: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """95% percentile-bootstrap confidence interval of the IQM of ``x``.

    Args:
        x: the per-seed values (sorted here first; the order does not matter).

    Returns:
        ``(low, high)``; ``(v, v)`` for one value or all values equal.
    """
    x = np.sort(np.asarray(x, dtype=np.float64))
    if x.size == 0:
        raise ValueError("iqm_ci needs at least one value")
    if x.size == 1 or np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap(
        (x,),
        _iqm_axis,
        n_resamples=N_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        vectorized=True,
        **_rng_kw(),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def iqm_ci_columns(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``iqm_ci`` of every column of ``y`` (seeds, points) at once (each column sorted).

    Columns with one seed or all values equal get the point. The resampled seed indices are
    shared by all columns, so each column's interval equals ``iqm_ci`` of that column; equal
    columns (a step function read on a fine grid) are resampled once."""
    y = np.sort(np.asarray(y, dtype=np.float64), axis=0)
    distinct, inverse = np.unique(y, axis=1, return_inverse=True)  # (S, U), (K,)
    point = _iqm_axis(distinct, axis=0)
    low, high = point.copy(), point.copy()
    spread = ~np.all(distinct == distinct[:1], axis=0)
    if distinct.shape[0] > 1 and spread.any():
        res = stats.bootstrap(
            (distinct[:, spread],),
            _iqm_axis,
            n_resamples=N_RESAMPLES,
            confidence_level=CONFIDENCE,
            method="percentile",
            vectorized=True,
            axis=0,
            batch=max(1, 2_000_000 // distinct.size),
            **_rng_kw(),
        )
        low[spread], high[spread] = res.confidence_interval.low, res.confidence_interval.high
    inverse = inverse.reshape(-1)
    return low[inverse], high[inverse]


@dataclasses.dataclass(frozen=True)
class SettingReport:
    """The statistics of one setting (see the module docstring for the definitions)."""

    setting: str
    overrides: dict[str, Any]
    num_trials: int
    num_finished: int
    num_evaluated: int
    maximize: bool | None
    target: float | None
    final_median: float | None
    final_iqm: float | None
    final_iqm_ci: tuple[float, float] | None
    best_median: float | None
    best_iqm: float | None
    best_iqm_ci: tuple[float, float] | None
    num_reached: int
    env_steps_to_target: float | None
    total_env_steps_to_target: float | None
    wall_s_to_target: float | None
    generations_to_target: float | None
    no_env_steps: bool  # every evaluated row has env_steps 0 (a function objective)


def _one(values: set[Any], what: str, setting: str) -> Any:
    if len(values) > 1:
        shown = ", ".join(repr(v) for v in sorted(values, key=repr))
        raise SweepError(f"setting {setting!r}: its trials disagree on {what}: {shown}")
    return next(iter(values), None)


def _median(values: Sequence[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    return float(np.median(have)) if have else None


def summarize_setting(setting: SettingRecord) -> SettingReport:
    """The statistics of one setting over its seeds."""
    configured = [t for t in setting.trials if t.maximize is not None]
    maximize = _one({t.maximize for t in configured}, "strategy.maximize", setting.name)
    target = _one({t.target for t in configured}, "run.target", setting.name)
    seeds = [
        s for t in configured if (s := summarize_seed(t.rows, bool(t.maximize), target)) is not None
    ]
    finals = [s.final for s in seeds]
    bests = [s.best for s in seeds]
    reached = [s for s in seeds if s.reached]
    rows = [r for t in configured for r in evaluations(t.rows)]
    no_env_steps = bool(rows) and all(not r.get("env_steps") for r in rows)
    steps = [None if no_env_steps else s.env_steps for s in reached]
    total = [None if no_env_steps else s.total_env_steps for s in reached]
    return SettingReport(
        setting=setting.name,
        overrides=dict(setting.overrides),
        num_trials=len(setting.trials),
        num_finished=sum(t.finished for t in setting.trials),
        num_evaluated=len(seeds),
        maximize=maximize,
        target=target,
        final_median=_median(finals),
        final_iqm=iqm(finals) if finals else None,
        final_iqm_ci=iqm_ci(finals) if finals else None,
        best_median=_median(bests),
        best_iqm=iqm(bests) if bests else None,
        best_iqm_ci=iqm_ci(bests) if bests else None,
        num_reached=len(reached),
        env_steps_to_target=_median(steps),
        total_env_steps_to_target=_median(total),
        wall_s_to_target=_median([s.wall_s for s in reached]),
        generations_to_target=_median([s.generations for s in reached]),
        no_env_steps=no_env_steps,
    )


def summarize(sweep: Sweep) -> list[SettingReport]:
    """``summarize_setting`` of every setting, in grid order."""
    return [summarize_setting(s) for s in sweep.settings]


# ---------------------------------------------------------------------------- output

DASH = "—"


def _g(x: float | None, spec: str = ".4g") -> str:
    return "" if x is None else format(x, spec)


def _iqm_cell(point: float | None, ci: tuple[float, float] | None) -> str:
    if point is None or ci is None:
        return ""
    return f"{point:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]"


def _to_target(r: SettingReport, value: float | None, spec: str) -> str:
    if r.target is None or r.num_evaluated == 0:
        return ""
    if r.num_reached == 0:
        return DASH
    return "" if value is None else format(value, spec)


def markdown(sweep: Sweep, reports: Sequence[SettingReport]) -> str:
    """The report as Markdown: a title, the table (one row per setting) and notes."""
    head = (
        "| setting | seeds | final IQM [95% CI] | final median | best IQM [95% CI] "
        "| best median | target | reached | env steps to target | env+eval steps to target "
        "| wall s to target | generations to target |"
    )
    lines = [
        f"# Sweep `{sweep.name}`",
        "",
        f"IQM = scipy.stats.trim_mean(x, 0.25); 95% CI: percentile bootstrap, {N_RESAMPLES} "
        f"resamples, seed {BOOTSTRAP_SEED}; medians of the steps to target over the seeds that "
        "reached it. seeds: finished/trials.",
        "",
        head,
        "|" + "---|" * head.count(" | ") + "---|",
    ]
    for r in reports:
        target = ""
        if r.target is not None:
            target = f"{'≥' if r.maximize else '≤'} {r.target:g}"
        counted = r.target is not None and r.num_evaluated > 0
        reached = f"{r.num_reached}/{r.num_evaluated}" if counted else ""
        cells = [
            r.setting,
            f"{r.num_finished}/{r.num_trials}",
            _iqm_cell(r.final_iqm, r.final_iqm_ci),
            _g(r.final_median),
            _iqm_cell(r.best_iqm, r.best_iqm_ci),
            _g(r.best_median),
            target,
            reached,
            _to_target(r, r.env_steps_to_target, ",.0f"),
            _to_target(r, r.total_env_steps_to_target, ",.0f"),
            _to_target(r, r.wall_s_to_target, ".3g"),
            _to_target(r, r.generations_to_target, "g"),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    notes = _notes(sweep)
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _notes(sweep: Sweep) -> list[str]:
    groups: dict[str, list[str]] = {
        "not started": [],
        "failed (its metrics so far are used)": [],
        "unfinished (no result.json; its metrics so far are used)": [],
        "no evaluation yet (left out of the statistics)": [],
    }
    keys = list(groups)
    for s in sweep.settings:
        for t in s.trials:
            name = f"{s.name} seed {t.seed}"
            if not t.started:
                groups[keys[0]].append(name)
                continue
            if t.failed is not None:
                groups[keys[1]].append(f"{name} ({t.failed})")
            elif not t.finished:
                groups[keys[2]].append(name)
            if not evaluations(t.rows):
                groups[keys[3]].append(name)
    return [f"- {what}: {', '.join(names)}" for what, names in groups.items() if names]


def _csv_value(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, (int, str)):
        return str(x)
    return json.dumps(x)


def csv_text(sweep: Sweep, reports: Sequence[SettingReport]) -> str:
    """The report as CSV, one row per setting (columns in the module docstring)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = list(sweep.grid)
    writer.writerow(["setting", *keys, *CSV_STATS])
    for r in reports:
        counted = r.target is not None and r.num_evaluated > 0
        fraction = r.num_reached / r.num_evaluated if counted else None
        low_f, high_f = r.final_iqm_ci or (None, None)
        low_b, high_b = r.best_iqm_ci or (None, None)
        values = {
            "num_trials": r.num_trials,
            "num_finished": r.num_finished,
            "num_evaluated": r.num_evaluated,
            "maximize": r.maximize,
            "target": r.target,
            "final_median": r.final_median,
            "final_iqm": r.final_iqm,
            "final_iqm_ci_low": low_f,
            "final_iqm_ci_high": high_f,
            "best_median": r.best_median,
            "best_iqm": r.best_iqm,
            "best_iqm_ci_low": low_b,
            "best_iqm_ci_high": high_b,
            "num_reached": r.num_reached if r.target is not None else None,
            "reached_fraction": fraction,
            "env_steps_to_target": r.env_steps_to_target,
            "total_env_steps_to_target": r.total_env_steps_to_target,
            "wall_s_to_target": r.wall_s_to_target,
            "generations_to_target": r.generations_to_target,
        }
        row = [r.setting, *(r.overrides.get(k) for k in keys), *(values[c] for c in CSV_STATS)]
        writer.writerow([_csv_value(v) for v in row])
    return buf.getvalue()


def write_report(sweep_dir: Path, out: Path | None = None) -> tuple[str, Path, Path]:
    """Read a sweep and write ``report.md`` and ``report.csv``.

    Args:
        sweep_dir: the sweep directory.
        out: the directory to write into (created if missing); default ``sweep_dir``.

    Returns:
        The Markdown text and the paths of the two files.

    Raises:
        SweepError: bad sweep directory, or ``out`` is not a directory; nothing is written.
    """
    sweep = load_sweep(sweep_dir)
    out = sweep.root if out is None else Path(out)
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out}: exists and is not a directory")
    reports = summarize(sweep)
    text, table = markdown(sweep, reports), csv_text(sweep, reports)
    from esvo.checkpoint import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    md, csv_path = out / "report.md", out / "report.csv"
    write_text_atomic(md, text)
    write_text_atomic(csv_path, table)
    return text, md, csv_path


# ---------------------------------------------------------------------------- curves


@dataclasses.dataclass(frozen=True)
class Curve:
    """A setting's evaluation curve over its seeds on a grid of ``x`` (env steps, or the
    generation for function objectives); NaN where no seed has a value."""

    setting: str
    x_key: str  # "env_steps" or "generation"
    x: np.ndarray  # (K,)
    values: np.ndarray  # (S, K) each seed's step-interpolated evaluation, NaN: none
    mean: np.ndarray  # (K,)
    iqm: np.ndarray  # (K,)
    iqm_low: np.ndarray  # (K,) 95% bootstrap CI of the IQM
    iqm_high: np.ndarray  # (K,)
    num_seeds: np.ndarray  # (K,) seeds with a value at x


def step_values(
    x_eval: np.ndarray, y_eval: np.ndarray, grid: np.ndarray, x_end: float = math.inf
) -> np.ndarray:
    """The last evaluation at or before each grid point (a step function).

    Args:
        x_eval: the evaluations' x, non-decreasing.
        y_eval: their values.
        grid: where to read the step function.
        x_end: beyond it the seed has no value (its last logged x, while it runs); ``inf``
            carries the final value forward.

    Returns:
        ``y`` at each grid point; NaN before the first evaluation and after ``x_end``.
    """
    idx = np.searchsorted(np.asarray(x_eval, dtype=np.float64), grid, side="right") - 1
    out = np.where(idx >= 0, np.asarray(y_eval, dtype=np.float64)[np.maximum(idx, 0)], np.nan)
    out[np.asarray(grid) > x_end] = np.nan
    return out


def sweep_curves(sweep: Sweep, num_points: int = 200) -> list[Curve]:
    """Mean and IQM curves with the IQM's 95% bootstrap CI band, one per setting.

    Each seed's evaluations form a step function of x (its last evaluation at or before x).
    A finished seed keeps its final value beyond its last step (a seed that stopped early
    because it reached the target has solved the task: that is what it reports from then
    on); an unfinished seed has values only up to its last logged x. The grid has
    ``num_points`` even points from the latest first evaluation of the setting's seeds (so
    every seed counts from the start) to the largest last x. At each point the statistics
    are over the seeds with a value (``num_seeds``; all of them unless some are unfinished).
    x is ``env_steps`` (training), or ``generation`` when no row has env steps (functions).
    Settings without any evaluation are left out.
    """
    rows_all = [r for s in sweep.settings for t in s.trials for r in evaluations(t.rows)]
    x_key = "env_steps" if any(r.get("env_steps") for r in rows_all) else "generation"
    curves = []
    for s in sweep.settings:
        seeds = []
        for t in s.trials:
            ev = evaluations(t.rows)
            if not ev:
                continue
            x = np.array([float(r.get(x_key) or 0) for r in ev])
            y = np.array([float(r["eval_return_mean"]) for r in ev])
            x_end = math.inf if t.finished else float(t.rows[-1].get(x_key) or 0)
            seeds.append((x, y, x_end))
        if not seeds:
            continue
        start = max(x[0] for x, _, _ in seeds)
        stop = max(max(x[-1], e if math.isfinite(e) else x[-1]) for x, _, e in seeds)
        grid = np.linspace(start, stop, num_points) if stop > start else np.array([start])
        values = np.stack([step_values(x, y, grid, e) for x, y, e in seeds])  # (S, K)
        have = ~np.isnan(values)
        k = grid.size
        mean, mid = np.full(k, np.nan), np.full(k, np.nan)
        low, high = np.full(k, np.nan), np.full(k, np.nan)
        patterns = {tuple(col) for col in have.T if col.any()}
        for pattern in patterns:
            cols = np.all(have == np.array(pattern)[:, None], axis=0)
            y = values[np.array(pattern)][:, cols]  # (S', K')
            mean[cols] = y.mean(axis=0)
            mid[cols] = _iqm_axis(np.sort(y, axis=0), axis=0)
            low[cols], high[cols] = iqm_ci_columns(y)
        curves.append(Curve(s.name, x_key, grid, values, mean, mid, low, high, have.sum(axis=0)))
    return curves


__all__ = [
    "Curve",
    "SeedSummary",
    "SettingReport",
    "Sweep",
    "SweepError",
    "iqm",
    "iqm_ci",
    "load_sweep",
    "step_values",
    "summarize",
    "summarize_seed",
    "sweep_curves",
    "write_report",
]
