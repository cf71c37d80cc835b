"""Run in a fresh process: join a running cluster with ``address`` and check one generation.

``python -m tests.parallel.join_cluster ADDRESS [ADDRESS ...]``; prints ``OK <address> <nodes>``
per address (a process may hold one Ray connection at a time, so they run one after another).
"""

from __future__ import annotations

import sys

import numpy as np
import ray

from esvo.core.noise import perturbation_ids
from esvo.parallel import SerialEvaluator
from esvo.parallel.ray_backend import RayEvaluator
from esvo.protocol import GenerationSpec

OBJECTIVE = {"kind": "python", "target": "tests.parallel.slow_objective:make", "dim": 8}
NOISE = {"kind": "generator", "dim": 8, "seed": 1}


def main(addresses: list[str]) -> int:
    spec = GenerationSpec(0, np.ones(8), np.full(8, 0.1), seed=0)
    ids = perturbation_ids(0, 0, 10)
    expected = SerialEvaluator(OBJECTIVE, NOISE).evaluate(spec, ids)
    for address in addresses:
        with RayEvaluator(OBJECTIVE, NOISE, num_workers=2, address=address) as ev:
            got = ev.evaluate(spec, ids)
            assert np.array_equal(got.fitness, expected.fitness), "results differ from serial"
            nodes = set(ev.node_ids())
        assert not ray.is_initialized(), "close() did not disconnect"
        print("OK", address, len(nodes), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
