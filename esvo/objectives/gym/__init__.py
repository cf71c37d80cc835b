"""Gymnasium environments as an ES objective: fitness = episodic return of a numpy policy.

Candidates ``mean ± sigma z(id)`` (Salimans et al. 2017) are scored on antithetic pairs with
common random numbers (both members of a pair see the same environment seeds), under an
observation normalizer frozen for the generation (``spec.obs_mean``, ``spec.obs_std``). Workers
return per-pair count / sum / sum of squares of the raw observations they saw; the driver merges
them (``esvo.core.running_stat``) into the next generation's normalizer (Mania et al. 2018, ARS
V2). See ``rollout`` for the seeds and ``policies`` for the batch-invariant forward pass.

Only this package imports gymnasium.
"""

from __future__ import annotations

import numpy as np

from esvo.core.noise import Noise
from esvo.objectives.gym.export import LoadedPolicy, export_policy, load_policy, run_episodes
from esvo.objectives.gym.policies import ActionHead, Policy, PolicySpec, obs_size
from esvo.objectives.gym.rollout import (
    EnvPool,
    EnvSpec,
    Episode,
    EpisodeResult,
    eval_episodes,
    records_obs,
    run_lockstep,
    train_rng_seed,
    train_seed,
)
from esvo.protocol import GenerationSpec, ObsStats, Results, Task

MAX_ERRORS = 3  # tracebacks kept per Results


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


