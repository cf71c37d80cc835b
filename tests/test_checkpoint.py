"""Checkpoints: atomic, checksummed, no pickle; corrupt ones are detected and skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from esvo.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    best_generation,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)


def _arrays(g: int) -> dict[str, np.ndarray]:
    return {
        "search/mean": np.arange(5.0) + g,
        "opt/step": np.asarray(g),
        "x/f32": np.ones(3, np.float32),
    }


def test_round_trip_is_exact_and_meta_has_the_fields(tmp_path):
    arrays = {"a": np.random.default_rng(0).standard_normal(7), "n": np.asarray(3, np.int64)}
    path = save_checkpoint(tmp_path, 12, arrays, {"counters": {"env_steps": 5}})
    assert path.name == "gen_000012"
    ckpt = load_checkpoint(path)
    assert ckpt.generation == 12
    for k, v in arrays.items():
        assert ckpt.arrays[k].dtype == v.dtype
        np.testing.assert_array_equal(ckpt.arrays[k], v)
    meta = json.loads((path / "meta.json").read_text())
    for key in ("format_version", "esvo_version", "generation", "sha256", "counters"):
        assert key in meta
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_object_arrays_are_refused(tmp_path):
    with pytest.raises(TypeError, match="no pickle"):
        save_checkpoint(tmp_path, 1, {"bad": np.array([{"a": 1}], dtype=object)}, {})
    assert list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "meta"])
def test_damaged_checkpoint_is_detected_and_latest_falls_back(tmp_path, damage):
    save_checkpoint(tmp_path, 1, _arrays(1), {})
    bad = save_checkpoint(tmp_path, 2, _arrays(2), {})
    state = bad / "state.npz"
    data = state.read_bytes()
    if damage == "truncate":
        state.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        state.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "delete":
        state.unlink()
    else:
        (bad / "meta.json").write_text('{"format_version": 1, "gen')
    with pytest.raises(CheckpointError, match="gen_000002"):
        load_checkpoint(bad)
    with pytest.warns(CheckpointWarning, match="gen_000002"):
        ckpt = latest_checkpoint(tmp_path)
    assert ckpt is not None and ckpt.generation == 1
    np.testing.assert_array_equal(ckpt.arrays["search/mean"], _arrays(1)["search/mean"])


def test_latest_is_none_without_valid_checkpoints(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    bad = save_checkpoint(tmp_path, 3, _arrays(3), {})
    (bad / "state.npz").write_bytes(b"")
    with pytest.warns(CheckpointWarning):
        assert latest_checkpoint(tmp_path) is None


def test_saving_an_existing_generation_keeps_a_valid_one_and_replaces_a_corrupt_one(tmp_path):
    path = save_checkpoint(tmp_path, 4, _arrays(4), {})
    before = (path / "meta.json").read_text()
    save_checkpoint(tmp_path, 4, _arrays(4), {"note": "again"})
    assert (path / "meta.json").read_text() == before
    (path / "state.npz").write_bytes(b"junk")
    save_checkpoint(tmp_path, 4, _arrays(4), {})
    assert load_checkpoint(path).generation == 4


def test_prune_keeps_the_last_n_plus_protected_and_removes_temp_dirs(tmp_path):
    for g in range(1, 7):
        save_checkpoint(tmp_path, g, _arrays(g), {"eval_return": float(10 - abs(g - 2))})
    (tmp_path / ".tmp-gen_000007-999999999").mkdir()  # left by a crashed writer
    best = best_generation(tmp_path, maximize=True)
    assert best == 2
    assert best_generation(tmp_path, maximize=False) == 6
    prune_checkpoints(tmp_path, keep=2, protect=(best,))
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "gen_000002",
        "gen_000005",
        "gen_000006",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen_000002", "gen_000005", "gen_000006"]
