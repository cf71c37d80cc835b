"""``esvo sweep``: the plan (settings x seeds, each trial's config), bad input (exit 2, nothing
created), and real sweeps on Ray Tune whose trials equal the same configs run alone, also after
the sweep's driver is killed and the command rerun."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from esvo.cli import main
from esvo.config import ConfigError, load_config
from esvo.loggers import read_jsonl
from esvo.sweep import plan_sweep, read_result, trial_bundles
from esvo.trainer import EVALUATOR_FIELDS, TIME_FIELDS, train
from tests.test_resume import assert_same_run

ROOT = Path(__file__).resolve().parents[1]
CARTPOLE = ROOT / "configs" / "cartpole.yaml"
IGNORE = TIME_FIELDS | EVALUATOR_FIELDS


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


FUNCTION = {
    "run": {"name": "fn", "generations": 3},
    "objective": {"kind": "function", "name": "sphere", "dim": 3},
    "parallel": {"backend": "serial"},
    "logging": {"progress": "none"},
}


# ---------------------------------------------------------------------------- the plan


def test_plan_is_the_product_of_the_grid_with_every_seed_and_each_config_as_set_alone():
    grid = ["strategy.num_pairs=4,8", "optimizer.lr=0.5,1.0,2.0"]
    plan = plan_sweep(CARTPOLE, ["run.generations=7"], "0-1,5", grid)
    assert plan.seeds == (0, 1, 5)
    assert [s.name for s in plan.settings] == [
        f"strategy.num_pairs={n},optimizer.lr={lr}"
        for n, lr in itertools.product([4, 8], [0.5, 1.0, 2.0])
    ]
    assert len(plan.trials) == 6 * 3
    for trial in plan.trials:
        setting = next(s for s in plan.settings if s.name == trial.setting)
        sets = [f"{k}={v}" for k, v in setting.overrides]
        # the same run as: esvo train cartpole.yaml --set ... (workers: 1 per trial in a sweep)
        alone = load_config(
            CARTPOLE,
            ["run.generations=7", *sets, f"run.seed={trial.seed}", "parallel.num_workers=1"],
        )
        assert trial.config == alone
        assert trial.dir == f"trials/{setting.dir}/seed_{trial.seed}"
    assert trial_bundles(plan.trials[0].config) == [{"CPU": 0.0}, {"CPU": 1.0}]


def test_sweep_section_gives_seeds_and_grid_and_flags_replace_them(tmp_path):
    cfg = write(
        tmp_path / "s.yaml",
        {**FUNCTION, "sweep": {"seeds": "2-3", "grid": {"strategy.sigma_init": [0.1, 0.3]}}},
    )
    plan = plan_sweep(cfg)
    assert plan.seeds == (2, 3)
    assert [t.config.strategy.sigma_init for t in plan.trials] == [0.1, 0.1, 0.3, 0.3]
    assert all(t.config.sweep is None for t in plan.trials)  # a trial is a plain run
    plan = plan_sweep(cfg, seeds="7", grid=["strategy.sigma_init=0.2", "strategy.num_pairs=2,3"])
    assert plan.seeds == (7,)
    assert [(t.config.strategy.sigma_init, t.config.strategy.num_pairs) for t in plan.trials] == [
        (0.2, 2),
        (0.2, 3),
    ]
    assert trial_bundles(plan.trials[0].config) == [{"CPU": 1.0}]  # serial backend
    # the base config keeps the section; a trial's config.yaml has none
    from esvo.config import dump_config

    assert load_config(cfg).sweep is not None
    assert "sweep" not in yaml.safe_load(dump_config(plan_sweep(cfg).trials[0].config))


def test_grid_values_are_yaml_lists_and_render_back(tmp_path):
    cfg = write(tmp_path / "f.yaml", FUNCTION)
    plan = plan_sweep(cfg, grid=["strategy.sigma_init=1e-3,.5", "strategy.shaping=nes,raw"])
    assert [t.config.strategy.sigma_init for t in plan.trials[::2]] == [1e-3, 0.5]
    assert plan.settings[0].name == "strategy.sigma_init=0.001,strategy.shaping=nes"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--grid", "strategy.num_pair=4,8"], ["strategy.num_pair", "did you mean 'num_pairs'"]),
        (["--grid", "strategy.num_pairs=4,big"], ["--grid", "strategy.num_pairs = 'big'"]),
        (["--grid", "strategy.num_pairs"], ["strategy.num_pairs", "key.path=v"]),
        (["--grid", "strategy.num_pairs=4,4"], ["listed twice"]),
        (["--grid", "run.seed=1,2"], ["run.seed", "--seeds"]),
        (["--grid", "optimizer.lr=1", "--grid", "optimizer.lr=2"], ["given twice"]),
        (["--seeds", "4-0"], ["--seeds", "backwards"]),
        (["--seeds", "0-x"], ["--seeds", "'0-x'", "range"]),
        (["--seeds", "1,1"], ["seed 1 is listed twice"]),
        (["--seeds", "-3"], ["--seeds"]),
        (["--seeds", "0-5000", "--grid", "strategy.num_pairs=4,8"], ["more than 10,000 runs"]),
    ],
)
def test_bad_sweep_input_exits_2_names_it_and_creates_nothing(tmp_path, capsys, args, words):
    out = tmp_path / "sweep"
    code = main(["sweep", str(CARTPOLE), "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()


def test_bad_sweep_section_is_a_config_error_of_validate(tmp_path, capsys):
    cases = [
        ({"seeds": "0-2", "grdi": {}}, "did you mean 'grid'"),
        ({"grid": {"strategy.sigma_init": []}}, "non-empty list"),
        ({"grid": {"strategy.sigma_init": [0.1, -1]}}, "sweep.grid.strategy.sigma_init"),
        ({"seeds": [0, 1.5]}, "sweep.seeds"),
    ]
    for section, word in cases:
        cfg = write(tmp_path / "bad.yaml", {**FUNCTION, "sweep": section})
        with pytest.raises(ConfigError, match=word.replace("(", r"\(")):
            load_config(cfg)
        assert main(["validate", str(cfg)]) == 2
        assert word in capsys.readouterr().err


def test_a_directory_of_another_sweep_or_of_something_else_is_refused(tmp_path, capsys):
    cfg = write(tmp_path / "f.yaml", FUNCTION)
    out = tmp_path / "sw"
    assert main(["sweep", str(cfg), "--out", str(out), "--dry-run", "--seeds", "0-1"]) == 0
    assert not out.exists()  # a dry run writes nothing
    (out / "trials" / "base" / "seed_0").mkdir(parents=True)
    (out / "sweep.json").write_text("{}")
    other = load_config(cfg, ["strategy.sigma_init=0.7", "run.seed=0"])
    from esvo.config import dump_config

    (out / "trials" / "base" / "seed_0" / "config.yaml").write_text(dump_config(other))
    assert main(["sweep", str(cfg), "--out", str(out), "--seeds", "0-1"]) == 2
    err = capsys.readouterr().err
    assert "strategy.sigma_init differs" in err and "another --out" in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    assert main(["sweep", str(cfg), "--out", str(junk)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    assert sorted(p.name for p in junk.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------------------- on Ray Tune


@pytest.mark.ray
def test_cartpole_sweep_trials_equal_the_same_runs_alone(ray_session, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["--seeds", "0-2", "--grid", "strategy.num_pairs=4,8", "--set", "logging.progress=none"]
    code = main(["sweep", str(CARTPOLE), "--out", str(out), *args])
    assert code == 0, capsys.readouterr().err
    plan = json.loads((out / "sweep.json").read_text())
    assert [s["overrides"] for s in plan["settings"]] == [
        {"strategy.num_pairs": 4},
        {"strategy.num_pairs": 8},
    ]
    assert len(plan["trials"]) == 6
    for trial in plan["trials"]:
        run_dir = out / trial["dir"]
        n = plan["settings"][[s["name"] for s in plan["settings"]].index(trial["setting"])]
        sets = [f"{k}={v}" for k, v in n["overrides"].items()]
        alone_cfg = load_config(
            CARTPOLE,
            [*sets, f"run.seed={trial['seed']}", "parallel.backend=serial"],
        )
        alone = tmp_path / "alone" / trial["dir"]
        result = train(alone_cfg, alone)
        assert_same_run(run_dir, alone, ignore=IGNORE)
        assert read_result(run_dir) == {
            "reason": result.reason,
            "generation": result.generation,
            "best_eval_return": result.best_eval_return,
            "exit_code": 0,
        }
    # the report's numbers, recomputed here from the trials' metrics
    assert main(["report", str(out)]) == 0
    capsys.readouterr()
    with open(out / "report.csv", newline="") as f:
        rows = {r["setting"]: r for r in csv.DictReader(f)}
    for setting in plan["settings"]:
        runs = [out / t["dir"] for t in plan["trials"] if t["setting"] == setting["name"]]
        evals = [
            [(m["eval_return_mean"], m["env_steps"]) for m in read_jsonl(r / "metrics.jsonl")
             if m.get("eval_return_mean") is not None]
            for r in runs
        ]  # fmt: skip
        final = sorted(e[-1][0] for e in evals)
        hits = [next((steps for v, steps in e if v >= 475.0), None) for e in evals]
        reached = [h for h in hits if h is not None]
        row = rows[setting["name"]]
        assert float(row["final_median"]) == pytest.approx(final[1])  # 3 seeds
        assert float(row["final_iqm"]) == pytest.approx(sum(final) / 3)  # trims none of 3
        assert int(row["num_reached"]) == len(reached)
        if reached:
            assert float(row["env_steps_to_target"]) == pytest.approx(statistics.median(reached))
    # rerunning the finished sweep runs nothing and changes nothing
    before = {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("*") if p.is_file()}
    assert main(["sweep", str(CARTPOLE), "--out", str(out), *args]) == 0
    assert "(6 finished, 0 to run)" in capsys.readouterr().err
    after = {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("*") if p.is_file()}
    assert after == before


def _sweep_cmd(out: Path) -> list[str]:
    return [
        sys.executable, "-m", "esvo", "sweep", str(CARTPOLE), "--out", str(out),
        "--seeds", "0-1", "--grid", "strategy.num_pairs=4,6", "--num-cpus", "2",
        "--set", "run.target=null", "--set", "run.generations=24",
        "--set", "evaluation.every=4", "--set", "evaluation.episodes=2",
        "--set", "checkpoint.every=2", "--set", "logging.progress=none",
    ]  # fmt: skip


@pytest.mark.ray
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=str
)
def test_killing_the_sweep_driver_and_rerunning_gives_the_same_trials(tmp_path, sig):
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        _sweep_cmd(out), cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    try:  # kill it once a trial has checkpointed and before all have ended
        while time.monotonic() < deadline and proc.poll() is None:
            ckpts = list(out.glob("trials/*/seed_*/checkpoints/gen_*"))
            if ckpts:
                break
            time.sleep(0.2)
        assert ckpts, "no trial checkpointed"
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)  # the driver and everything it started, at once
        else:
            proc.send_signal(sig)  # Ctrl-C: the driver stops, says how to resume, exits 130
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "rerun the same command to continue" in err.splitlines()[-1]
    plan = json.loads((out / "sweep.json").read_text())
    unfinished = [t for t in plan["trials"] if read_result(out / t["dir"]) is None]
    assert unfinished, "the sweep had finished before the kill"
    rerun = subprocess.run(_sweep_cmd(out), cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for trial in plan["trials"]:
        n = 4 if "num_pairs=4" in trial["setting"] else 6
        cfg = load_config(
            CARTPOLE,
            [
                "run.target=null", "run.generations=24", "evaluation.every=4",
                "evaluation.episodes=2", "checkpoint.every=2", "logging.progress=none",
                f"strategy.num_pairs={n}", f"run.seed={trial['seed']}", "parallel.backend=serial",
            ],
        )  # fmt: skip
        alone = tmp_path / "alone" / trial["dir"]
        train(cfg, alone)
        assert_same_run(out / trial["dir"], alone, ignore=IGNORE)
        assert read_result(out / trial["dir"])["generation"] == 24


@pytest.mark.ray
def test_trials_get_their_workers_from_their_placement_groups(ray_session, tmp_path):
    """Each trial needs 2 worker CPUs of the 2 Ray has: its workers must be placed in its own
    placement group (else they wait for CPUs the group holds) and Tune must run one trial at a
    time (else more than 2 chunks are scored at once)."""
    from tests.node_objective import max_overlap, read_intervals

    records = tmp_path / "records"
    records.mkdir()
    cfg = write(
        tmp_path / "slow.yaml",
        {
            "run": {"name": "pg", "generations": 3},
            "objective": {
                "kind": "python",
                "target": "tests.node_objective:make",
                "name": "sphere",
                "dim": 4,
                "record_dir": str(records),
                "delay_s": 0.05,
            },
            "strategy": {"num_pairs": 8},
            "parallel": {"backend": "ray", "num_workers": 2, "chunks_per_worker": 2},
            "evaluation": {"every": 0},
            "logging": {"progress": "none"},
        },
    )
    out = tmp_path / "sweep"
    assert main(["sweep", str(cfg), "--out", str(out), "--seeds", "0-3"]) == 0
    intervals = read_intervals(records)
    assert len({pid for pid, _, _ in intervals}) >= 2 * 2  # new workers for each trial
    assert len(intervals) == 4 * 3 * 2 * 2  # trials x generations x workers x chunks
    assert max_overlap(intervals) == 2


@pytest.mark.ray
def test_a_failing_trial_is_named_and_the_sweep_exits_1(ray_session, tmp_path, capsys):
    """One setting's env returns NaN rewards: its trial fails as ``esvo train`` would (exit 1,
    result.json says why), the other setting's trial finishes, the sweep exits 1 naming it."""
    cfg = write(
        tmp_path / "nan.yaml",
        {
            "run": {"name": "nan", "generations": 2},
            "objective": {"kind": "gym", "env_id": "tests.toy_env:ToyEnv-v0", "obs_norm": False},
            "strategy": {"num_pairs": 2},
            "parallel": {"backend": "serial"},
            "evaluation": {"every": 1, "episodes": 1},
            "sweep": {"grid": {"objective.env_id": [
                "tests.toy_env:ToyEnv-v0", "tests.toy_env:ToyNaNRewardEnv-v0"]}},
        },
    )  # fmt: skip
    out = tmp_path / "sweep"
    assert main(["sweep", str(cfg), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    good, bad = (out / "trials" / d / "seed_0" for d in (
        "objective.env_id=tests.toy_env_ToyEnv-v0",
        "objective.env_id=tests.toy_env_ToyNaNRewardEnv-v0",
    ))  # fmt: skip
    assert read_result(good)["exit_code"] == 0
    failed = read_result(bad)
    assert failed["exit_code"] == 1 and "4/4 candidates failed" in failed["error"]
    assert f"{bad.relative_to(out)}: generation 0: 4/4 candidates failed" in err
    assert "1 of 2 trials finished" in err
    assert main(["report", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| objective.env_id=tests.toy_env:ToyNaNRewardEnv-v0 | 0/1 |" in table
    assert "- failed (its metrics so far are used): objective.env_id=" in table
    assert "4/4 candidates failed" in table
