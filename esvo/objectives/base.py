"""What is scored: the ``Objective`` protocol, and analytic functions as an objective.

An objective is built once per worker process from plain data (``make_objective(**spec)``),
so the same spec builds it on the driver, in a serial evaluator, or in a Ray actor.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from esvo.core.noise import Noise
from esvo.objectives.functions import FUNCTIONS
from esvo.protocol import GenerationSpec, Results, Task


class Objective(Protocol):
    """Scores antithetic pairs of candidates named by perturbation ids."""

    num_params: int
    maximize: bool
    obs_dim: int | None  # observation size for the normalizer; None without one
    # optional: pairs one ``evaluate`` call scores together (a gym objective's lockstep
    # width); the Ray evaluator keeps its chunks at least this big when it can (default 1)
    batch_pairs: int

    def initial_params(self, seed: int) -> np.ndarray:
        """``theta0`` (float64 ``(num_params,)``), a pure function of the seed."""
        ...

    def evaluate(self, spec: GenerationSpec, task: Task, noise: Noise) -> Results:
        """Scores ``spec.mean ± spec.perturbation(z(id))`` for every pair of the task."""
        ...

    def evaluate_mean(self, spec: GenerationSpec, episodes: int) -> tuple:
        """Scores ``spec.mean`` itself, without noise, over ``episodes`` episodes on fixed
        seeds (a function of ``spec.seed`` only): ``(returns (episodes,), env steps)``,
        optionally with a third item, the tracebacks of episodes that raised (their return
        is NaN), so that the driver can say why."""
        ...


class FunctionObjective:
    """An analytic test function of ``esvo.objectives.functions`` (minimized)."""

    maximize = False
    obs_dim = None
    batch_pairs = 1

    def __init__(self, name: str, dim: int, init: float = 1.0):
        if name not in FUNCTIONS:
            raise ValueError(f"function must be one of {sorted(FUNCTIONS)}, got {name!r}")
        self.name, self.num_params, self.init = name, int(dim), float(init)
        self.f = FUNCTIONS[name]

    def initial_params(self, seed: int) -> np.ndarray:
        return np.full(self.num_params, self.init)

    def evaluate(self, spec: GenerationSpec, task: Task, noise: Noise) -> Results:
        m = len(task.ids)
        fitness = np.empty((m, 2))
        collapsed = np.zeros(m, dtype=bool)
        for k, pid in enumerate(task.ids):
            step = spec.perturbation(noise.get(int(pid)))
            pair = np.stack([spec.mean + step, spec.mean - step])
            fitness[k] = self.f(pair)
            collapsed[k] = np.array_equal(pair[0], pair[1])
        if task.members is not None:  # a function costs nothing to skip; NaN marks "not asked"
            fitness[~task.members] = np.nan
        steps = np.zeros((m, 2), dtype=np.int64)
        return Results(task.generation, task.indices, fitness, steps, collapsed=collapsed)

    def evaluate_mean(self, spec: GenerationSpec, episodes: int) -> tuple[np.ndarray, int]:
        return np.array([float(self.f(spec.mean))]), 0


def make_objective(kind: str, **options) -> Objective:
    """Build an objective from its plain-data spec (``kind`` plus options).

    Kinds: ``function`` (``FunctionObjective``), ``gym`` (``GymObjective``), and ``python``:
    ``target: "package.module:factory"`` called with the other options, for user objectives
    (imported by name, so it works in every worker process).
    """
    if kind == "function":
        return FunctionObjective(**options)
    if kind == "gym":
        from esvo.objectives.gym import GymObjective  # gymnasium is imported only when used

        return GymObjective(**options)
    if kind == "python":
        target = options.pop("target", None)
        if not isinstance(target, str) or ":" not in target:
            raise ValueError(f"objective target must be 'module:factory', got {target!r}")
        module_name, _, attr = target.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(**options)
    raise ValueError(f"objective kind must be 'function', 'gym' or 'python', got {kind!r}")
