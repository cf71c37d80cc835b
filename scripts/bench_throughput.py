"""Training throughput of RayEvaluator against the bare single-core rollout speed.

For each environment and policy:
  (a) bare: env steps/s of the same policies in a plain gymnasium loop on one core: each
      measured generation's candidates replayed one at a time (esvo's forward pass and action
      head, one env, no batching, same env seeds and normalizer) right after the run;
  (b) esvo: env steps/s of whole training generations (ask, evaluate on Ray, tell, merge the
      observation statistics: driver included) with 1 and 2 workers;
  (c) efficiency = (b) / (workers * (a)), per generation;
  (d) driver share = 1 - (time the driver is blocked waiting for workers) / generation wall time;
  (e) bytes sent to and received from the workers per generation (RayEvaluator.last_stats);
  and, to explain (c): util = the workers' busy time / (workers * generation wall time), and
  cpu/wall = the CPU time the busy workers got per second (< 1: other processes took cores),
  bareW/s = total steps/s of W bare replays run at once (what W cores of this machine give).
Generations hold >= --min-steps env steps (sized from warm-up generations); medians over
--generations generations after one warm-up.

    .venv/bin/python scripts/bench_throughput.py [--envs CartPole-v1 ...] [--policies linear mlp]
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import time

import gymnasium as gym
import numpy as np

from esvo.core import Strategy, make_noise
from esvo.core.running_stat import RunningStat
from esvo.objectives.base import make_objective
from esvo.objectives.gym.policies import normalize
from esvo.objectives.gym.rollout import train_seed
from esvo.parallel.ray_backend import RayEvaluator
from esvo.protocol import GenerationSpec

ENVS = ["CartPole-v1", "Pendulum-v1", "HalfCheetah-v5"]
POLICIES = {"linear": {"kind": "linear"}, "mlp": {"kind": "mlp", "hidden_sizes": [64, 64]}}
SIGMA = 0.1


def objective_spec(env_id: str, policy: str) -> dict:
    return {"kind": "gym", "env_id": env_id, "policy": POLICIES[policy], "obs_norm": True}


def bare_replay(
    spec: dict, noise_spec: dict, gens: list[tuple[GenerationSpec, np.ndarray]], shard=(0, 1)
) -> tuple[int, float]:
    """The bare loop on the *same* policies: every candidate of ``gens`` (pairs ``k`` with
    ``k % shard[1] == shard[0]``), one at a time, one env, esvo's forward pass and action head,
    the same env seeds and frozen normalizer. Returns ``(env steps, seconds inside the loops)``.

    The cost of a MuJoCo step depends on the actions (contacts): replaying the measured
    candidates, not some other policy, is what makes (a) and (b) comparable.
    """
    obj = make_objective(**spec)
    noise = make_noise(**noise_spec)
    env = gym.make(spec["env_id"])
    steps, busy = 0, 0.0
    for gen, ids in gens:
        mean, std = obj.normalizer(gen)
        for k in range(shard[0], len(ids), shard[1]):
            z = gen.perturbation(noise.get(int(ids[k])))
            for sign in (1.0, -1.0):
                layers = obj.policy.stack((gen.mean + sign * z).astype(np.float32)[None])
                obs, _ = env.reset(seed=train_seed(gen.seed, gen.generation, k, 0))
                t0 = time.perf_counter()
                while True:
                    x = normalize(np.asarray(obs, dtype=np.float64).ravel(), mean, std, 5.0)
                    action = obj.head.act(obj.policy.forward(layers, x[None])[0], None)
                    obs, _, terminated, truncated, _ = env.step(action)
                    steps += 1
                    if terminated or truncated:
                        break
                busy += time.perf_counter() - t0
    env.close()
    return steps, busy


def bare_concurrent(spec: dict, noise_spec: dict, gens: list, processes: int) -> float:
    """Total steps/s of ``processes`` bare replays (one shard each) run at once: what the
    machine's cores give for this work."""
    ctx = multiprocessing.get_context("spawn")
    shards = [(spec, noise_spec, gens, (j, processes)) for j in range(processes)]
    with ctx.Pool(processes) as pool:
        return sum(n / t for n, t in pool.starmap(bare_replay, shards))


