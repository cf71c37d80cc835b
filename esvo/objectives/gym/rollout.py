"""Episodes of numpy policies in gymnasium environments, several candidates in lockstep.

Seeds (common random numbers, design.md §2): the environment of episode ``e`` of pair ``k`` in
generation ``g`` is reset with ``train_seed(run seed, g, k, e)`` for *both* members of the pair,
and their sampling / action-noise generators share one seed too, so environment noise cancels
from ``f(mean + sigma z) - f(mean - sigma z)``. The mean policy is evaluated on
``eval_seed(run seed, e)``: the same episodes every generation.

Everything an episode produces is a function of its own ``Episode`` record: results do not
depend on which other episodes share the lockstep batch, on the chunking, or on the order.
"""

from __future__ import annotations

import contextlib
import importlib
import reprlib
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from esvo.objectives.gym.policies import ActionHead, Policy, normalize

# Domain tags of the seed hash, so that no two uses of (seed, ...) collide.
_TRAIN_ENV, _TRAIN_RNG, _OBS_SAMPLE, _EVAL_ENV, _EVAL_RNG = 1, 2, 3, 4, 5
_SEED_MASK = (1 << 63) - 1


def derive_seed(*keys: int) -> int:
    """A 63-bit seed, a hash (``SeedSequence``) of non-negative integer keys."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)
    return int(state[0]) & _SEED_MASK


def train_seed(seed: int, generation: int, pair: int, episode: int) -> int:
    """Environment seed of episode ``episode`` of pair ``pair`` (shared by both members)."""
    return derive_seed(_TRAIN_ENV, seed, generation, pair, episode)


def train_rng_seed(seed: int, generation: int, pair: int, episode: int) -> int:
    """Seed of the sampling / action-noise generator (shared by both members)."""
    return derive_seed(_TRAIN_RNG, seed, generation, pair, episode)


def records_obs(
    seed: int, generation: int, pair: int, episode: int, sign: int, prob: float
) -> bool:
    """Whether this member-episode contributes observation statistics (``P = prob``)."""
    if prob >= 1.0:
        return True
    u = derive_seed(_OBS_SAMPLE, seed, generation, pair, episode, sign) / float(1 << 63)
    return u < prob


def eval_seed(seed: int, episode: int) -> int:
    """Environment seed of evaluation episode ``episode``: independent of the generation."""
    return derive_seed(_EVAL_ENV, seed, episode)


def eval_rng_seed(seed: int, episode: int) -> int:
    """Sampling-generator seed of evaluation episode ``episode``."""
    return derive_seed(_EVAL_RNG, seed, episode)


@dataclass(frozen=True)
class EnvSpec:
    """How to build the environment: registered id (or ``module:Env-v0``), kwargs, step cap."""

    env_id: str
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None

    def make(self, render_mode: str | None = None) -> Any:
        """``gym.make``; ``ValueError`` naming the id (and the module of a ``module:Env-v0``
        id) for an unknown id, bad kwargs, a module that raises on import or an environment
        whose constructor raises, with the exception's type and last line."""
        import gymnasium as gym

        kwargs = dict(self.env_kwargs)
        if render_mode is not None:
            kwargs["render_mode"] = render_mode
        module = self.env_id.partition(":")[0] if ":" in self.env_id else None
        if module is not None:
            try:
                importlib.import_module(module)
            except Exception as e:
                raise ValueError(
                    f"cannot make gymnasium env {self.env_id!r}: importing its module "
                    f"{module!r} raised {_one_line(e)}"
                ) from e
        try:
            return gym.make(
                self.env_id,
                max_episode_steps=self.max_episode_steps,
                disable_env_checker=True,
                **kwargs,
            )
        except (gym.error.Error, ImportError, TypeError) as e:
            raise ValueError(
                f"cannot make gymnasium env {self.env_id!r} with kwargs {_short(kwargs)}: "
                f"{_one_line(e)} (use a registered id such as 'CartPole-v1', or "
                "'package.module:Env-v0')"
            ) from e
        except Exception as e:  # the environment's own constructor
            raise ValueError(
                f"cannot make gymnasium env {self.env_id!r}: its constructor raised {_one_line(e)}"
            ) from e


