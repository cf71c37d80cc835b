"""Evaluators: score a generation's pairs, serially or on Ray workers.

Both implement ``Evaluator``; the trainer sees only this protocol. ``esvo.parallel.ray_backend``
is the only module that imports Ray.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from esvo.core.noise import Noise, make_noise
from esvo.objectives.base import make_objective
from esvo.protocol import GenerationSpec, Results, chunk_tasks


class Evaluator(Protocol):
    def evaluate(
        self,
        spec: GenerationSpec,
        ids: np.ndarray,
        start: int = 0,
        members: np.ndarray | None = None,
    ) -> Results:
        """Scores all pairs ``ids[k]`` (pair index ``start + k``: it seeds the pair's
        environments); results ordered by pair index. ``members`` ``(n, 2)``: only these
        members are wanted (``Task.members``); it is passed only when set, so an evaluator
        without the argument still serves runs without importance mixing."""
        ...

    def evaluate_mean(self, spec: GenerationSpec, episodes: int) -> tuple[np.ndarray, int]:
        """``Objective.evaluate_mean`` on one worker: returns per episode, env steps."""
        ...

    def close(self) -> None: ...


class SerialEvaluator:
    """In-process, one chunk after another: the reference for every other evaluator.

    Args:
        objective_spec: plain data for ``make_objective`` (``{"kind": ..., ...}``).
        noise_spec: plain data for ``make_noise`` (``Noise.spec()``), or a ``Noise`` to share.
        chunk_size: pairs per task (results do not depend on it).
    """

    def __init__(self, objective_spec: dict, noise_spec: dict | Noise, chunk_size: int = 8):
        self.objective = make_objective(**objective_spec)
        self.noise = make_noise(**noise_spec) if isinstance(noise_spec, dict) else noise_spec
        self.chunk_size = chunk_size
        self.last_stats: dict = {}

    def evaluate(
        self,
        spec: GenerationSpec,
        ids: np.ndarray,
        start: int = 0,
        members: np.ndarray | None = None,
    ) -> Results:
        tasks = chunk_tasks(spec.generation, ids, self.chunk_size, start, members)
        return Results.concat([self.objective.evaluate(spec, t, self.noise) for t in tasks])

    def evaluate_mean(self, spec: GenerationSpec, episodes: int) -> tuple[np.ndarray, int]:
        return self.objective.evaluate_mean(spec, episodes)

    def close(self) -> None:
        pass


def __getattr__(name: str):
    """``RayEvaluator`` / ``EvaluatorError`` on first use, so importing esvo never imports Ray."""
    if name in ("RayEvaluator", "EvaluatorError"):
        from esvo.parallel import ray_backend

        return getattr(ray_backend, name)
    raise AttributeError(f"module 'esvo.parallel' has no attribute {name!r}")


__all__ = ["Evaluator", "EvaluatorError", "RayEvaluator", "SerialEvaluator"]
