"""A slow test function objective that records which Ray node and process scored each chunk.

Built in workers by ``make_objective(kind="python", target="tests.node_objective:make")``; its
scores are ``FunctionObjective``'s. Each process appends ``generation node_id start end`` lines to
``record_dir/<pid>`` (one file per process: no concurrent writers).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from esvo.core.noise import Noise
from esvo.objectives.base import FunctionObjective
from esvo.protocol import GenerationSpec, Results, Task


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return "local"


class NodeRecordingObjective(FunctionObjective):
    """``FunctionObjective`` plus ``delay_s`` per pair and a record of (generation, node)."""

    def __init__(self, name: str = "sphere", dim: int = 10, record_dir: str = "", delay_s=0.0):
        super().__init__(name, dim)
        self.delay_s = float(delay_s)
        self.record = Path(record_dir) / str(os.getpid()) if record_dir else None

    def evaluate(self, spec: GenerationSpec, task: Task, noise: Noise) -> Results:
        start = time.time()
        time.sleep(self.delay_s * len(task.indices))
        results = super().evaluate(spec, task, noise)
        if self.record is not None:
            with open(self.record, "a") as f:
                f.write(f"{task.generation} {_node_id()} {start!r} {time.time()!r}\n")
        return results


def make(**options) -> NodeRecordingObjective:
    return NodeRecordingObjective(**options)


def _records(record_dir: Path) -> list[tuple[int, list[str]]]:
    """``(pid, [generation, node_id, start, end])`` per chunk recorded so far."""
    out = []
    for path in Path(record_dir).iterdir():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4:  # a line being written is not complete yet
                out.append((int(path.name), parts))
    return out


def read_records(record_dir: Path) -> list[tuple[int, int, str]]:
    """``(pid, generation, node_id)`` for every chunk recorded so far."""
    return [(pid, int(p[0]), p[1]) for pid, p in _records(record_dir)]


def read_intervals(record_dir: Path) -> list[tuple[int, float, float]]:
    """``(pid, start, end)`` wall-clock times of every chunk recorded so far."""
    return [(pid, float(p[2]), float(p[3])) for pid, p in _records(record_dir)]


def max_overlap(intervals: list[tuple[int, float, float]]) -> int:
    """The most chunks being scored at one instant (a sweep over the start and end times)."""
    events = sorted([(s, 1) for _, s, _ in intervals] + [(e, -1) for _, _, e in intervals])
    most = now = 0
    for _, step in events:  # at a tie the end (-1) sorts first: touching is not overlapping
        now += step
        most = max(most, now)
    return most
