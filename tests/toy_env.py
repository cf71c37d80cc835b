"""A tiny deterministic environment for the gym-objective tests (GenericTestEnv-style).

1-D "reach the target": observation ``[position, target, t / horizon]``, reward
``-|position - target|``, terminated when within 0.05 of the target (episode lengths vary),
truncated after ``horizon`` steps. Importing this module registers the variants, so
``gym.make("tests.toy_env:ToyEnv-v0")`` works in any process.

Variants: ``ToyEnv-v0`` (Box action), ``ToyDiscreteEnv-v0`` (Discrete(3)),
``ToyMultiDiscreteEnv-v0`` (MultiDiscrete([3, 3])), ``ToyRaiseEnv-v0`` (raises ``RuntimeError``
at step ``raise_at`` if the action there is positive, for about half of the reset seeds: of an
antithetic pair around 0, one member raises), ``ToyAlwaysRaiseEnv-v0`` (raises at every first
step), ``ToyNaNRewardEnv-v0`` (every reward is NaN), ``ToyBrokenCtorEnv-v0`` (its constructor
raises), ``ToyDictObsEnv-v0`` and ``ToyTupleActEnv-v0`` (unsupported spaces).

``ToyEnv.seed_log`` records every reset seed and ``ToyEnv.obs_log`` every observation a policy
acts on (all but the last of each episode), for the tests to compare against.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class ToyEnv(gym.Env):
    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}
    seed_log: ClassVar[list[int | None]] = []  # every reset seed, for the CRN test
    obs_log: ClassVar[list[np.ndarray]] = []  # every non-final observation

    def __init__(
        self,
        action: str = "box",
        obs: str = "box",
        horizon: int = 10,
        raise_at: int | None = None,
        render_mode: str | None = None,
        always_raise: bool = False,
        nan_reward: bool = False,
        broken: bool = False,
    ):
        if broken:
            raise ValueError("toy env: bad constructor argument")
        self.horizon, self.raise_at, self.kind = horizon, raise_at, action
        self.always_raise, self.nan_reward = always_raise, nan_reward
        self.render_mode = render_mode
        box = spaces.Box(-10.0, 10.0, (3,), np.float64)
        self.observation_space = spaces.Dict({"x": box}) if obs == "dict" else box
        self.action_space = {
            "box": spaces.Box(-1.0, 1.0, (1,), np.float32),
            "discrete": spaces.Discrete(3),
            "multidiscrete": spaces.MultiDiscrete([3, 3]),
            "tuple": spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))),
        }[action]
        self.pos = self.target = 0.0
        self.t, self.fails = 0, False

    def _obs(self) -> np.ndarray:
        return np.array([self.pos, self.target, self.t / self.horizon])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        ToyEnv.seed_log.append(seed)
        self.pos, self.target = self.np_random.uniform(-1.0, 1.0, size=2)
        self.fails = self.raise_at is not None and bool(self.np_random.random() < 0.5)
        self.t = 0
        ToyEnv.obs_log.append(self._obs())
        return self._obs(), {}

    def step(self, action):
        if self.always_raise or (self.fails and self.t == self.raise_at and np.sum(action) > 0):
            raise RuntimeError(f"toy env failure at step {self.t}")
        if self.kind == "box":
            delta = 0.5 * float(np.asarray(action).reshape(-1)[0])
        elif self.kind == "discrete":
            delta = 0.25 * (int(action) - 1)
        else:
            delta = 0.125 * float(np.sum(np.asarray(action) - 1))
        self.pos += delta
        self.t += 1
        dist = abs(self.pos - self.target)
        terminated, truncated = bool(dist < 0.05), self.t >= self.horizon
        if not (terminated or truncated):
            ToyEnv.obs_log.append(self._obs())
        reward = float("nan") if self.nan_reward else -dist
        return self._obs(), reward, terminated, truncated, {}

    def render(self):
        frame = np.zeros((16, 16, 3), dtype=np.uint8)
        frame[8, int(np.clip(8 + 4 * self.pos, 0, 15))] = 255
        return frame


VARIANTS = {
    "ToyEnv-v0": {},
    "ToyDiscreteEnv-v0": {"action": "discrete"},
    "ToyMultiDiscreteEnv-v0": {"action": "multidiscrete"},
    "ToyRaiseEnv-v0": {"raise_at": 3},
    "ToyAlwaysRaiseEnv-v0": {"always_raise": True},
    "ToyNaNRewardEnv-v0": {"nan_reward": True},
    "ToyBrokenCtorEnv-v0": {"broken": True},
    "ToyDictObsEnv-v0": {"obs": "dict"},
    "ToyTupleActEnv-v0": {"action": "tuple"},
}
for _name, _kwargs in VARIANTS.items():
    if _name not in gym.registry:
        gym.register(id=_name, entry_point="tests.toy_env:ToyEnv", kwargs=_kwargs)
