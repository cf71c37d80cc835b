"""Loggers: metrics.jsonl lines, truncation on resume, progress lines, optional TensorBoard."""

from __future__ import annotations

import io
import json
import sys

import pytest

from esvo.loggers import (
    JsonlLogger,
    ProgressLogger,
    make_tensorboard_logger,
    read_jsonl,
    truncate_jsonl,
)


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


def test_tensorboard_is_skipped_cleanly_without_a_backend(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.warns(UserWarning, match="tensorboard"):
        assert make_tensorboard_logger(tmp_path) is None
