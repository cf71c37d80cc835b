"""The image from ``docker/Dockerfile`` and the cluster of ``docker/compose.yaml``, for real.

``pytest -m docker`` (README, "Docker"): builds the image (cached layers make a rebuild quick),
starts a head and 2 workers under a compose project of its own with a fresh token, submits runs
from this interpreter through the published port, kills a worker container mid-run, runs
``esvo sweep`` on such a cluster (an image with the ``sweep`` extra), and always removes the
project with its volume. Skipped, with the reason, without a running Docker engine
or Compose (``docker-compose`` v1 or the ``docker compose`` plugin). The default run deselects
these tests (``addopts``).
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from esvo.jobs import Jobs, Token
from esvo.trainer import EVALUATOR_FIELDS, TIME_FIELDS

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")
IMAGE = "esvo:pytest"
# docker image inspect's Size (bytes) of the default build (no extras); README, BENCHMARKS.md
MAX_IMAGE_BYTES = 900e6
NUM_WORKERS = 2  # worker containers (compose's ESVO_WORKERS)
# evaluator actors: the head's 1 CPU + 2 per worker container (compose's defaults) = 5 >= 4,
# and 4 actors leave at most 1 on the head, so each worker container hosts at least one
NUM_ACTORS = 4
# cartpole without a target runs all generations: ~0.3 s each on 2 cores, once solved
LONG_RUN = ["--set", "run.target=null", "--set", "run.generations=60"]
COMMON = ["--set", f"parallel.num_workers={NUM_ACTORS}", "--set", "logging.progress=plain"]


def _run(cmd: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def _compose_command() -> list[str] | None:
    """``docker-compose`` (v1) if installed, else the ``docker compose`` plugin, else None."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if _run(["docker", "compose", "version"], timeout=30).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    """The compose command; skips the module without a Docker engine or Compose."""
    if shutil.which("docker") is None:
        pytest.skip("no docker command (install Docker, or run ../shared/tools/docker-setup)")
    info = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=60)
    if info.returncode != 0:
        reason = (info.stderr.strip().splitlines() or ["no answer"])[-1]
        pytest.skip(f"no Docker engine is running ({reason})")
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    return cmd


def _build(tag: str, extras: str = "") -> str:
    """``tag`` built from this tree (``--network host``: the build reaches the package index
    the way this machine does), with the extras ``extras``."""
    build = _run(
        ["docker", "build", "--network", "host", "-f", "docker/Dockerfile", "-t", tag,
         "--build-arg", f"ESVO_EXTRAS={extras}", "."],
        timeout=1800,
        cwd=ROOT,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return tag


@pytest.fixture(scope="module")
def image(compose) -> str:
    """``esvo:pytest``: the default image (no extras)."""
    return _build(IMAGE)


@dataclass
class ComposeCluster:
    """A running compose project: its containers, dashboard URL and token."""

    compose: list[str]
    env: dict
    token: str
    token_file: Path
    head: str
    workers: list[str]
    dashboard_url: str

    def client_env(self, home: Path) -> dict:
        """The environment of ``esvo`` on the host: the token file, no other token source."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        return {**env, "HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(self.token_file)}

    def jobs(self) -> Jobs:
        return Jobs(self.dashboard_url, token=Token(self.token, "test"))

    def get(self, path: str):
        """``path`` of the dashboard's HTTP API with the token, as JSON."""
        req = urllib.request.Request(
            self.dashboard_url + path, headers={"Authorization": "Bearer " + self.token}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def nodes(self) -> dict[str, tuple[str, str]]:
        """Every node the cluster has known: node id -> (state, hostname)."""
        summary = self.get("/nodes?view=summary")["data"]["summary"]
        return {
            n["raylet"]["nodeId"]: (n["raylet"]["state"], n.get("hostname", "")) for n in summary
        }

    def actors(self, job_id: str) -> list[dict]:
        """Ray's records of the actors of the job ``job_id`` (a submission id), dead ones too."""
        driver_job = self.jobs().info(job_id).job_id
        actors = self.get("/api/v0/actors?limit=10000&detail=true")["data"]["result"]["result"]
        return [a for a in actors if a["job_id"] == driver_job]


def _ids(compose_args: list[str], env: dict, service: str) -> list[str]:
    out = _run([*compose_args, "ps", "-q", service], env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return sorted(out.stdout.split())


@pytest.fixture(scope="module")
def cluster(compose, image, tmp_path_factory) -> Iterator[ComposeCluster]:
    """``compose up`` of a head and 2 workers with a fresh token; ``down -v`` whatever happens."""
    with _compose_cluster(compose, image, tmp_path_factory.mktemp("secrets")) as c:
        yield c


@contextlib.contextmanager
def _compose_cluster(compose: list[str], image: str, secrets_dir: Path) -> Iterator[ComposeCluster]:
    secrets_dir.chmod(0o700)  # the host's other users stay out; the containers' uid 1000 reads
    token = secrets.token_hex(32)  # the file through the bind mount (0644)
    token_file = secrets_dir / "ray_auth_token"
    token_file.write_text(token)
    token_file.chmod(0o644)
    project = f"esvo-pytest-{os.getpid()}-{secrets.token_hex(3)}"
    env = {
        **os.environ,
        "ESVO_IMAGE": image,
        "ESVO_SECRETS_DIR": str(secrets_dir),
        "ESVO_WORKERS": str(NUM_WORKERS),
        "ESVO_DASHBOARD_PORT": "0",  # free host ports: no clash with another Ray or test run
        "ESVO_CLIENT_PORT": "0",
    }
    for var in ("ESVO_BIND", "ESVO_HEAD_CPUS", "ESVO_WORKER_CPUS", "ESVO_EXTRAS"):
        env.pop(var, None)
    args = [*compose, "-p", project, "-f", str(ROOT / "docker" / "compose.yaml")]
    try:
        up = _run([*args, "up", "-d", "--no-build"], env=env, cwd=ROOT, timeout=300)
        assert up.returncode == 0, up.stderr
        (head,) = _ids(args, env, "ray-head")
        workers = _ids(args, env, "ray-worker")
        port = _run(["docker", "port", head, "8265/tcp"]).stdout.split()[0].rsplit(":", 1)[1]
        c = ComposeCluster(
            compose, env, token, token_file, head, workers, f"http://127.0.0.1:{port}"
        )
        deadline = time.monotonic() + 180
        while True:  # the dashboard answers and both workers have joined
            try:
                states = [state for state, _ in c.nodes().values()]
                if states.count("ALIVE") == 1 + NUM_WORKERS:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, _run([*args, "logs", "--tail=30"], env=env).stdout
            time.sleep(1.0)
        yield c
    finally:
        down = _run([*args, "down", "-v", "--remove-orphans"], env=env, cwd=ROOT, timeout=300)
        assert down.returncode == 0, down.stderr


def _submit(cluster: ComposeCluster, home: Path, *args: str) -> subprocess.CompletedProcess:
    """``esvo submit configs/cartpole.yaml ARGS`` from this interpreter on the host."""
    home.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "esvo", "submit", CARTPOLE, "--address", cluster.dashboard_url]
    return _run([*cmd, *COMMON, *args], env=cluster.client_env(home), cwd=ROOT, timeout=600)


def _copy_out(container: str, path: str, dest: Path) -> Path:
    """``docker cp CONTAINER:PATH`` into ``dest`` (a tar stream: no uid 1000 files to chown)."""
    out = subprocess.run(["docker", "cp", f"{container}:{path}", "-"], capture_output=True)
    assert out.returncode == 0, out.stderr.decode()
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest / Path(path).name


def _only_run_dir(parent: Path) -> Path:
    (run_dir,) = (parent / "cartpole").iterdir()
    return run_dir


def _rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _trajectory(run_dir: Path) -> list[dict]:
    """The metrics rows without the machine's speed and the evaluator's transport (retries)."""
    drop = TIME_FIELDS | EVALUATOR_FIELDS
    return [{k: v for k, v in row.items() if k not in drop} for row in _rows(run_dir)]


# ---------------------------------------------------------------------------- the image
# Run in the image: its user, the owner of /results, the compilers on PATH, pip, bytecode and
# test suites left in the virtualenv.
IMAGE_PROBE = """
import os, shutil
print(os.getuid(), os.stat("/results").st_uid)
print(sorted(c for c in ("cc", "gcc", "c++", "g++", "clang", "ld", "make") if shutil.which(c)))
print(os.path.exists("/opt/venv/bin/pip"))
print(sorted(d for d, _, _ in os.walk("/opt/venv") if d.endswith(("/__pycache__", "/tests"))))
"""


def test_image_runs_as_non_root_without_compilers_and_fits_the_size_target(image, record_property):
    out = _run(["docker", "run", "--rm", "--network", "none", image, "python", "-c", IMAGE_PROBE])
    assert out.returncode == 0, out.stderr
    users, compilers, pip, leftovers = out.stdout.splitlines()
    assert users == "1000 1000"
    assert compilers == "[]" and pip == "False", out.stdout
    assert leftovers == "[]", f"bytecode or test suites in the virtualenv: {leftovers}"

    size = int(_run(["docker", "image", "inspect", "-f", "{{.Size}}", image]).stdout)
    record_property("image_bytes", size)
    print(f"\n{image}: {size / 1e6:.0f} MB")
    assert size <= MAX_IMAGE_BYTES, f"{size / 1e6:.0f} MB > {MAX_IMAGE_BYTES / 1e6:.0f} MB"


# ---------------------------------------------------------------------------- the cluster
def _own_ipv4() -> list[str]:
    """This machine's non-loopback IPv4 addresses (the bridge's among them)."""
    return [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback
    ]


def test_published_ports_are_on_loopback_only_and_containers_run_as_uid_1000(cluster):
    ports = json.loads(
        _run(["docker", "inspect", "-f", "{{json .NetworkSettings.Ports}}", cluster.head]).stdout
    )
    published = {k: v for k, v in ports.items() if v}
    assert set(published) == {"8265/tcp", "10001/tcp"}
    host_ports = []
    for bindings in published.values():
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"], bindings
        host_ports += [int(b["HostPort"]) for b in bindings]
    for worker in cluster.workers:
        inspect = _run(["docker", "inspect", "-f", "{{json .NetworkSettings.Ports}}", worker])
        assert not any(json.loads(inspect.stdout).values()), inspect.stdout
    # reachable on loopback, refused on every other address of this machine
    for port in host_ports:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        for address in _own_ipv4():
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=3):
                pass

    for container in (cluster.head, *cluster.workers):
        assert _run(["docker", "exec", container, "id", "-u"]).stdout.strip() == "1000"
        user = _run(["docker", "inspect", "-f", "{{.Config.User}}", container]).stdout.strip()
        assert user == "1000:1000"


