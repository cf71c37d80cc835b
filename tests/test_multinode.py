"""Multi-node runs on a real local cluster: a head and a second raylet standing in for a second
machine (``tests/ray_cluster.py``). Workers spread over both nodes; killing the second node
mid-run is survived like a worker failure and the run ends with the serial run's parameters."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from esvo.checkpoint import latest_checkpoint
from esvo.config import load_config
from esvo.loggers import read_jsonl
from esvo.trainer import train
from tests.node_objective import read_records
from tests.ray_cluster import kill_group, local_cluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
GENERATIONS = 8


def _config(
    tmp_path: Path, record_dir: Path, num_workers: int | None = 2, delay_s: float = 0.15
) -> Path:
    cfg = {
        "run": {"name": "multinode", "seed": 3, "generations": GENERATIONS},
        "objective": {
            "kind": "python",
            "target": "tests.node_objective:make",
            "name": "sphere",
            "dim": 10,
            "record_dir": str(record_dir),
            "delay_s": delay_s,
        },
        "strategy": {"num_pairs": 8},
        "parallel": {"num_workers": num_workers, "chunks_per_worker": 2},
        "evaluation": {"every": 0},
        "checkpoint": {"every": 1},
        "logging": {"progress": "plain"},
    }
    path = tmp_path / "multinode.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _final_state(run_dir: Path) -> dict[str, np.ndarray]:
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert ckpt is not None and ckpt.generation == GENERATIONS
    return {k: v for k, v in ckpt.arrays.items() if "wall" not in k}


def _run_dir(out: Path) -> Path:
    (run_dir,) = (out / "multinode").iterdir()
    return run_dir


def _serial_reference(tmp_path: Path) -> dict[str, np.ndarray]:
    config = _config(tmp_path, tmp_path / "unused")
    (tmp_path / "unused").mkdir()
    cfg = load_config(config, ["parallel.backend=serial", "logging.progress=none"])
    run_dir = tmp_path / "serial" / "multinode" / "ref"
    run_dir.mkdir(parents=True)
    train(cfg, run_dir)
    return _final_state(run_dir)


def _train_on(cluster, config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "esvo",
            "train",
            str(config),
            "--out",
            str(out),
            "--set",
            f"parallel.address={cluster.gcs_address}",  # host:port, RAY_AUTH_MODE=token
        ],
        cwd=ROOT,  # workers import tests.node_objective from the driver's directory
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _assert_same_as(expected: dict[str, np.ndarray], out: Path) -> None:
    run_dir = _run_dir(out)
    got = _final_state(run_dir)
    assert got.keys() == expected.keys()
    for key in expected:
        assert np.array_equal(got[key], expected[key]), f"{key} differs from the serial run"
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    assert [m["generation"] for m in metrics] == list(range(GENERATIONS))


def test_node_joining_mid_run_is_used_from_the_next_generation(tmp_path):
    """``num_workers: null`` is elastic: one worker on a 1-CPU head, then a node joins."""
    expected = _serial_reference(tmp_path)
    records = tmp_path / "records"
    records.mkdir()
    # ~4 s a generation on one worker: the run is still going when the node has joined
    config = _config(tmp_path, records, num_workers=None, delay_s=0.5)
    out = tmp_path / "cluster"
    with local_cluster(num_cpus=1, dashboard=True) as cluster:
        driver = _train_on(cluster, config, out)
        try:
            deadline = time.monotonic() + 180
            while not any(g >= 1 for _, g, _ in read_records(records)):
                assert driver.poll() is None, driver.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "the run never reached generation 1"
                time.sleep(0.1)
            joined_after = max(g for _, g, _ in read_records(records))
            _, node_id = cluster.add_node(num_cpus=1)
            output, _ = driver.communicate(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    assert driver.returncode == 0, output[-3000:]
    rows = read_records(records)
    assert node_id not in {n for _, g, n in rows if g <= joined_after}
    used = sorted({g for _, g, n in rows if n == node_id})
    assert used, "the joined node was never used"
    assert used[-1] == GENERATIONS - 1  # and kept in use to the end
    _assert_same_as(expected, out)


def test_node_lost_mid_run_same_result_as_serial(tmp_path):
    expected = _serial_reference(tmp_path)

    records = tmp_path / "records"
    records.mkdir()
    config = _config(tmp_path, records)
    out = tmp_path / "cluster"
    with local_cluster(num_cpus=2, dashboard=True) as cluster:
        node, node_id = cluster.add_node(num_cpus=1)
        assert len(cluster.alive_nodes()) == 2
        driver = _train_on(cluster, config, out)
        try:
            # Wait for generation 2 to run on both nodes, then take the second node away.
            deadline = time.monotonic() + 180
            while True:
                assert driver.poll() is None, driver.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "workers never ran on both nodes"
                rows = read_records(records)
                nodes = {n for _, g, n in rows if g >= 1}
                if len(nodes) == 2 and any(g >= 2 for _, g, _ in rows):
                    break
                time.sleep(0.1)
            assert node_id in nodes
            # The machine is gone: its raylet (process group) and its workers (own sessions).
            kill_group(node, signal.SIGKILL)
            for pid in {pid for pid, _, n in rows if n == node_id}:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            output, _ = driver.communicate(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    assert driver.returncode == 0, output[-3000:]
    rows = read_records(records)
    last_gen_on_lost = max(g for _, g, n in rows if n == node_id)
    assert last_gen_on_lost < GENERATIONS - 1, "the node was killed after the run's end"
    assert {n for _, g, n in rows if g == GENERATIONS - 1} == {
        n for _, g, n in rows if g == GENERATIONS - 1 and n != node_id
    }
    _assert_same_as(expected, out)


def test_sweep_on_a_two_node_cluster_uses_both_nodes_and_equals_runs_alone(tmp_path):
    """``esvo sweep --address``: 4 trials of 1 worker on a head and a worker node (1 CPU each),
    two at a time; their workers run on both nodes; each trial equals its serial run."""
    records = tmp_path / "records"
    records.mkdir()
    config = _config(tmp_path, records, num_workers=1, delay_s=0.05)
    out = tmp_path / "sweep"
    with local_cluster(num_cpus=1, dashboard=True) as cluster:
        _, worker_node = cluster.add_node(num_cpus=1)
        done = subprocess.run(
            [sys.executable, "-m", "esvo", "sweep", str(config), "--out", str(out),
             "--seeds", "0-3", "--address", cluster.gcs_address],
            cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert worker_node in {node for _, _, node in read_records(records)}
    assert len({node for _, _, node in read_records(records)}) == 2
    for seed in range(4):
        cfg = load_config(config, [f"run.seed={seed}", "parallel.backend=serial"])
        alone = tmp_path / "alone" / str(seed)
        train(cfg, alone)
        swept = out / "trials" / "base" / f"seed_{seed}"
        a, b = _final_state(alone), _final_state(swept)
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), key
