"""esvo report / esvo plot SWEEP_DIR: the numbers against the trials' metrics.jsonl.

Sweeps are built from real serial trainings (CartPole-v1, 2 x 4 seeds, and the sphere, 2 x 8
seeds; about 1.5 s) in the layout ``esvo sweep`` writes; every statistic is re-derived here
from the metrics files: the IQM by sorting and averaging the middle half, the CI with
``scipy.stats.bootstrap`` called here, targets by scanning the rows.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from esvo.cli import main
from esvo.config import config_from_dict, load_config
from esvo.report import (
    BOOTSTRAP_SEED,
    N_RESAMPLES,
    iqm_ci,
    load_sweep,
    step_values,
    summarize,
    sweep_curves,
    write_report,
)
from esvo.trainer import train

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CARTPOLE = ["parallel.backend=serial", "run.generations=3", "evaluation.episodes=5"]
SPHERE = ["run.generations=14", "run.target=0.3", "evaluation.every=3", "checkpoint.every=100"]


def _build_sweep(
    root: Path, config: str, base: list[str], key: str, values: list, seeds: list[int]
) -> Path:
    """Train every (value, seed) and write sweep.json and result.json as ``esvo sweep`` does."""
    settings, trials = [], []
    for v in values:
        name = f"{key}={v}"
        settings.append({"name": name, "dir": name, "overrides": {key: v}})
        for seed in seeds:
            rel = f"trials/{name}/seed_{seed}"
            trials.append({"setting": name, "seed": seed, "dir": rel})
            over = [*base, "logging.progress=none", f"{key}={v}", f"run.seed={seed}"]
            result = train(load_config(CONFIGS / config, over), root / rel, loggers=[])
            (root / rel / "result.json").write_text(
                json.dumps(
                    {
                        "reason": result.reason,
                        "generation": result.generation,
                        "best_eval_return": result.best_eval_return,
                        "exit_code": result.exit_code,
                    }
                )
            )
    doc = {
        "format_version": 1,
        "name": config.removesuffix(".yaml"),
        "seeds": seeds,
        "grid": {key: values},
        "settings": settings,
        "trials": trials,
    }
    (root / "sweep.json").write_text(json.dumps(doc))
    return root


@pytest.fixture(scope="module")
def cartpole_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cartpole_sweep")
    return _build_sweep(root, "cartpole.yaml", CARTPOLE, "strategy.num_pairs", [2, 8], [0, 1, 2, 3])


@pytest.fixture(scope="module")
def sphere_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sphere_sweep")
    seeds = list(range(8))
    return _build_sweep(root, "sphere.yaml", SPHERE, "strategy.sigma_init", [0.1, 0.5], seeds)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------- references


def _rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "metrics.jsonl").read_text().splitlines()]


def _evals(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("eval_return_mean") is not None]


def _ref_iqm(x) -> float:
    x = np.sort(np.asarray(x, dtype=float))
    cut = int(0.25 * x.size)  # floor: trim_mean cuts int(0.25 n) at each end
    return float(x[cut : x.size - cut].mean())


def _ref_ci(x) -> tuple[float, float]:
    x = np.sort(np.asarray(x, dtype=float))
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap(
        (x,),
        lambda s, axis: stats.trim_mean(s, 0.25, axis=axis),
        n_resamples=N_RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _reference(sweep_dir: Path, maximize: bool, target: float) -> dict[str, dict]:
    """Per setting, from the files alone: finals, bests and the first rows reaching target."""
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    out: dict[str, dict] = {
        s["name"]: {"final": [], "best": [], "hits": []} for s in doc["settings"]
    }
    for t in doc["trials"]:
        d = sweep_dir / t["dir"]
        if not (d / "metrics.jsonl").is_file():
            continue
        ev = _evals(_rows(d))
        if not ev:
            continue
        values = [r["eval_return_mean"] for r in ev]
        ref = out[t["setting"]]
        ref["final"].append(values[-1])
        ref["best"].append(max(values) if maximize else min(values))
        hit = [r for r in ev if (r["eval_return_mean"] - target) * (1 if maximize else -1) >= 0]
        if hit:
            ref["hits"].append(hit[0])
        result = d / "result.json"
        if result.is_file():  # the trainer's own view agrees
            res = json.loads(result.read_text())
            assert res["best_eval_return"] == pytest.approx(ref["best"][-1], rel=1e-12)
            if res["reason"] == "target":
                assert hit and hit[0]["generation"] + 1 == res["generation"]
    return out


def _check_setting(r, ref: dict, with_steps: bool) -> None:
    assert r.num_evaluated == len(ref["final"])
    for what in ("final", "best"):
        x = ref[what]
        assert getattr(r, f"{what}_median") == pytest.approx(float(np.median(x)), rel=1e-12)
        assert getattr(r, f"{what}_iqm") == pytest.approx(_ref_iqm(x), rel=1e-12)
        low, high = getattr(r, f"{what}_iqm_ci")
        assert (low, high) == pytest.approx(_ref_ci(x), rel=1e-12)
        assert min(x) <= low <= _ref_iqm(x) <= high <= max(x)
    hits = ref["hits"]
    assert r.num_reached == len(hits)
    if not hits:
        assert r.env_steps_to_target is None and r.wall_s_to_target is None
        return
    med = lambda key: float(np.median([h[key] for h in hits]))  # noqa: E731
    assert r.wall_s_to_target == pytest.approx(med("wall_s"))
    assert r.generations_to_target == float(np.median([h["generation"] + 1 for h in hits]))
    if with_steps:
        assert r.env_steps_to_target == med("env_steps")
        total = [h["env_steps"] + h["eval_env_steps"] for h in hits]
        assert r.total_env_steps_to_target == float(np.median(total))
    else:
        assert r.env_steps_to_target is None and r.total_env_steps_to_target is None


# ---------------------------------------------------------------------------- the report


def test_cartpole_report_matches_the_metrics(cartpole_sweep):
    reports = summarize(load_sweep(cartpole_sweep))
    ref = _reference(cartpole_sweep, maximize=True, target=475.0)
    assert [r.setting for r in reports] == ["strategy.num_pairs=2", "strategy.num_pairs=8"]
    for r in reports:
        assert (r.num_trials, r.num_finished, r.maximize, r.target) == (4, 4, True, 475.0)
        _check_setting(r, ref[r.setting], with_steps=True)
    # the fixture covers both cases: no seed reaches 475 with 2 pairs, some do with 8
    assert reports[0].num_reached == 0 < reports[1].num_reached


def test_function_sweep_minimizes_and_has_no_env_steps(sphere_sweep):
    reports = summarize(load_sweep(sphere_sweep))
    ref = _reference(sphere_sweep, maximize=False, target=0.3)
    for r in reports:
        assert (r.num_trials, r.num_evaluated, r.maximize, r.target) == (8, 8, False, 0.3)
        _check_setting(r, ref[r.setting], with_steps=False)
    assert reports[0].num_reached == 0 < reports[1].num_reached < 8
    # 8 seeds: the IQM drops 2 at each end, unlike the mean
    x = ref[reports[1].setting]["final"]
    assert reports[1].final_iqm != pytest.approx(float(np.mean(x)), rel=1e-9)


def test_cli_report_writes_markdown_and_a_csv_that_parses_back(cartpole_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["report", str(cartpole_sweep), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert stdout == (out / "report.md").read_text()
    assert not (cartpole_sweep / "report.md").exists()
    ref = _reference(cartpole_sweep, maximize=True, target=475.0)
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["setting"] for r in rows] == list(ref)
    for row in rows:
        x, b, hits = (
            ref[row["setting"]]["final"],
            ref[row["setting"]]["best"],
            ref[row["setting"]]["hits"],
        )
        assert int(row["strategy.num_pairs"]) == int(row["setting"].split("=")[1])
        assert (row["num_trials"], row["num_finished"], row["num_evaluated"]) == ("4", "4", "4")
        assert (row["maximize"], float(row["target"])) == ("true", 475.0)
        assert float(row["final_median"]) == float(np.median(x))
        assert float(row["final_iqm"]) == pytest.approx(_ref_iqm(x), rel=1e-15)
        ci = (float(row["final_iqm_ci_low"]), float(row["final_iqm_ci_high"]))
        assert ci == pytest.approx(_ref_ci(x), rel=1e-15)
        assert float(row["best_iqm"]) == pytest.approx(_ref_iqm(b), rel=1e-15)
        assert int(row["num_reached"]) == len(hits)
        assert float(row["reached_fraction"]) == len(hits) / 4
        if hits:
            steps = float(np.median([h["env_steps"] for h in hits]))
            assert float(row["env_steps_to_target"]) == steps
        else:
            assert row["env_steps_to_target"] == row["wall_s_to_target"] == ""
        # the Markdown row says the same
        line = next(ln for ln in stdout.splitlines() if ln.startswith(f"| {row['setting']} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1] == "4/4" and cells[6] == "≥ 475" and cells[7] == f"{len(hits)}/4"
        assert cells[2] == f"{_ref_iqm(x):.4g} [{ci[0]:.4g}, {ci[1]:.4g}]"
        assert cells[8] == (f"{steps:,.0f}" if hits else "—")


def test_unfinished_and_unstarted_trials_are_reported(cartpole_sweep, tmp_path):
    sweep_dir = _copy(cartpole_sweep, tmp_path / "sweep")
    doc = json.loads((sweep_dir / "sweep.json").read_text())
    by = {(t["setting"], t["seed"]): sweep_dir / t["dir"] for t in doc["trials"]}
    shutil.rmtree(by["strategy.num_pairs=8", 3])  # not started
    (by["strategy.num_pairs=8", 0] / "result.json").unlink()  # still running
    rows = _rows(by["strategy.num_pairs=8", 0])[:2]  # ... after 2 generations
    (by["strategy.num_pairs=8", 0] / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    text, _, _ = write_report(sweep_dir)
    (_, r8) = summarize(load_sweep(sweep_dir))
    assert (r8.num_trials, r8.num_finished, r8.num_evaluated) == (4, 2, 3)
    ref = _reference(sweep_dir, maximize=True, target=475.0)
    _check_setting(r8, ref["strategy.num_pairs=8"], with_steps=True)  # n=3: nothing trimmed
    assert ref["strategy.num_pairs=8"]["final"][0] == rows[1]["eval_return_mean"]
    assert "| strategy.num_pairs=8 | 2/4 |" in text
    assert "- not started: strategy.num_pairs=8 seed 3" in text
    assert (
        "- unfinished (no result.json; its metrics so far are used): strategy.num_pairs=8 seed 0"
        in text
    )
    # its curve stops at its last logged step; the finished seeds carry their final value on
    curve = next(c for c in sweep_curves(load_sweep(sweep_dir)) if c.setting == r8.setting)
    end = rows[-1]["env_steps"]
    assert np.all(curve.num_seeds[curve.x <= end] == 3)
    assert np.all(curve.num_seeds[curve.x > end] == 2)


def test_iqm_ci_degenerates_to_the_point():
    assert iqm_ci([5.0]) == (5.0, 5.0)
    assert iqm_ci([2.0, 2.0, 2.0, 2.0]) == (2.0, 2.0)
    low, high = iqm_ci([3.0, 1.0, 2.0, 4.0])
    assert (low, high) == pytest.approx(_ref_ci([1.0, 2.0, 3.0, 4.0]), rel=1e-15)
    assert iqm_ci([4.0, 3.0, 2.0, 1.0]) == (low, high)  # order of the seeds does not matter


def test_one_seed_and_no_target(tmp_path):
    sweep_dir = _build_sweep(
        tmp_path / "s",
        "sphere.yaml",
        [*SPHERE, "run.target=null"],
        "strategy.sigma_init",
        [0.5],
        [3],
    )
    (r,) = summarize(load_sweep(sweep_dir))
    final = _evals(_rows(sweep_dir / "trials/strategy.sigma_init=0.5/seed_3"))[-1][
        "eval_return_mean"
    ]
    assert r.final_iqm == r.final_median == final and r.final_iqm_ci == (final, final)
    text, _, csv_path = write_report(sweep_dir)
    assert "nan" not in text.lower() and "nan" not in csv_path.read_text().lower()
    line = next(ln for ln in text.splitlines() if ln.startswith("| strategy.sigma_init=0.5 |"))
    assert [c.strip() for c in line.strip("|").split("|")][6:] == [""] * 6  # target columns blank


# ---------------------------------------------------------------------------- curves


def test_step_values_by_hand():
    x, y = np.array([10.0, 20.0, 40.0]), np.array([1.0, 2.0, 3.0])
    grid = np.array([5.0, 10.0, 15.0, 20.0, 39.0, 40.0, 100.0])
    nan = math.nan
    np.testing.assert_array_equal(step_values(x, y, grid), [nan, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(step_values(x, y, grid, 50.0), [nan, 1, 1, 2, 2, 3, nan])


def test_sweep_curves_against_a_scan_of_the_rows(cartpole_sweep):
    sweep = load_sweep(cartpole_sweep)
    doc = json.loads((cartpole_sweep / "sweep.json").read_text())
    for curve in sweep_curves(sweep, num_points=50):
        dirs = [cartpole_sweep / t["dir"] for t in doc["trials"] if t["setting"] == curve.setting]
        evals = [_evals(_rows(d)) for d in dirs]
        assert curve.x_key == "env_steps"
        assert curve.x[0] == max(ev[0]["env_steps"] for ev in evals)
        assert curve.x[-1] == max(ev[-1]["env_steps"] for ev in evals)
        expected = np.empty((len(dirs), curve.x.size))
        for i, ev in enumerate(evals):
            for k, xk in enumerate(curve.x):  # all finished: the last value carries on
                expected[i, k] = [r["eval_return_mean"] for r in ev if r["env_steps"] <= xk][-1]
        np.testing.assert_array_equal(curve.values, expected)
        np.testing.assert_allclose(curve.mean, expected.mean(axis=0), rtol=1e-12)
        iqms = [_ref_iqm(expected[:, k]) for k in range(curve.x.size)]
        np.testing.assert_allclose(curve.iqm, iqms, rtol=1e-12)
        for k in (0, curve.x.size // 2, curve.x.size - 1):
            ci = _ref_ci(expected[:, k])
            assert (curve.iqm_low[k], curve.iqm_high[k]) == pytest.approx(ci, rel=1e-12)


def test_cli_plot_of_a_sweep_and_of_a_function_sweep(
    cartpole_sweep, sphere_sweep, tmp_path, capsys
):
    pytest.importorskip("matplotlib")
    assert main(["plot", str(cartpole_sweep), "--out", str(tmp_path / "c.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    (curve, _) = sweep_curves(load_sweep(sphere_sweep))
    assert curve.x_key == "generation"  # a function: no env steps


# ---------------------------------------------------------------------------- bad input


def _bad_sweeps(root: Path) -> dict[str, Path]:
    cases = {}
    cases["missing"] = root / "missing"
    (root / "no_json").mkdir()
    cases["no_json"] = root / "no_json"
    for name, text in {
        "malformed": "{not json",
        "version": json.dumps({"format_version": 2}),
        "no_trials": json.dumps(
            {"format_version": 1, "name": "x", "seeds": [0], "grid": {}, "settings": []}
        ),
        "unknown_setting": json.dumps(
            {
                "format_version": 1,
                "name": "x",
                "seeds": [0],
                "grid": {},
                "settings": [{"name": "base", "dir": "base", "overrides": {}}],
                "trials": [{"setting": "other", "seed": 0, "dir": "trials/base/seed_0"}],
            }
        ),
    }.items():
        (root / name).mkdir()
        (root / name / "sweep.json").write_text(text)
        cases[name] = root / name
    return cases


@pytest.mark.parametrize("command", ["report", "plot"])
def test_bad_sweep_dirs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, command):
    cases = _bad_sweeps(tmp_path)
    before = sorted(p for p in tmp_path.rglob("*"))
    expected = {
        "missing": "no metrics.jsonl (a run) or sweep.json" if command == "plot" else "no such",
        "no_json": "no metrics.jsonl (a run) or sweep.json"
        if command == "plot"
        else "no sweep.json",
        "malformed": "not valid JSON",
        "version": "format_version = 2",
        "no_trials": "missing key 'trials'",
        "unknown_setting": "setting = 'other'",
    }
    for name, path in cases.items():
        argv = [command, str(path)]
        if name == "malformed":
            argv += ["--out", str(tmp_path / "out" / ("x.png" if command == "plot" else ""))]
        assert main(argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and str(path) in err and expected[name] in err, (name, err)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_an_out_of_the_wrong_kind_is_refused(cartpole_sweep, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["report", str(cartpole_sweep), "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--out" in err and "not a directory" in err
    assert main(["plot", str(cartpole_sweep), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--out" in err and "is a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert (
        not (cartpole_sweep / "report.md").exists() and not (cartpole_sweep / "curves.png").exists()
    )


def test_a_python_objective_says_its_direction(tmp_path):
    root = tmp_path / "py"
    doc = {
        "run": {"name": "py", "seed": 0, "generations": 3, "target": 0.5},
        "objective": {"kind": "python", "target": "tests.node_objective:make", "dim": 3},
        "strategy": {"num_pairs": 2},
        "parallel": {"backend": "serial"},
        "logging": {"progress": "none"},
        "evaluation": {"every": 1},
    }
    rel = "trials/base/seed_0"
    train(config_from_dict(doc), root / rel, loggers=[])
    (root / "sweep.json").write_text(
        json.dumps(
            {
                "format_version": 1,
                "name": "py",
                "seeds": [0],
                "grid": {},
                "settings": [{"name": "base", "dir": "base", "overrides": {}}],
                "trials": [{"setting": "base", "seed": 0, "dir": rel}],
            }
        )
    )
    (r,) = summarize(load_sweep(root))
    values = [row["eval_return_mean"] for row in _evals(_rows(root / rel))]
    assert r.maximize is False and r.best_median == min(values) < max(values)  # a sphere
    assert r.num_reached == int(any(v <= 0.5 for v in values))
