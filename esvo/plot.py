"""Learning curves of one or several runs from their ``metrics.jsonl`` (matplotlib, Agg), or
of a sweep (``plot_sweep``: per setting, IQM and mean over the seeds; see ``esvo.report``).

Panels: return vs environment steps and vs wall time (evaluation of the mean as a line with
markers, the population's mean fitness dashed), sigma, gradient norm and throughput; every run
is overlaid in its own colour.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esvo.loggers import read_jsonl


def _column(rows: list[dict[str, Any]], key: str) -> list[float]:
    out = []
    for r in rows:
        v = r.get(key)
        out.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan)
    return out


def _label(run_dir: Path) -> str:
    return f"{run_dir.parent.name}/{run_dir.name}" if run_dir.parent.name else run_dir.name


def _default_out(run_dirs: Sequence[Path]) -> Path:
    if len(run_dirs) == 1:
        return run_dirs[0] / "curves.png"
    common = Path(os.path.commonpath([str(p.resolve()) for p in run_dirs]))
    return common / "curves.png"


def plot_runs(run_dirs: Sequence[Path], out: Path | None = None) -> Path:
    """Plot the runs' curves into one PNG.

    Args:
        run_dirs: run directories, each with a ``metrics.jsonl``.
        out: the PNG to write; default ``<run>/curves.png`` for one run, else ``curves.png``
            in the runs' common parent directory.

    Returns:
        The path of the written PNG.

    Raises:
        ValueError: if no run is given or a run has no metrics.
    """
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise ValueError("plot_runs needs at least one run directory")
    runs = []
    for d in run_dirs:
        rows = read_jsonl(d / "metrics.jsonl")
        if not rows:
            raise ValueError(f"{d}: no metrics.jsonl rows to plot")
        runs.append((_label(d), rows))

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = _default_out(run_dirs) if out is None else Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5), layout="constrained")
    (ax_steps, ax_wall, ax_sigma), (ax_grad, ax_speed, ax_fit) = axes
    use_steps = any(any(v > 0 for v in _column(rows, "env_steps")) for _, rows in runs)
    x_key = "env_steps" if use_steps else "generation"
    for i, (label, rows) in enumerate(runs):
        color = f"C{i % 10}"
        x = _column(rows, x_key)
        wall = _column(rows, "wall_s")
        gens = _column(rows, "generation")
        ev = _column(rows, "eval_return_mean")
        fit = _column(rows, "fitness_mean")
        ev_pts = [(a, w, e) for a, w, e in zip(x, wall, ev, strict=True) if math.isfinite(e)]
        for ax, xs in ((ax_steps, x), (ax_wall, wall)):
            ax.plot(xs, fit, "--", color=color, alpha=0.6, lw=1)
            if ev_pts:
                xe = [p[0] for p in ev_pts] if ax is ax_steps else [p[1] for p in ev_pts]
                ax.plot(xe, [p[2] for p in ev_pts], "o-", color=color, ms=3, label=label)
            else:
                ax.plot([], [], "o-", color=color, label=label)
        ax_sigma.plot(x, _column(rows, "sigma_mean"), color=color, label=label)
        ax_grad.plot(x, _column(rows, "grad_norm"), color=color, label=label)
        speed = _column(rows, "steps_per_s") if use_steps else _column(rows, "gens_per_s")
        ax_speed.plot(x, speed, color=color, label=label)
        ax_fit.plot(gens, _column(rows, "fitness_max"), color=color, label=label)

    x_label = "environment steps" if use_steps else "generation"
    ax_steps.set(title="return vs env steps", xlabel=x_label, ylabel="return (eval: o-, pop: --)")
    ax_wall.set(title="return vs wall time", xlabel="wall time [s]", ylabel="return")
    ax_sigma.set(title="sigma (mean)", xlabel=x_label, yscale="log")
    ax_grad.set(title="gradient norm", xlabel=x_label, yscale="log")
    ax_speed.set(
        title="throughput",
        xlabel=x_label,
        ylabel="env steps / s" if use_steps else "generations / s",
    )
    ax_fit.set(title="population fitness max", xlabel="generation")
    for ax in axes.flat:
        ax.grid(True, alpha=0.3)
    ax_steps.legend(fontsize="small")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_sweep(sweep_dir: Path, out: Path | None = None) -> Path:
    """Plot a sweep's evaluation curves, one colour per setting, into one PNG.

    Per setting (``esvo.report.sweep_curves``): the mean (dashed) and the IQM (solid) of the
    seeds' step-interpolated evaluations against env steps (generations for functions), and
    the IQM's 95% percentile-bootstrap CI as a band.

    Args:
        sweep_dir: a sweep directory (with ``sweep.json``).
        out: the PNG to write; default ``<sweep_dir>/curves.png``.

    Returns:
        The path of the written PNG.

    Raises:
        esvo.report.SweepError: not a sweep directory, or no evaluation to plot yet.
    """
    from esvo.report import SweepError, load_sweep, sweep_curves

    sweep = load_sweep(sweep_dir)
    curves = sweep_curves(sweep)
    if not curves:
        raise SweepError(f"{sweep.root}: no trial has an evaluation to plot yet")
    out = sweep.root / "curves.png" if out is None else Path(out)
    if out.is_dir():
        raise SweepError(f"--out {out}: is a directory; expected a PNG file")

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        seeds = int(c.num_seeds.max())
        ax.fill_between(c.x, c.iqm_low, c.iqm_high, color=color, alpha=0.2, lw=0)
        ax.plot(c.x, c.iqm, "-", color=color, label=f"{c.setting} (IQM, {seeds} seeds)")
        ax.plot(c.x, c.mean, "--", color=color, lw=1, alpha=0.8)
    x_label = "environment steps" if curves[0].x_key == "env_steps" else "generation"
    ax.set(
        title=f"sweep {sweep.name}: IQM over seeds with 95% bootstrap CI (mean dashed)",
        xlabel=x_label,
        ylabel="evaluation of the mean (eval_return_mean)",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