@pytest.fixture(scope="module")
def first_job(cluster, tmp_path_factory) -> tuple[subprocess.CompletedProcess, str]:
    """``esvo submit configs/cartpole.yaml --out /results --wait`` from the host."""
    out = _submit(cluster, tmp_path_factory.mktemp("home"), "--out", "/results/first", "--wait")
    return out, out.stdout.strip()


def test_submit_from_the_host_succeeds_and_the_run_lands_in_the_results_volume(
    cluster, first_job, tmp_path
):
    out, job_id = first_job
    assert out.returncode == 0, out.stderr[-3000:]
    assert job_id.startswith("raysubmit_")
    assert out.stderr.strip().splitlines()[-1] == f"esvo submit: job {job_id} SUCCEEDED"

    run_dir = _only_run_dir(_copy_out(cluster.head, "/results/first", tmp_path))
    rows = _rows(run_dir)
    # the config's target: the mean policy's evaluation return reaches 475 and the run stops
    assert rows[-1]["eval_return_mean"] >= 475.0
    assert all(row["eval_return_mean"] < 475.0 for row in rows[:-1])
    assert [row["generation"] for row in rows] == list(range(len(rows)))
    last = run_dir / "checkpoints" / f"gen_{len(rows):06d}" / "state.npz"
    assert last.is_file()
    # the volume outlives the head container's filesystem: the run is on the volume's mount
    mounts = json.loads(_run(["docker", "inspect", "-f", "{{json .Mounts}}", cluster.head]).stdout)
    assert [m["Type"] for m in mounts if m["Destination"] == "/results"] == ["volume"]


