"""Optimizers on the mean's natural gradient, as an *ascent* direction.

Each optimizer keeps its hyperparameters on the object and its changing state in an
``OptState`` (a step counter plus named float64 arrays), so a step is a pure function
``step(state, grad) -> (delta, new_state)`` and the state checkpoints as plain arrays.
The mean then moves by ``mean <- mean + delta``.

ClipUp is from Toklu et al., *ClipUp: A Simple and Powerful Optimizer for Distribution-based
Policy Evolution*, PPSN 2020; the others follow their usual (PyTorch) definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class OptState:
    """``step``: updates taken so far; ``slots``: the optimizer's arrays, each ``(d,)``."""

    step: int = 0
    slots: dict[str, np.ndarray] = field(default_factory=dict)


class Optimizer:
    """Base: ``slot_names`` are zero-initialized arrays of the parameter's shape."""

    slot_names: ClassVar[tuple[str, ...]] = ()

    def init(self, dim: int) -> OptState:
        return OptState(0, {name: np.zeros(dim) for name in self.slot_names})

    def step(self, state: OptState, grad: np.ndarray) -> tuple[np.ndarray, OptState]:
        """Returns ``delta`` (to add to the mean) and the next state."""
        delta, slots = self._update(state.step + 1, dict(state.slots), np.asarray(grad, float))
        return delta, OptState(state.step + 1, slots)

    def _update(self, t: int, s: dict[str, np.ndarray], g: np.ndarray):
        raise NotImplementedError


@dataclass(frozen=True)
class SGD(Optimizer):
    """``delta = lr * g``. With ``lr = 1`` on the natural gradient this is NES's mean update."""

    lr: float = 1.0

    def _update(self, t, s, g):
        return self.lr * g, s


@dataclass(frozen=True)
class Momentum(Optimizer):
    """Heavy ball: ``v <- m v + g``; ``delta = lr v``."""

    lr: float = 0.1
    momentum: float = 0.9
    slot_names: ClassVar[tuple[str, ...]] = ("v",)

    def _update(self, t, s, g):
        s["v"] = self.momentum * s["v"] + g
        return self.lr * s["v"], s


@dataclass(frozen=True)
class Nesterov(Optimizer):
    """``v <- m v + g``; ``delta = lr (g + m v)`` (Sutskever et al. 2013, PyTorch form)."""

    lr: float = 0.1
    momentum: float = 0.9
    slot_names: ClassVar[tuple[str, ...]] = ("v",)

    def _update(self, t, s, g):
        s["v"] = self.momentum * s["v"] + g
        return self.lr * (g + self.momentum * s["v"]), s


@dataclass(frozen=True)
class AdaGrad(Optimizer):
    """``G <- G + g^2``; ``delta = lr g / (sqrt(G) + eps)``."""

    lr: float = 0.1
    eps: float = 1e-8
    slot_names: ClassVar[tuple[str, ...]] = ("sum_sq",)

    def _update(self, t, s, g):
        s["sum_sq"] = s["sum_sq"] + g * g
        return self.lr * g / (np.sqrt(s["sum_sq"]) + self.eps), s


@dataclass(frozen=True)
class RMSProp(Optimizer):
    """``E <- rho E + (1 - rho) g^2``; ``delta = lr g / (sqrt(E) + eps)``."""

    lr: float = 0.01
    rho: float = 0.9
    eps: float = 1e-8
    slot_names: ClassVar[tuple[str, ...]] = ("mean_sq",)

    def _update(self, t, s, g):
        s["mean_sq"] = self.rho * s["mean_sq"] + (1 - self.rho) * g * g
        return self.lr * g / (np.sqrt(s["mean_sq"]) + self.eps), s


@dataclass(frozen=True)
class AdaDelta(Optimizer):
    """Zeiler 2012: ``delta = lr * sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) * g``."""

    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    slot_names: ClassVar[tuple[str, ...]] = ("mean_sq", "mean_sq_delta")

    def _update(self, t, s, g):
        s["mean_sq"] = self.rho * s["mean_sq"] + (1 - self.rho) * g * g
        dx = np.sqrt(s["mean_sq_delta"] + self.eps) / np.sqrt(s["mean_sq"] + self.eps) * g
        s["mean_sq_delta"] = self.rho * s["mean_sq_delta"] + (1 - self.rho) * dx * dx
        return self.lr * dx, s


@dataclass(frozen=True)
class Adam(Optimizer):
    """Kingma & Ba 2015 with bias correction: ``delta = lr m_hat / (sqrt(v_hat) + eps)``."""

    lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    slot_names: ClassVar[tuple[str, ...]] = ("m", "v")

    def _update(self, t, s, g):
        s["m"] = self.beta1 * s["m"] + (1 - self.beta1) * g
        s["v"] = self.beta2 * s["v"] + (1 - self.beta2) * g * g
        m_hat = s["m"] / (1 - self.beta1**t)
        v_hat = s["v"] / (1 - self.beta2**t)
        return self.lr * m_hat / (np.sqrt(v_hat) + self.eps), s


@dataclass(frozen=True)
class ClipUp(Optimizer):
    """``v <- m v + lr g/||g||``; ``v <- v * min(1, max_speed/||v||)``; ``delta = v``.

    ``lr`` defaults to ``max_speed / 2`` as recommended by the paper.
    """

    max_speed: float = 0.15
    lr: float | None = None
    momentum: float = 0.9
    slot_names: ClassVar[tuple[str, ...]] = ("v",)

    def _update(self, t, s, g):
        lr = self.max_speed / 2 if self.lr is None else self.lr
        norm = np.linalg.norm(g)
        v = self.momentum * s["v"] + (lr * g / norm if norm > 0 else 0.0)
        speed = np.linalg.norm(v)
        if speed > self.max_speed:
            v = v * (self.max_speed / speed)
        s["v"] = v
        return v.copy(), s


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSProp,
    "adadelta": AdaDelta,
    "adam": Adam,
    "clipup": ClipUp,
}


def make_optimizer(kind: str, **options: float) -> Optimizer:
    """An optimizer by name with its options (``lr``, ``momentum``, ...)."""
    try:
        cls = OPTIMIZERS[kind]
    except KeyError:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {kind!r}") from None
    return cls(**options)
