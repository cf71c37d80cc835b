"""The ``esvo`` command: train, resume, evaluate, plot and validate experiments, report on a
sweep; submit them to a
Ray cluster and follow them (``submit``, ``jobs``; see ``esvo.jobs``).

Exit codes: 0 success; 1 the run failed (``TrainingError``) or could not finish; 2 bad input
(arguments, config, objective, run directory), reported as one line on stderr before anything
is created; ``128 + signal`` when training was interrupted (the trainer checkpoints first).

Heavy modules (Ray, gymnasium, matplotlib) are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from esvo.config import Config, ConfigError, dump_config, error_source, load_config
from esvo.trace import mark

EXIT_FAILED = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    """Bad input found by a command: printed as one line, exit code 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``esvo`` command line.

    Args:
        argv: the arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    mark("main")
    # Like `python -m esvo`: modules in the working directory import (module:Env-v0 ids,
    # python objectives), also from the `esvo` script. Ray workers get it on PYTHONPATH.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or argparse's own usage error (exit 2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    try:
        code = args.func(args)
        mark("return")
        return code
    except (_UsageError, ConfigError) as e:
        _error(args.command, e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"esvo {args.command}: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esvo", description="Distributed evolution strategies (natural-gradient ES on Ray)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def overrides(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. --set strategy.num_pairs=8 (value parsed as YAML)",
        )

    p = sub.add_parser("train", help="train from a config file into a new run directory")
    p.add_argument("config", type=Path, help="experiment YAML file")
    overrides(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="parent directory of runs (default: run.out_dir); the run goes to DIR/<name>/<time>",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("resume", help="continue a run from its latest checkpoint")
    p.add_argument(
        "run_dir", type=Path, help="a run directory written by 'esvo train', or one checkpoint"
    )
    p.set_defaults(func=_resume)

    p = sub.add_parser("eval", help="run an exported policy (gym objectives)")
    p.add_argument(
        "path", type=Path, help="run directory (uses policy/best, else policy/latest) or policy"
    )
    p.add_argument("--episodes", type=_positive_int, default=10, help="episodes (default 10)")
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="evaluation seed (default 0)")
    p.add_argument("--video", type=Path, default=None, metavar="FILE", help="record to FILE.mp4")
    p.set_defaults(func=_eval)

    p = sub.add_parser(
        "plot", help="plot the learning curves of one or more runs, or of a sweep (SWEEP_DIR)"
    )
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="the PNG to write")
    p.set_defaults(func=_plot)

    p = sub.add_parser(
        "report", help="a sweep's statistics per setting (report.md, report.csv; see esvo.report)"
    )
    p.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="directory with sweep.json")
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="write here (default: SWEEP_DIR)"
    )
    p.set_defaults(func=_report)

    p = sub.add_parser("validate", help="check a config and print it fully resolved")
    p.add_argument("config", type=Path, help="experiment YAML file")
    overrides(p)
    p.set_defaults(func=_validate)
    _add_sweep_command(sub, overrides)
    _add_cluster_commands(sub, overrides)
    return parser


def _add_sweep_command(sub, overrides) -> None:
    """``esvo sweep``: seeds x grid settings as esvo runs on Ray Tune (see ``esvo.sweep``)."""
    p = sub.add_parser(
        "sweep", help="run a config over seeds and a grid of settings (Ray Tune); resumable"
    )
    p.add_argument("config", type=Path, help="experiment YAML file (may have a sweep: section)")
    p.add_argument(
        "--seeds",
        default=None,
        metavar="SEEDS",
        help="run seeds, e.g. 0-4 or 0,3,7 (default: the sweep section's, else run.seed)",
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a swept key and its values (YAML), e.g. --grid strategy.sigma_init=0.1,0.5; "
        "repeat for more keys (settings are the product)",
    )
    overrides(p)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="the sweep directory (default: run.out_dir/<run.name>-sweep); rerunning the same "
        "command with it skips finished trials and resumes the others",
    )
    p.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to run on (host:port or auto; default: an embedded local Ray)",
    )
    p.add_argument(
        "--num-cpus",
        type=_positive_int,
        default=None,
        metavar="N",
        help="CPUs of the embedded Ray (default: all cores)",
    )
    p.add_argument(
        "--max-concurrent",
        type=_positive_int,
        default=None,
        metavar="N",
        help="at most N trials at once (default: as many as the CPUs hold)",
    )
    p.add_argument(
        "--driver-cpus",
        type=_nonnegative_float,
        default=0.0,
        metavar="C",
        help="CPUs reserved for each trial's driver besides its workers (default 0)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="validate and list the trials (and which are done), run nothing",
    )
    p.set_defaults(func=_sweep)


