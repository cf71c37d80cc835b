"""Run in a fresh process: an embedded ``RayEvaluator`` (no address) scores one generation.

``python -m tests.parallel.embedded_driver`` prints one JSON line (this driver's pid, the Ray
session directory, the workers' pids, whether the scores equal the serial ones, the driver's
own values of the variables esvo sets for its workers), then blocks until stdin closes, so that
a test can inspect the running instance or SIGKILL the driver.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import ray

from esvo.core.noise import perturbation_ids
from esvo.parallel import SerialEvaluator
from esvo.parallel.ray_backend import THREAD_ENV, RayEvaluator
from esvo.protocol import GenerationSpec

OBJECTIVE = {"kind": "function", "name": "sphere", "dim": 8}
NOISE = {"kind": "generator", "dim": 8, "seed": 1}


def main() -> int:
    spec = GenerationSpec(0, np.ones(8), np.full(8, 0.1), seed=0)
    ids = perturbation_ids(0, 0, 6)
    expected = SerialEvaluator(OBJECTIVE, NOISE).evaluate(spec, ids)
    with RayEvaluator(OBJECTIVE, NOISE, num_workers=2) as ev:
        got = ev.evaluate(spec, ids)
        session = ray._private.worker._global_node.get_session_dir_path()
        line = {
            "pid": os.getpid(),
            "session_dir": session,
            "workers": ev.worker_pids(),
            "same_as_serial": bool(np.array_equal(got.fitness, expected.fitness)),
            "driver_env": {k: os.environ.get(k) for k in [*THREAD_ENV, "PYTHONPATH"]},
        }
        print(json.dumps(line), flush=True)
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main())
