"""Ray Job Submission for ``esvo submit`` / ``esvo jobs``: run an experiment on a Ray cluster.

A job is ``PY -m esvo train esvo-job.yaml`` run by the cluster's job server on the head node.
The resolved config (overrides applied, validated on the client) is the only file of the job's
``working_dir`` (plus, with ``working_dir=DIR``, a copy of the user's project files), and the
client's ``esvo`` package travels as a ``py_modules`` entry, so the cluster runs exactly the
client's code; the cluster needs esvo's dependencies (numpy, gymnasium, ray, ...) installed
(the docker image has them). ``ship_package=False`` uses the esvo installed on the cluster.
Inside the job ``RAY_ADDRESS`` is set, so ``RayEvaluator`` joins the job's cluster.

``PY`` is this very interpreter when the cluster is on this machine (it has esvo's dependencies,
the head's ``python`` may not; a container behind a forwarded port, where its path does not
exist, gets ``python``), and ``python`` otherwise. A probe runs first: an interpreter that cannot
import esvo's dependencies fails the job with one line naming it and the module
(``job_entrypoint``, ``failure_reason``), not with a traceback from deep inside esvo.

Results land where the config's ``run.out_dir`` points *on the head node*: a relative path is
relative to the job's working directory, a temporary directory that Ray may delete, so pass an
absolute path on a shared filesystem (or on the head) with ``out_dir``.

Token authentication (Ray >= 2.59): the token is read like Ray reads it (``RAY_AUTH_TOKEN``,
then the file named by ``RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``) and sent as
``Authorization: Bearer ...`` on every request. esvo sets the header itself, whatever
``RAY_AUTH_MODE`` says: Ray's client adds it only when ``RAY_AUTH_MODE=token`` is set in the
client's environment. The token never goes into the job's runtime_env, metadata, messages or
logs; errors name only where the token came from. Ray is imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shlex
import shutil
import socket
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

JOB_CONFIG = "esvo-job.yaml"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# What ``esvo train`` imports on the head (esvo's runtime dependencies, then esvo itself); the
# probe tries them in this order.
JOB_IMPORTS = ("numpy", "scipy", "yaml", "gymnasium", "ray", "esvo.trainer")
# The probe's line in the job's output starts with this (``failure_reason`` looks for it).
PROBE_PREFIX = "esvo job: "
# Never copied into a job's working directory (``working_dir=DIR``): VCS, envs, caches, runs.
WORKING_DIR_EXCLUDES = (
    ".git",
    ".venv",
    "venv",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "runs",
)


# Ray's INFO lines about zipping and uploading the runtime_env packages (noise for esvo users).
_UPLOAD_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray._private.runtime_env.packaging")


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raises the given loggers to WARNING for the duration."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class JobsError(RuntimeError):
    """The cluster could not be reached or refused a request; ``str(e)`` is one line."""


class AuthError(JobsError):
    """The cluster refused the token (missing or wrong); never contains the token."""


@dataclass(frozen=True)
class Token:
    """An auth token and where it was found (``source`` is safe to print; ``value`` is not)."""

    value: str
    source: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and debug output
        return f"Token(source={self.source!r})"


def find_token() -> Token | None:
    """The token Ray would use: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``.

    Raises:
        AuthError: ``RAY_AUTH_TOKEN_PATH`` names a file that cannot be read.
    """
    value = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if value:
        return Token(value, "RAY_AUTH_TOKEN")
    path_var = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path_var:
        try:
            value = Path(path_var).expanduser().read_text().strip()
        except OSError as e:
            raise AuthError(
                f"RAY_AUTH_TOKEN_PATH={path_var}: cannot read the token file ({e.strerror})"
            ) from None
        return Token(value, f"RAY_AUTH_TOKEN_PATH={path_var}") if value else None
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        value = default.read_text().strip()
        return Token(value, str(default)) if value else None
    return None


def _auth_message(address: str, status: int | None, token: Token | None) -> str:
    if token is None or status == 401:
        return (
            f"{address} requires a Ray auth token and none was found: set RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token to the cluster's token"
        )
    return (
        f"{address} rejected the Ray auth token from {token.source}: it is not this cluster's token"
    )


def is_local(address: str) -> bool:
    """Whether the dashboard at ``address`` (``http://HOST:PORT``) is on this machine: its host
    resolves to a loopback address or to one of this machine's own (one a socket can bind)."""
    host = urllib.parse.urlsplit(address if "://" in address else "http://" + address).hostname
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    for family, _, _, _, sockaddr in infos:
        if ipaddress.ip_address(sockaddr[0].split("%")[0]).is_loopback:
            return True
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((sockaddr[0], 0, *sockaddr[2:]))
            return True
    return False


def default_python(address: str) -> str:
    """The job's interpreter when none is given: this one for a cluster on this machine (it has
    esvo's dependencies; the head's ``python`` may not), else ``python``."""
    return sys.executable if sys.executable and is_local(address) else "python"


# The job's first step, ``PY -c _PROBE PY``: imports esvo's dependencies and, on the first that
# fails, exits with one line naming the interpreter and the module. Plain enough for any Python,
# so that even an old ``python`` says what it lacks rather than failing on the probe's syntax.
_PROBE = """\
import importlib, sys
for name in "{modules}".split():
    try:
        importlib.import_module(name)
    except Exception as e:
        sys.exit("{prefix}the interpreter %s (%s) cannot import %s (%s: %s); submit with "
                 "--python EXE, an interpreter on the head node that has the dependencies of esvo"
                 % (sys.argv[1], sys.executable, name, type(e).__name__, e))
"""


def job_entrypoint(python: str, fallback: str | None = None) -> str:
    """The job's shell command: the import probe, then ``python -m esvo train esvo-job.yaml``.

    Args:
        python: the interpreter (a name on the head's ``PATH`` or a path).
        fallback: used instead when ``python`` is no executable file on the head.
    """
    code = _PROBE.format(modules=" ".join(JOB_IMPORTS), prefix=PROBE_PREFIX)
    steps = [f"PY={shlex.quote(python)}"]
    if fallback is not None:
        steps.append(f'[ -x "$PY" ] || PY={shlex.quote(fallback)}')
    missing = f"{PROBE_PREFIX}no interpreter $PY on the head node; submit with --python EXE"
    steps.append(f'command -v "$PY" >/dev/null || {{ echo "{missing}" >&2; exit 127; }}')
    steps.append(f'"$PY" -c {shlex.quote(code)} "$PY" && exec "$PY" -m esvo train {JOB_CONFIG}')
    return "; ".join(steps)


def failure_reason(logs: str, message: str | None) -> str:
    """Why a job failed, in one line: the probe's (which interpreter could not import what), or
    else the first line of Ray's message."""
    for line in reversed(logs.splitlines()):
        if line.startswith(PROBE_PREFIX):
            return line[len(PROBE_PREFIX) :].strip()
    lines = (message or "").strip().splitlines()
    return lines[0] if lines else "no message from Ray"


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Jobs:
    """A ``JobSubmissionClient`` for one cluster, with esvo's token handling and errors.

    Args:
        address: the dashboard's HTTP address, ``http://HEAD:8265``.
        token: the auth token (default ``find_token()``; ``None`` found: no header).
    """

    def __init__(self, address: str, token: Token | None = None):
        if "://" not in address:
            address = "http://" + address
        self.address = address.rstrip("/")
        self._token = find_token() if token is None else token
        # An explicit header: Ray's client then neither adds nor overrides one (an empty value
        # when there is no token, so a token cached by Ray in this process is never sent).
        value = "" if self._token is None else "Bearer " + self._token.value
        self._headers = {"Authorization": value}
        self._client = self._call(self._connect)

    def _connect(self):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers=dict(self._headers))

    def _call(self, fn, *args, **kwargs):
        """``fn(*args)`` with Ray's auth, connection and request errors as one-line errors."""
        from ray.exceptions import AuthenticationError

        try:
            return fn(*args, **kwargs)
        except AuthenticationError as e:
            status = 401 if "Authentication required" in str(e) else 403
            raise AuthError(_auth_message(self.address, status, self._token)) from None
        except ConnectionError as e:
            raise JobsError(
                f"cannot reach the Ray dashboard at {self.address} ({_one_line(e, 160)}); is "
                "the head running with the dashboard (ray[default]) and is this its HTTP port?"
            ) from None
        except RuntimeError as e:  # the job server answered with an error (unknown job, ...)
            raise JobsError(_one_line(e)) from None

    # ------------------------------------------------------------------ submit
    def submit(
        self,
        config_text: str,
        *,
        name: str = "esvo",
        working_dir: Path | None = None,
        ship_package: bool = True,
        python: str | None = None,
        entrypoint_num_cpus: float | None = None,
        agent_wait_s: float = 60.0,
    ) -> str:
        """Submits ``PY -m esvo train esvo-job.yaml``; returns the job's submission id.

        Args:
            config_text: the resolved config (``dump_config``), written as ``esvo-job.yaml``.
            name: recorded in the job's metadata (``esvo_run``).
            working_dir: a project directory copied into the job's working directory (for
                ``kind: python`` objectives and module-prefixed env ids); caches, ``.git``,
                virtualenvs and ``runs/`` are left out.
            ship_package: upload this esvo package (``py_modules``) rather than use the
                cluster's installed one.
            python: the interpreter on the cluster that has esvo's dependencies; default
                ``default_python`` (this one for a cluster on this machine, falling back to
                ``python`` where its path does not exist, as in a container).
            entrypoint_num_cpus: CPUs reserved for the driver (default 0, Ray's).
            agent_wait_s: how long to retry while the head's job agent is not up yet.
        """
        import esvo

        with tempfile.TemporaryDirectory(prefix="esvo-job-") as tmp:
            stage = Path(tmp) / "job"
            if working_dir is not None:
                shutil.copytree(
                    working_dir,
                    stage,
                    ignore=shutil.ignore_patterns(*WORKING_DIR_EXCLUDES),
                    symlinks=True,
                )
                if (stage / JOB_CONFIG).exists():
                    raise ValueError(f"{working_dir}: holds a file named {JOB_CONFIG}")
            else:
                stage.mkdir()
            (stage / JOB_CONFIG).write_text(config_text)
            runtime_env: dict = {"working_dir": str(stage), "excludes": ["__pycache__", "*.pyc"]}
            if ship_package:
                runtime_env["py_modules"] = [str(Path(esvo.__file__).resolve().parent)]
            if python is None:
                python = default_python(self.address)
                fallback = "python" if python != "python" else None
                entrypoint = job_entrypoint(python, fallback)
            else:
                entrypoint = job_entrypoint(python)
            deadline = time.monotonic() + agent_wait_s
            with _quiet(*_UPLOAD_LOGGERS):
                while True:
                    try:
                        return self._call(
                            self._client.submit_job,
                            entrypoint=entrypoint,
                            runtime_env=runtime_env,
                            metadata={"esvo_run": name},
                            entrypoint_num_cpus=entrypoint_num_cpus,
                        )
                    except JobsError as e:  # a head that just started: its agent comes up soon
                        if "No available agent" not in str(e) or time.monotonic() > deadline:
                            raise
                        time.sleep(1.0)

    # ------------------------------------------------------------------ follow
    def list(self) -> list:
        """``JobDetails`` of every job the cluster knows, oldest first."""
        jobs = self._call(self._client.list_jobs)
        return sorted(jobs, key=lambda j: j.start_time or 0)

    def info(self, job_id: str):
        """The job's ``JobDetails`` (status, message, times, entrypoint, metadata)."""
        return self._call(self._client.get_job_info, job_id)

    def failure(self, job_id: str) -> str:
        """Why the job failed, in one line (``failure_reason``)."""
        return failure_reason(self.logs(job_id), self.info(job_id).message)

    def status(self, job_id: str) -> str:
        """``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED``."""
        return str(self.info(job_id).status.value)

    def logs(self, job_id: str) -> str:
        """The driver's output so far (progress lines, messages)."""
        return self._call(self._client.get_job_logs, job_id)

    def follow(self, job_id: str) -> Iterator[str]:
        """Chunks of the driver's output as they come, until the job ends."""
        import asyncio

        agen = self._client.tail_job_logs(job_id)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield self._call(loop.run_until_complete, agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(agen.aclose())
            loop.close()

    def stop(self, job_id: str) -> bool:
        """Asks the job to stop (SIGTERM to the driver: it checkpoints and exits); True if it
        was running."""
        return bool(self._call(self._client.stop_job, job_id))

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 1.0) -> str:
        """Polls until the job is in a terminal state; returns it.

        Raises:
            TimeoutError: still running after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            status = self.status(job_id)
            if status in TERMINAL:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {status} after {timeout_s:.0f} s")
            time.sleep(poll_s)


__all__ = [
    "JOB_CONFIG",
    "TERMINAL",
    "AuthError",
    "Jobs",
    "JobsError",
    "Token",
    "default_python",
    "failure_reason",
    "find_token",
    "is_local",
    "job_entrypoint",
]