def _arrays(npz: Path) -> dict[str, np.ndarray]:
    with np.load(npz) as f:
        return {k: f[k] for k in f.files}


def test_worker_container_killed_mid_run_gives_the_undisturbed_result(cluster, tmp_path):
    undisturbed = _submit(cluster, tmp_path / "home", "--out", "/results/undisturbed", *LONG_RUN)
    assert undisturbed.returncode == 0, undisturbed.stderr
    jobs = cluster.jobs()
    assert jobs.wait(undisturbed.stdout.strip(), timeout_s=300) == "SUCCEEDED"

    killed = _submit(cluster, tmp_path / "home", "--out", "/results/killed", *LONG_RUN)
    assert killed.returncode == 0, killed.stderr
    job_id = killed.stdout.strip()
    deadline = time.monotonic() + 180
    while "gen 3/" not in jobs.logs(job_id):  # it is training
        assert jobs.status(job_id) in ("PENDING", "RUNNING"), jobs.logs(job_id)[-2000:]
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.5)
    victim = cluster.workers[-1]
    assert _run(["docker", "kill", victim]).returncode == 0
    seen = [line for line in jobs.logs(job_id).splitlines() if line.startswith("gen ")]
    assert jobs.status(job_id) == "RUNNING" and not seen[-1].startswith("gen 60/")
    assert jobs.wait(job_id, timeout_s=300) == "SUCCEEDED", jobs.logs(job_id)[-3000:]
    assert "gen 60/60" in jobs.logs(job_id)
    # the job had evaluator actors in the killed container (its hostname is its short id), and
    # they were replaced: more actors than it keeps alive at a time
    hostname = {node: host for node, (_, host) in cluster.nodes().items()}
    workers = [a for a in cluster.actors(job_id) if a["class_name"] == "_Worker"]
    assert any(hostname.get(a["node_id"]) == victim[:12] for a in workers), workers
    assert len(workers) > NUM_ACTORS
    state = _run(["docker", "inspect", "-f", "{{.State.Running}}", victim]).stdout.strip()
    assert state == "false"  # not restarted (a docker kill is a manual stop)

    ref = _only_run_dir(_copy_out(cluster.head, "/results/undisturbed", tmp_path / "a"))
    got = _only_run_dir(_copy_out(cluster.head, "/results/killed", tmp_path / "b"))
    assert len(_rows(got)) == 60
    assert _trajectory(got) == _trajectory(ref)
    checkpoints = sorted(p.relative_to(ref) for p in ref.glob("checkpoints/*/state.npz"))
    assert checkpoints == sorted(p.relative_to(got) for p in got.glob("checkpoints/*/state.npz"))
    assert checkpoints[-1].parent.name == "gen_000060"
    policies = sorted(p.relative_to(ref) for p in ref.glob("policy/*.npz"))
    assert [p.name for p in policies] == ["best.npz", "latest.npz"]
    for path in checkpoints + policies:
        a, b = _arrays(ref / path), _arrays(got / path)
        assert a.keys() == b.keys()
        for key in a.keys() - {"counters/wall_s"}:  # the run's elapsed time
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), (path, key)


