"""Adaptation sampling: online learning rates for the mean and sigma (Schaul, PhD thesis 2011;
Wierstra et al., *Natural Evolution Strategies*, JMLR 15, 2014, "adaptation sampling";
"xNES-as").

Each generation, before the update, ask whether the last update would have been better with a
larger rate. The previous generation's distribution ``(mean_prev, params_prev)`` and the
current one ``(mean, params)`` define the last step; a *hypothetical* distribution extends it to
``HYPOTHETICAL_STEP = 1.5`` times its length:

- sigma (``target: sigma``): ``sigma' = sigma (sigma / sigma_prev)^(1/2)`` (in log sigma,
  1.5 times the last step), mean and shape unchanged;
- mean (``target: mean``): ``mean' = mean + (mean - mean_prev) / 2``, sigma unchanged.

The current generation's ``lambda = 2 n`` samples ``w_i`` are importance-weighted under it,
``w'_i = p'(w_i) / p(w_i)``, and a weighted Mann-Whitney test compares the hypothetical
(weighted) sample with the current (unweighted) one. With ``R_i`` the midrank of sample ``i``
by fitness (1 = worst):

    U = sum_i w'_i (R_i - 1/2)        n' = sum_i w'_i
    mu_U = lambda n' / 2              sigma_U = sqrt(lambda n' (lambda + n' + 1) / 12)
    z = (U - mu_U) / sigma_U          p = Phi(z)

(for integer weights, ``U`` is the ordinary Mann-Whitney statistic of the sample with member
``i`` repeated ``w'_i`` times against the current sample). With ``rho = 1/2 - 1/(3(d + 1))``
and ``c = 0.1``: if ``p >= rho`` the rate grows, ``eta <- min(cap, (1 + c) eta)``; otherwise it
relaxes towards its initial value, ``eta <- (1 - c) eta + c eta_init``. ``cap = max(1,
eta_init)``: 1 is the full natural-gradient step (the published cap); a configured rate above 1
is never exceeded.

The decision rule is the one in the public implementations (chanshing/xnes ``adasam``,
neorl's xNES, evosax before 2025; the growth branch uses ``(1 + c)``, which old evosax got
wrong). Read as a test: the larger rate is kept growing unless the evidence says it is *worse*
(``p < rho`` with ``rho`` a little below 1/2). That is what makes sigma's rate grow when sigma
is far too small: the landscape is then locally linear, a wider distribution has the same
expected rank, ``p`` sits at 1/2 (exactly, with antithetic pairs and an isotropic sigma). Only
evidence that the longer step is worse (a step that widened sigma where wider is worse) pushes
``p`` below ``rho``; on the sphere a grown rate stays near its cap, also at the optimum, where
sigma shrinks and the narrower hypothetical distribution is the better one.

``lr_sigma`` is the distribution's ``sigma_lr``. ``lr_mean`` is in the optimizer's ``lr``
units and starts there: the optimizer's step is multiplied by ``lr_mean / lr`` (for SGD that is
SGD with rate ``lr_mean``; momentum and Adam moments are kept as they are, only the applied step
is scaled). With ``target: both`` the two rates are decided by two tests, each on its own
hypothetical distribution.

Importance weights thin out in high dimension: every coordinate's sigma moving by the same
factor ``r`` gives ``Var log w' = d (1 - r^-2)^2 / 2``, so at a fixed rate a few samples carry
all the weight once d is large and the test has the power of a few samples. SNES's default
rate shrinks like ``1 / sqrt(d)``, which keeps that variance O(1); a rate adaptation sampling
has grown does not. Measured (separable, sphere, ``scripts/bench_convergence.py --suite
adaptation``): the weights' effective sample size ``(sum w')^2 / sum w'^2`` is a median 0.87
of the population at d = 10, ~0.5 at d = 100, 0.2-0.44 at d = 10^4; the ``as_ess_*`` metrics
log it every generation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from esvo.core.distributions import DiagonalParams, Distribution, SearchParams
from esvo.core.noise import Noise

HYPOTHETICAL_STEP = 1.5
"""The hypothetical distribution extends the last step to this many times its length."""

TARGETS = ("sigma", "mean", "both")


@dataclass(frozen=True)
class AdaptationSampling:
    """Settings of adaptation sampling (the adapted rates themselves are ``SearchState``).

    Args:
        c: the rate grows by ``(1 + c)`` or relaxes by ``(1 - c)`` towards its initial value.
        target: which rate adapts: ``"sigma"`` (the distribution's ``sigma_lr``), ``"mean"``
            (a multiplier on the optimizer's step, in ``lr`` units) or ``"both"``.
    """

    c: float = 0.1
    target: Literal["sigma", "mean", "both"] = "sigma"

    def __post_init__(self) -> None:
        if not 0 < self.c < 1:
            raise ValueError(f"adaptation_sampling: c must be in (0, 1), got {self.c}")
        if self.target not in TARGETS:
            raise ValueError(
                f"adaptation_sampling: target must be one of {TARGETS}, got {self.target!r}"
            )

    @property
    def sigma(self) -> bool:
        return self.target in ("sigma", "both")

    @property
    def mean(self) -> bool:
        return self.target in ("mean", "both")


def significance_level(dim: int) -> float:
    """``rho = 1/2 - 1/(3 (d + 1))``."""
    return 0.5 - 1.0 / (3.0 * (dim + 1))


class MannWhitney(NamedTuple):
    """The weighted Mann-Whitney test of a hypothetical (weighted) sample against the current
    one: ``u`` the statistic, ``n_weighted = sum w'``, ``z`` its normal score, ``p =
    Phi(z)``, ``ess`` the weights' effective sample size ``(sum w')^2 / sum w'^2``."""

    u: float
    n_weighted: float
    z: float
    p: float
    ess: float


def midranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (ascending), ties sharing their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], len(xs)]  # run [start, end) of equal values
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def weighted_mann_whitney(fitness: np.ndarray, log_weights: np.ndarray) -> MannWhitney:
    """The weighted Mann-Whitney test (module docstring) from higher-is-better ``fitness``
    and the log importance weights of the same samples (any shape, flattened alike).

    Weights are handled in log space: with ``m = max log w'`` and ``v = w' e^-m``,
    ``z = (sum v (R - 1/2) - lambda sum v / 2) / sqrt(lambda sum v (sum v + (lambda + 1)
    e^-m) / 12)`` is the same number and stays finite however large the weights are.
    Non-finite fitness counts as the worst."""
    f = np.asarray(fitness, dtype=np.float64).reshape(-1)
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if f.shape != lw.shape or f.size == 0:
        raise ValueError(f"fitness {f.shape} and log_weights {lw.shape} must match, non-empty")
    f = np.where(np.isfinite(f), f, -np.inf)
    n = float(f.size)
    top = float(lw.max())
    v = np.exp(lw - top)  # (lambda,) in (0, 1]
    nv = float(v.sum())
    uv = float(v @ (midranks(f) - 0.5))
    inv = math.exp(-top)
    z = (uv - n * nv / 2) / math.sqrt(n * nv * (nv + (n + 1) * inv) / 12)
    with np.errstate(over="ignore"):
        scale = math.exp(top) if top < 709 else math.inf
    ess = nv * nv / float(v @ v)
    return MannWhitney(uv * scale, nv * scale, z, 0.5 * math.erfc(-z / math.sqrt(2)), ess)


