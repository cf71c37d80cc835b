"""Opt-in start-up trace: ``ESVO_TRACE_STARTUP=FILE`` appends ``phase seconds`` lines to FILE.

``seconds`` is the time since this process started (its exec: ``starttime`` of
``/proc/self/stat``, in clock ticks since boot, against ``CLOCK_BOOTTIME``; resolution one
tick, 10 ms), so the phases of a run line up with a wall clock started by whoever launched
it. ``scripts/bench_startup.py`` reads the file. Without the variable ``mark`` does nothing;
on a system without ``/proc`` (not Linux) it writes nothing.
"""

from __future__ import annotations

import os
import time

ENV_VAR = "ESVO_TRACE_STARTUP"

_start: float | None = None  # this process's start, seconds since boot (CLOCK_BOOTTIME)


def process_start() -> float | None:
    """This process's start in seconds since boot (``CLOCK_BOOTTIME``); None without /proc."""
    global _start
    if _start is None:
        try:
            with open("/proc/self/stat") as f:
                stat = f.read()
            # fields after "(comm)", which may hold spaces: state is field 3, starttime field 22
            ticks = int(stat.rsplit(")", 1)[1].split()[19])
            _start = ticks / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None
    return _start


def since_start() -> float | None:
    """Seconds since this process started, or None where that is unknown."""
    start = process_start()
    return None if start is None else time.clock_gettime(time.CLOCK_BOOTTIME) - start


def mark(phase: str) -> None:
    """Appends ``phase <seconds since process start>`` to ``$ESVO_TRACE_STARTUP`` if set."""
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    t = since_start()
    if t is None:
        return
    with open(path, "a") as f:
        f.write(f"{phase} {t:.4f}\n")
