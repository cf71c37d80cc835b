"""Loggers: metrics.jsonl lines, truncation on resume, progress lines, optional TensorBoard.

TensorBoard files are read back with TensorBoard's own reader (``EventAccumulator``, what the
TensorBoard UI reads with), not with the writer's library.
"""

from __future__ import annotations

import io
import json
import math
import sys
import time

import numpy as np
import pytest

from esvo.config import config_from_dict
from esvo.loggers import (
    JsonlLogger,
    ProgressLogger,
    TensorBoardLogger,
    make_tensorboard_logger,
    read_jsonl,
    truncate_jsonl,
)
from esvo.trainer import resume, train


def test_jsonl_writes_one_object_per_generation_with_nonfinite_as_null(tmp_path):
    log = JsonlLogger(tmp_path / "m.jsonl")
    log(0, {"fitness_mean": 1.5, "nonfinite": 0})
    log(1, {"fitness_mean": float("nan"), "grad_norm": float("inf")})
    log.close()
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert [json.loads(x)["generation"] for x in lines] == [0, 1]
    assert json.loads(lines[1]) == {"generation": 1, "fitness_mean": None, "grad_norm": None}


def test_truncate_keeps_earlier_generations_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    log = JsonlLogger(path)
    for g in range(5):
        log(g, {"x": g})
    log.close()
    with open(path, "a") as f:
        f.write('{"generation": 5, "x"')  # crash mid-write
    assert len(read_jsonl(path)) == 5
    assert truncate_jsonl(path, 3) == 3
    assert [r["generation"] for r in read_jsonl(path)] == [0, 1, 2]
    assert path.read_text().endswith("\n")
    log = JsonlLogger(path)  # appends after the kept rows
    log(3, {"x": 3})
    log.close()
    assert [r["generation"] for r in read_jsonl(path)] == [0, 1, 2, 3]


METRICS = {
    "env_steps": 1000,
    "fitness_mean": 12.5,
    "fitness_max": 20.0,
    "sigma_mean": 0.05,
    "steps_per_s": 2000.0,
    "wall_s": 10.0,
}


def test_progress_plain_lines_carry_the_fields_and_eta():
    out = io.StringIO()  # not a terminal: auto -> plain
    log = ProgressLogger(generations=10, stream=out)
    assert log.mode == "plain"
    log(0, dict(METRICS, eval_return_mean=15.0))
    log(1, METRICS)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("gen 1/10") and "1,000" in lines[0] and "12.5/20" in lines[0]
    assert "eval 15" in lines[1]  # the last evaluation is carried on
    assert "eta 0:00:40" in lines[1]  # 10 s for 2 generations, 8 left


def test_progress_tty_rewrites_one_line_and_none_is_silent():
    out = io.StringIO()
    log = ProgressLogger("tty", max_env_steps=2000, stream=out)
    log(0, METRICS)
    log(1, METRICS)
    log.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "eta 0:00:10" in text
    silent = io.StringIO()
    ProgressLogger("none", stream=silent)(0, METRICS)
    assert silent.getvalue() == ""
    with pytest.raises(ValueError, match="progress mode"):
        ProgressLogger("fancy")


