"""Chunk sizing on Ray, A/B on identical work: the same generation evaluated alternately with
small chunks (``min_chunk_pairs=1``: ``chunks_per_worker`` chunks per worker) and with chunks
that fill the objective's lockstep batch (``min_chunk_pairs=batch_pairs``, the trainer's
default). Interleaving the two on one Ray session and one generation cancels the drift of a
shared machine; results must be bitwise equal (checked).

    .venv/bin/python scripts/bench_chunking.py [--envs HalfCheetah-v5 ...] [--pairs 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
from bench_throughput import Run, objective_spec  # scripts/ is on sys.path (sys.path[0])

from esvo.parallel.ray_backend import RayEvaluator


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "CartPole-v1"])
    p.add_argument("--policy", default="linear")
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--chunks-per-worker", type=int, default=4)
    p.add_argument("--warmup", type=int, default=3, help="generations trained before timing")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)

    import ray

    ray.init(
        num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR"
    )
    print("$ " + " ".join([sys.executable, *sys.argv]))
    print(
        f"{'env':<15}{'policy':<7}{'pairs':>6}{'W':>3}{'batch':>6}"
        f"{'tasks A':>8}{'A steps/s':>10}{'tasks B':>8}{'B steps/s':>10}{'B/A':>6}"
    )
    try:
        for env_id in args.envs:
            spec = objective_spec(env_id, args.policy)
            run = Run(
                spec,
                args.pairs,
                lambda s, n: RayEvaluator(
                    s, n, num_workers=args.workers, chunks_per_worker=args.chunks_per_worker
                ),
            )
            for _ in range(args.warmup):
                g = run.generation()
            gen, ids = g["replay"]  # the last warm-up generation, evaluated again and again
            ev, batch = run.evaluator, run.obj.batch_pairs
            rates: dict[int, list[float]] = {1: [], batch: []}
            tasks, reference = {}, None
            ev.evaluate(gen, ids)  # warm caches of this generation
            for _ in range(args.repeats):
                for m in rates:
                    ev.min_chunk_pairs = m
                    t = time.perf_counter()
                    res = ev.evaluate(gen, ids)
                    rates[m].append(res.steps.sum() / (time.perf_counter() - t))
                    tasks[m] = ev.last_stats["num_tasks"]
                    if reference is None:
                        reference = res
                    assert np.array_equal(res.fitness, reference.fitness), "results differ"
            ev.close()
            a, b = statistics.median(rates[1]), statistics.median(rates[batch])
            ratios = [y / x for x, y in zip(rates[1], rates[batch], strict=True)]
            print(
                f"{env_id:<15}{args.policy:<7}{args.pairs:>6}{args.workers:>3}{batch:>6}"
                f"{tasks[1]:>8}{a:>10.0f}{tasks[batch]:>8}{b:>10.0f}"
                f"{statistics.median(ratios):>6.2f}",
                flush=True,
            )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
