"""A test function objective that is slow, or blocks, or kills its own process, on demand.

Built in workers by ``make_objective(kind="python", target="tests.parallel.slow_objective:make")``;
its scores are those of ``FunctionObjective`` (the hooks only delay or crash).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from esvo.core.noise import Noise
from esvo.objectives.base import FunctionObjective
from esvo.protocol import GenerationSpec, Results, Task


class SlowObjective(FunctionObjective):
    """``FunctionObjective`` plus, per pair: a delay; at ``(block_generation, block_pair)`` the
    first process to get there writes its pid to ``block_dir/blocked`` and waits (to be killed)
    up to ``block_s``; at ``exit_pair`` (any generation) the process exits."""

    def __init__(
        self,
        name: str = "sphere",
        dim: int = 10,
        delay_s: float = 0.0,
        block_dir: str | None = None,
        block_generation: int = 0,
        block_pair: int = -1,
        block_s: float = 60.0,
        exit_pair: int = -1,
    ):
        super().__init__(name, dim)
        self.delay_s, self.block_s, self.exit_pair = delay_s, block_s, exit_pair
        self.block_dir = None if block_dir is None else Path(block_dir)
        self.block_at = (block_generation, block_pair)

    def evaluate(self, spec: GenerationSpec, task: Task, noise: Noise) -> Results:
        for i in task.indices:
            time.sleep(self.delay_s)
            if i == self.exit_pair:
                os._exit(3)
            if self.block_dir is not None and (task.generation, i) == self.block_at:
                _block_once(self.block_dir, self.block_s)
        return super().evaluate(spec, task, noise)


def make(**options) -> SlowObjective:
    return SlowObjective(**options)


def make_gym(
    block_dir: str | None = None,
    block_generation: int = 0,
    block_pair: int = -1,
    block_s: float = 60.0,
    **options,
):
    """A ``GymObjective`` (``options`` are its arguments) whose worker blocks, once, at pair
    ``block_pair`` of ``block_generation`` as ``SlowObjective`` does; scores unchanged."""
    from esvo.objectives.gym import GymObjective

    class BlockingGym(GymObjective):
        def evaluate(self, spec: GenerationSpec, task: Task, noise: Noise) -> Results:
            at = task.generation == block_generation and block_pair in task.indices
            if block_dir is not None and at:
                _block_once(Path(block_dir), block_s)
            return super().evaluate(spec, task, noise)

    return BlockingGym(**options)


def _block_once(block_dir: Path, block_s: float) -> None:
    """The first process here writes its pid to ``block_dir/blocked`` and waits (to be
    killed) up to ``block_s``."""
    try:
        fd = os.open(block_dir / "blocked", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # a re-run of the chunk: go on
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(block_s)


def kill_when_blocked(block_dir: Path, timeout_s: float = 120.0) -> tuple[threading.Thread, list]:
    """A started thread that SIGKILLs the worker blocked on the marked pair (it writes its pid
    to ``block_dir / "blocked"``), and the list it appends the killed pid to."""
    killed: list[int] = []

    def run() -> None:
        marker = Path(block_dir) / "blocked"
        deadline = time.monotonic() + timeout_s
        while not marker.exists() or not marker.read_text():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        pid = int(marker.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, killed