def test_the_token_is_in_no_job_log_or_container_configuration(cluster, first_job, tmp_path):
    def esvo_jobs(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "esvo", "jobs", *args, "--address", cluster.dashboard_url]
        return _run(cmd, env=cluster.client_env(tmp_path), cwd=ROOT)

    jobs_list = esvo_jobs("list")
    assert jobs_list.returncode == 0, jobs_list.stderr
    job_ids = [line.split("\t")[0] for line in jobs_list.stdout.splitlines()]
    assert first_job[1] in job_ids
    assert cluster.token not in first_job[0].stdout + first_job[0].stderr
    for job_id in job_ids:
        logs = esvo_jobs("logs", job_id)
        assert logs.returncode == 0 and "gen 1/" in logs.stdout, logs.stderr
        assert cluster.token not in logs.stdout + logs.stderr, job_id

    containers = [cluster.head, *cluster.workers]
    for container in containers:  # its configuration: environment, command, mounts, labels
        inspect = _run(["docker", "inspect", container])
        assert inspect.returncode == 0 and cluster.token not in inspect.stdout, container
        env = json.loads(inspect.stdout)[0]["Config"]["Env"]
        assert "RAY_AUTH_TOKEN_PATH=/run/secrets/ray_auth_token" in env
        assert not any(var.startswith("RAY_AUTH_TOKEN=") for var in env)


