"""The embedded Ray (no ``parallel.address``) as a user's machine sees it: a real driver process
(``tests.parallel.embedded_driver``) with its own ``RAY_TMPDIR``, inspected with psutil.

- it starts a new instance even when a crashed ``ray start`` left its session file behind;
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.ray_cluster import free_port

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Driver:
    """A running driver: its process, its JSON line, and the processes it started (a snapshot
    taken once its workers answered: Ray's node processes, agents, workers)."""

    proc: subprocess.Popen
    info: dict
    tree: list[psutil.Process]
    tmp: str  # its RAY_TMPDIR


def _read_line(proc: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "the driver printed nothing in time"
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 1.0))
        if ready:
            return proc.stdout.readline()
        assert proc.poll() is None, f"the driver exited: {proc.stderr.read()[-3000:]}"


@contextlib.contextmanager
def embedded_driver(stale_address: str | None = None, timeout_s: float = 120):
    """The driver in a fresh process with a private ``RAY_TMPDIR`` (holding a
    ``ray_current_cluster`` file naming ``stale_address`` if given); everything it started is
    killed at the end."""
    tmp = tempfile.mkdtemp(prefix="esvo-ray-", dir="/tmp")  # short: Ray's socket paths
    if stale_address is not None:
        Path(tmp, "ray").mkdir()
        Path(tmp, "ray", "ray_current_cluster").write_text(stale_address + "\n")
    env = {**os.environ, "RAY_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.parallel.embedded_driver"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tree: list[psutil.Process] = []
    try:
        line = _read_line(proc, timeout_s)
        assert line, f"the driver exited: {proc.stderr.read()[-3000:]}"
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        yield Driver(proc, json.loads(line), tree, tmp)
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # a clean exit if it is still running
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for p in tree:  # only what this driver started (psutil checks for pid reuse)
            with contextlib.suppress(psutil.Error):
                p.kill()
        proc.stdout.close()
        proc.stderr.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_starts_a_new_instance_despite_a_stale_session_file():
    # What a crashed `ray start --head` leaves: its address in ray_current_cluster, nobody there.
    stale = f"127.0.0.1:{free_port()}"
    with embedded_driver(stale_address=stale) as driver:
        assert driver.info["same_as_serial"]
        assert len(driver.info["workers"]) == 2
        assert driver.info["session_dir"].startswith(os.path.join(driver.tmp, "ray", "session_"))
