"""The embedded Ray (no ``parallel.address``) as a user's machine sees it: a real driver process
(``tests.parallel.embedded_driver``) with its own ``RAY_TMPDIR``, inspected with psutil.

- it starts a new instance even when a crashed ``ray start`` left its session file behind;
- it listens on loopback only (GCS, raylet, agents, workers, the driver's own servers);
- nothing it started outlives a SIGKILLed driver (Ray's agents would, for a minute);
- it starts only the processes it uses, and one worker process per actor.
"""

from __future__ import annotations

import contextlib
import ipaddress
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


# Processes that must be seen listening (else the check proves nothing), by psutil name.
SERVERS = {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def _listening(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every LISTEN socket of ``root`` and its descendants."""
    out = set()
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            name = p.name()
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((name, c.laddr.ip, c.laddr.port))
    return out


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback  # ::ffff:127.0.0.1 too


def test_listens_on_loopback_only():
    with embedded_driver() as driver:
        root = driver.tree[0]
        deadline = time.monotonic() + 30
        seen: list[set] = []
        # Servers come up for a while (agents, metrics): sample until three samples in a row
        # agree, every one of them on loopback only.
        while len(seen) < 3 or not (seen[-1] == seen[-2] == seen[-3]):
            assert time.monotonic() < deadline, f"listening sockets never settled: {seen[-1]}"
            sockets = _listening(root)
            outside = sorted(s for s in sockets if not _loopback(s[1]))
            assert not outside, f"listening outside loopback: {outside}"
            seen.append(sockets)
            time.sleep(0.5)
        names = {name for name, _, _ in seen[-1]}
        assert names >= SERVERS | {root.name()}, f"not all of Ray's servers were seen: {names}"


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running; a zombie is dead (its parent, pid 1 here, may be slow to
    reap it)."""
    out = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def _session_writers(session_dir: str) -> list[str]:
    """Processes anywhere on the machine with a file of the session open for writing."""
    prefix = os.path.join(os.path.realpath(session_dir), "")
    out = []
    for p in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if any(f.path.startswith(prefix) and f.mode != "r" for f in p.open_files()):
                out.append(f"{p.info['name']} ({p.pid})")
    return out


def test_no_process_outlives_a_killed_driver():
    with embedded_driver() as driver:
        started = driver.tree[1:]
        names = {p.name() for p in started}
        assert {"raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names, names
        driver.proc.kill()
        driver.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while alive := _alive(started):
            assert time.monotonic() < deadline, (
                f"alive 20 s after the driver was killed: {[(p.name(), p.pid) for p in alive]}"
            )
            time.sleep(0.2)
        assert not _session_writers(driver.info["session_dir"])


# What Ray (2.60) starts for ray.init beyond what an embedded instance uses (ray_backend._lean_node)
UNUSED = ("autoscaler/_private/monitor.py", "_private/log_monitor.py", "dashboard/dashboard.py")


def test_starts_no_unused_process_and_actors_take_the_prestarted_workers():
    with embedded_driver() as driver:
        started = driver.tree[1:]
        lines = [" ".join(p.cmdline()) for p in started]
        assert not [c for c in lines if any(u in c for u in UNUSED)], lines
        # One log per worker process the raylet ever started: the two it starts ahead of any
        # task are the actors' (an actor with a runtime_env of its own would need two more).
        logs = Path(driver.info["session_dir"], "logs")
        assert len(list(logs.glob("python-core-worker-*.log"))) == 2
        for pid in driver.info["workers"]:
            env = psutil.Process(pid).environ()
            assert env["OMP_NUM_THREADS"] == "1" == env["OPENBLAS_NUM_THREADS"]
            assert str(ROOT) in env["PYTHONPATH"].split(os.pathsep)  # the driver's directory
        # the driver's own environment is as it was: only its Ray processes got the variables
        parent = {k: os.environ.get(k) for k in driver.info["driver_env"]}
        assert driver.info["driver_env"] == parent
