"""Exact resume and crash safety: a run is a pure function of its config.

Train G generations in one go; separately stop a run (signal, SIGKILL, corrupt checkpoint),
``resume`` it, and finish: the final checkpoint's arrays and metrics.jsonl (except times) are
identical.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from esvo.checkpoint import CheckpointWarning, latest_checkpoint, list_checkpoints
from esvo.config import config_from_dict, dump_config
from esvo.loggers import read_jsonl
from esvo.objectives.base import FunctionObjective
from esvo.parallel import SerialEvaluator
from esvo.trainer import EVALUATOR_FIELDS, TIME_FIELDS, TrainingError, resume, train

ROOT = Path(__file__).resolve().parents[1]


class SlowSphere(FunctionObjective):
    """The sphere with a pause per chunk, so a subprocess can be killed mid-run."""

    def __init__(self, dim: int, delay: float = 0.0):
        super().__init__("sphere", dim)
        self.delay = delay

    def evaluate(self, spec, task, noise):
        time.sleep(self.delay)
        return super().evaluate(spec, task, noise)


def slow_sphere(**options):
    return SlowSphere(**options)


def function_cfg(generations=12, strategy=None, **run):
    return config_from_dict(
        {
            "run": {"name": "r", "seed": 7, "generations": generations, **run},
            "objective": {"kind": "function", "name": "rosenbrock", "dim": 6},
            "strategy": {"num_pairs": 5, "noise": "generator", **(strategy or {})},
            "optimizer": {"kind": "adam", "lr": 0.05},
            "parallel": {"backend": "serial"},
            "evaluation": {"every": 3, "episodes": 1},
            "checkpoint": {"every": 4, "keep": 2},
            "logging": {"progress": "none"},
        }
    )


def cartpole_cfg(backend="serial", mixing=False):
    return config_from_dict(
        {
            "run": {"name": "cp", "seed": 3, "generations": 6},
            "objective": {
                "kind": "gym",
                "env_id": "CartPole-v1",
                "max_episode_steps": 60,
                "obs_norm": True,
                "lockstep": 4,
            },
            "strategy": {
                "num_pairs": 4,
                "sigma_init": 0.5,
                "importance_mixing": {"enabled": mixing},
            },
            "parallel": {"backend": backend, "num_workers": 2},
            "evaluation": {"every": 2, "episodes": 2},
            "checkpoint": {"every": 2, "keep": 1},
            "logging": {"progress": "none"},
        }
    )


def final_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert ckpt is not None
    return {k: v for k, v in ckpt.arrays.items() if k != "counters/wall_s"}


def timeless_metrics(run_dir: Path, ignore=TIME_FIELDS) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in ignore}
        for row in read_jsonl(run_dir / "metrics.jsonl")
    ]


def assert_same_run(a: Path, b: Path, ignore=TIME_FIELDS) -> None:
    fa, fb = final_arrays(a), final_arrays(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    ma, mb = timeless_metrics(a, ignore), timeless_metrics(b, ignore)
    assert len(ma) == len(mb)
    for ra, rb in zip(ma, mb, strict=True):
        assert ra == rb


def interrupt_at(generation: int):
    """A logger that sends SIGINT to this process after ``generation``."""

    def log(g, metrics):
        if g == generation:
            signal.raise_signal(signal.SIGINT)

    return log


# ---------------------------------------------------------------- in-process
# every distribution's shape (B, U) and rate, and the restart state, are in the checkpoint
DISTRIBUTIONS = {
    "separable": {},
    "full": {"distribution": "full"},
    "lowrank": {"distribution": "lowrank", "rank": 2, "noise": "table", "noise_table_size": 4096},
    # sigma_tol above sigma: a restart (same population) every generation, before and after
    "full_restarts": {
        "distribution": "full",
        "restarts": {"max": 20, "sigma_tol": 1e3, "popsize_factor": 1.0},
    },
    # the pool of old members (ids, signs, fitness, origins) and the previous distribution
    "separable_mixing": {"importance_mixing": {"enabled": True}},
    "full_mixing": {"distribution": "full", "importance_mixing": {"enabled": True}},
    # adaptation sampling: the adapted rates and the previous distribution are state
    "adaptation_both": {"adaptation_sampling": {"enabled": True, "target": "both"}},
    "lowrank_adaptation": {
        "distribution": "lowrank",
        "noise": "table",
        "noise_table_size": 4096,
        "adaptation_sampling": {"enabled": True, "c": 0.3},
    },
    # a restart every generation: the rates start afresh each time (no previous distribution)
    "full_restarts_adaptation": {
        "distribution": "full",
        "restarts": {"max": 20, "sigma_tol": 1e3, "popsize_factor": 1.0},
        "adaptation_sampling": {"enabled": True},
    },
}


@pytest.mark.parametrize("strategy", DISTRIBUTIONS.values(), ids=DISTRIBUTIONS.keys())
def test_resume_after_interrupt_is_exact_on_a_function(tmp_path, strategy):
    cfg = function_cfg(strategy=strategy)
    full = train(cfg, tmp_path / "full", loggers=[])
    if "importance_mixing" in strategy:  # old members were kept before and after it
        reused = [r["reused"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
        assert min(reused[1:6]) > 0 and min(reused[6:]) > 0, reused
    if "restarts" in strategy:  # restarts happened before and after the interruption
        restarts = [r["restart"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
        assert sum(restarts[:6]) >= 1 and sum(restarts[6:]) >= 1, restarts
    if "adaptation_sampling" in strategy:  # the rates moved before and after the interruption
        lr = [r["lr_sigma"] for r in read_jsonl(tmp_path / "full" / "metrics.jsonl")]
        if "restarts" in strategy:
            assert len(set(lr)) == 1, lr
        else:
            assert len(set(lr[:6])) > 2 and len(set(lr[6:])) > 2, lr
    part = train(cfg, tmp_path / "part", loggers=[interrupt_at(5)])
    assert (part.reason, part.generation) == ("interrupted", 6)  # between checkpoints 4 and 8
    assert len(read_jsonl(tmp_path / "part" / "metrics.jsonl")) == 6
    done = resume(tmp_path / "part", loggers=[])
    assert (done.reason, done.generation, done.exit_code) == ("generations", 12, 0)
    assert done.best_eval_return == full.best_eval_return
    assert_same_run(tmp_path / "full", tmp_path / "part")
    # wall time carries on from the checkpoint
    rows = read_jsonl(tmp_path / "part" / "metrics.jsonl")
    assert all(a["wall_s"] < b["wall_s"] for a, b in itertools.pairwise(rows))


def test_resume_from_an_older_checkpoint_truncates_the_metrics(tmp_path):
    cfg = function_cfg(generations=12)
    train(cfg, tmp_path / "full", loggers=[])
    train(cfg, tmp_path / "crash", loggers=[])
    ckpts = list_checkpoints(tmp_path / "crash" / "checkpoints")
    assert [p.name for p in ckpts][-2:] == ["gen_000008", "gen_000012"]
    import shutil

    shutil.rmtree(ckpts[-1])  # as if the process died between generations 8 and 12
    assert len(read_jsonl(tmp_path / "crash" / "metrics.jsonl")) == 12
    resume(tmp_path / "crash", loggers=[])
    assert_same_run(tmp_path / "full", tmp_path / "crash")


def test_resume_from_a_named_checkpoint(tmp_path):
    cfg = function_cfg(generations=12)
    train(cfg, tmp_path / "full", loggers=[])
    train(cfg, tmp_path / "again", loggers=[])
    done = resume(tmp_path / "again" / "checkpoints" / "gen_000008", loggers=[])
    assert (done.generation, done.run_dir) == (12, tmp_path / "again")
    assert_same_run(tmp_path / "full", tmp_path / "again")
    bad = tmp_path / "again" / "checkpoints" / "gen_000012" / "state.npz"
    bad.write_bytes(b"x")
    with pytest.raises(TrainingError, match=r"gen_000012.*checksum"):
        resume(bad.parent, loggers=[])


def test_a_corrupt_checkpoint_is_reported_and_resume_falls_back(tmp_path):
    cfg = function_cfg(generations=12)
    train(cfg, tmp_path / "full", loggers=[])
    part = train(cfg, tmp_path / "part", loggers=[interrupt_at(9)])
    assert part.generation == 10
    latest = list_checkpoints(tmp_path / "part" / "checkpoints")[-1]
    assert latest.name == "gen_000010"
    state = latest / "state.npz"
    state.write_bytes(state.read_bytes()[:-50])  # truncated
    with pytest.warns(CheckpointWarning, match=r"gen_000010.*checksum"):
        resume(tmp_path / "part", loggers=[])  # from gen_000008
    assert_same_run(tmp_path / "full", tmp_path / "part")


def test_resume_without_any_valid_checkpoint_restarts(tmp_path):
    cfg = function_cfg(generations=6)
    train(cfg, tmp_path / "full", loggers=[])
    part = train(cfg, tmp_path / "part", loggers=[interrupt_at(1)])
    assert part.generation == 2
    (list_checkpoints(tmp_path / "part" / "checkpoints")[-1] / "meta.json").write_text("{")
    with pytest.warns(UserWarning) as record:
        resume(tmp_path / "part", loggers=[])
    messages = [str(w.message) for w in record]
    assert any("gen_000002: unreadable meta.json" in m for m in messages)
    assert any("restarting from generation 0" in m for m in messages)
    assert_same_run(tmp_path / "full", tmp_path / "part")


@pytest.mark.parametrize("mixing", [False, True], ids=["plain", "mixing"])
def test_resume_is_exact_on_cartpole_with_obs_norm(tmp_path, mixing):
    pytest.importorskip("gymnasium")
    cfg = cartpole_cfg(mixing=mixing)
    full = train(cfg, tmp_path / "full", loggers=[])
    part = train(cfg, tmp_path / "part", loggers=[interrupt_at(2)])
    assert part.generation == 3
    resume(tmp_path / "part", loggers=[])
    assert_same_run(tmp_path / "full", tmp_path / "part")
    arrays = final_arrays(tmp_path / "full")
    assert arrays["obs/count"] > 0 and arrays["obs/mean"].shape == (4,)
    assert (
        int(arrays["counters/env_steps"])
        == read_jsonl(tmp_path / "full" / "metrics.jsonl")[-1]["env_steps"]
    )
    for name in ("best", "latest"):
        a = np.load(tmp_path / "full" / "policy" / f"{name}.npz", allow_pickle=False)
        b = np.load(tmp_path / "part" / "policy" / f"{name}.npz", allow_pickle=False)
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    assert full.best_eval_return is not None
    if mixing:  # old members were reused after the resume too, and fewer were evaluated
        rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")
        assert all(r["reused"] > 0 for r in rows[1:]), [r["reused"] for r in rows]
        assert rows[-1]["evaluations"] < 2 * 4 * len(rows)


@pytest.mark.ray
def test_resume_with_ray_matches_the_serial_run(tmp_path, ray_session):
    pytest.importorskip("gymnasium")
    train(cartpole_cfg("serial"), tmp_path / "serial", loggers=[])
    part = train(cartpole_cfg("ray"), tmp_path / "ray", loggers=[interrupt_at(2)])
    assert part.reason == "interrupted"
    done = resume(tmp_path / "ray", loggers=[])
    assert done.reason == "generations"
    assert ray_session.is_initialized()  # the session's Ray was joined, not shut down
    last = read_jsonl(tmp_path / "ray" / "metrics.jsonl")[-1]
    assert "bytes_out" in last
    # 4 pairs, lockstep 4 envs = 2 pairs per batch: 2 chunks of 2, not 4 of 1 (2 workers x 4)
    assert last["num_tasks"] == 2
    assert_same_run(tmp_path / "serial", tmp_path / "ray", TIME_FIELDS | EVALUATOR_FIELDS)


# ---------------------------------------------------------------- subprocesses
SCRIPT = """
import sys
from pathlib import Path
from esvo.config import load_config
from esvo.trainer import resume, train
run_dir = Path(sys.argv[2])
r = train(load_config(sys.argv[3]), run_dir) if sys.argv[1] == "train" else resume(run_dir)
sys.exit(r.exit_code)
"""


def slow_cfg(generations: int, backend: str = "serial"):
    return config_from_dict(
        {
            "run": {"name": "slow", "seed": 5, "generations": generations},
            "objective": {"kind": "python", "target": "tests.test_resume:slow_sphere",
                          "dim": 300, "delay": 0.004},
            "strategy": {"num_pairs": 6, "noise": "generator"},
            "parallel": {"backend": backend, "num_workers": 2},
            "evaluation": {"every": 5, "episodes": 1},
            "checkpoint": {"every": 1, "keep": 2},
            "logging": {"progress": "none"},
        }
    )  # fmt: skip


def launch(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_lines(path: Path, more_than: int, proc: subprocess.Popen) -> None:
    """Until ``path`` has more than ``more_than`` lines (this process completed a generation)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(FileNotFoundError):
            if len(path.read_text().splitlines()) > more_than:
                return
        time.sleep(0.005)