def _one_line(e: BaseException) -> str:
    """``Type: last line of the message``, bounded."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[-1].strip()}" if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _short(value: Any, limit: int = 200) -> str:
    text = reprlib.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Episode:
    """One episode to run: candidate row ``row`` of the weight stack, and its seeds."""

    row: int
    env_seed: int
    rng_seed: int | None = None  # None: no generator (argmax actions, no action noise)
    record_obs: bool = False


@dataclass(frozen=True)
class EpisodeResult:
    """Return (minus ``reward_shift`` per step), env steps, raw-observation sums, error."""

    ret: float
    steps: int
    obs_count: int = 0
    obs_sum: np.ndarray | None = None  # (k,) float64
    obs_sumsq: np.ndarray | None = None  # (k,) float64
    error: str | None = None  # formatted traceback if the environment raised
    capped: bool = False  # cut by the training step cap (``max_steps``), not ended by the env


class EnvPool:
    """Environments of the lockstep slots, built lazily; one is rebuilt after it raised."""

    def __init__(self, make: Callable[[], Any], first: Any | None = None):
        self.make = make
        self.envs: list[Any] = [] if first is None else [first]

    def get(self, slot: int) -> Any:
        while len(self.envs) <= slot:
            self.envs.append(self.make())
        return self.envs[slot]

    def replace(self, slot: int) -> None:
        with contextlib.suppress(Exception):  # a broken env may fail to close too
            self.envs[slot].close()
        self.envs[slot] = self.make()

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


def flat_obs(obs: Any) -> np.ndarray:
    """A raw observation as a flat float64 vector ``(k,)``."""
    return np.asarray(obs, dtype=np.float64).reshape(-1)


class _Slot:
    """The running state of one lockstep slot."""

    __slots__ = ("capped", "env", "index", "obs_log", "ret", "rng", "steps")

    def __init__(self, index: int, env: Any, rng: np.random.Generator | None, record: bool):
        self.index, self.env, self.rng = index, env, rng
        self.ret, self.steps, self.capped = 0.0, 0, False
        self.obs_log: list[np.ndarray] | None = [] if record else None


def run_lockstep(
    pool: EnvPool,
    policy: Policy,
    head: ActionHead,
    thetas: np.ndarray,
    episodes: Sequence[Episode],
    *,
    obs_mean: np.ndarray | None = None,
    obs_std: np.ndarray | None = None,
    obs_clip: float = 5.0,
    reward_shift: float = 0.0,
    action_noise: float = 0.0,
    lockstep: int = 8,
    max_steps: int | None = None,
) -> list[EpisodeResult]:
    """Run ``episodes``, up to ``lockstep`` at a time, one batched policy forward per step.

    Args:
        pool: environments, one per slot.
        policy: the policy; ``thetas`` ``(c, num_params)`` holds the candidates' parameters.
        head: maps policy outputs to actions.
        episodes: what to run; ``Episode.row`` indexes ``thetas``.
        obs_mean, obs_std, obs_clip: the frozen normalizer (identity if ``obs_mean`` is None).
        reward_shift: subtracted from every reward (ARS survival-bonus removal).
        action_noise: std of Gaussian noise on the policy outputs.
        lockstep: at most this many environments stepped together.
        max_steps: a step cap below the environment's own limit (the adaptive episode
            cutoff): an episode that reaches it without terminating is truncated there and
            marked ``capped``. None: the environment's limit only.

    Returns:
        One ``EpisodeResult`` per episode, in the order of ``episodes``; bit-identical for any
        ``lockstep`` (every operation on a row depends only on that row).
    """
    cand = policy.stack(thetas)  # [(W (c, in, out), b (c, out) | None)]
    num_slots = max(1, min(lockstep, len(episodes)))
    weights = [  # the slots' own weights, rows copied from `cand` when a slot starts an episode
        (
            np.zeros((num_slots, *w.shape[1:]), np.float32),
            None if b is None else np.zeros((num_slots, b.shape[1]), np.float32),
        )
        for w, b in cand
    ]
    raw = np.zeros((num_slots, policy.obs_dim))  # (L, k) current raw observation per slot
    results: list[EpisodeResult | None] = [None] * len(episodes)
    slots: list[_Slot | None] = [None] * num_slots
    queue = iter(range(len(episodes)))

    def fail(s: int, slot: _Slot) -> None:
        results[slot.index] = EpisodeResult(float("nan"), slot.steps, error=traceback.format_exc())
        pool.replace(s)

    def finish(slot: _Slot) -> None:
        if slot.obs_log is None:
            results[slot.index] = EpisodeResult(slot.ret, slot.steps, capped=slot.capped)
            return
        obs = np.stack(slot.obs_log)  # (T, k)
        results[slot.index] = EpisodeResult(
            slot.ret,
            slot.steps,
            len(obs),
            obs.sum(axis=0),
            np.square(obs).sum(axis=0),
            capped=slot.capped,
        )

    def start(s: int) -> None:
        """Put the next episode that resets without error into slot ``s`` (or idle it)."""
        slots[s] = None
        for i in queue:
            ep = episodes[i]
            rng = None if ep.rng_seed is None else np.random.default_rng(ep.rng_seed)
            slot = _Slot(i, pool.get(s), rng, ep.record_obs)
            try:
                obs, _ = slot.env.reset(seed=ep.env_seed)
            except Exception:
                fail(s, slot)
                continue
            for (w, b), (cw, cb) in zip(weights, cand, strict=True):
                w[s] = cw[ep.row]
                if b is not None:
                    b[s] = cb[ep.row]
            raw[s] = flat_obs(obs)
            if slot.obs_log is not None:
                slot.obs_log.append(raw[s].copy())
            slots[s] = slot
            return

    for s in range(num_slots):
        start(s)
    while any(slot is not None for slot in slots):
        out = policy.forward(weights, normalize(raw, obs_mean, obs_std, obs_clip))  # (L, out)
        actions = head.act_batch(out, [None if t is None else t.rng for t in slots], action_noise)
        for s, slot in enumerate(slots):
            if slot is None:
                continue
            try:
                obs, reward, terminated, truncated, _ = slot.env.step(actions[s])
            except Exception:
                fail(s, slot)
                start(s)
                continue
            slot.steps += 1
            slot.ret += float(reward) - reward_shift
            if max_steps is not None and slot.steps >= max_steps and not terminated:
                slot.capped = truncated = True  # truncated by the cap, not terminated
            if terminated or truncated:
                finish(slot)
                start(s)
                continue
            raw[s] = flat_obs(obs)
            if slot.obs_log is not None:
                slot.obs_log.append(raw[s].copy())
    return results  # type: ignore[return-value]


def eval_episodes(seed: int, episodes: int, uses_rng: bool) -> list[Episode]:
    """The evaluation episodes of the mean policy (row 0), seeded by ``(seed, e)`` only."""
    return [
        Episode(0, eval_seed(seed, e), eval_rng_seed(seed, e) if uses_rng else None)
        for e in range(episodes)
    ]


def episode_returns(res: list[EpisodeResult]) -> tuple[np.ndarray, int]:
    """``(returns (n,), total steps)``; warns with the first traceback if an episode failed."""
    errors = [r.error for r in res if r.error is not None]
    if errors:
        warnings.warn(
            f"{len(errors)} evaluation episode(s) raised; first:\n{errors[0]}",
            RuntimeWarning,
            stacklevel=3,
        )
    return np.array([r.ret for r in res]), int(sum(r.steps for r in res))