# ---------------------------------------------------------------- TensorBoard
def tensorboard_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in ``logdir``'s event files, as TensorBoard loads them: ``tag ->
    [(step, value)]`` in file order, after TensorBoard's purge of orphaned (pre-restart) steps."""
    pytest.importorskip("tensorboardX", reason="the writer: pip install -e '.[test]'")
    ea = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the reader: pip install -e '.[test]'",
    )
    acc = ea.EventAccumulator(str(logdir), size_guidance={ea.SCALARS: 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_series(rows) -> dict[str, list[tuple[int, float]]]:
    """The numeric fields of metrics.jsonl as TensorBoard stores them: float32 by generation
    (null, i.e. not evaluated or not finite, is no point)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "generation" and value is not None:
                series.setdefault(key, []).append((row["generation"], float(np.float32(value))))
    return series


def tensorboard_cfg(**run):
    return config_from_dict(
        {
            "run": {"name": "tb", "seed": 3, "generations": 6, **run},
            "objective": {"kind": "function", "name": "rosenbrock", "dim": 4},
            "strategy": {"num_pairs": 4, "noise": "generator"},
            "parallel": {"backend": "serial"},
            "evaluation": {"every": 2, "episodes": 1},
            "checkpoint": {"every": 2, "keep": 2},
            "logging": {"progress": "none", "tensorboard": True},
        }
    )


def test_tensorboard_scalars_of_a_run_equal_its_metrics_jsonl(tmp_path):
    train(tensorboard_cfg(), tmp_path)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["generation"] for r in rows] == list(range(6))
    board = tensorboard_scalars(tmp_path / "tensorboard")
    expected = jsonl_series(rows)
    # Every generation of the per-generation fields; the evaluation's on evaluated ones only.
    for key in ("fitness_mean", "fitness_max", "sigma_mean", "grad_norm", "wall_s"):
        assert [step for step, _ in board[key]] == list(range(6)), key
    assert [step for step, _ in board["eval_return_mean"]] == [1, 3, 5]
    assert len({v for _, v in board["fitness_mean"]}) == 6  # the values change: it trains
    assert board == expected  # all fields, same steps, same values to float32


def test_tensorboard_after_resuming_from_an_older_checkpoint_equals_metrics_jsonl(tmp_path):
    """Generations 4 and 5 run twice (the second time after a resume from gen_000004): the
    event files must show each generation once, with the values metrics.jsonl kept."""
    train(tensorboard_cfg(), tmp_path)
    first = read_jsonl(tmp_path / "metrics.jsonl")
    resume(tmp_path / "checkpoints" / "gen_000004")
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["generation"] for r in rows] == list(range(6))
    assert [r["wall_s"] for r in rows[:4]] == [r["wall_s"] for r in first[:4]]
    assert len(list((tmp_path / "tensorboard").iterdir())) == 2  # one event file per session
    board = tensorboard_scalars(tmp_path / "tensorboard")
    assert [step for step, _ in board["fitness_mean"]] == list(range(6))
    assert board == jsonl_series(rows)


def test_tensorboard_sessions_in_one_second_keep_their_files_and_the_restart_wins(
    tmp_path, monkeypatch
):
    """A second session (a resume from generation 2) in the same second as the first: both
    files are kept, and TensorBoard shows the second session's values from generation 2 on."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)  # event files name the second
    first = TensorBoardLogger(tmp_path)
    for g in range(4):
        first(g, {"x": g})
    first.close()
    second = TensorBoardLogger(tmp_path)
    for g in range(2, 5):
        second(g, {"x": 10 + g})
    second.close()
    assert len(list(tmp_path.iterdir())) == 2
    assert tensorboard_scalars(tmp_path) == {
        "x": [(0, 0.0), (1, 1.0), (2, 12.0), (3, 13.0), (4, 14.0)]
    }


def test_tensorboard_logger_writes_finite_numbers_and_skips_the_rest(tmp_path):
    log = TensorBoardLogger(tmp_path)
    log(
        0,
        {
            "int": 3,
            "float": 0.1,
            "np_float32": np.float32(2.5),
            "np_int64": np.int64(2**40 + 1),
            "nan": float("nan"),
            "inf": -math.inf,
            "none": None,
            "bool": True,
            "text": "x",
        },
    )
    assert tensorboard_scalars(tmp_path)["float"] == [(0, float(np.float32(0.1)))]  # flushed
    log(1, {"float": 0.2, "nan": 1.0})
    log.close()
    board = tensorboard_scalars(tmp_path)
    assert board == {
        "int": [(0, 3.0)],
        "float": [(0, float(np.float32(0.1))), (1, float(np.float32(0.2)))],
        "np_float32": [(0, 2.5)],
        "np_int64": [(0, float(np.float32(2**40)))],  # float32 keeps 24 bits
        "nan": [(1, 1.0)],  # metrics.jsonl has null where the value is not finite
    }


def test_tensorboard_is_skipped_cleanly_without_a_backend(tmp_path, monkeypatch):
    # Installed or not, the import of either backend fails here.
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.warns(UserWarning, match="tensorboard"):
        assert make_tensorboard_logger(tmp_path / "tb") is None
    with pytest.raises(ImportError):
        TensorBoardLogger(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()
    # A run with logging.tensorboard on still trains and writes metrics.jsonl.
    with pytest.warns(UserWarning, match="TensorBoard logging is off"):
        train(tensorboard_cfg(generations=2), tmp_path / "run")
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 2
    assert not (tmp_path / "run" / "tensorboard").exists()
