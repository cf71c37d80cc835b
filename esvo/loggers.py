"""Loggers: plain callables ``log(generation, metrics)`` (brax ``progress_fn`` style).

Nothing registers itself anywhere: the trainer calls each logger it was given once per
generation, and ``close()`` on those that have one. ``JsonlLogger`` writes ``metrics.jsonl``
(one JSON object per generation), ``ProgressLogger`` a live line on a terminal (plain lines
otherwise), ``TensorBoardLogger`` scalars if ``tensorboardX`` or ``torch.utils.tensorboard``
is installed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from esvo.checkpoint import write_text_atomic, writing

Logger = Callable[[int, Mapping[str, Any]], None]


def _plain(value: Any) -> Any:
    """JSON-safe scalar: numpy scalars to Python, non-finite floats to ``None``."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class JsonlLogger:
    """Appends one JSON object per generation to ``path`` (flushed line by line).

    Args:
        path: the file (usually ``<run>/metrics.jsonl``); created if missing.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: a line either reaches the file in one write or raises there (a full
        # disk); a torn last line is skipped by ``read_jsonl`` and cut by a resume
        self._file: BinaryIO | None = open(self.path, "ab", buffering=0)  # noqa: SIM115

    def __call__(self, generation: int, metrics: Mapping[str, Any]) -> None:
        if self._file is None:
            raise ValueError(f"{self.path} is closed")
        row = {"generation": int(generation)}
        row.update({k: _plain(v) for k, v in metrics.items() if k != "generation"})
        data = memoryview((json.dumps(row) + "\n").encode())
        with writing(self.path):
            while data:  # a raw write may be short (a nearly full disk): write the rest
                data = data[self._file.write(data) :]

    def sync(self) -> None:
        """Flush to the disk (before a checkpoint that refers to these lines)."""
        if self._file is not None:
            with writing(self.path):
                os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete JSON lines of ``path``; a torn last line (crash mid-write) is skipped."""
    rows = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_jsonl(path: Path, generations: int) -> int:
    """Keep only the rows of generations ``< generations`` (atomic rewrite); returns their
    count. Used on resume, so the file ends up as if the run had never stopped."""
    path = Path(path)
    rows = [r for r in read_jsonl(path) if int(r.get("generation", -1)) < generations]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def _fmt(x: Any, spec: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class ProgressLogger:
    """One status line per generation: generation, env steps, fitness mean/max, evaluation
    return, sigma, steps/s and the ETA to the nearest limit.

    Args:
        mode: ``"tty"`` (one line rewritten in place), ``"plain"`` (a line per generation),
            ``"none"``, or ``"auto"`` (tty if ``stream`` is a terminal, else plain).
        generations, max_env_steps, max_wall_s: the run's limits, for the ETA.
        stream: where to write (default ``sys.stderr``).
    """

    def __init__(
        self,
        mode: str = "auto",
        *,
        generations: int | None = None,
        max_env_steps: int | None = None,
        max_wall_s: float | None = None,
        stream: TextIO | None = None,
    ):
        self.stream = sys.stderr if stream is None else stream
        if mode == "auto":
            isatty = getattr(self.stream, "isatty", None)
            mode = "tty" if isatty is not None and isatty() else "plain"
        if mode not in ("tty", "plain", "none"):
            raise ValueError(f"progress mode must be auto, tty, plain or none, got {mode!r}")
        self.mode = mode
        self.generations, self.max_env_steps, self.max_wall_s = (
            generations,
            max_env_steps,
            max_wall_s,
        )
        self._last_eval: Any = None
        self._open_line = False

    def eta(self, generation: int, metrics: Mapping[str, Any]) -> float | None:
        """Seconds to the nearest limit, extrapolated from the run's average pace."""
        wall = float(metrics.get("wall_s") or 0.0)
        etas = []
        if self.generations and generation + 1 > 0:
            etas.append(wall / (generation + 1) * (self.generations - generation - 1))
        steps = metrics.get("env_steps") or 0
        if self.max_env_steps and steps > 0:
            etas.append(wall / steps * max(self.max_env_steps - steps, 0))
        if self.max_wall_s:
            etas.append(max(self.max_wall_s - wall, 0.0))
        return min(etas) if etas else None

    def line(self, generation: int, metrics: Mapping[str, Any]) -> str:
        if metrics.get("eval_return_mean") is not None:
            self._last_eval = metrics["eval_return_mean"]
        total = f"/{self.generations}" if self.generations else ""
        return (
            f"gen {generation + 1}{total}  steps {metrics.get('env_steps', 0):,}  "
            f"fit {_fmt(metrics.get('fitness_mean'))}/{_fmt(metrics.get('fitness_max'))}  "
            f"eval {_fmt(self._last_eval)}  sigma {_fmt(metrics.get('sigma_mean'), '.3g')}  "
            f"{_fmt(metrics.get('steps_per_s'), '.3g')} steps/s  "
            f"eta {_duration(self.eta(generation, metrics))}"
        )

    def __call__(self, generation: int, metrics: Mapping[str, Any]) -> None:
        if self.mode == "none":
            return
        text = self.line(generation, metrics)
        if self.mode == "tty":
            self.stream.write("\r\x1b[2K" + text)
            self._open_line = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


class _TensorBoardXFile:
    """One event file written synchronously with tensorboardX's ``EventsWriter``.

    Not ``tensorboardX.SummaryWriter``: it hands events to a background thread through a
    queue, and its ``flush()`` does not wait for that queue: what a generation logged reached
    the file only every ``flush_secs`` (120 s) or at ``close()``, and was lost if the process
    was killed before.
    """

    def __init__(self, logdir: Path, purge_step: int, suffix: str):
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog
        from tensorboardX.summary import scalar

        self._event, self._scalar = Event, scalar
        self._file = EventsWriter(str(logdir / "events"), suffix)  # + its file_version event
        # A restart at purge_step: TensorBoard drops the steps >= purge_step read before it.
        self._file.write_event(
            Event(
                wall_time=time.time(),
                step=purge_step,
                session_log=SessionLog(status=SessionLog.START),
            )
        )
        self._file.flush()

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        event = self._event(wall_time=time.time(), step=step)
        for key, value in scalars.items():
            event.summary.value.extend(self._scalar(key, value).value)
        self._file.write_event(event)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _TorchFile:
    """One event file written with ``torch.utils.tensorboard`` (whose ``flush()`` waits)."""

    def __init__(self, logdir: Path, purge_step: int, suffix: str):
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(logdir), purge_step=purge_step, filename_suffix=suffix)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class TensorBoardLogger:
    """Scalars to TensorBoard event files in ``logdir``, one event file per session, flushed
    to the file before each call returns.

    Each finite number (Python or numpy, bools excepted) is a scalar at step ``generation``,
    the ``generation`` of ``metrics.jsonl``; ``None``, non-finite values (null in
    ``metrics.jsonl``), bools and strings are left out. TensorBoard stores float32.

    The event file is opened at the first generation logged, with that generation as the
    *purge step*: after a resume from an older checkpoint, TensorBoard hides what the previous
    session logged from that generation on, so the curves show each generation once, as
    ``metrics.jsonl`` does after its truncation.

    Raises:
        ImportError: if neither ``tensorboardX`` nor ``torch.utils.tensorboard`` is installed
            (use ``make_tensorboard_logger`` to skip cleanly instead).
    """

    def __init__(self, logdir: Path):
        try:
            import tensorboardX  # noqa: F401

            self._backend: Any = _TensorBoardXFile
        except ImportError:
            import torch.utils.tensorboard  # noqa: F401  # raises ImportError if absent too

            self._backend = _TorchFile
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)  # fail here, not after a generation
        self._file: Any = None

    def __call__(self, generation: int, metrics: Mapping[str, Any]) -> None:
        step = int(generation)
        if self._file is None:
            # Event files are named events.out.tfevents.<whole seconds>.<host><suffix> and
            # opened with "wb": without a suffix, a session starting within the same second
            # as the previous one would overwrite its file. This one also sorts after it
            # (TensorBoard reads a directory's files in name order).
            suffix = f".{time.time_ns():020d}.{os.getpid()}"
            self._file = self._backend(self.logdir, step, suffix)
        scalars = {}
        for key, value in metrics.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scalars[key] = value
        self._file.write(step, scalars)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def make_tensorboard_logger(logdir: Path) -> TensorBoardLogger | None:
    """A ``TensorBoardLogger``, or ``None`` with a warning if no backend is installed."""
    try:
        return TensorBoardLogger(logdir)
    except ImportError:
        warnings.warn(
            "logging.tensorboard is set but neither tensorboardX nor torch.utils.tensorboard "
            "is installed (pip install tensorboardX); TensorBoard logging is off",
            stacklevel=2,
        )
        return None


def close_loggers(loggers) -> None:
    """Call ``close()`` on every logger that has one."""
    for log in loggers:
        close = getattr(log, "close", None)
        if callable(close):
            close()
