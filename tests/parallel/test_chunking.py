"""How a generation is cut into tasks for the Ray workers (pure logic, no Ray started)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from esvo.objectives.base import make_objective
from esvo.parallel.ray_backend import balanced_tasks, chunk_count


@pytest.mark.parametrize(
    ("pairs", "workers", "per_worker", "min_pairs", "expected"),
    [
        (10, 2, 4, 1, 8),  # no lockstep to fill: chunks_per_worker decides
        (10, 2, 4, 4, 2),  # 8 chunks of 1-2 pairs would not fill a batch of 4: 2 of 5
        (32, 2, 4, 4, 8),  # large enough: 8 chunks of 4
        (32, 2, 2, 4, 4),
        (6, 2, 4, 4, 2),  # one chunk per worker beats filling the batch
        (3, 8, 4, 1, 3),  # no empty chunks
        (1, 2, 4, 4, 1),
    ],
)
def test_chunk_count(pairs, workers, per_worker, min_pairs, expected):
    assert chunk_count(pairs, workers, per_worker, min_pairs) == expected


@given(
    pairs=st.integers(1, 300),
    workers=st.integers(1, 16),
    per_worker=st.integers(1, 8),
    min_pairs=st.integers(1, 16),
)
def test_chunks_cover_the_generation_evenly(pairs, workers, per_worker, min_pairs):
    n = chunk_count(pairs, workers, per_worker, min_pairs)
    assert 1 <= n <= min(pairs, workers * per_worker)
    assert n >= min(pairs, workers)  # every worker gets work when there is enough
    ids = np.arange(100, 100 + pairs, dtype=np.uint64)
    tasks = balanced_tasks(3, ids, n)
    sizes = [len(t.ids) for t in tasks]
    assert len(tasks) == n and max(sizes) - min(sizes) <= 1
    assert np.array_equal(np.concatenate([t.indices for t in tasks]), np.arange(pairs))
    assert all(np.array_equal(t.ids, ids[t.indices]) and t.generation == 3 for t in tasks)


@pytest.mark.parametrize(("lockstep", "episodes", "expected"), [(8, 1, 4), (8, 2, 2), (5, 1, 3)])
def test_gym_batch_pairs_fill_the_lockstep(lockstep, episodes, expected):
    obj = make_objective(
        kind="gym", env_id="CartPole-v1", lockstep=lockstep, episodes_per_eval=episodes
    )
    assert obj.batch_pairs == expected
    assert make_objective(kind="function", name="sphere", dim=3).batch_pairs == 1
