"""Evaluations to target for the core's NES defaults (sigma adapted by the natural gradient).

Counts, not times: the number of function evaluations until the mean reaches the target, for
3 seeds, both distributions, against the budgets of the core issue (a textbook SNES meets them
with 2x to spare). Start mean 1 (sphere) or 0 (Rosenbrock, Himmelblau), sigma 0.5.

    python scripts/bench_convergence.py [--seeds 3]
"""

from __future__ import annotations

import argparse

import numpy as np

from esvo.core import Strategy
from esvo.objectives.functions import FUNCTIONS, HIMMELBLAU_MINIMA

PROBLEMS = [  # name, d, theta0, target, budget
    ("sphere", 10, 1.0, 1e-8, 4_000),
    ("sphere", 100, 1.0, 1e-8, 50_000),
    ("rosenbrock", 2, 0.0, 1e-8, 400_000),
    ("himmelblau", 2, 0.0, 1e-4, 1_000),
    ("rosenbrock", 10, 0.0, 1e-6, 1_500_000),
]


def done(name, st, f, target):
    if name == "himmelblau":  # within target of a minimum, sigma below target
        gap = np.min(np.linalg.norm(HIMMELBLAU_MINIMA - st.mean, axis=1))
        return gap < target and np.max(st.sigma) < target
    return f(st.mean) < target


def evaluations(name, dim, theta0, target, limit, distribution, seed):
    f = FUNCTIONS[name]
    s = Strategy(dim, maximize=False, distribution=distribution, sigma_init=0.5, seed=seed)
    st, evals = s.init(np.full(dim, theta0)), 0
    while evals < limit and not done(name, st, f, target):
        a = s.ask(st)
        fit = f(s.population(st, a))
        evals += fit.size
        st, _ = s.tell(st, a, fit)
    return evals if done(name, st, f, target) else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    print(f"{'problem':<16} {'target':>7} {'budget':>9} {'distribution':>12}  evaluations per seed")
    for name, dim, theta0, target, budget in PROBLEMS:
        for dist in ("isotropic", "separable"):
            counts = [
                evaluations(name, dim, theta0, target, 2 * budget, dist, seed)
                for seed in range(args.seeds)
            ]
            shown = ", ".join("fail" if c is None else f"{c:,}" for c in counts)
            print(
                f"{name + ' d=' + str(dim):<16} {target:>7.0e} {budget:>9,} {dist:>12}  {shown}",
                flush=True,
            )


if __name__ == "__main__":
    main()