class GymObjective:
    """Episodic return of a numpy policy in a gymnasium environment (maximized).

    Args:
        env_id: a registered id, or ``package.module:Env-v0`` (the module is imported by
            ``gym.make`` in every process, so custom environments work on Ray workers).
        env_kwargs: keyword arguments of the environment.
        max_episode_steps: episode step cap (``None``: the registered default).
        policy: ``{"kind": "linear"|"mlp", "hidden_sizes": [64, 64],
            "activation": "tanh"|"relu", "bias": True}``.
        discrete_action: ``argmax`` of the logits, or ``sample`` from their softmax.
        box_action: ``clip`` the outputs to the bounds, or ``tanh``-squash them into them.
        episodes_per_eval: episodes per candidate; fitness = their mean return.
        reward_shift: subtracted from every reward in training fitness (ARS).
        action_noise: std of Gaussian noise on the policy outputs, training only.
        obs_norm: normalize observations and return their statistics.
        obs_norm_prob: fraction of member-episodes whose observations are counted.
        obs_clip: normalized observations are clipped to ``±obs_clip``.
        obs_std_floor: lower bound applied to ``spec.obs_std``.
        lockstep: environments stepped together per batched policy forward pass.

    Raises:
        ValueError: unknown environment, unsupported space, or an invalid option.
    """

    maximize = True

    def __init__(
        self,
        env_id: str,
        env_kwargs: dict | None = None,
        max_episode_steps: int | None = None,
        policy: dict | None = None,
        discrete_action: str = "argmax",
        box_action: str = "clip",
        episodes_per_eval: int = 1,
        reward_shift: float = 0.0,
        action_noise: float = 0.0,
        obs_norm: bool = True,
        obs_norm_prob: float = 1.0,
        obs_clip: float = 5.0,
        obs_std_floor: float = 1e-2,
        lockstep: int = 8,
    ):
        _check(isinstance(env_id, str) and bool(env_id), f"env_id must be a string, got {env_id!r}")
        _check(
            max_episode_steps is None or int(max_episode_steps) >= 1,
            f"max_episode_steps must be >= 1, got {max_episode_steps}",
        )
        _check(
            int(episodes_per_eval) >= 1, f"episodes_per_eval must be >= 1, got {episodes_per_eval}"
        )
        _check(action_noise >= 0, f"action_noise must be >= 0, got {action_noise}")
        _check(0.0 <= obs_norm_prob <= 1.0, f"obs_norm_prob must be in [0, 1], got {obs_norm_prob}")
        _check(obs_clip > 0, f"obs_clip must be > 0, got {obs_clip}")
        _check(obs_std_floor > 0, f"obs_std_floor must be > 0, got {obs_std_floor}")
        _check(int(lockstep) >= 1, f"lockstep must be >= 1, got {lockstep}")
        self.env_spec = EnvSpec(
            env_id,
            dict(env_kwargs or {}),
            None if max_episode_steps is None else int(max_episode_steps),
        )
        self.policy_spec = PolicySpec.from_dict(policy)
        self.discrete_action, self.box_action = discrete_action, box_action
        self.episodes_per_eval = int(episodes_per_eval)
        self.reward_shift, self.action_noise = float(reward_shift), float(action_noise)
        self.obs_norm, self.obs_norm_prob = bool(obs_norm), float(obs_norm_prob)
        self.obs_clip, self.obs_std_floor = float(obs_clip), float(obs_std_floor)
        self.lockstep = int(lockstep)
        # the pairs whose episodes fill one lockstep batch
        self.batch_pairs = max(1, -(-self.lockstep // (2 * self.episodes_per_eval)))

        env = self.env_spec.make()
        try:
            k = obs_size(env.observation_space)
            self.head = ActionHead.for_space(env.action_space, discrete_action, box_action)
        except ValueError as e:
            env.close()
            raise ValueError(f"env {env_id!r}: {e}") from None
        self.observation_space, self.action_space = env.observation_space, env.action_space
        # the environment's own episode limit (its TimeLimit, or max_episode_steps); None: none
        spec_limit = getattr(getattr(env, "spec", None), "max_episode_steps", None)
        self.episode_limit: int | None = (
            self.env_spec.max_episode_steps if self.env_spec.max_episode_steps else spec_limit
        )
        self.policy = Policy(k, self.head.out_dim, self.policy_spec)
        self.num_params = self.policy.num_params
        self.obs_dim: int | None = k if self.obs_norm else None
        self._pool = EnvPool(self.env_spec.make, first=env)

    # ------------------------------------------------------------------ helpers
    @property
    def uses_rng(self) -> bool:
        """Whether the policy itself samples (``discrete_action="sample"`` on a discrete space);
        training episodes also need a generator when ``action_noise > 0``."""
        return self.discrete_action == "sample" and self.head.kind != "box"

    def normalizer(self, spec: GenerationSpec) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The frozen ``(obs_mean, obs_std)`` of the generation (std floored); None = identity."""
        if not self.obs_norm or spec.obs_mean is None:
            return None, None
        std = np.maximum(np.asarray(spec.obs_std, dtype=np.float64), self.obs_std_floor)
        return np.asarray(spec.obs_mean, dtype=np.float64), std

    def initial_params(self, seed: int) -> np.ndarray:
        """``theta0`` (float64): zeros (linear) or a scaled normal init (mlp)."""
        return self.policy.initial_params(seed)

    def close(self) -> None:
        self._pool.close()

    # ------------------------------------------------------------------ objective
    def evaluate(self, spec: GenerationSpec, task: Task, noise: Noise) -> Results:
        """Scores both members of every pair of ``task``; a pure function of its arguments.

        Row ``2i + c`` of the candidate stack is pair ``i``'s member ``c`` (0: ``+z``, 1: ``-z``).
        Episodes are truncated at ``spec.episode_cap`` steps when it is set (``Results.capped``
        counts them per member).
        """
        m, num_eps = len(task.ids), self.episodes_per_eval
        thetas = np.empty((2 * m, self.num_params), dtype=np.float32)  # (2m, P)
        for i, pid in enumerate(task.ids):
            step = spec.perturbation(noise.get(int(pid)))  # float64 (d,)
            thetas[2 * i] = spec.mean + step
            thetas[2 * i + 1] = spec.mean - step
        rng_on = self.uses_rng or self.action_noise > 0
        episodes = []
        for i, pair in enumerate(task.indices):
            for c in (0, 1):
                if not task.wants(i, c):  # importance mixing: this member is not evaluated
                    continue
                for e in range(num_eps):
                    key = (spec.seed, spec.generation, int(pair), e)
                    episodes.append(
                        Episode(
                            2 * i + c,
                            train_seed(*key),
                            train_rng_seed(*key) if rng_on else None,
                            self.obs_norm and records_obs(*key, c, self.obs_norm_prob),
                        )
                    )
        obs_mean, obs_std = self.normalizer(spec)
        res = run_lockstep(
            self._pool,
            self.policy,
            self.head,
            thetas,
            episodes,
            obs_mean=obs_mean,
            obs_std=obs_std,
            obs_clip=self.obs_clip,
            reward_shift=self.reward_shift,
            action_noise=self.action_noise,
            lockstep=self.lockstep,
            max_steps=spec.episode_cap,
        )
        collapsed = np.all(thetas[0::2] == thetas[1::2], axis=1)  # float32 rounding ate sigma z
        return self._collect(task, res, collapsed, spec.episode_cap is not None)

    def _collect(
        self, task: Task, res: list[EpisodeResult], collapsed: np.ndarray, with_cap: bool = False
    ) -> Results:
        """Per-member mean return and step totals; per-pair observation sums, in a fixed order."""
        m, num_eps = len(task.ids), self.episodes_per_eval
        wanted = [j for j in range(2 * m) if task.wants(*divmod(j, 2))]
        by_member: dict[int, list[EpisodeResult]] = {
            j: res[n * num_eps : (n + 1) * num_eps] for n, j in enumerate(wanted)
        }
        fitness = np.full((m, 2), np.nan)  # NaN: a member not asked for
        steps = np.zeros((m, 2), dtype=np.int64)
        capped = np.zeros((m, 2), dtype=np.int64)
        errors = [r.error for r in res if r.error is not None]
        for j, eps in by_member.items():
            i, c = divmod(j, 2)
            fitness[i, c] = (
                np.nan if any(r.error for r in eps) else sum(r.ret for r in eps) / num_eps
            )
            steps[i, c] = sum(r.steps for r in eps)
            capped[i, c] = sum(r.capped for r in eps)
        obs_stats = None
        if self.obs_norm:
            k = self.policy.obs_dim
            count = np.zeros(m, dtype=np.int64)
            total, total_sq = np.zeros((m, k)), np.zeros((m, k))
            for j, eps in by_member.items():
                i = j // 2
                for r in eps:
                    if r.error is None and r.obs_count:
                        count[i] += r.obs_count
                        total[i] += r.obs_sum
                        total_sq[i] += r.obs_sumsq
            obs_stats = ObsStats(count, total, total_sq)
        return Results(
            generation=task.generation,
            indices=np.asarray(task.indices, dtype=np.int64),
            fitness=fitness,
            steps=steps,
            episodes=len(res),
            obs_stats=obs_stats,
            failures=len(errors),
            errors=tuple(errors[:MAX_ERRORS]),
            collapsed=collapsed,
            capped=capped if with_cap else None,
        )

    def evaluate_mean(
        self, spec: GenerationSpec, episodes: int
    ) -> tuple[np.ndarray, int, tuple[str, ...]]:
        """Returns of ``spec.mean`` on the fixed seeds ``eval_seed(spec.seed, e)``, without
        action noise or reward shift, up to the environment's own episode limit (never
        ``spec.episode_cap``): ``(returns (episodes,), env steps, tracebacks)``. An
        episode whose environment raised has return NaN; its traceback is in the third item
        (the first ``MAX_ERRORS``)."""
        obs_mean, obs_std = self.normalizer(spec)
        theta = np.asarray(spec.mean, dtype=np.float32)[None]  # (1, P)
        res = run_lockstep(
            self._pool,
            self.policy,
            self.head,
            theta,
            eval_episodes(spec.seed, episodes, self.uses_rng),
            obs_mean=obs_mean,
            obs_std=obs_std,
            obs_clip=self.obs_clip,
            lockstep=self.lockstep,
        )
        returns = np.array([r.ret for r in res])  # NaN where the episode raised
        errors = tuple(r.error for r in res if r.error is not None)[:MAX_ERRORS]
        return returns, int(sum(r.steps for r in res)), errors


__all__ = [
    "ActionHead",
    "EnvSpec",
    "GymObjective",
    "LoadedPolicy",
    "Policy",
    "PolicySpec",
    "export_policy",
    "load_policy",
    "run_episodes",
]
