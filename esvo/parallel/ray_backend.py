"""Ray evaluator: long-lived worker actors pull chunks of pairs (Salimans et al. 2017, §2.1).

One generation is one round trip (style.md §8.3): the ``GenerationSpec`` goes into the object
store once (``ray.put``) and every task carries its reference; tasks are small ``Task`` chunks
(pair indices + ids) handed to whichever worker is free (``ray.wait``); workers return only
``Results`` (scalars and per-pair observation statistics). A ``NoiseTable`` is put into the object
store once per run and read zero-copy by every worker on a node; generator noise travels as its
spec. Nothing of size ``d`` comes back.

A worker that dies mid-generation (process killed, node lost) has its chunks re-queued to the
others and is replaced by a fresh actor. Scores are keyed by pair index and seeds, so the
generation's result is bit-identical to a run without the failure, and to a run with any number
of workers. ``max_consecutive_failures`` losses in a row raise ``EvaluatorError``; every wait is
bounded.

Decisions (see the module's functions for details):

- Ray is embedded by default (``num_cpus = num_workers``, dashboard off, usage stats off, Ray's
  logs kept in its session directory rather than the terminal): always a new instance, listening
  on loopback only, without the processes it does not use (autoscaler monitor, log monitor,
  dashboard API server; all as usual with the dashboard on), and none of its processes
  outlives the driver, not even a SIGKILLed one (a watchdog process kills Ray's agents, which
  otherwise linger for a minute; ``connect``).
  ``address`` (or ``RAY_ADDRESS``, as set by ``ray job submit``) joins an existing cluster. A Ray
  already initialized in the process is reused and left running on ``close``.
- Token authentication (Ray's default since 2.5x): an embedded Ray creates/uses
  ``~/.ray/auth_token``. ``address="auto"`` enables it by itself when a token is found
  (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); an explicit ``host:port``
  additionally needs ``RAY_AUTH_MODE=token`` (Ray never sends a token to an explicit address on
  its own, and neither does esvo).
- User modules (``kind: python`` objectives, module-prefixed gym ids) import in workers because
  the actors' ``PYTHONPATH`` holds the driver's working directory and its non-installed
  ``sys.path`` entries (an env var: no upload, unlike ``runtime_env.working_dir``).
- BLAS/OpenMP pools are pinned to one thread per worker process (env vars, and
  ``threadpoolctl`` when installed).
- These env vars reach the workers of an embedded Ray through the raylet's environment, so the
  actors need no ``runtime_env`` and start in the worker processes the raylet starts as it
  comes up (one per CPU, ``enable_worker_prestart``): with a ``runtime_env`` of their own they
  would wait for two more processes while those sit idle. Joining a cluster, they go in the
  actors' ``runtime_env``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import pickle
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import ray
from ray import exceptions as rex
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from esvo.core.noise import Noise, NoiseTable, make_noise
from esvo.objectives.base import make_objective
from esvo.protocol import GenerationSpec, Results, Task
from esvo.trace import mark

# One thread per worker process: workers are the parallelism, nested pools only oversubscribe.
THREAD_ENV = {
    var: "1"
    for var in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    )
}

# Errors meaning "the worker (or its node, or a result object) is gone", not "the objective
# raised": the chunk is re-queued and the actor replaced.
LOST_ERRORS: tuple[type[Exception], ...] = (
    rex.RayActorError,  # ActorDiedError, ActorUnavailableError
    rex.WorkerCrashedError,
    rex.ObjectLostError,  # OwnerDiedError, ObjectFetchTimedOutError, ...
    rex.OutOfMemoryError,
    rex.NodeDiedError,
    rex.ActorUnschedulableError,
    rex.RuntimeEnvSetupError,
)

_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
LOOPBACK = "127.0.0.1"  # the embedded instance's node address: it listens on nothing else


class EvaluatorError(RuntimeError):
    """The evaluator gave up: too many consecutive worker failures, or workers never started."""


class _Worker:
    """The actor: builds its objective and noise once, then scores chunks."""

    def __init__(self, objective_spec: dict, noise_spec: dict, table: np.ndarray | None):
        with contextlib.suppress(ImportError):  # env vars already pin the pools; belt and braces
            from threadpoolctl import threadpool_limits

            threadpool_limits(1)
        self.objective = make_objective(**objective_spec)
        if table is not None:  # read-only view of the object store: shared by the node's workers
            self.noise: Noise = NoiseTable(
                noise_spec["dim"], noise_spec.get("seed", 0), noise_spec.get("size"), table=table
            )
        else:
            self.noise = make_noise(**noise_spec)

    def info(self) -> tuple[int, str]:
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def evaluate(self, spec: GenerationSpec, task) -> tuple[Results, float, float]:
        """The chunk's results, with the wall and CPU seconds spent on them."""
        wall, cpu = time.perf_counter(), time.process_time()
        results = self.objective.evaluate(spec, task, self.noise)
        return results, time.perf_counter() - wall, time.process_time() - cpu

    def evaluate_mean(self, spec: GenerationSpec, episodes: int) -> tuple[np.ndarray, int]:
        return self.objective.evaluate_mean(spec, episodes)