def _add_cluster_commands(sub, overrides) -> None:
    """``esvo submit`` and ``esvo jobs list|status|logs|stop`` (Ray Job Submission)."""

    def address(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--address",
            default=os.environ.get("RAY_DASHBOARD_ADDRESS"),
            metavar="URL",
            help="the head's dashboard, e.g. http://HEAD:8265 (default $RAY_DASHBOARD_ADDRESS); "
            "the auth token comes from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token",
        )

    p = sub.add_parser("submit", help="run an experiment as a job on a Ray cluster")
    p.add_argument("config", type=Path, help="experiment YAML file (validated here first)")
    overrides(p)
    address(p)
    p.add_argument(
        "--out",
        default=None,
        metavar="REMOTE_DIR",
        help="absolute parent directory of runs on the head node or a shared filesystem "
        "(sets run.out_dir; a relative run.out_dir lands in the job's temporary working dir)",
    )
    p.add_argument(
        "--working-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="project directory shipped with the job (your objectives/envs); default: none",
    )
    p.add_argument(
        "--no-ship-esvo",
        dest="ship_package",
        action="store_false",
        help="use the esvo installed on the cluster instead of uploading this one",
    )
    p.add_argument(
        "--python",
        default=None,
        metavar="EXE",
        help="interpreter on the cluster that runs the job (default: this one if the cluster "
        "is on this machine, else python)",
    )
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="follow the job's output until it ends; exit 0 only if it SUCCEEDED "
        "(default: --no-wait, print the job id and return)",
    )
    p.set_defaults(func=_submit)

    p = sub.add_parser("jobs", help="list, inspect, follow or stop jobs on a Ray cluster")
    jobs = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = jobs.add_parser("list", help="all jobs of the cluster")
    address(q)
    for action, text in (
        ("status", "a job's status and message"),
        ("logs", "a job's output (progress lines)"),
        ("stop", "stop a job (it checkpoints and exits)"),
    ):
        q = jobs.add_parser(action, help=text)
        q.add_argument("job_id", metavar="JOB_ID")
        address(q)
        if action == "logs":
            q.add_argument("--follow", "-f", action="store_true", help="until the job ends")
        if action == "stop":
            q.add_argument("--wait", action="store_true", help="until it has stopped")
    p.set_defaults(func=_jobs)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _error(command: str, e: BaseException) -> None:
    message = " ".join(str(e).split()) or type(e).__name__  # always one line
    print(f"esvo {command}: error: {message}", file=sys.stderr)


# ---------------------------------------------------------------------------- config checks


def _load_checked(path: Path, overrides: Sequence[str]) -> Config:
    """Load and validate a config, build its objective once (unknown env id, unsupported
    spaces, a module that fails to import, a python target that raises) and check what the run
    will need (``esvo.trainer.check_config``): everything short of running it. An error is
    attributed to the ``--set`` that caused it, if one did."""
    cfg = load_config(path, overrides)
    num_params, episode_limit = _check_objective(cfg, path, overrides)
    from esvo.trainer import check_config

    try:
        check_config(cfg, num_params, str(path), episode_limit)
    except ConfigError as e:
        raise e.with_source(error_source(path, overrides, e.key)) from None
    return cfg


def _check_objective(cfg: Config, path: Path, overrides: Sequence[str]) -> tuple[int, int | None]:
    """Build the objective; returns its parameter count and episode limit (gym; else None).
    Any exception of user code (a custom env module, a python objective) becomes one line:
    which key, the type and last line."""
    from esvo.objectives.base import make_objective

    obj = cfg.objective
    if obj.kind == "gym":
        key, value = "objective.env_id", obj.env_id  # type: ignore[union-attr]
    elif obj.kind == "python":
        key, value = "objective.target", obj.target  # type: ignore[union-attr]
    else:
        key, value = "objective.name", obj.name  # type: ignore[union-attr]
    try:
        objective = make_objective(**obj.to_spec())
    except Exception as e:
        last = " ".join(str(e).strip().splitlines()[-1:]) or "(no message)"
        source = error_source(path, overrides, key)
        raise _UsageError(f"{source}: {key} = {value!r}: {type(e).__name__}: {last}") from None
    try:
        return int(objective.num_params), getattr(objective, "episode_limit", None)
    finally:
        close = getattr(objective, "close", None)
        if callable(close):
            close()


