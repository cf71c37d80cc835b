"""The opt-in start-up trace (``ESVO_TRACE_STARTUP``): marks measured from the process start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esvo.trace import ENV_VAR, mark

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_marks_lie_between_the_process_start_and_its_exit_as_the_parent_sees_them(tmp_path):
    trace = tmp_path / "trace.txt"
    env = {**os.environ, ENV_VAR: str(trace)}
    cmd = [sys.executable, "-m", "esvo", "validate", str(ROOT / "configs" / "sphere.yaml")]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=tmp_path)
    wall = time.perf_counter() - start
    marks = [line.split() for line in trace.read_text().splitlines()]
    assert [name for name, _ in marks] == ["main", "return"]
    times = [float(t) for _, t in marks]
    # /proc's start time has a resolution of one clock tick
    tick = 1 / os.sysconf("SC_CLK_TCK")
    assert 0 < times[0] <= times[1] <= wall + tick


def test_without_the_variable_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    mark("main")
    assert list(tmp_path.iterdir()) == []