def test_sigkill_at_random_moments_then_resume_gives_the_same_run(tmp_path):
    cfg = slow_cfg(generations=120)
    train(cfg, tmp_path / "full", loggers=[])
    run_dir = tmp_path / "killed"
    run_dir.mkdir()
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    rng = np.random.default_rng(20240607)
    generations, kills = [], 0
    for _ in range(6):
        started = (run_dir / "config.yaml").exists()  # else killed before train() wrote it
        ckpt = latest_checkpoint(run_dir / "checkpoints") if started else None
        proc = launch("resume", run_dir) if started else launch("train", run_dir, cfg_path)
        # A random moment after the process got going (its start-up takes a variable time on a
        # loaded machine): once it has completed a generation beyond its checkpoint, so that
        # every launch makes progress and the moments fall inside the generation loop.
        wait_for_lines(run_dir / "metrics.jsonl", 0 if ckpt is None else ckpt.generation, proc)
        try:
            proc.wait(timeout=float(rng.uniform(0.0, 0.5)))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate()
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)  # never a half-written checkpoint
            ckpt = latest_checkpoint(run_dir / "checkpoints")
        generations.append(0 if ckpt is None else ckpt.generation)
    else:
        proc = launch("resume", run_dir)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert kills >= 2, "the run finished before it could be killed: raise generations"
    assert generations == sorted(generations) and generations[-1] > 0
    assert_same_run(tmp_path / "full", run_dir)
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp")]


@pytest.mark.parametrize("backend", ["serial", pytest.param("ray", marks=pytest.mark.ray)])
def test_sigterm_checkpoints_exits_143_and_resume_finishes_the_same_run(tmp_path, backend):
    # With Ray, ray.init installs a SIGTERM handler of its own: the trainer's must win.
    cfg = slow_cfg(generations=40, backend=backend)
    train(slow_cfg(generations=40), tmp_path / "full", loggers=[])
    run_dir = tmp_path / "term"
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(dump_config(cfg))
    proc = launch("train", run_dir, cfg_path)
    deadline = time.monotonic() + 60
    while len(read_jsonl(run_dir / "metrics.jsonl")) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert ckpt is not None and 3 <= ckpt.generation < 40
    assert len(read_jsonl(run_dir / "metrics.jsonl")) == ckpt.generation
    serial = SerialEvaluator(cfg.objective.to_spec(), {"kind": "generator", "dim": 300})
    done = resume(run_dir, evaluator=serial, loggers=[])
    assert (done.reason, done.generation) == ("generations", 40)
    assert_same_run(tmp_path / "full", run_dir, ignore=TIME_FIELDS | EVALUATOR_FIELDS)