def hypothetical(
    mean: np.ndarray,
    params: SearchParams,
    prev_mean: np.ndarray,
    prev_params: SearchParams,
    which: Literal["sigma", "mean"],
) -> tuple[np.ndarray, SearchParams]:
    """The distribution whose last step (``prev -> current``) in ``which`` is
    ``HYPOTHETICAL_STEP`` times as long: ``sigma (sigma / sigma_prev)^(1/2)`` (shape kept)
    or ``mean + (mean - mean_prev) / 2``."""
    k = HYPOTHETICAL_STEP - 1.0
    if which == "sigma":
        sigma = params.sigma * np.power(params.sigma / prev_params.sigma, k)
        return mean, dataclasses.replace(params, sigma=sigma)  # type: ignore[type-var]
    return mean + k * (mean - prev_mean), params


def log_weights(
    distribution: Distribution,
    noise: Noise,
    ids: np.ndarray,
    mean: np.ndarray,
    params: SearchParams,
    hyp_mean: np.ndarray,
    hyp_params: SearchParams,
) -> np.ndarray:
    """``log p'(w) - log p(w)`` of the candidates ``w = mean ± step(z)``: ``(n, 2)``, column
    0 for ``+z``.

    Diagonal Gaussians in closed form, O(d) per pair without building ``w``: with ``r =
    sigma / sigma'`` and ``delta = mean' - mean``, ``log w' = 1/2 sum (1 - r^2) z^2 ±
    sum (r^2 delta / sigma) z - 1/2 sum (delta / sigma')^2 - sum log(sigma' / sigma)``. Other
    distributions: ``log_density`` of the step placed in each frame by ``whiten``."""
    out = np.empty((len(ids), 2))
    if isinstance(params, DiagonalParams) and isinstance(hyp_params, DiagonalParams):
        d = len(mean)
        s, s2 = params.sigma, hyp_params.sigma
        r2 = np.broadcast_to(np.square(s / s2), (d,))
        delta = hyp_mean - mean
        quad = 0.5 * (1.0 - r2)  # (d,)
        lin = r2 * delta / s  # (d,)
        const = -0.5 * float(np.sum(np.square(delta / s2)))
        const -= float(np.sum(np.broadcast_to(np.log(s2 / s), (d,))))
        with_q, with_l = bool(np.any(quad)), bool(np.any(lin))
        for k, pid in enumerate(ids):
            # einsum: no BLAS, so the same bits whatever the thread count; one row at a time
            z = np.asarray(noise.get(pid), dtype=np.float64)
            q = np.einsum("i,i,i->", z, z, quad) if with_q else 0.0
            lz = np.einsum("i,i->", z, lin) if with_l else 0.0
            out[k] = const + q + lz, const + q - lz
        return out
    rows = max(1, (1 << 20) // max(noise.dim, 1))
    shift = hyp_mean - mean
    for k0 in range(0, len(ids), rows):
        z = np.stack([noise.get(p) for p in ids[k0 : k0 + rows]]).astype(np.float64)
        step = params.step(z)  # (rows, d)
        base = distribution.log_density(params, z)  # the same for +z and -z
        for col, x in enumerate((step, -step)):
            zh = distribution.whiten(hyp_params, x - shift)
            out[k0 : k0 + len(z), col] = distribution.log_density(hyp_params, zh) - base
    return out


def adapt_rate(rate: float, init: float, grow: bool, c: float) -> float:
    """``min(max(1, init), (1 + c) rate)`` if ``grow``, else ``(1 - c) rate + c init``."""
    if grow:
        return min(max(1.0, init), (1.0 + c) * rate)
    return (1.0 - c) * rate + c * init


def larger_rate_test(
    distribution: Distribution,
    noise: Noise,
    ids: np.ndarray,
    fitness: np.ndarray,
    mean: np.ndarray,
    params: SearchParams,
    prev_mean: np.ndarray,
    prev_params: SearchParams,
    which: Literal["sigma", "mean"],
) -> MannWhitney:
    """The weighted Mann-Whitney test of the hypothetical distribution of ``which`` on this
    generation's candidates (ids) and their higher-is-better ``fitness`` ``(n, 2)``."""
    hyp_mean, hyp_params = hypothetical(mean, params, prev_mean, prev_params, which)
    lw = log_weights(distribution, noise, ids, mean, params, hyp_mean, hyp_params)
    return weighted_mann_whitney(fitness, lw)


def optimizer_lr(optimizer: object) -> float:
    """An optimizer's learning rate, the unit of ``lr_mean`` (ClipUp's default ``max_speed /
    2``; 1 for one without a rate)."""
    lr = getattr(optimizer, "lr", None)
    if lr is None:
        speed = getattr(optimizer, "max_speed", None)
        return 1.0 if speed is None else float(speed) / 2
    return float(lr)


def adapt_rates(
    settings: AdaptationSampling,
    rates: tuple[float | None, float | None],
    initial: tuple[float, float],
    distribution: Distribution,
    noise: Noise,
    ids: np.ndarray,
    fitness: np.ndarray,
    current: tuple[np.ndarray, SearchParams],
    previous: tuple[np.ndarray, SearchParams] | None,
) -> tuple[float | None, float | None, dict[str, float]]:
    """One generation of adaptation sampling: the ``(sigma, mean)`` rates to use for this
    generation's update (None: not adapted) and the metrics (``lr_*``, and ``as_p_*``,
    ``as_ess_*`` when a test ran).

    Args:
        settings: ``c`` and the target.
        rates: the state's ``(lr_sigma, lr_mean)``.
        initial: their initial values (the cap is ``max(1, initial)``).
        distribution, noise, ids: this generation's candidates.
        fitness: their higher-is-better scores ``(n, 2)``.
        current: ``(mean, params)`` the candidates were drawn from.
        previous: the previous generation's ``(mean, params)``; None: no test (generation 0,
            after a restart), the rates are kept.
    """
    rho = significance_level(len(current[0]))
    out = dict(zip(("sigma", "mean"), rates, strict=True))
    init = dict(zip(("sigma", "mean"), initial, strict=True))
    metrics: dict[str, float] = {}
    for which in ("sigma", "mean"):
        rate = out[which]
        if rate is None:
            continue
        if previous is not None:
            mw = larger_rate_test(
                distribution,
                noise,
                ids,
                fitness,
                *current,
                *previous,
                which,  # type: ignore[arg-type]
            )
            rate = adapt_rate(rate, init[which], mw.p >= rho, settings.c)
            metrics[f"as_p_{which}"] = mw.p
            metrics[f"as_ess_{which}"] = mw.ess / np.asarray(fitness).size
        out[which] = rate
        metrics[f"lr_{which}"] = rate
    return out["sigma"], out["mean"], metrics


__all__ = [
    "HYPOTHETICAL_STEP",
    "TARGETS",
    "AdaptationSampling",
    "MannWhitney",
    "adapt_rate",
    "adapt_rates",
    "hypothetical",
    "larger_rate_test",
    "log_weights",
    "midranks",
    "optimizer_lr",
    "significance_level",
    "weighted_mann_whitney",
]
