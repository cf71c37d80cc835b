"""Faults found by a hostile tester, through the public CLI: NaN fitness, a failing evaluation
of the mean, candidates that collapse to one point in float precision, a full disk, a signal
during Ray's start-up. Each ends with a clear line, the right exit code and nothing corrupted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from esvo.checkpoint import latest_checkpoint, load_checkpoint
from esvo.cli import main
from esvo.objectives.gym import GymObjective
from esvo.objectives.gym.export import load_policy
from esvo.protocol import GenerationSpec, Task
from esvo.trainer import TIME_FIELDS

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, doc: dict, name: str = "c.yaml") -> Path:
    base = {
        "run": {"name": "f", "generations": 3},
        "parallel": {"backend": "serial"},
        "logging": {"progress": "none"},
        "evaluation": {"every": 1, "episodes": 2},
    }
    for key, value in doc.items():
        base[key] = {**base.get(key, {}), **value}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(base))
    return path


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def one_run(out: Path) -> Path:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    (run_dir,) = list(run_dir.iterdir())
    return run_dir


def toy(env: str, **extra) -> dict:
    return {"kind": "gym", "env_id": f"tests.toy_env:{env}", "obs_norm": False, **extra}


def test_an_all_nan_fitness_run_fails_with_a_clear_error(tmp_path, capsys):
    cfg = write(tmp_path, {"objective": toy("ToyNaNRewardEnv-v0"), "strategy": {"num_pairs": 4}})
    assert main(["train", str(cfg), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("esvo train: error: generation 0: 8/8 candidates failed")
    assert "returned NaN or inf" in err[-1] and "run.max_failure_rate" in err[-1]
    # the last good state (generation 0) is checkpointed: parameters never saw a NaN
    state = latest_checkpoint(one_run(tmp_path / "out") / "checkpoints")
    assert state.generation == 0 and np.all(np.isfinite(state.arrays["search/mean"]))


def test_a_failing_evaluation_of_the_mean_is_said_on_the_console(tmp_path, capsys):
    # every rollout raises; the user allows it (max_failure_rate 1), the evaluation fails too
    cfg = write(
        tmp_path,
        {
            "objective": toy("ToyAlwaysRaiseEnv-v0"),
            "strategy": {"num_pairs": 2},
            "run": {"generations": 1, "max_failure_rate": 1.0},
        },
    )
    assert main(["train", str(cfg), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "evaluating the mean" in x)
    assert "generation 0" in line and "2 of 2 episodes" in line
    assert "RuntimeError: toy env failure at step 0" in line
    assert rows(one_run(tmp_path / "out"))[-1]["eval_return_mean"] is None


def test_pairs_collapsed_by_float_rounding_are_counted_warned_once_and_stop_the_run(
    tmp_path, capsys
):
    # d = 1 at 1.0 with sigma 2e-16 (a mean that does not move): a pair collapses when
    # |sigma z| is below half an ulp of 1 (1.1e-16), i.e. for |z| < 0.55
    doc = {
        "objective": {"kind": "function", "name": "sphere", "dim": 1, "init": 1.0},
        "strategy": {
            "num_pairs": 8,
            "sigma_init": 2e-16,
            "sigma_lr": 0.0,
            "noise": "generator",
            "sigma_min": 1e-30,
        },
        "optimizer": {"kind": "sgd", "lr": 1e-30},
        "run": {"generations": 4},
    }
    assert main(["train", str(write(tmp_path, doc)), "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    counts = [r["collapsed_pairs"] for r in rows(one_run(tmp_path / "a"))]
    assert all(0 < c < 8 for c in counts), counts
    assert err.count("pairs have identical candidates") == 1  # warned once
    # recount independently: float64 candidates 1 ± 1e-16 z
    from esvo.core import Strategy

    es = Strategy(1, maximize=False, num_pairs=8, noise="generator", seed=0)
    z = np.array([es.noise.get(p)[0] for p in es.ask(es.init(np.ones(1))).ids], dtype=np.float64)
    assert counts[0] == int(np.sum(1.0 + 2e-16 * z == 1.0 - 2e-16 * z))

    doc["strategy"]["sigma_init"] = 1e-20  # every pair: nothing can move
    assert main(["train", str(write(tmp_path, doc)), "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "stopped (collapsed) after 1 generations" in err
    assert "the search cannot move" in err
    assert rows(one_run(tmp_path / "b"))[0]["collapsed_pairs"] == 8


def test_gym_candidates_collapse_in_float32():
    obj = GymObjective("tests.toy_env:ToyEnv-v0", obs_norm=False)
    from esvo.core.noise import NoiseGenerator

    noise = NoiseGenerator(obj.num_params)
    ids = np.arange(4, dtype=np.uint64)
    task = Task(0, np.arange(4), ids)
    mean = np.ones(obj.num_params)
    for sigma, expect in ((1e-9, True), (1e-3, False)):  # float32 ulp of 1 is 1.2e-7
        spec = GenerationSpec(0, mean, np.asarray(sigma), 0)
        np.testing.assert_array_equal(obj.evaluate(spec, task, noise).collapsed, expect)


# ---------------------------------------------------------------- a full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs (the tests run as root; skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_line_loses_nothing_and_resume_continues(tmp_path, small_disk, capsys):
    doc = {  # d = 20,000: ~0.6 MB per checkpoint; keep 3 (and the best)
        "objective": {"kind": "function", "name": "sphere", "dim": 20_000},
        "strategy": {"num_pairs": 2, "noise": "generator", "sigma_init": 0.05},
        "run": {"generations": 12},
        "checkpoint": {"every": 1, "keep": 3},
    }
    cfg = write(tmp_path, doc)
    reference = tmp_path / "ref"
    assert main(["train", str(cfg), "--out", str(reference)]) == 0
    ckpt = latest_checkpoint(one_run(reference) / "checkpoints").path
    size = sum(p.stat().st_size for p in ckpt.iterdir())

    filler = small_disk / "filler"  # leave room for the config and 2.5 checkpoints, not for 4
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - int(2.5 * size)))
    capsys.readouterr()
    assert main(["train", str(cfg), "--out", str(small_disk / "runs")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("esvo train: error: disk full while writing ")
    run_dir = one_run(small_disk / "runs")
    assert f"last good checkpoint: {run_dir}/checkpoints/gen_" in err[-1]
    assert f"esvo resume {run_dir}" in err[-1]
    # every checkpoint on disk is whole; no temporary leftovers under a real name
    for ckpt in (run_dir / "checkpoints").glob("gen_*"):
        load_checkpoint(ckpt)
    # still full: resume says so in one line, and changes nothing
    capsys.readouterr()
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert main(["resume", str(run_dir)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("esvo resume: error: ")
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before

    filler.unlink()  # space is back: resume finishes the run as if nothing had happened
    assert main(["resume", str(run_dir)]) == 0
    strip = [[{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in rows(d)]
             for d in (one_run(reference), run_dir)]  # fmt: skip
    assert strip[0] == strip[1]
    a = latest_checkpoint(one_run(reference) / "checkpoints").arrays
    b = latest_checkpoint(run_dir / "checkpoints").arrays
    for key in ("search/mean", "search/sigma"):
        np.testing.assert_array_equal(a[key], b[key])


def test_policy_exports_are_atomic_on_a_full_disk(tmp_path, small_disk):
    from esvo.checkpoint import DiskFullError
    from esvo.objectives.gym.export import export_policy

    obj = GymObjective("CartPole-v1", policy={"kind": "mlp", "hidden_sizes": [256, 256]})
    theta = np.linspace(-1, 1, obj.num_params)
    export_policy(small_disk / "policy", theta, obj, None, None, name="latest")
    first = load_policy(small_disk / "policy" / "latest.json").theta.copy()
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - 100_000))  # < one npz (~280 KB)
    with pytest.raises(DiskFullError, match=r"disk full while writing .*latest\.npz"):
        export_policy(small_disk / "policy", 2 * theta, obj, None, None, name="latest")
    np.testing.assert_array_equal(load_policy(small_disk / "policy" / "latest.json").theta, first)
    assert sorted(p.name for p in (small_disk / "policy").iterdir()) == [
        "latest.json",
        "latest.npz",
    ]


# ---------------------------------------------------------------- a signal during start-up
@pytest.mark.ray
def test_sigterm_during_ray_start_up_exits_143_with_a_line(tmp_path):
    cfg = write(
        tmp_path,
        {
            "objective": {"kind": "function", "name": "sphere", "dim": 3},
            "parallel": {"backend": "ray", "num_workers": 1},
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "esvo", "train", str(cfg), "--out", str(tmp_path / "out")],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = proc.stderr.readline()  # "esvo: run directory ...": printed just before start-up
    assert first.startswith("esvo: run directory"), first
    time.sleep(0.5)  # into ray.init (it takes seconds here)
    proc.terminate()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + 15, err
    assert "interrupted by SIGTERM during start-up" in err, err
    assert "Traceback" not in err


def test_esvo_eval_of_a_policy_whose_episodes_fail_exits_1_saying_why(tmp_path, capsys):
    from esvo.objectives.gym.export import export_policy

    obj = GymObjective("tests.toy_env:ToyAlwaysRaiseEnv-v0", obs_norm=False)
    export_policy(tmp_path, np.zeros(obj.num_params), obj, None, None, name="policy")
    assert main(["eval", str(tmp_path / "policy.json"), "--episodes", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "esvo eval: error: 2 of 2 episodes failed; first error: "
        "RuntimeError: toy env failure at step 0"
    )
