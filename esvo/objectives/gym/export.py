"""Exported policies: ``name.npz`` (arrays) + ``name.json`` (everything else), no pickle.

The JSON holds what rebuilds the policy and its environment without the training config:
the env id, kwargs and step cap, the architecture, the action handling and the normalizer's
clip. ``run_episodes`` replays the policy on the evaluation seeds of ``GymObjective.
evaluate_mean``: with the same seed it gives the same returns, bit for bit (the forward pass
does not depend on the BLAS build, see ``policies``).
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from esvo.checkpoint import write_bytes_atomic, write_text_atomic
from esvo.objectives.gym.policies import ActionHead, Policy, PolicySpec, normalize
from esvo.objectives.gym.rollout import (
    EnvPool,
    EnvSpec,
    episode_returns,
    eval_episodes,
    flat_obs,
    run_lockstep,
)

if TYPE_CHECKING:
    from esvo.objectives.gym import GymObjective

FORMAT = "esvo-policy"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy rebuilt from its export: parameters, normalizer, architecture, environment."""

    env: EnvSpec
    policy: Policy
    head: ActionHead
    theta: np.ndarray  # (num_params,) float32
    obs_mean: np.ndarray | None  # (k,) float64, None = no normalization
    obs_std: np.ndarray | None
    obs_clip: float
    meta: dict[str, Any]

    @property
    def uses_rng(self) -> bool:
        return self.head.mode == "sample"

    def act(self, obs: Any, rng: np.random.Generator | None = None) -> Any:
        """The action for one raw observation (``rng`` needed for ``discrete_action=sample``)."""
        x = normalize(flat_obs(obs)[None], self.obs_mean, self.obs_std, self.obs_clip)
        out = self.policy.forward(self.policy.stack(self.theta[None]), x)
        return self.head.act(out[0], rng)


def export_policy(
    directory: str | Path,
    theta: np.ndarray,
    objective: GymObjective,
    obs_mean: np.ndarray | None,
    obs_std: np.ndarray | None,
    name: str = "policy",
) -> Path:
    """Write ``directory/name.npz`` (theta float32, obs_mean, obs_std) and ``name.json``.

    Args:
        theta: the policy parameters ``(num_params,)`` (e.g. the search mean).
        objective: the objective that scored it (environment, architecture, action handling).
        obs_mean, obs_std: the normalizer in use (None without one); ``obs_std`` is floored
            with ``objective.obs_std_floor`` as during training.

    Returns:
        The path of the ``.json`` file (``load_policy`` accepts it, the ``.npz`` or the
        directory).
    """
    theta = np.asarray(theta)
    if theta.shape != (objective.num_params,):
        raise ValueError(f"theta must have shape ({objective.num_params},), got {theta.shape}")
    normalized = objective.obs_norm and obs_mean is not None
    if normalized:
        obs_mean = np.asarray(obs_mean, dtype=np.float64)
        obs_std = np.maximum(np.asarray(obs_std, dtype=np.float64), objective.obs_std_floor)
    else:
        obs_mean = obs_std = np.zeros(0)
    space = objective.observation_space
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "env_id": objective.env_spec.env_id,
        "env_kwargs": dict(objective.env_spec.env_kwargs),
        "max_episode_steps": objective.env_spec.max_episode_steps,
        "policy": objective.policy_spec.to_dict(),
        "num_params": objective.num_params,
        "obs_dim": objective.policy.obs_dim,
        "discrete_action": objective.discrete_action,
        "box_action": objective.box_action,
        "action": objective.head.to_dict(),
        "observation_space": {"shape": list(space.shape), "dtype": str(space.dtype)},
        "action_space": str(objective.action_space),
        "obs_norm": bool(normalized),
        "obs_clip": objective.obs_clip,
    }
    try:
        text = json.dumps(meta, indent=2)
    except TypeError as e:
        raise ValueError(f"env_kwargs must be JSON-serializable to export a policy: {e}") from e
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, theta=theta.astype(np.float32), obs_mean=obs_mean, obs_std=obs_std)
    # each file complete or untouched, even on a full disk (never a 0-byte policy)
    write_bytes_atomic(directory / f"{name}.npz", buf.getvalue())
    path = directory / f"{name}.json"
    write_text_atomic(path, text + "\n")
    return path


def _json_path(path: Path) -> Path:
    if path.is_dir():
        if (path / "policy.json").exists():
            return path / "policy.json"
        found = sorted(path.glob("*.json"))
        if len(found) != 1:
            raise FileNotFoundError(f"{path}: expected policy.json or exactly one .json file")
        return found[0]
    return path.with_suffix(".json")