# ---------------------------------------------------------------------------- commands


def _train(args: argparse.Namespace) -> int:
    cfg = _load_checked(args.config, args.overrides)
    mark("config")
    from esvo.checkpoint import DiskFullError
    from esvo.trainer import TrainingError, new_run_dir, train

    try:
        run_dir = new_run_dir(cfg, args.out)
    except (FileExistsError, NotADirectoryError, PermissionError) as e:
        where = "--out" if args.out is not None else "run.out_dir"
        raise _UsageError(
            f"{where} {args.out or cfg.run.out_dir}: cannot create the run directory "
            f"{e.filename}: {e.strerror}"
        ) from None
    print(f"esvo: run directory {run_dir}", file=sys.stderr)
    try:
        result = train(cfg, run_dir)
    except (TrainingError, DiskFullError) as e:
        _error(args.command, e)
        return EXIT_FAILED
    _summary(result)
    return result.exit_code


def _summary(result) -> None:
    best = "n/a" if result.best_eval_return is None else f"{result.best_eval_return:.6g}"
    print(
        f"esvo: stopped ({result.reason}) after {result.generation} generations; "
        f"best evaluation {best}; run directory {result.run_dir}",
        file=sys.stderr,
    )


def _resume(args: argparse.Namespace) -> int:
    from esvo.trainer import CONFIG_FILE, TrainingError, resume

    target: Path = args.run_dir  # a run directory, or one of its checkpoints
    if not target.is_dir():
        raise _UsageError(f"{target}: no such run directory")
    named = target.parent.name == "checkpoints"
    run_dir = target.parent.parent if named else target
    if not (run_dir / CONFIG_FILE).is_file():
        raise _UsageError(f"{target}: not a run directory or checkpoint (no {CONFIG_FILE})")
    _load_checked(run_dir / CONFIG_FILE, ())
    if named:  # the user named it: a bad one is bad input, not a failed run
        from esvo.checkpoint import CheckpointError, load_checkpoint

        try:
            load_checkpoint(target)
        except CheckpointError as e:
            raise _UsageError(str(e)) from None
    from esvo.checkpoint import DiskFullError

    try:
        result = resume(target)
    except (TrainingError, DiskFullError) as e:
        _error(args.command, e)
        return EXIT_FAILED
    _summary(result)
    return result.exit_code


def _policy_file(path: Path) -> Path:
    """A policy file, or a run directory's ``policy/best.npz`` (else ``policy/latest.npz``)."""
    if path.is_dir():
        for name in ("best", "latest"):
            candidate = path / "policy" / f"{name}.npz"
            if candidate.is_file():
                return candidate
        if (path / "policy.json").is_file():  # an exported policy directory
            return path
        raise _UsageError(f"{path}: no policy/best.npz or policy/latest.npz (a gym run?)")
    if not path.is_file():
        raise _UsageError(f"{path}: no such run directory or policy file")
    return path


def _eval(args: argparse.Namespace) -> int:
    import numpy as np

    from esvo.objectives.gym import load_policy, run_episodes

    path = _policy_file(args.path)
    try:
        policy = load_policy(path)
    except (OSError, ValueError, KeyError) as e:
        raise _UsageError(f"{path}: cannot load the policy: {type(e).__name__}: {e}") from None
    video = None if args.video is None else str(args.video)
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:  # episodes that raised
            warnings.simplefilter("always", RuntimeWarning)
            returns, steps = run_episodes(policy, args.episodes, args.seed, video)
    except RuntimeError as e:  # e.g. --video without moviepy
        _error(args.command, e)
        return EXIT_FAILED
    returns = np.asarray(returns, dtype=np.float64)
    print(
        f"{policy.env.env_id}: return {returns.mean():.2f} ± {returns.std():.2f} over "
        f"{returns.size} episodes (min {returns.min():.2f}, max {returns.max():.2f}; "
        f"{steps} steps) [{path}]"
    )
    bad = int((~np.isfinite(returns)).sum())
    if bad:
        lines = [str(w.message).strip().splitlines() for w in caught]
        why = f"; first error: {lines[0][-1].strip()}" if lines and lines[0] else ""
        _error(args.command, RuntimeError(f"{bad} of {returns.size} episodes failed{why}"))
        return EXIT_FAILED
    return 0


