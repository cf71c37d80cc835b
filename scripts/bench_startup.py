"""End to end: ``esvo train configs/cartpole.yaml`` from process start to exit, by phase.

Runs the README's command (the ``esvo`` script next to this interpreter) ``--runs`` times as a
subprocess, each into a fresh temporary ``--out``, with ``ESVO_TRACE_STARTUP`` set: esvo then
appends ``phase seconds-since-process-start`` lines (``esvo.trace``). The total is the parent's
wall clock from just before the child's start to its exit as seen by ``wait()``; the last
phase, ``exit``, is that total minus the last mark (interpreter teardown, atexit handlers, the
kernel reaping the process). Every run must exit 0 with ``stopped (target)``. Prints a table of
medians (and min-max) over the runs: each phase's duration (time since the previous mark) and
the time it ends at, ordered by that time; and the CPU time of the run's whole process tree
(Ray's processes included; sampled from /proc, Linux), which a loaded machine does not inflate
the way it does wall time.

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
import threading
import time
from dataclasses import dataclass
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


class CpuSampler:
    """CPU seconds (user + system) of a process and all its descendants, sampled from /proc
    every ``period_s`` (Ray's raylet reaps its workers without accounting for them, so
    ``RUSAGE_CHILDREN`` misses them): each process counts with its last sample, which misses
    at most its last ``period_s`` of CPU. Linux only (``total`` stays 0 elsewhere)."""

    def __init__(self, pid: int, period_s: float = 0.1):
        self.pid, self.period_s = pid, period_s
        self.cpu: dict[tuple[int, int], float] = {}  # (pid, start tick) -> CPU s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        stats = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                # ppid, utime + stime (ticks), start time (ticks since boot)
                stats[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]), fields[19])
        tree, grew = {self.pid}, True
        while grew:
            new = {p for p, (ppid, _, _) in stats.items() if ppid in tree and p not in tree}
            tree |= new
            grew = bool(new)
        tick = os.sysconf("SC_CLK_TCK")
        for p in tree & stats.keys():
            self.cpu[(p, stats[p][2])] = stats[p][1] / tick

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._sample()

    def stop(self) -> float:
        """Stops sampling; returns the total CPU seconds seen."""
        self._stop.set()
        self._thread.join()
        return sum(self.cpu.values())


@dataclass
class Run:
    total: float  # s, start -> exit seen by wait()
    cpu: float  # s, user + system of the run's process tree (sampled)
    marks: list[tuple[str, float]]  # (phase, s since process start), in time order


def run_once(cmd: list[str], env: dict[str, str]) -> Run:
    """One run of ``cmd --out TMP``; it must stop at its target."""
    with tempfile.TemporaryDirectory(prefix="esvo-startup-") as tmp:
        trace = Path(tmp, "trace.txt")
        full = [*cmd, "--out", str(Path(tmp, "out"))]
        start = time.perf_counter()
        proc = subprocess.Popen(
            full,
            cwd=tmp,  # workers import esvo from PYTHONPATH / site-packages, not from ./esvo
            env={**env, ENV_VAR: str(trace)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sampler = CpuSampler(proc.pid) if os.path.isdir("/proc") else None
        _, err = proc.communicate()
        total = time.perf_counter() - start
        cpu = sampler.stop() if sampler else 0.0
        if proc.returncode != 0 or "stopped (target)" not in err:
            raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(full)}\n{err[-3000:]}")
        marks: dict[str, float] = {}
        for line in trace.read_text().splitlines():
            name, t = line.split()
            marks.setdefault(name, float(t))
    ordered = sorted(marks.items(), key=lambda m: m[1])
    return Run(total, cpu, [*ordered, ("exit", total)])


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
    runs: list[Run] = []
    durations: dict[str, list[float]] = {}
    ends: dict[str, list[float]] = {}
    for i in range(args.runs):
        run = run_once(cmd, env)
        runs.append(run)
        prev = 0.0
        for name, t in run.marks:
            durations.setdefault(name, []).append(t - prev)
            ends.setdefault(name, []).append(t)
            prev = t
        print(f"run {i + 1}: {run.total:.2f} s, CPU {run.cpu:.2f} s", file=sys.stderr)
    order = sorted(ends, key=lambda n: statistics.median(ends[n]))
    print("| phase | median s | min-max s | ends at (median) s |  |\n|---|---:|---:|---:|---|")
    for name in order:
        d = durations[name]
        note = "" if len(d) == args.runs else f"(in {len(d)} of {args.runs} runs)"
        print(
            f"| {PHASES.get(name, name)} | {statistics.median(d):.2f} | {_range(d)} | "
            f"{statistics.median(ends[name]):.2f} | {note} |"
        )
    totals = [r.total for r in runs]
    print(
        f"\ntotal, process start -> exit: median {statistics.median(totals):.2f} s "
        f"(min-max {_range(totals)}) over {args.runs} runs; load average before: {load:.1f}"
    )
    cpu = [r.cpu for r in runs]
    print(f"CPU time of the run's process tree (sampled): median {statistics.median(cpu):.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