def load_policy(path: str | Path) -> LoadedPolicy:
    """Rebuild an exported policy from its ``.json``, ``.npz`` or directory."""
    json_path = _json_path(Path(path))
    meta = json.loads(json_path.read_text())
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{json_path}: not an {FORMAT} v{FORMAT_VERSION} file "
            f"(format={meta.get('format')!r}, version={meta.get('format_version')!r})"
        )
    with np.load(json_path.with_suffix(".npz"), allow_pickle=False) as arrays:
        theta = np.array(arrays["theta"], dtype=np.float32)
        obs_mean, obs_std = np.array(arrays["obs_mean"]), np.array(arrays["obs_std"])
    policy = Policy(
        int(meta["obs_dim"]),
        ActionHead.from_dict(meta["action"]).out_dim,
        PolicySpec.from_dict(meta["policy"]),
    )
    if theta.shape != (policy.num_params,):
        raise ValueError(
            f"{json_path}: theta has shape {theta.shape}, policy needs ({policy.num_params},)"
        )
    return LoadedPolicy(
        env=EnvSpec(meta["env_id"], meta["env_kwargs"], meta["max_episode_steps"]),
        policy=policy,
        head=ActionHead.from_dict(meta["action"]),
        theta=theta,
        obs_mean=obs_mean if meta["obs_norm"] else None,
        obs_std=obs_std if meta["obs_norm"] else None,
        obs_clip=float(meta["obs_clip"]),
        meta=meta,
    )


class _EpisodeVideos:
    """An environment (``render_mode="rgb_array"``) that records each episode it runs to
    ``<stem>-episode-<i>.mp4`` next to ``target``: the frame after ``reset`` and one after
    each step, streamed to ffmpeg with moviepy's writer at the env's ``render_fps``.

    Not gymnasium's ``RecordVideo`` (same file names and frames): it writes them with
    moviepy's ``ImageSequenceClip``, whose frame count is ``int(duration * fps)`` with a
    float ``duration``, and which so drops the last frame of some episodes (at 50 fps, an
    11-frame episode comes out as 10 frames); it also holds an episode's frames in memory.
    """

    def __init__(self, env: Any, target: Path, numbers: Iterator[int]):
        from moviepy.video.io.ffmpeg_writer import FFMPEG_VideoWriter

        self.env, self.target, self.numbers = env, target, numbers
        self.fps = env.metadata.get("render_fps") or 30
        self._new_writer = FFMPEG_VideoWriter
        self._writer: Any = None

    def _frame(self) -> None:
        frame = np.asarray(self.env.render(), dtype=np.uint8)
        if self._writer is None:
            name = f"{self.target.stem}-episode-{next(self.numbers)}.mp4"
            size = (frame.shape[1], frame.shape[0])
            self._writer = self._new_writer(str(self.target.with_name(name)), size, self.fps)
        self._writer.write_frame(frame)

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def reset(self, **kwargs: Any) -> Any:
        self._finish()
        out = self.env.reset(**kwargs)
        self._frame()
        return out

    def step(self, action: Any) -> Any:
        out = self.env.step(action)
        if self._writer is not None:
            self._frame()
        return out

    def close(self) -> None:
        try:
            self._finish()
        finally:
            self.env.close()


def run_episodes(
    policy: LoadedPolicy, episodes: int, seed: int = 0, video: str | None = None
) -> tuple[np.ndarray, int]:
    """Run ``episodes`` episodes on the evaluation seeds of ``seed`` (those of
    ``GymObjective.evaluate_mean`` with ``spec.seed = seed``).

    Args:
        video: ``path.mp4`` to record every episode (``render_mode="rgb_array"``) to
            ``<stem>-episode-<i>.mp4`` next to it: the frame after ``reset`` and one per step,
            so ``steps + 1`` frames; recording does not change the episodes.

    Returns:
        ``(returns (episodes,), env steps)``.

    Raises:
        RuntimeError: ``video`` was asked for and moviepy is not installed.
    """
    if video is None:
        make = policy.env.make
    else:
        if importlib.util.find_spec("moviepy") is None:
            raise RuntimeError("recording a video needs moviepy: pip install moviepy")
        target = Path(video)
        target.parent.mkdir(parents=True, exist_ok=True)
        numbers = itertools.count()  # shared: an env rebuilt after an error goes on counting

        def make() -> Any:
            return _EpisodeVideos(policy.env.make(render_mode="rgb_array"), target, numbers)

    pool = EnvPool(make)
    try:
        res = run_lockstep(
            pool,
            policy.policy,
            policy.head,
            policy.theta[None],
            eval_episodes(seed, episodes, policy.uses_rng),
            obs_mean=policy.obs_mean,
            obs_std=policy.obs_std,
            obs_clip=policy.obs_clip,
            lockstep=1 if video is not None else 8,
        )
    finally:
        pool.close()
    return episode_returns(res)