def _plot(args: argparse.Namespace) -> int:
    if len(args.run_dirs) == 1 and (args.run_dirs[0] / "sweep.json").is_file():
        from esvo.plot import plot_sweep
        from esvo.report import SweepError

        try:
            out = plot_sweep(args.run_dirs[0], args.out)
        except SweepError as e:
            raise _UsageError(str(e)) from None
        print(out)
        return 0
    missing = [str(d) for d in args.run_dirs if not (d / "metrics.jsonl").is_file()]
    if missing:
        raise _UsageError(
            f"no metrics.jsonl (a run) or sweep.json (a sweep) in: {', '.join(missing)}"
        )
    from esvo.plot import plot_runs

    try:
        out = plot_runs(args.run_dirs, args.out)
    except ValueError as e:
        raise _UsageError(str(e)) from None
    print(out)
    return 0


def _report(args: argparse.Namespace) -> int:
    from esvo.report import SweepError, write_report

    try:
        text, md, csv_path = write_report(args.sweep_dir, args.out)
    except SweepError as e:
        raise _UsageError(str(e)) from None
    sys.stdout.write(text)
    print(f"esvo report: wrote {md} and {csv_path}", file=sys.stderr)
    return 0


def _validate(args: argparse.Namespace) -> int:
    cfg = _load_checked(args.config, args.overrides)
    sys.stdout.write(dump_config(cfg))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from esvo.sweep import SweepError, check_sweep_dir, plan_sweep, run_sweep

    plan = plan_sweep(args.config, args.overrides, args.seeds, args.grid)
    built: dict = {}  # objectives build, the run's checks pass: as 'esvo train'
    for trial in plan.trials:
        _check_trial(args.config, trial, built)
    base = load_config(args.config, args.overrides)
    sweep_dir = args.out if args.out is not None else Path(base.run.out_dir) / f"{plan.name}-sweep"
    try:
        pending = check_sweep_dir(plan, sweep_dir)
    except SweepError as e:
        raise _UsageError(str(e)) from None
    done = len(plan.trials) - len(pending)
    print(
        f"esvo sweep: {len(plan.settings)} settings x {len(plan.seeds)} seeds = "
        f"{len(plan.trials)} trials in {sweep_dir} ({done} finished, {len(pending)} to run)",
        file=sys.stderr,
    )
    if args.dry_run:
        for trial in plan.trials:
            state = "to run" if trial in pending else "finished"
            print(f"{trial.dir}\t{state}")
        return 0
    try:
        import ray.tune  # noqa: F401
    except ImportError as e:
        _error(args.command, RuntimeError(f"needs Ray Tune ({e}): pip install 'esvo[sweep]'"))
        return EXIT_FAILED
    try:
        results = run_sweep(
            plan,
            sweep_dir,
            address=args.address,
            num_cpus=args.num_cpus,
            driver_cpus=args.driver_cpus,
            max_concurrent=args.max_concurrent,
        )
    except SweepError as e:
        raise _UsageError(str(e)) from None
    except KeyboardInterrupt:
        print(
            "esvo sweep: interrupted; rerun the same command to continue the unfinished trials "
            "from their checkpoints",
            file=sys.stderr,
        )
        return 130
    failed = [d for d, r in results.items() if r is not None and r.get("exit_code") != 0]
    stopped = [d for d, r in results.items() if r is None]  # Tune stopped early (Ctrl-C)
    for d in failed:
        why = results[d].get("error") or results[d]["reason"]
        print(f"esvo sweep: {d}: {why}", file=sys.stderr)
    done = len(results) - len(failed) - len(stopped)
    print(
        f"esvo sweep: {done} of {len(results)} trials finished in {sweep_dir}; summarize "
        f"with: esvo report {sweep_dir}",
        file=sys.stderr,
    )
    if stopped:
        print(
            f"esvo sweep: interrupted: {len(stopped)} trials did not finish; rerun the same "
            "command to continue them from their checkpoints",
            file=sys.stderr,
        )
        return 130
    return EXIT_FAILED if failed else 0


