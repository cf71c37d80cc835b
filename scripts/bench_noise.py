"""Noise schemes: rebuilding one z, and the driver's full update, against the bandwidth floor.

For d in {1e3, 1e4, 1e5, 1e6} and n in {50, 500} pairs it prints, measured in this run:
  floor     time to read n*d float32 values once (fastest of three streaming kernels), the
            memory-bandwidth floor of any update that touches every noise value;
  z/table   rebuild one z from the shared table (a slice, copied);
  z/gen     rebuild one z from its counter-based generator (SFC64 seeded by the id);
  step/...  one full driver step, Strategy.tell (shaping, noise reduction, Adam, sigma update),
            fixed sigma (OpenAI-ES, sigma_lr=0), isotropic and separable, with each scheme;
  x floor   each table step over the floor (target: <= 2 for d = 1e6, n = 500).
Times are medians over repeats. The generator step at d = 1e6 is run once (it takes seconds).

    python scripts/bench_noise.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.linalg import blas

import esvo.core.noise as noise_mod
from esvo.core import NoiseGenerator, NoiseTable, Strategy
from esvo.core.optimizers import Adam


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def read_floor(m, repeats):
    """Fastest streaming read of m float32 values: sum, sdot, or saxpy into a cached block."""
    x = np.random.default_rng(0).standard_normal(m, dtype=np.float32)
    blk = 1 << 20
    acc = np.zeros(blk, dtype=np.float32)

    def by_saxpy():
        for i in range(0, m - blk + 1, blk):
            blas.saxpy(x[i : i + blk], acc, a=0.5)
        if m < blk:
            blas.saxpy(x, acc[:m], a=0.5)

    def by_sum():
        for i in range(0, m, blk):
            x[i : i + blk].sum()

    def by_sdot():
        for i in range(0, m, blk):
            blas.sdot(x[i : i + blk], x[i : i + blk])

    return min(median_time(f, repeats) for f in (by_sum, by_sdot, by_saxpy))


def step_time(noise, dim, pairs, distribution, repeats, sigma_lr=None):
    s = Strategy(
        dim,
        maximize=True,
        distribution=distribution,
        num_pairs=pairs,
        optimizer=Adam(),
        noise=noise,
        seed=0,
        sigma_lr=sigma_lr,
    )
    st = s.init(np.zeros(dim))
    a = s.ask(st)
    fit = np.random.default_rng(1).standard_normal((pairs, 2))
    s.tell(st, a, fit)  # warm up
    if isinstance(noise, NoiseGenerator):
        noise._cache.clear()
        return median_time(lambda: (noise._cache.clear(), s.tell(st, a, fit)), repeats)
    return median_time(lambda: s.tell(st, a, fit), repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats, skip d=1e6 generator")
    args = p.parse_args()
    reps = 3 if args.quick else 5
    print(f"numpy {np.__version__}; times in ms (z in us); median of {reps}")
    hdr = (
        f"{'d':>8} {'n':>4} {'floor':>8} {'z/table':>8} {'z/gen':>8} {'fixed/tab':>9} "
        f"{'iso/table':>9} {'sep/table':>9} {'sep/gen':>9}   x floor fixed/iso/sep"
    )
    print(hdr)
    for dim in (10**3, 10**4, 10**5, 10**6):
        table = NoiseTable(dim)
        gen = NoiseGenerator(dim)
        ids = np.arange(1, 101, dtype=np.uint64) * 7919
        z_table = median_time(lambda: [np.array(table.get(int(i))) for i in ids], reps) / 100
        z_gen = (
            median_time(lambda: [(gen._cache.clear(), gen.get(int(i))) for i in ids], reps) / 100
        )
        for pairs in (50, 500):
            floor = read_floor(pairs * dim, reps)
            fixed = step_time(table, dim, pairs, "isotropic", reps, sigma_lr=0.0)
            iso = step_time(table, dim, pairs, "isotropic", reps)
            sep = step_time(table, dim, pairs, "separable", reps)
            if dim * pairs >= 10**8 and args.quick:
                sep_gen = float("nan")
            else:
                sep_gen = step_time(
                    gen, dim, pairs, "separable", 1 if dim * pairs >= 10**8 else reps
                )
            print(
                f"{dim:>8} {pairs:>4} {floor * 1e3:>8.2f} "
                f"{z_table * 1e6:>8.1f} {z_gen * 1e6:>8.1f} "
                f"{fixed * 1e3:>9.2f} {iso * 1e3:>9.2f} {sep * 1e3:>9.2f} {sep_gen * 1e3:>9.1f}   "
                f"{fixed / floor:.2f} / {iso / floor:.2f} / {sep / floor:.2f}",
                flush=True,
            )

    print("\ncolumn block of the streamed update, d = 1e6, n = 500, separable (ms):")
    table = NoiseTable(10**6)
    default = noise_mod.BLOCK
    for shift in (14, 16, 18, 20):
        noise_mod.BLOCK = 1 << shift
        t = step_time(table, 10**6, 500, "separable", reps)
        print(f"  2^{shift}: {t * 1e3:8.1f}{'  (default)' if 1 << shift == default else ''}")
    noise_mod.BLOCK = default


if __name__ == "__main__":
    main()
