"""Search distributions behind one protocol (``base.Distribution``), by name.

``isotropic`` and ``separable`` (diagonal Gaussians, design.md §2), ``full`` (xNES) and
``lowrank`` (``sigma^2 (I + U U^T)``, R1-NES for rank 1). Each module owns one family: its
parameters (a frozen dataclass of arrays with the ``step`` workers apply to the noise), its
natural gradients and its update; ``esvo.core.strategy.Strategy`` composes a distribution with
shaping, an optimizer and noise and knows none of them by name.
"""

from __future__ import annotations

from esvo.core.distributions.base import (
    DiagonalParams,
    Distribution,
    Gradients,
    SearchParams,
    SigmaBounds,
    nes_num_pairs,
    snes_sigma_lr,
)
from esvo.core.distributions.full import Full, FullParams, xnes_rate
from esvo.core.distributions.isotropic import Isotropic
from esvo.core.distributions.lowrank import LowRank, LowRankParams
from esvo.core.distributions.separable import Separable

DISTRIBUTIONS: dict[str, type] = {
    "isotropic": Isotropic,
    "separable": Separable,
    "full": Full,
    "lowrank": LowRank,
}
"""Distribution classes by name; ``lowrank`` takes ``rank``."""

PARAMS: dict[str, type] = {p.kind: p for p in (DiagonalParams, FullParams, LowRankParams)}
"""Parameter classes by ``kind`` (as saved in checkpoints, ``dist/kind``)."""


def make_distribution(name: str, rank: int = 1) -> Distribution:
    """A distribution by name (``rank`` for ``lowrank``)."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {sorted(DISTRIBUTIONS)}, got {name!r}")
    return LowRank(rank) if name == "lowrank" else DISTRIBUTIONS[name]()


__all__ = [
    "DISTRIBUTIONS",
    "PARAMS",
    "DiagonalParams",
    "Distribution",
    "Full",
    "FullParams",
    "Gradients",
    "Isotropic",
    "LowRank",
    "LowRankParams",
    "SearchParams",
    "Separable",
    "SigmaBounds",
    "make_distribution",
    "nes_num_pairs",
    "snes_sigma_lr",
    "xnes_rate",
]
