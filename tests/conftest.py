"""Shared fixtures. Ray starts at most once per session, pinned to 2 CPUs (Ray testing tips)."""

from __future__ import annotations

import pytest
from hypothesis import settings

# Property tests check properties, not speed: hypothesis's default 200 ms deadline per example
# made test_chunking fail once on a loaded 2-core machine (a timed test in disguise).
settings.register_profile("esvo", deadline=None)
settings.load_profile("esvo")


@pytest.fixture(scope="session")
def ray_session():
    """An embedded Ray with 2 CPUs for the whole session (reused if already running)."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    from esvo.parallel.ray_backend import connect, shutdown

    # as esvo starts it: a new local instance on loopback that dies with this process
    connect(None, num_cpus=2, include_dashboard=False)
    yield ray
    shutdown()