def test_the_token_is_in_no_process_environment_or_command_line(cluster, first_job):
    scanned = 0
    for container in (cluster.head, *cluster.workers):
        running = _run(["docker", "inspect", "-f", "{{.State.Running}}", container]).stdout
        if running.strip() != "true":  # the worker killed above
            continue
        top = _run(["docker", "top", container, "-eo", "pid"])
        assert top.returncode == 0, top.stderr
        for pid in top.stdout.split()[1:]:  # the containers' processes, seen from this host
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except PermissionError:
                pytest.skip("reading the containers' process environments needs root here")
            except FileNotFoundError:  # exited meanwhile
                continue
            scanned += 1
            assert cluster.token.encode() not in environ + cmdline, (container, pid)
    assert scanned >= 5  # a head runs ~10 Ray processes, a worker ~5


def test_a_sweep_on_the_compose_cluster_spans_its_containers_and_equals_local_runs(
    compose, tmp_path
):
    """``esvo sweep --address auto`` on the head of a cluster built with ``ESVO_EXTRAS=sweep``:
    its trials run on the head and on both workers (the results volume is shared), and each
    trial's final checkpoint equals the same config trained here alone."""
    image = _build(IMAGE + "-sweep", "sweep")
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    with _compose_cluster(compose, image, secrets_dir) as c:
        sweep = _run(
            ["docker", "exec", c.head, "esvo", "sweep", "/opt/esvo/configs/cartpole_sweep.yaml",
             "--address", "auto", "--seeds", "0-2", "--out", "/results/sweep"],
            timeout=900,
        )  # fmt: skip
        assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
        out = _copy_out(c.head, "/results/sweep", tmp_path)
        ips = {
            _run(["docker", "inspect", "-f",
                  "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid]).stdout.strip()
            for cid in [c.head, *c.workers]
        }  # fmt: skip
    # Tune's table names where each trial ran (ip:pid): all three containers took trials
    hosts = {line.split("|")[3].strip().split(":")[0] for line in sweep.stdout.splitlines()
             if "TERMINATED" in line and "trials/" in line}  # fmt: skip
    assert hosts == ips
    plan = json.loads((out / "sweep.json").read_text())
    assert len(plan["trials"]) == 6
    from esvo.config import load_config
    from esvo.trainer import train

    for trial in plan["trials"]:
        n = trial["setting"].rsplit("=", 1)[1]
        cfg = load_config(
            ROOT / "configs" / "cartpole_sweep.yaml",
            [f"strategy.num_pairs={n}", f"run.seed={trial['seed']}", "parallel.backend=serial",
             "logging.progress=none"],
        )  # fmt: skip
        alone = tmp_path / "alone" / trial["dir"]
        train(cfg, alone)
        final = max((alone / "checkpoints").iterdir())
        swept = out / trial["dir"] / "checkpoints" / final.name
        a, b = (
            {k: v for k, v in _arrays(d / "state.npz").items() if k != "counters/wall_s"}
            for d in (final, swept)
        )
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), (trial["dir"], key)
        assert json.loads((out / trial["dir"] / "result.json").read_text())["exit_code"] == 0
