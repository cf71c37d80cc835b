"""End to end: ``esvo train configs/cartpole.yaml`` from process start to exit, by phase.

Runs the README's command (the ``esvo`` script next to this interpreter) ``--runs`` times as a
subprocess, each into a fresh temporary ``--out``, with ``ESVO_TRACE_STARTUP`` set: esvo then
appends ``phase seconds-since-process-start`` lines (``esvo.trace``). The total is the parent's
wall clock from just before the child's start to its exit as seen by ``wait()``; the last
phase, ``exit``, is that total minus the last mark (interpreter teardown, atexit handlers, the
kernel reaping the process). Every run must exit 0 with ``stopped (target)``. Prints a table of
medians (and min-max) over the runs: each phase's duration (time since the previous mark) and
the time it ends at, ordered by that time.

    .venv/bin/python scripts/bench_startup.py [--runs 5] [--set parallel.num_workers=2]
        [--env RAY_SOME_KNOB=1] [--config configs/cartpole.yaml]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from esvo.trace import ENV_VAR

# What ends at each mark (esvo.trace.mark calls in cli, trainer, parallel.ray_backend).
PHASES = {
    "main": "python start + imports (esvo.cli)",
    "config": "config + objective check",
    "ray_start": "ray.init and actors requested",
    "build": "trainer: objective, strategy, initial state",
    "ray_import": "import ray (esvo.parallel.ray_backend)",
    "ray_init": "ray.init",
    "watchdog": "watchdog started",
    "actors": "actors up",
    "first_generation": "first generation (incl. its evaluation)",
    "loop": "training loop to target",
    "ray_shutdown": "actors killed + ray.shutdown",
    "shutdown": "watchdog stopped",
    "return": "CLI returns",
    "exit": "interpreter exit (seen by the parent)",
}


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, list[tuple[str, float]]]:
    """One run: the parent's wall time to exit, and the child's marks (first of each name)."""
    with tempfile.TemporaryDirectory(prefix="esvo-startup-") as tmp:
        trace = Path(tmp, "trace.txt")
        out = Path(tmp, "out")
        full = [*cmd, "--out", str(out)]
        start = time.perf_counter()
        proc = subprocess.run(
            full,
            cwd=tmp,  # workers import esvo from PYTHONPATH / site-packages, not from ./esvo
            env={**env, ENV_VAR: str(trace)},
            capture_output=True,
            text=True,
        )
        total = time.perf_counter() - start
        if proc.returncode != 0 or "stopped (target)" not in proc.stderr:
            raise SystemExit(
                f"run failed (exit {proc.returncode}): {' '.join(full)}\n{proc.stderr[-3000:]}"
            )
        marks: dict[str, float] = {}
        for line in trace.read_text().splitlines():
            name, t = line.split()
            marks.setdefault(name, float(t))
    ordered = sorted(marks.items(), key=lambda m: m[1])
    return total, [*ordered, ("exit", total)]


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("configs/cartpole.yaml"))
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="child environment"
    )
    args = p.parse_args(argv)
    script = Path(sys.executable).with_name("esvo")
    esvo = [str(script)] if script.is_file() else [sys.executable, "-m", "esvo"]
    cmd = [*esvo, "train", str(args.config.resolve())]
    for s in args.overrides:
        cmd += ["--set", s]
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(kv.split("=", 1) for kv in args.env)
    print("$ " + " ".join([*cmd, "--out", "TMP"]) + "".join(f"  [{kv}]" for kv in args.env))
    load = os.getloadavg()[0]
    totals: list[float] = []
    durations: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for i in range(args.runs):
        total, marks = run_once(cmd, env)
        totals.append(total)
        prev = 0.0
        for name, t in marks:
            durations.setdefault(name, []).append(t - prev)
            ends.setdefault(name, []).append(t)
            prev = t
        print(f"run {i + 1}: {total:.2f} s", file=sys.stderr)
    order = sorted(ends, key=lambda n: statistics.median(ends[n]))
    print("| phase | median s | min-max s | ends at (median) s |  |\n|---|---:|---:|---:|---|")
    for name in order:
        d = durations[name]
        note = "" if len(d) == args.runs else f"(in {len(d)} of {args.runs} runs)"
        print(
            f"| {PHASES.get(name, name)} | {statistics.median(d):.2f} | {_range(d)} | "
            f"{statistics.median(ends[name]):.2f} | {note} |"
        )
    print(
        f"\ntotal, process start -> exit: median {statistics.median(totals):.2f} s "
        f"(min-max {_range(totals)}) over {args.runs} runs; load average before: {load:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