class Run:
    """The trainer's generation loop in miniature, timed."""

    def __init__(self, spec: dict, num_pairs: int, evaluator_factory):
        self.obj = make_objective(**spec)
        dim = self.obj.num_params
        noise = make_noise("auto", dim)
        self.strategy = Strategy(
            dim, maximize=True, num_pairs=num_pairs, sigma_init=SIGMA, noise=noise, seed=0
        )
        self.state = self.strategy.init(self.obj.initial_params(0))
        self.obs = RunningStat.zeros(self.obj.obs_dim)
        self.noise_spec = noise.spec()
        self.evaluator = evaluator_factory(spec, self.noise_spec)

    def generation(self) -> dict:
        t0 = time.perf_counter()
        ask = self.strategy.ask(self.state)
        spec = GenerationSpec(
            self.state.generation,
            self.state.mean,
            self.state.sigma,
            seed=0,
            obs_mean=self.obs.mean,
            obs_std=self.obs.std(),
            search=self.state.dist,
        )
        results = self.evaluator.evaluate(spec, ask.ids)
        self.state, _ = self.strategy.tell(self.state, ask, results.fitness)
        s = results.obs_stats
        self.obs = self.obs.merge_sums(s.count.sum(), s.sum.sum(axis=0), s.sumsq.sum(axis=0))
        wall = time.perf_counter() - t0
        st = self.evaluator.last_stats
        return {
            "replay": (spec, ask.ids),
            "steps": int(results.steps.sum()),
            "wall": wall,
            "steps_per_s": results.steps.sum() / wall,
            "driver_share": 1 - st["driver_wait_s"] / wall,
            "bytes_out": st["bytes_out"],
            "bytes_in": st["bytes_in"],
            "num_tasks": st["num_tasks"],
            "worker_cpu": st["worker_cpu_s"] / st["worker_wall_s"],
            "worker_util": st["worker_wall_s"] / (st["num_workers"] * wall),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=ENVS)
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    p.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    p.add_argument("--generations", type=int, default=5)
    p.add_argument("--min-steps", type=int, default=20_000)
    p.add_argument("--chunks-per-worker", type=int, default=4)
    p.add_argument(
        "--min-chunk-pairs",
        type=int,
        default=None,
        help="RayEvaluator(min_chunk_pairs=...); default: the objective's batch_pairs",
    )
    args = p.parse_args(argv)

    import ray

    ray.init(
        num_cpus=max(args.workers),
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
    )
    header = (
        f"{'env':<15}{'policy':<7}{'params':>7}{'pairs':>6}{'bare/s':>9}{'W':>3}"
        f"{'esvo/s':>9}{'eff':>6}{'driver':>8}{'steps/gen':>10}{'tasks':>6}"
        f"{'out B':>9}{'in B':>8}{'util':>6}{'cpu/wall':>9}{'bareW/s':>9}"
    )
    print("$ " + " ".join([sys.executable, *sys.argv]))
    print(header)
    try:
        for env_id in args.envs:
            for policy in args.policies:
                spec = objective_spec(env_id, policy)
                # size generations from the pair length after a few warm-up generations
                # (episodes lengthen as the policy learns)
                probe = Run(spec, 8, lambda s, n: RayEvaluator(s, n, num_workers=max(args.workers)))
                pair_steps = max(probe.generation()["steps"] / 8 for _ in range(3))
                probe.evaluator.close()
                num_pairs = max(4, math.ceil(args.min_steps / pair_steps))
                min_pairs = args.min_chunk_pairs or probe.obj.batch_pairs  # as the trainer
                for w in args.workers:
                    run = Run(
                        spec,
                        num_pairs,
                        lambda s, n, w=w: RayEvaluator(
                            s,
                            n,
                            num_workers=w,
                            chunks_per_worker=args.chunks_per_worker,
                            min_chunk_pairs=min_pairs,
                        ),
                    )
                    run.generation()  # warm-up: actors, caches
                    gens = [run.generation() for _ in range(args.generations)]
                    run.evaluator.close()
                    # (a) right after (b), on the same candidates, with the workers gone
                    for g in gens:
                        n, t = bare_replay(spec, run.noise_spec, [g["replay"]])
                        g["bare"] = n / t
                        g["eff"] = g["steps_per_s"] / (w * g["bare"])
                    replays = [g["replay"] for g in gens]
                    ceiling = bare_concurrent(spec, run.noise_spec, replays, w)

                    def med(key, gens=gens):
                        return statistics.median(g[key] for g in gens)

                    print(
                        f"{env_id:<15}{policy:<7}{run.obj.num_params:>7}{num_pairs:>6}"
                        f"{med('bare'):>9.0f}{w:>3}{med('steps_per_s'):>9.0f}"
                        f"{med('eff'):>6.2f}{med('driver_share'):>8.1%}"
                        f"{med('steps'):>10.0f}{med('num_tasks'):>6.0f}"
                        f"{med('bytes_out'):>9.0f}{med('bytes_in'):>8.0f}"
                        f"{med('worker_util'):>6.2f}{med('worker_cpu'):>9.2f}{ceiling:>9.0f}",
                        flush=True,
                    )
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