def _check_trial(path: Path, trial, built: dict) -> None:
    """What ``esvo train`` checks before a run, for one trial's config (each distinct
    objective is built once: ``built`` maps it to its parameter count and episode limit)."""
    from esvo.trainer import check_config

    source = f"{path} (setting {trial.setting}, seed {trial.seed})"
    key = repr(trial.config.objective)
    if key not in built:
        built[key] = _check_objective(trial.config, path, ())
    num_params, episode_limit = built[key]
    try:
        check_config(trial.config, num_params, source, episode_limit)
    except ConfigError as e:
        raise e.with_source(source) from None


# ---------------------------------------------------------------------------- cluster jobs


def _connect_jobs(args: argparse.Namespace):
    from esvo.jobs import Jobs

    if not args.address:
        raise _UsageError(
            "no cluster: pass --address http://HEAD:8265 or set RAY_DASHBOARD_ADDRESS"
        )
    return Jobs(args.address)


def _cluster_errors(fn):
    """Runs a cluster command: a refused token is bad input (2), other cluster errors 1."""

    def run(args: argparse.Namespace) -> int:
        from esvo.jobs import AuthError, JobsError

        try:
            return fn(args)
        except AuthError as e:
            raise _UsageError(str(e)) from None
        except (JobsError, TimeoutError) as e:
            _error(args.command, e)
            return EXIT_FAILED

    return run


@_cluster_errors
def _submit(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.out is not None:
        if not os.path.isabs(args.out):
            raise _UsageError(f"--out {args.out}: must be an absolute path on the cluster")
        overrides.append(f"run.out_dir={args.out}")
    if args.working_dir is not None and not args.working_dir.is_dir():
        raise _UsageError(f"--working-dir {args.working_dir}: no such directory")
    cfg = _load_checked(args.config, overrides)
    jobs = _connect_jobs(args)  # reachable and the token accepted before anything is uploaded
    if not os.path.isabs(cfg.run.out_dir):
        print(
            f"esvo submit: warning: run.out_dir = {cfg.run.out_dir!r} is relative: the run "
            "lands in the job's working directory on the head node, which Ray may delete; "
            "pass --out /absolute/dir",
            file=sys.stderr,
        )
    job_id = jobs.submit(
        dump_config(cfg),
        name=cfg.run.name,
        working_dir=args.working_dir,
        ship_package=args.ship_package,
        python=args.python,
    )
    print(job_id, flush=True)
    print(
        f"esvo submit: job {job_id} submitted to {jobs.address}; follow it with "
        f"'esvo jobs logs {job_id} --follow --address {jobs.address}'",
        file=sys.stderr,
    )
    if not args.wait:
        return 0
    for chunk in jobs.follow(job_id):
        sys.stderr.write(chunk)
        sys.stderr.flush()
    status = jobs.wait(job_id, timeout_s=60)
    reason = f": {jobs.failure(job_id)}" if status == "FAILED" else ""
    print(f"esvo submit: job {job_id} {status}{reason}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else EXIT_FAILED


@_cluster_errors
def _jobs(args: argparse.Namespace) -> int:
    jobs = _connect_jobs(args)
    if args.action == "list":
        for job in jobs.list():
            name = (job.metadata or {}).get("esvo_run", "-")
            started = _time(job.start_time)
            print(f"{job.submission_id or job.job_id}\t{job.status.value}\t{started}\t{name}")
        return 0
    if args.action == "status":
        info = jobs.info(args.job_id)
        message = " ".join((info.message or "").split())
        print(f"{args.job_id}\t{info.status.value}\t{message}")
        return 0
    if args.action == "logs":
        if args.follow:
            for chunk in jobs.follow(args.job_id):
                sys.stdout.write(chunk)
                sys.stdout.flush()
        else:
            sys.stdout.write(jobs.logs(args.job_id))
        return 0
    was_running = jobs.stop(args.job_id)  # stop
    status = jobs.wait(args.job_id, timeout_s=120) if args.wait else jobs.status(args.job_id)
    state = "stop requested" if was_running else "was not running"
    print(f"{args.job_id}\t{status}\t{state}")
    return 0


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000).isoformat(sep=" ", timespec="seconds")


if __name__ == "__main__":
    sys.exit(main())
