"""plot_runs: one PNG with the curves of several runs overlaid."""

from __future__ import annotations

import json

import pytest

from esvo.plot import plot_runs

PNG = b"\x89PNG\r\n\x1a\n"


def _fake_run(path, scale: float, steps: bool = True):
    path.mkdir(parents=True)
    with open(path / "metrics.jsonl", "w") as f:
        for g in range(12):
            row = {
                "generation": g,
                "env_steps": 100 * (g + 1) if steps else 0,
                "wall_s": 0.5 * (g + 1),
                "fitness_mean": scale * g,
                "fitness_max": scale * g + 1,
                "sigma_mean": 0.1 * 0.9**g,
                "grad_norm": 1.0 / (g + 1),
                "steps_per_s": 200.0,
                "gens_per_s": 2.0,
                "eval_return_mean": scale * g if g % 4 == 3 else None,
            }
            f.write(json.dumps(row) + "\n")
    return path


def test_two_runs_overlaid_in_one_png(tmp_path):
    a = _fake_run(tmp_path / "exp" / "a", 1.0)
    b = _fake_run(tmp_path / "exp" / "b", 2.0)
    out = plot_runs([a, b], tmp_path / "both.png")
    assert out == tmp_path / "both.png"
    assert out.read_bytes().startswith(PNG)
    one = plot_runs([a], tmp_path / "one.png")
    assert one.read_bytes() != out.read_bytes()


def test_default_output_and_function_runs_without_env_steps(tmp_path):
    a = _fake_run(tmp_path / "f" / "a", 1.0, steps=False)
    assert plot_runs([a]) == a / "curves.png"
    b = _fake_run(tmp_path / "f" / "b", 3.0, steps=False)
    assert plot_runs([a, b]) == tmp_path / "f" / "curves.png"
    assert (tmp_path / "f" / "curves.png").read_bytes().startswith(PNG)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        plot_runs([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no metrics"):
        plot_runs([tmp_path / "empty"])
