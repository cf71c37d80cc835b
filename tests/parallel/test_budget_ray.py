"""Step-budgeted populations and the episode cutoff on a real local Ray (2 CPUs): the pairs per
generation, the caps and the whole run are the serial run's, bit for bit, with 1 or 2 workers
and after a worker is SIGKILLed in the middle of a later wave."""

from __future__ import annotations

import pytest

from esvo.config import config_from_dict
from esvo.loggers import read_jsonl
from esvo.trainer import EVALUATOR_FIELDS, TIME_FIELDS, train
from tests.parallel.slow_objective import kill_when_blocked
from tests.test_resume import assert_same_run

pytestmark = pytest.mark.ray
pytest.importorskip("gymnasium")

GYM = {"env_id": "CartPole-v1", "max_episode_steps": 200, "lockstep": 4}
BUDGET = {"env_steps": 700, "min_pairs": 4, "max_pairs": 24}
IGNORE = TIME_FIELDS | EVALUATOR_FIELDS


def cfg(objective: dict, backend: str = "serial", workers: int = 2, generations: int = 5):
    return config_from_dict(
        {
            "run": {"name": "br", "seed": 5, "generations": generations},
            "objective": objective,
            "strategy": {"num_pairs": 4, "sigma_init": 0.5, "population": BUDGET},
            "parallel": {"backend": backend, "num_workers": workers, "chunks_per_worker": 2},
            "evaluation": {"every": 5, "episodes": 2},
            "checkpoint": {"every": 5, "keep": 1},
            "logging": {"progress": "none"},
        }
    )


def test_budget_and_cutoff_serial_equal_ray_1_and_2_workers(tmp_path, ray_session):
    objective = {"kind": "gym", **GYM, "episode_cutoff": {"initial": 8, "threshold": 0.6}}
    train(cfg(objective), tmp_path / "serial", loggers=[])
    rows = read_jsonl(tmp_path / "serial" / "metrics.jsonl")
    assert max(r["waves"] for r in rows) > 1 and len({r["episode_cap"] for r in rows}) > 1
    for workers in (1, 2):
        train(cfg(objective, "ray", workers), tmp_path / f"ray{workers}", loggers=[])
        assert_same_run(tmp_path / "serial", tmp_path / f"ray{workers}", IGNORE)
        got = read_jsonl(tmp_path / f"ray{workers}" / "metrics.jsonl")
        assert [r["num_pairs"] for r in got] == [r["num_pairs"] for r in rows]
        # transport is summed over the waves: at least a task per wave
        assert all(r["num_tasks"] >= r["waves"] for r in got)


def test_budget_survives_a_worker_killed_in_a_later_wave(tmp_path, ray_session):
    gym = {"kind": "python", "target": "tests.parallel.slow_objective:make_gym", **GYM}
    train(cfg(gym, generations=3), tmp_path / "serial", loggers=[])
    first = read_jsonl(tmp_path / "serial" / "metrics.jsonl")[1]
    assert first["waves"] > 1, "generation 1 needs a second wave to block in"
    # pair 5 is in generation 1's second wave (the first has min_pairs = 4)
    block = {"block_dir": str(tmp_path), "block_generation": 1, "block_pair": 5}
    killer, killed = kill_when_blocked(tmp_path)
    train(cfg({**gym, **block}, "ray", 2, generations=3), tmp_path / "ray", loggers=[])
    killer.join(timeout=5)
    assert killed, "the blocking pair was never reached"
    assert_same_run(tmp_path / "serial", tmp_path / "ray", IGNORE)
