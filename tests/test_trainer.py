"""The training loop on the serial evaluator: metrics, stopping conditions, failures, signals."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest

from esvo.checkpoint import latest_checkpoint, list_checkpoints
from esvo.config import config_from_dict, load_config
from esvo.objectives.base import FunctionObjective
from esvo.parallel import SerialEvaluator
from esvo.protocol import Results
from esvo.trainer import TIME_FIELDS, TrainingError, new_run_dir, train

REQUIRED = {
    "generation", "env_steps", "eval_env_steps", "episodes", "wall_s", "fitness_mean",
    "fitness_max", "sigma_mean", "grad_norm", "update_ratio", "steps_per_s", "nonfinite",
    "failures",
}  # fmt: skip


# ---------------------------------------------------------------- test objectives (by name)
class StepsSphere(FunctionObjective):
    """The sphere, pretending every candidate took ``steps`` environment steps; optionally
    failing (NaN) the pairs in ``fail_pairs`` from generation ``fail_from`` on, or sleeping."""

    def __init__(self, dim, steps=10, fail_pairs=(), fail_from=0, delay=0.0):
        super().__init__("sphere", dim)
        self.steps, self.fail_pairs, self.fail_from, self.delay = (
            steps,
            fail_pairs,
            fail_from,
            delay,
        )

    def evaluate(self, spec, task, noise):
        if self.delay:
            time.sleep(self.delay)
        r = super().evaluate(spec, task, noise)
        fitness, failures = r.fitness.copy(), 0
        if spec.generation >= self.fail_from:
            for k, i in enumerate(task.indices):
                if int(i) in self.fail_pairs:
                    fitness[k] = np.nan
                    failures += 2
        m = len(task.ids)
        return Results(
            r.generation, r.indices, fitness, np.full((m, 2), self.steps, dtype=np.int64),
            episodes=2 * m, failures=failures,
            errors=("Traceback...\nRuntimeError: env exploded",) if failures else (),
        )  # fmt: skip

    def evaluate_mean(self, spec, episodes):
        returns, _ = super().evaluate_mean(spec, episodes)
        return returns, 7


def steps_sphere(**options):
    return StepsSphere(**options)


def make_cfg(**sections):
    data = {
        "run": {"name": "t", "seed": 1, "generations": 6},
        "objective": {"kind": "function", "name": "sphere", "dim": 4},
        "strategy": {"num_pairs": 4, "noise": "generator"},
        "parallel": {"backend": "serial"},
        "evaluation": {"every": 2, "episodes": 1},
        "checkpoint": {"every": 2, "keep": 2},
        "logging": {"progress": "none"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if key != "objective" else value
    return config_from_dict(data)


def rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- tests
def test_a_few_generations_write_metrics_config_and_checkpoints(tmp_path):
    cfg = make_cfg()
    seen = []
    result = train(cfg, tmp_path / "run", loggers=[lambda g, m: seen.append((g, dict(m)))])
    assert (result.reason, result.generation, result.exit_code) == ("generations", 6, 0)
    lines = rows(tmp_path / "run")
    assert [r["generation"] for r in lines] == list(range(6))
    for r in lines:
        assert r.keys() >= REQUIRED, REQUIRED - r.keys()
    assert [g for g, _ in seen] == list(range(6))
    evaluated = [r["generation"] for r in lines if r.get("eval_return_mean") is not None]
    assert evaluated == [1, 3, 5]
    assert result.best_eval_return == min(
        r["eval_return_mean"] for r in lines if "eval_return_mean" in r
    )
    assert lines[-1]["fitness_mean"] < lines[0]["fitness_mean"]  # it optimizes
    assert load_config(tmp_path / "run" / "config.yaml") == cfg
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")][-1] == "gen_000006"
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt.meta["counters"]["env_steps"] == 0 and ckpt.meta["config"] == cfg.to_dict()


def test_env_steps_are_counted_and_stop_the_run(tmp_path):
    cfg = make_cfg(
        run={"generations": None, "max_env_steps": 200},
        objective={"kind": "python", "target": "tests.test_trainer:steps_sphere", "dim": 3},
    )
    result = train(cfg, tmp_path)
    assert (result.reason, result.generation) == ("env_steps", 3)  # 80 steps per generation
    lines = rows(tmp_path)
    assert [r["env_steps"] for r in lines] == [80, 160, 240]
    assert [r["episodes"] for r in lines] == [8, 16, 24]
    assert [r["eval_env_steps"] for r in lines] == [0, 7, 14]  # counted apart; final eval too
    assert lines[-1]["steps_per_s"] > 0


def test_wall_time_stops_the_run(tmp_path):
    cfg = make_cfg(
        run={"generations": None, "max_wall_s": 0.05},
        objective={"kind": "python", "target": "tests.test_trainer:steps_sphere", "dim": 3,
                   "delay": 0.01},
    )  # fmt: skip
    result = train(cfg, tmp_path)
    assert result.reason == "wall_time" and 2 <= result.generation < 50
    assert rows(tmp_path)[-1]["wall_s"] >= 0.05
    assert rows(tmp_path)[-1]["eval_return_mean"] is not None  # evaluated at the end


def test_target_stops_the_run_when_the_evaluation_reaches_it(tmp_path):
    cfg = make_cfg(run={"generations": 500, "target": 1e-3}, evaluation={"every": 1})
    result = train(cfg, tmp_path)  # sphere(1, 1, 1, 1) = 4, minimized
    assert result.reason == "target" and result.generation < 500
    assert result.best_eval_return <= 1e-3
    lines = rows(tmp_path)
    assert lines[-1]["eval_return_mean"] <= 1e-3 < lines[-2]["eval_return_mean"]


def test_too_many_failed_rollouts_checkpoint_the_last_good_state_then_raise(tmp_path):
    cfg = make_cfg(
        objective={"kind": "python", "target": "tests.test_trainer:steps_sphere", "dim": 3,
                   "fail_pairs": [0], "fail_from": 3},
        run={"max_failure_rate": 0.2},
    )  # fmt: skip
    failed = r"generation 3: 2/8 candidates failed.*2 rollouts raised.*env exploded"
    with pytest.raises(TrainingError, match=failed):
        train(cfg, tmp_path)
    assert latest_checkpoint(tmp_path / "checkpoints").generation == 3
    assert len(rows(tmp_path)) == 3
    ok = make_cfg(
        objective={"kind": "python", "target": "tests.test_trainer:steps_sphere", "dim": 3,
                   "fail_pairs": [0], "fail_from": 3},
        run={"max_failure_rate": 0.25},
    )  # fmt: skip
    assert train(ok, tmp_path / "ok").reason == "generations"  # 2/8 is allowed
    assert (
        rows(tmp_path / "ok")[-1]["failures"] == 2 and rows(tmp_path / "ok")[-1]["nonfinite"] == 2
    )


class FlakyEvaluator(SerialEvaluator):
    def evaluate(self, spec, ids):
        if spec.generation == 2:
            raise RuntimeError("worker pool lost")
        return super().evaluate(spec, ids)


def test_an_evaluator_error_becomes_a_training_error_after_a_checkpoint(tmp_path):
    cfg = make_cfg()
    ev = FlakyEvaluator(cfg.objective.to_spec(), {"kind": "generator", "dim": 4})
    with pytest.raises(TrainingError, match="generation 2: evaluator failed: worker pool lost"):
        train(cfg, tmp_path, evaluator=ev, loggers=[])
    assert latest_checkpoint(tmp_path / "checkpoints").generation == 2


def test_a_non_finite_update_is_a_training_error(tmp_path):
    cfg = make_cfg(
        objective={"kind": "function", "name": "sphere", "dim": 2, "init": 1e100},
        strategy={"shaping": "raw", "sigma_lr": 0.0, "sigma_init": 1e100, "sigma_max": 1e200},
        optimizer={"kind": "sgd", "lr": 1e300},
    )
    with pytest.raises(TrainingError, match="non-finite"):
        train(cfg, tmp_path)
    assert latest_checkpoint(tmp_path / "checkpoints").generation == 0


def test_results_do_not_depend_on_the_evaluator_chunking(tmp_path):
    cfg = make_cfg()
    train(cfg, tmp_path / "a")
    ev = SerialEvaluator(cfg.objective.to_spec(), {"kind": "generator", "dim": 4}, chunk_size=1)
    train(cfg, tmp_path / "b", evaluator=ev)
    strip = [[{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in rows(tmp_path / d)]
             for d in "ab"]  # fmt: skip
    assert strip[0] == strip[1]


def _raise_signal_at(generation, times=1, sig=signal.SIGINT):
    def log(g, metrics):
        if g == generation:
            for _ in range(times):
                signal.raise_signal(sig)

    return log


def test_sigint_finishes_the_generation_checkpoints_and_restores_handlers(tmp_path, capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    cfg = make_cfg(run={"generations": 10}, checkpoint={"every": 4})
    result = train(cfg, tmp_path, loggers=[_raise_signal_at(2)])
    assert (result.reason, result.exit_code, result.generation) == ("interrupted", 130, 3)
    assert latest_checkpoint(tmp_path / "checkpoints").generation == 3
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    err = capsys.readouterr().err
    assert "interrupted by SIGINT after generation 3" in err and "esvo resume" in err


def test_a_second_signal_abandons_the_generation(tmp_path):
    cfg = make_cfg(run={"generations": 10})
    result = train(cfg, tmp_path, loggers=[_raise_signal_at(2, times=2, sig=signal.SIGTERM)])
    assert (result.reason, result.exit_code, result.generation) == ("interrupted", 143, 2)
    assert latest_checkpoint(tmp_path / "checkpoints").generation == 2


def test_new_run_dir_never_reuses_a_directory(tmp_path):
    cfg = make_cfg(run={"name": "exp", "out_dir": str(tmp_path / "runs")})
    a, b = new_run_dir(cfg), new_run_dir(cfg)
    assert a != b and a.is_dir() and b.is_dir()
    assert a.parent == tmp_path / "runs" / "exp"
    c = new_run_dir(cfg, tmp_path / "other")
    assert c.parent == tmp_path / "other" / "exp"
