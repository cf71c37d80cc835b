"""esvo.core: the variational-optimization engine, pure numpy (no Ray, no gymnasium).

Conventions: ``fitness`` is raw (``maximize`` says which way is better); inside the core,
utilities are higher-is-better. ``z`` is standard-normal float32 noise named by a perturbation id;
``mean`` and ``sigma`` are float64.
"""

from esvo.core.adaptation import AdaptationSampling
from esvo.core.distributions import (
    DISTRIBUTIONS,
    Full,
    Isotropic,
    LowRank,
    Separable,
    SigmaBounds,
    make_distribution,
    snes_sigma_lr,
)
from esvo.core.mixing import ImportanceMixing
from esvo.core.noise import (
    Noise,
    NoiseGenerator,
    NoiseSums,
    NoiseTable,
    make_noise,
    perturbation_ids,
)
from esvo.core.optimizers import OPTIMIZERS, Optimizer, OptState, make_optimizer
from esvo.core.shaping import SHAPINGS, centered_ranks, nes_utilities, raw, zscore
from esvo.core.strategy import Ask, Restarts, SearchState, Strategy, default_num_pairs

__all__ = [
    "DISTRIBUTIONS",
    "OPTIMIZERS",
    "SHAPINGS",
    "AdaptationSampling",
    "Ask",
    "Full",
    "ImportanceMixing",
    "Isotropic",
    "LowRank",
    "Noise",
    "NoiseGenerator",
    "NoiseSums",
    "NoiseTable",
    "OptState",
    "Optimizer",
    "Restarts",
    "SearchState",
    "Separable",
    "SigmaBounds",
    "Strategy",
    "centered_ranks",
    "default_num_pairs",
    "make_distribution",
    "make_noise",
    "make_optimizer",
    "nes_utilities",
    "perturbation_ids",
    "raw",
    "snes_sigma_lr",
    "zscore",
]