_RemoteWorker = ray.remote(_Worker)


@dataclass
class _Slot:
    """One worker position: its current actor and the calls it has in flight."""

    actor: ray.actor.ActorHandle
    info_ref: ray.ObjectRef
    inflight: list = field(default_factory=list)  # ObjectRefs, oldest first
    busy_since: float | None = None  # start of the oldest in-flight call's turn
    ready: bool = False  # the actor is up (info answered); only then does it get work


def chunk_count(
    num_pairs: int, num_workers: int, chunks_per_worker: int, min_chunk_pairs: int = 1
) -> int:
    """Chunks for a generation: ``chunks_per_worker`` per worker (load balance), fewer if
    they would hold fewer than ``min_chunk_pairs`` pairs (a full lockstep batch), but one per
    worker at least, and no empty chunk.

    E.g. 10 pairs, 2 workers x 4, lockstep 4 pairs: 2 chunks of 5, not 8 of 1-2 that step 2-4
    environments per policy forward (6-15 % slower on HalfCheetah, 24-63 % on CartPole:
    scripts/bench_chunking.py).
    """
    most = num_workers * chunks_per_worker
    full = max(num_pairs // min_chunk_pairs, num_workers)
    return max(1, min(num_pairs, most, full))


def balanced_tasks(
    generation: int,
    ids: np.ndarray,
    num_chunks: int,
    start: int = 0,
    members: np.ndarray | None = None,
) -> list[Task]:
    """``num_chunks`` contiguous chunks whose sizes differ by at most one; ``ids[k]`` is pair
    ``start + k`` of the generation (``members[k]``: its members to evaluate, if given).

    Unlike fixed-size chunks (``chunk_tasks``), a small population still splits evenly over the
    workers: 10 pairs on 2 workers x 4 chunks are 2,2,1,...,1 (5 + 5 per worker), not 2,2,2,2,2
    (6 + 4); measured in scripts/bench_throughput.py (HalfCheetah, 10 pairs).
    """
    parts = np.array_split(np.arange(len(ids)), num_chunks)
    return [
        Task(
            generation,
            start + p,
            ids[p[0] : p[-1] + 1],
            None if members is None else members[p],
        )
        for p in parts
        if len(p)
    ]


def wire_size(obj) -> int:
    """Bytes of ``obj`` pickled as Ray ships it (protocol 5, arrays as out-of-band buffers)."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(b.raw().nbytes for b in buffers)


def driver_pythonpath() -> str:
    """The driver's working directory, then its ``sys.path`` entries that are not part of the
    Python installation or of site-packages (e.g. a pytest rootdir): what workers need to import
    the user's modules by name."""
    installed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    entries = [os.getcwd()]
    for p in sys.path:
        p = os.path.realpath(p or os.getcwd())
        if not os.path.isdir(p) or "site-packages" in p or "dist-packages" in p:
            continue
        if any(p == q or p.startswith(q + os.sep) for q in installed):
            continue
        entries.append(p)
    return os.pathsep.join(dict.fromkeys(entries))


def actor_runtime_env(runtime_env: dict | None) -> dict:
    """The workers' runtime_env: the user's, plus pinned threads and the driver's PYTHONPATH
    (left out when the user ships code with ``working_dir``/``py_modules``); the user's env vars
    win."""
    user = dict(runtime_env or {})
    env_vars = dict(THREAD_ENV)
    if not ({"working_dir", "py_modules"} & user.keys()):
        env_vars["PYTHONPATH"] = driver_pythonpath()
    env_vars.update(user.get("env_vars") or {})
    return {**user, "env_vars": env_vars}


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Lets ``ray.init`` keep ``_node_ip_address=LOOPBACK`` for the node it starts.

    Ray (2.60) replaces a loopback node address by the machine's address, except where it never
    clusters (macOS and Windows; the switch, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``, is read once
    at import). With a loopback node address every server of the node (GCS, raylet, workers,
    agents, metrics) listens on loopback instead of on all interfaces: what an embedded instance
    needs, as it serves nothing outside this machine. The switch is off for ``ray.init`` only.
    """
    consts = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if not hasattr(consts, "ENABLE_RAY_CLUSTER"):  # a newer Ray: test_embedded_ray.py tells
        yield
        return
    saved = consts.ENABLE_RAY_CLUSTER
    consts.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        consts.ENABLE_RAY_CLUSTER = saved


@contextlib.contextmanager
def _lean_node(include_dashboard: bool) -> Iterator[None]:
    """Lets ``ray.init`` start only the processes an embedded instance without a dashboard uses.

    Ray (2.60) starts three Python processes besides the GCS, the raylet and its two agents:
    the autoscaler's monitor (a fixed local node has nothing to scale), the log monitor (it
    streams workers' output to the driver, which ``log_to_driver=False`` turns off) and, even
    with ``include_dashboard=False``, the dashboard's API server, for usage statistics only
    (off here). ``ray.init`` waits for the API server to come up, and all three compete with
    the agents and workers for the CPUs while they start: without them ``esvo train
    configs/cartpole.yaml`` starts seconds sooner on 2 cores (BENCHMARKS.md, "End to end").
    With ``include_dashboard`` Ray starts everything as usual. Ray's methods are replaced for
    the call only; a Ray without them is left alone (test_embedded_ray.py tells).
    """
    node = getattr(getattr(getattr(ray, "_private", None), "node", None), "Node", None)
    names = () if include_dashboard else ("start_monitor", "start_log_monitor", "start_api_server")
    saved = {n: vars(node)[n] for n in names if callable(vars(node).get(n))} if node else {}
    for name in saved:
        setattr(node, name, lambda self, *args, **kwargs: None)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(node, name, method)


@contextlib.contextmanager
def _environment(env: dict[str, str] | None) -> Iterator[None]:
    """``os.environ`` with ``env`` set, for the Ray processes ``ray.init`` starts (the raylet
    hands its environment to the workers it starts); restored afterwards."""
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _reap_session(session_dir: str, driver_pid: int, timeout_s: float = 10.0) -> None:
    """The watchdog's program (stdlib only: it runs as ``python -c`` beside the driver).

    Waits for the driver: a byte on stdin is a clean close (Ray has shut its processes down),
    EOF or a new parent means the driver died. Then SIGKILLs every process that writes into the
    session directory (Ray's agents, workers, ...) until none is left or ``timeout_s`` passed.
    Writers only: a ``tail -f`` of a session log is no process of the session.
    """
    import contextlib
    import os
    import select
    import signal
    import sys
    import time

    def writes_into(pid: int, prefix: str) -> bool:
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at
            return False
        for fd in fds:
            try:
                if not os.readlink(f"{fd_dir}/{fd}").startswith(prefix):
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    flags = next(int(ln.split()[1], 8) for ln in info if ln.startswith("flags:"))
            except (OSError, StopIteration, ValueError):
                continue
            if (flags & os.O_ACCMODE) != os.O_RDONLY:
                return True
        return False

    while os.getppid() == driver_pid:
        if select.select([sys.stdin], [], [], 1.0)[0]:
            if os.read(sys.stdin.fileno(), 1):
                return
            break
    prefix = os.path.join(os.path.realpath(session_dir), "")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = (int(d) for d in os.listdir("/proc") if d.isdigit())
        left = [p for p in pids if p not in (os.getpid(), driver_pid) and writes_into(p, prefix)]
        if not left:
            return
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


_watchdog: subprocess.Popen | None = None


def _watch(session_dir: str) -> None:
    """Starts the watchdog of this process's embedded Ray (Linux; ``_reap_session``).

    Ray's node processes die with the driver (``PR_SET_PDEATHSIG``), but its two agents are the
    raylet's children: when a killed driver takes the raylet along, each agent spends a minute
    reporting the raylet's death to the dead GCS before it exits (Ray 2.60). Neither can be left
    out (the raylet requires both and dies with either), so the watchdog kills them instead.
    """
    global _watchdog
    _unwatch()
    if not sys.platform.startswith("linux") or not sys.executable:
        return  # no /proc to find the session's processes by
    try:
        code = inspect.getsource(_reap_session)
        code += f"\n_reap_session({session_dir!r}, {os.getpid()})\n"
        _watchdog = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            start_new_session=True,  # a Ctrl-C or a group kill of the driver's job spares it
        )
    except OSError as e:  # no source (a frozen install), no process: the run goes on without
        logging.getLogger(__name__).warning(
            "no watchdog for the embedded Ray (%s): if this process is killed, Ray's agents "
            "may outlive it by a minute",
            e,
        )


def _unwatch() -> None:
    """Tells the watchdog that Ray was shut down cleanly: it exits, touching nothing."""
    global _watchdog
    if _watchdog is None:
        return
    with contextlib.suppress(OSError):
        _watchdog.stdin.write(b"\0")
        _watchdog.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        _watchdog.wait(timeout=5)
    _watchdog = None


def shutdown() -> None:
    """``ray.shutdown()`` of a Ray this process started with ``connect``, and its watchdog."""
    global _node_env
    if ray.is_initialized():
        ray.shutdown()
        mark("ray_shutdown")
    _node_env = None
    _unwatch()


# (GCS address, worker_env) of the embedded node this process started
_node_env: tuple[str, dict[str, str]] | None = None


def connect(
    address: str | None,
    num_cpus: int | None,
    include_dashboard: bool,
    worker_env: dict[str, str] | None = None,
) -> bool:
    """Start or join Ray unless it is already initialized; True if this call did ``ray.init``.

    No ``address`` (and no ``RAY_ADDRESS``) starts a new embedded instance, ``address="local"``
    (with ``None`` Ray would join whatever cluster its session file names,
    ``/tmp/ray/ray_current_cluster``, also one left behind by a crashed ``ray start``), on
    loopback only (``_loopback_node``), without the processes it does not use
    (``_lean_node``), whose processes do not outlive this one (``_watch``). Its workers,
    including the ones the raylet starts as it comes up (one per CPU), get ``worker_env``
    in their environment: actors that need no other runtime_env then start in those.
    """
    global _node_env
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # A private in-process cluster: its token-auth notice is noise in the user's terminal.
        auth_logger = logging.getLogger(_AUTH_LOGGER)
        level = auth_logger.level
        auth_logger.setLevel(logging.ERROR)
        try:
            with _loopback_node(), _lean_node(include_dashboard), _environment(worker_env):
                context = ray.init(
                    address="local",
                    num_cpus=num_cpus,
                    include_dashboard=include_dashboard,
                    _node_ip_address=LOOPBACK,
                    # the raylet starts its one worker per CPU as it comes up, while its agents
                    # do, rather than once the driver connects (BENCHMARKS.md, "End to end")
                    _system_config={"enable_worker_prestart": True},
                    **quiet,
                )
        finally:
            auth_logger.setLevel(level)
        _node_env = (context.address_info["gcs_address"], dict(worker_env or {}))
        mark("ray_init")
        _watch(context.address_info["session_dir"])
        mark("watchdog")
        return True
    try:
        ray.init(address=address, **quiet)
    except ConnectionError as e:
        raise ConnectionError(
            f"could not join the Ray cluster at {address or os.environ.get('RAY_ADDRESS')!r}: "
            f"{e}. If the cluster uses token authentication (Ray's default), provide its token "
            "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and, for an explicit "
            "host:port, also set RAY_AUTH_MODE=token."
        ) from e
    return True


def _summary(e: BaseException, limit: int = 300) -> str:
    """Type, first line and (for a remote traceback) the last line, where the cause is."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    text = " ... ".join(dict.fromkeys(lines[:1] + lines[-1:]))
    return f"{type(e).__name__}: {text[: 2 * limit]}"


class RayEvaluator:
    """Scores generations on long-lived Ray actors; implements ``esvo.parallel.Evaluator``.

    Args:
        objective_spec: plain data for ``make_objective``, built once in each worker.
        noise_spec: plain data for ``make_noise`` (``Noise.spec()``), or a ``Noise`` (a
            ``NoiseTable``'s array is then shared as is instead of being rebuilt).
        num_workers: worker actors (1 CPU each); default all CPUs of the cluster (embedded: of
            this machine), and then elastic: CPUs that join the cluster (new nodes) get workers
            from the next generation on. An explicit number stays fixed.
        address: ``None`` for an embedded local Ray (or ``RAY_ADDRESS`` if set); ``"auto"``,
            ``"host:port"`` or ``"ray://host:port"`` to join a cluster.
        chunks_per_worker: chunks per worker per generation (at least one pair each): load
            balancing when episode lengths vary, against per-task overhead.
        min_chunk_pairs: fewer chunks rather than chunks smaller than this (the objective's
            ``batch_pairs``: a chunk that cannot fill the lockstep batch steps fewer
            environments per policy forward), but never fewer chunks than workers.
        max_consecutive_failures: worker losses in a row before ``EvaluatorError``.
        include_dashboard: start Ray's dashboard (embedded Ray only).
        runtime_env: extra Ray runtime_env for the workers (their env vars win over esvo's).
        task_timeout_s: a worker that returns nothing for this long is treated as lost.
        startup_timeout_s: the first workers must be up within this time.
    """

    def __init__(
        self,
        objective_spec: dict,
        noise_spec: dict | Noise,
        num_workers: int | None = None,
        address: str | None = None,
        chunks_per_worker: int = 4,
        min_chunk_pairs: int = 1,
        max_consecutive_failures: int = 3,
        include_dashboard: bool = False,
        runtime_env: dict | None = None,
        task_timeout_s: float = 600.0,
        startup_timeout_s: float = 300.0,
    ):
        if num_workers is not None and num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if min(chunks_per_worker, min_chunk_pairs, max_consecutive_failures) < 1:
            raise ValueError(
                "chunks_per_worker, min_chunk_pairs and max_consecutive_failures must be >= 1"
            )
        self.objective_spec = dict(objective_spec)
        self.chunks_per_worker = int(chunks_per_worker)
        self.min_chunk_pairs = int(min_chunk_pairs)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.task_timeout_s = float(task_timeout_s)
        self.last_stats: dict = {}
        self._consecutive = 0
        self._slots: list[_Slot] = []
        self._elastic = num_workers is None
        self.startup_timeout_s = float(startup_timeout_s)

        table = None
        if isinstance(noise_spec, NoiseTable):
            table = noise_spec.table
        if not isinstance(noise_spec, dict):
            noise_spec = noise_spec.spec()
        self.noise_spec = dict(noise_spec)
        self._runtime_env = actor_runtime_env(runtime_env)
        env = self._runtime_env["env_vars"] if runtime_env is None else None
        self._owns_ray = connect(
            address,
            num_workers or os.cpu_count() or 1,
            include_dashboard=include_dashboard,
            worker_env=env,
        )
        try:
            # The embedded node's workers have the env vars already (and the node is this one):
            # the actors start in its prestarted workers.
            if (
                _node_env is not None
                and _node_env[1] == env
                and _node_env[0] == ray.get_runtime_context().gcs_address
            ):
                self._runtime_env = None
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.num_workers = int(num_workers) if num_workers is not None else max(1, cpus)
            self._table_ref = None
            if self.noise_spec.get("kind") == "table":
                if table is None:
                    table = make_noise(**self.noise_spec).table
                self._table_ref = ray.put(table)  # once per run; zero-copy per node
                self.table_bytes = int(table.nbytes)
            self._slots = [self._new_slot() for _ in range(self.num_workers)]
            try:
                ray.get([s.info_ref for s in self._slots], timeout=startup_timeout_s)
                mark("actors")
                for slot in self._slots:
                    slot.ready = True
            except rex.GetTimeoutError as e:
                raise EvaluatorError(
                    f"{self.num_workers} workers (1 CPU each) did not start within "
                    f"{startup_timeout_s:.0f} s; the cluster has {cpus} CPUs"
                ) from e
            except LOST_ERRORS as e:
                raise EvaluatorError(f"a worker failed to start: {_summary(e)}") from e
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ workers
    def _new_slot(self) -> _Slot:
        # Inside a placement group (a sweep trial on Tune): the workers use its bundles.
        group = ray.util.get_current_placement_group()
        strategy = "SPREAD" if group is None else PlacementGroupSchedulingStrategy(group)
        actor = _RemoteWorker.options(
            num_cpus=1,
            max_restarts=0,  # replaced by hand, so a loss is seen at once
            max_task_retries=0,
            scheduling_strategy=strategy,
            runtime_env=self._runtime_env,
        ).remote(self.objective_spec, self.noise_spec, self._table_ref)
        return _Slot(actor, actor.info.remote())  # info first: answered as soon as it is up

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers (waits for replacements to come up)."""
        return [pid for pid, _ in ray.get([s.info_ref for s in self._slots], timeout=120)]

    def node_ids(self) -> list[str]:
        """Ray node ids of the current workers."""
        return [node for _, node in ray.get([s.info_ref for s in self._slots], timeout=120)]

    # ------------------------------------------------------------------ evaluation
    def _grow(self) -> None:
        """Elastic pool: a worker for every CPU that is free in the cluster (a node joined)."""
        free = int(ray.available_resources().get("CPU", 0))
        if free > 0:
            self._slots += [self._new_slot() for _ in range(free)]
            self.num_workers = len(self._slots)

    def _refresh_ready(self) -> list[ray.ObjectRef]:
        """Marks slots whose actor came up; returns the info refs still pending."""
        pending = {s.info_ref: s for s in self._slots if not s.ready}
        if pending:
            up, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in up:
                pending.pop(ref).ready = True
        return list(pending)

    def num_chunks(self, num_pairs: int) -> int:
        return chunk_count(
            num_pairs, self.num_workers, self.chunks_per_worker, self.min_chunk_pairs
        )

    def evaluate(
        self,
        spec: GenerationSpec,
        ids: np.ndarray,
        start: int = 0,
        members: np.ndarray | None = None,
    ) -> Results:
        """Scores all pairs ``ids[k]`` (pair index ``start + k``; only ``members[k, c]`` if
        given); results ordered by pair index."""
        t0 = time.perf_counter()
        if self._elastic:
            self._grow()
        spec_ref = ray.put(spec)  # once; every task gets the reference
        tasks = balanced_tasks(
            spec.generation, np.asarray(ids), self.num_chunks(len(ids)), start, members
        )
        out, stats = self._run([("evaluate", (spec_ref, t)) for t in tasks])
        parts = [r for r, _, _ in out]
        results = Results.concat(parts)
        spec_bytes = wire_size(spec)
        self.last_stats = {
            "generation": spec.generation,
            "num_pairs": len(ids),
            "num_tasks": len(tasks),
            "chunk_size": max(len(t.ids) for t in tasks),
            "num_workers": self.num_workers,
            "spec_bytes": spec_bytes,
            "bytes_out": spec_bytes + sum(wire_size(t) for t in tasks),
            "bytes_in": sum(wire_size(o) for o in out),
            "env_steps": int(results.steps.sum()),
            # summed over chunks; cpu < wall means the workers were starved of CPU
            "worker_wall_s": sum(w for _, w, _ in out),
            "worker_cpu_s": sum(c for _, _, c in out),
            **stats,
            "wall_s": time.perf_counter() - t0,
        }
        return results

    def evaluate_mean(self, spec: GenerationSpec, episodes: int) -> tuple[np.ndarray, int]:
        """``Objective.evaluate_mean`` on one worker: returns per episode, env steps."""
        (out,), _ = self._run([("evaluate_mean", (ray.put(spec), int(episodes)))])
        return out

    def _run(self, calls: list[tuple[str, tuple]]) -> tuple[list, dict]:
        """Runs ``getattr(actor, name).remote(*args)`` for every call on free workers.

        Returns the values in call order and the loop's stats. A call whose worker is lost is
        re-queued (front of the queue) and the worker replaced.
        """
        queue = deque(range(len(calls)))
        values: list = [None] * len(calls)
        done = 0
        owner: dict[ray.ObjectRef, tuple[int, _Slot]] = {}
        stats = {"retries": 0, "workers_lost": 0, "driver_wait_s": 0.0}
        idle_since: float | None = None
        try:
            while done < len(calls):
                pending = self._refresh_ready()
                self._dispatch(calls, queue, owner)
                if not owner:  # no worker is up (e.g. replacements waiting for a lost node's CPUs)
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > self.startup_timeout_s:
                        raise EvaluatorError(
                            f"no worker came up within {self.startup_timeout_s:.0f} s "
                            f"({len(pending)} waiting for CPUs); has the cluster lost its nodes?"
                        )
                    ray.wait(pending, num_returns=1, timeout=1.0)
                    continue
                idle_since = None
                t = time.perf_counter()
                ready, _ = ray.wait(list(owner), num_returns=1, timeout=1.0)
                stats["driver_wait_s"] += time.perf_counter() - t
                for ref in ready:
                    if ref not in owner:  # its worker was lost meanwhile
                        continue
                    j, slot = owner.pop(ref)
                    slot.inflight.remove(ref)
                    try:
                        value = ray.get(ref, timeout=self.task_timeout_s)
                    except LOST_ERRORS as e:
                        queue.appendleft(j)
                        stats["retries"] += 1
                        self._lose(slot, e, queue, owner, stats)
                        continue
                    except rex.RayTaskError as e:  # the objective raised: retrying cannot help
                        raise EvaluatorError(
                            f"the objective raised in a worker ({calls[j][0]}): {e}"
                        ) from e
                    values[j] = value
                    done += 1
                    self._consecutive = 0
                    slot.busy_since = time.monotonic() if slot.inflight else None
                now = time.monotonic()
                for slot in self._slots:
                    if slot.busy_since is not None and now - slot.busy_since > self.task_timeout_s:
                        err = TimeoutError(f"no result for {self.task_timeout_s:.0f} s")
                        self._lose(slot, err, queue, owner, stats)
        finally:
            for slot in self._slots:  # anything still running is abandoned (results dropped)
                slot.inflight.clear()
                slot.busy_since = None
        return values, stats

    def _dispatch(self, calls, queue: deque, owner: dict) -> None:
        """Hands queued calls to workers: two in flight per worker (hides the round trip) while
        the queue is long, one near its end (so no chunk waits behind a slow one)."""
        for depth in (1, 2):
            for slot in self._slots:
                if not queue or (depth == 2 and len(queue) <= self.num_workers):
                    return
                if not slot.ready or len(slot.inflight) >= depth:
                    continue
                j = queue.popleft()
                name, args = calls[j]
                ref = getattr(slot.actor, name).remote(*args)
                owner[ref] = (j, slot)
                slot.inflight.append(ref)
                if slot.busy_since is None:
                    slot.busy_since = time.monotonic()

    def _lose(self, slot: _Slot, err: BaseException, queue: deque, owner: dict, stats) -> None:
        """Re-queues the slot's calls, replaces its actor; gives up after too many losses."""
        for ref in reversed(slot.inflight):
            queue.appendleft(owner.pop(ref)[0])
            stats["retries"] += 1
        slot.inflight.clear()
        slot.busy_since = None
        stats["workers_lost"] += 1
        self._consecutive += 1
        with contextlib.suppress(Exception):
            ray.kill(slot.actor, no_restart=True)
        fresh = self._new_slot()  # the pool stays whole, also after giving up
        slot.actor, slot.info_ref = fresh.actor, fresh.info_ref
        slot.ready = False  # work goes to the new actor once it is up
        if self._consecutive >= self.max_consecutive_failures:
            n, self._consecutive = self._consecutive, 0
            raise EvaluatorError(
                f"{n} consecutive worker failures, giving up (last: {_summary(err)}). "
                "Workers died or stopped answering while scoring chunks; see the Ray logs of the "
                "session for the cause (e.g. the objective crashing its process, out of memory, "
                "lost nodes)."
            ) from err

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Kills the workers; shuts Ray down only if this evaluator started (or joined) it."""
        for slot in self._slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
        self._slots = []
        self._table_ref = None
        if self._owns_ray:
            shutdown()
        self._owns_ray = False

    def __enter__(self) -> RayEvaluator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["LOST_ERRORS", "EvaluatorError", "RayEvaluator"]
