"""Sweep benchmark: a sweep on Ray Tune against running its trials one by one with ``esvo train``.

Side by side in one run, each timed from process start to exit (``subprocess``):

* ``sweep``: ``esvo sweep CONFIG --out OUT/sweep`` (its ``sweep:`` section or ``--seeds`` /
  ``--grid``): one Ray, Tune places the trials on the cores (a trial's workers in its own
  placement group);
* ``one by one``: the same trials, each ``esvo train CONFIG --set <setting> --set run.seed=S``
  in its own process, one after the other (what a shell loop over seeds does).

Also: the sum of the trials' own training wall time (``wall_s`` of their last metrics row) and
the per-trial overhead of each way, (wall − ideal) / trials, where ideal is that sum divided by
the trials that can run at once (``--num-cpus`` / CPUs per trial). Every trial's final
checkpoint is compared between the two ways (they must be identical). Median over ``--repeats``.

    .venv/bin/python scripts/bench_sweep.py configs/cartpole_sweep.yaml --num-cpus 2
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from esvo.checkpoint import latest_checkpoint
from esvo.loggers import read_jsonl
from esvo.sweep import plan_sweep, trial_bundles


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _final(run_dir: Path) -> dict[str, np.ndarray]:
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert ckpt is not None, run_dir
    return {k: v for k, v in ckpt.arrays.items() if k != "counters/wall_s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", default=None)
    parser.add_argument("--grid", action="append", default=[])
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("/tmp/esvo_bench_sweep"))
    args = parser.parse_args()
    plan = plan_sweep(args.config, (), args.seeds, args.grid)
    esvo = [sys.executable, "-m", "esvo"]
    per_trial = sum(b["CPU"] for b in trial_bundles(plan.trials[0].config))
    slots = max(1, int(args.num_cpus // per_trial))
    sweep_s, loop_s, train_s = [], [], []
    for _ in range(args.repeats):
        shutil.rmtree(args.out, ignore_errors=True)
        cmd = [*esvo, "sweep", str(args.config), "--out", str(args.out / "sweep"),
               "--num-cpus", str(args.num_cpus)]  # fmt: skip
        cmd += ["--seeds", args.seeds] if args.seeds else []
        for g in args.grid:
            cmd += ["--grid", g]
        sweep_s.append(_timed(cmd))
        total = 0.0
        loop = 0.0
        for trial in plan.trials:
            setting = next(s for s in plan.settings if s.name == trial.setting)
            sets = [f"{k}={v}" for k, v in setting.overrides] + [f"run.seed={trial.seed}"]
            out = args.out / "loop" / trial.dir
            cmd = [*esvo, "train", str(args.config), "--out", str(out)]
            for s in sets:
                cmd += ["--set", s]
            loop += _timed(cmd)
            alone = next(out.glob("*/*"))
            swept = args.out / "sweep" / trial.dir
            a, b = _final(alone), _final(swept)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a), trial
            total += read_jsonl(swept / "metrics.jsonl")[-1]["wall_s"]
        loop_s.append(loop)
        train_s.append(total)
    n = len(plan.trials)
    sweep, loop, train = (statistics.median(x) for x in (sweep_s, loop_s, train_s))
    ideal_sweep = train / slots
    print(f"{n} trials ({len(plan.settings)} settings x {len(plan.seeds)} seeds) of "
          f"{args.config}; {args.num_cpus} CPUs, {per_trial:g} per trial, {slots} at once; "
          f"median of {args.repeats}; final checkpoints identical both ways")  # fmt: skip
    print(f"{'way':<12} {'wall s':>8} {'trials/min':>11} {'overhead s/trial':>17}")
    print(f"{'sweep':<12} {sweep:8.1f} {60 * n / sweep:11.1f} {(sweep - ideal_sweep) / n:17.2f}")
    print(f"{'one by one':<12} {loop:8.1f} {60 * n / loop:11.1f} {(loop - train) / n:17.2f}")
    print(f"training time (sum of the trials' wall_s): {train:.1f} s; "
          f"sweep speed-up over one by one: {loop / sweep:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
