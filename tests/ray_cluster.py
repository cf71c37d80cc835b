"""A throwaway local Ray cluster for tests: ``ray start`` processes in their own process groups.

Every process gets the cluster's own ``RAY_TMPDIR`` and auth token, so a test touches neither
``~/.ray`` nor any other Ray on the machine; everything is torn down by signalling the process
groups this module started (never ``ray stop``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace_s: float = 3.0) -> None:
    """``sig`` to the process group we started, SIGKILL what is left after ``grace_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader, or the group never looks empty
            os.killpg(proc.pid, 0)  # raises once the whole group is gone
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


@dataclass
class Cluster:
    """A running head (and nodes). ``env`` is what a client of this cluster needs."""

    tmp: str
    env: dict
    gcs_address: str = ""
    dashboard_url: str = ""
    procs: list = field(default_factory=list)

    @property
    def token(self) -> str:
        return self.env["RAY_AUTH_TOKEN"]

    def add_node(self, num_cpus: int = 1, timeout_s: float = 90) -> tuple[subprocess.Popen, str]:
        """A second raylet (standing in for a second machine) joined to the head: its
        ``ray start`` process (leader of its process group) and its node id."""
        before = set(self.alive_nodes())
        cmd = [RAY, "start", "--block", f"--address={self.gcs_address}", f"--num-cpus={num_cpus}"]
        proc = _spawn(cmd + _agent_ports(), self.env, self.tmp)
        self.procs.append(proc)
        deadline = time.monotonic() + timeout_s
        while not (new := set(self.alive_nodes()) - before):
            assert proc.poll() is None, "ray start (node) exited"
            assert time.monotonic() < deadline, "the node did not join"
            time.sleep(0.5)
        return proc, new.pop()

    def alive_nodes(self) -> dict[str, bool]:
        """Alive node ids (True for the head), from the dashboard's (authenticated) node list."""
        import json

        with self.get("/nodes?view=summary") as r:
            nodes = json.load(r)["data"]["summary"]
        raylets = [n.get("raylet", {}) for n in nodes]
        return {
            r["nodeId"]: bool(r.get("isHeadNode")) for r in raylets if r.get("state") == "ALIVE"
        }

    def get(self, path: str):
        """GET ``path`` from the dashboard with the cluster's token."""
        req = urllib.request.Request(
            self.dashboard_url + path, headers={"Authorization": "Bearer " + self.token}
        )
        return urllib.request.urlopen(req, timeout=10)

    def close(self) -> None:
        for proc in reversed(self.procs):
            kill_group(proc)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _agent_ports() -> list[str]:
    """Free ports for the per-node agents: their defaults (e.g. 52365) clash with any other Ray
    on the machine (the dashboard agent then dies and jobs get "No available agent")."""
    return [
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]


def _spawn(cmd: list[str], env: dict, cwd: str) -> subprocess.Popen:
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: torn down by killpg
    )


@contextlib.contextmanager
def local_cluster(num_cpus: int = 2, dashboard: bool = True, timeout_s: float = 120):
    """A head with token auth (and the dashboard, on loopback), in a temp RAY_TMPDIR.

    ``--node-ip-address=127.0.0.1`` does not keep the head on loopback: Ray 2.60 replaces it by
    the machine's address, the one ``gcs_address`` names (README, "Ports")."""
    tmp = tempfile.mkdtemp(prefix="esvo-ray-", dir="/tmp")  # short: Ray's socket paths
    env = {
        **os.environ,
        "RAY_TMPDIR": tmp,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        # jobs run `python -m esvo`: the cluster's interpreter first on PATH, as on a real node
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH", "RAY_DASHBOARD_ADDRESS"):
        env.pop(var, None)
    cluster = Cluster(tmp, env)
    port, dash = free_port(), free_port()
    cmd = [
        RAY,
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--num-cpus={num_cpus}",
        "--disable-usage-stats",
        *_agent_ports(),
    ]
    if dashboard:
        cmd += [
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
        ]
    else:
        cmd += ["--include-dashboard=false"]
    try:
        cluster.procs.append(_spawn(cmd, env, tmp))
        address_file = Path(tmp, "ray", "ray_current_cluster")
        deadline = time.monotonic() + timeout_s
        while not (address_file.exists() and address_file.read_text().strip()):
            assert cluster.procs[0].poll() is None, "ray start exited"
            assert time.monotonic() < deadline, "ray start did not come up"
            time.sleep(0.2)
        cluster.gcs_address = address_file.read_text().strip()
        if dashboard:
            cluster.dashboard_url = f"http://127.0.0.1:{dash}"
            while True:  # the job server answers once the dashboard is up
                try:
                    cluster.get("/api/version").close()
                    break
                except OSError:
                    assert cluster.procs[0].poll() is None, "ray start exited"
                    assert time.monotonic() < deadline, "the dashboard did not come up"
                    time.sleep(0.5)
        yield cluster
    finally:
        cluster.close()
