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
Then the column block of the streamed update, and the separable step's sum_k b_k z_k^2 from a
table of squares against squaring each slice in cache (d = 1e6, 1e7, n = 500; same table,
steps alternated, medians and the median of the paired ratios), and the driver step of
lowrank (ranks 1, 2, 4) against separable at d = 1e5, 1e6, n = 500 (target: <= 2x at 1e6).

--memory instead measures the driver's peak memory: each case (isotropic, separable; d = 1e6,
1e7; n = 500; default table size) in a fresh subprocess that builds the table, makes a Strategy
and runs Strategy.tell a few times; it prints the peak RSS (getrusage ru_maxrss), the time of the
first step (which builds what the update derives from the table) and the median of the others.
With --baseline DIR the same subprocess also runs against the esvo package found in DIR (e.g.
a checkout of main), alternated with this tree's, so before and after sit side by side.

    python scripts/bench_noise.py [--quick]
    python scripts/bench_noise.py --squares [--quick]           # that comparison only
    python scripts/bench_noise.py --lowrank [--quick]           # lowrank vs separable only
    python scripts/bench_noise.py --memory [--baseline DIR] [--repeats R] [--steps S]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.linalg import blas
from threadpoolctl import threadpool_info

import esvo.core.noise as noise_mod
from esvo.core import NoiseGenerator, NoiseTable, Strategy
from esvo.core.optimizers import Adam


def blas_threads() -> str:
    """The BLAS thread pools of this process (children inherit OPENBLAS_NUM_THREADS & co.)."""
    return ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info())


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
    s, st, a, fit = warm_step(noise, dim, pairs, distribution, sigma_lr=sigma_lr)
    if isinstance(noise, NoiseGenerator):
        noise._cache.clear()
        return median_time(lambda: (noise._cache.clear(), s.tell(st, a, fit)), repeats)
    return median_time(lambda: s.tell(st, a, fit), repeats)


def warm_step(noise, dim, pairs, distribution, rank=1, sigma_lr=None):
    """A Strategy with one tell done (which builds what the update derives from the table):
    ``(strategy, state, ask, fitness)`` to time further tells with."""
    s = Strategy(
        dim,
        maximize=True,
        distribution=distribution,
        rank=rank,
        num_pairs=pairs,
        optimizer=Adam(),
        noise=noise,
        seed=0,
        sigma_lr=sigma_lr,
    )
    st = s.init(np.zeros(dim))
    a = s.ask(st)
    fit = np.random.default_rng(1).standard_normal((pairs, 2))
    s.tell(st, a, fit)
    return s, st, a, fit


def alternated(steps, repeats):
    """Seconds of each named step's tell, ``repeats`` each, the order reversed every round."""
    times = {name: [] for name in steps}
    order = list(steps)
    for r in range(repeats):
        for name in order if r % 2 == 0 else order[::-1]:
            s, st, a, fit = steps[name]
            t = time.perf_counter()
            s.tell(st, a, fit)
            times[name].append(time.perf_counter() - t)
    return times


def lowrank_vs_separable(dim, pairs, ranks, repeats):
    """Driver steps (Strategy.tell) of lowrank (rank k) and separable on the same table,
    alternated: {name: median s}, {name: median of its paired ratios to separable}."""
    size = noise_mod.default_table_size(dim)
    steps = {}
    for name, k in [("separable", 0)] + [(f"lowrank k={k}", k) for k in ranks]:
        noise = NoiseTable(dim + k, size=size)  # the same table: one build, shared
        distribution = "lowrank" if k else "separable"
        steps[name] = warm_step(noise, dim, pairs, distribution, rank=max(k, 1))
    times = alternated(steps, repeats)
    ratios = {
        n: statistics.median(x / y for x, y in zip(times[n], times["separable"], strict=True))
        for n in steps
    }
    return {n: statistics.median(t) for n, t in times.items()}, ratios


def lowrank_section(reps, dims=(10**5, 10**6), ranks=(1, 2, 4)):
    print("\ndriver step of lowrank against separable, n = 500 pairs (same table, alternated;")
    print("ms, median; x sep: median of the paired ratios; target <= 2 at d = 1e6):")
    for dim in dims:
        med, ratio = lowrank_vs_separable(dim, 500, ranks, reps)
        row = "  ".join(f"{n} {t * 1e3:7.1f} ({ratio[n]:.2f}x sep)" for n, t in med.items())
        print(f"  d = {dim:.0e}: {row}", flush=True)


def squares_vs_cache(dim, pairs, repeats):
    """Separable steps with the table of squares and with squares taken in cache: the same
    table, alternated; (median ms, median ms, median of paired ratios)."""
    default = noise_mod.SQUARES_MAX
    steps = {}
    for name, limit in (("table", 1 << 62), ("cache", 0)):
        noise_mod.SQUARES_MAX = limit
        noise = NoiseTable(dim)
        steps[name] = warm_step(noise, dim, pairs, "separable")  # builds squares if allowed
        assert (noise.squares() is None) == (name == "cache")
    noise_mod.SQUARES_MAX = default
    times = alternated(steps, repeats)
    ratio = statistics.median(c / t for t, c in zip(times["table"], times["cache"], strict=True))
    return statistics.median(times["table"]), statistics.median(times["cache"]), ratio


# One memory case in a fresh interpreter: esvo imported from argv[1].
MEMORY_CASE = r"""
import json, resource, sys, time
root, distribution, dim, pairs, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
sys.path.insert(0, root)
import numpy as np
import esvo
from esvo.core import NoiseTable, Strategy
from esvo.core.optimizers import Adam

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB

start = peak()
noise = NoiseTable(dim)
s = Strategy(dim, maximize=True, distribution=distribution, num_pairs=pairs, optimizer=Adam(),
             noise=noise, seed=0)
st = s.init(np.zeros(dim))
a = s.ask(st)
fit = np.random.default_rng(1).standard_normal((pairs, 2))
times = []
for _ in range(steps):
    t = time.perf_counter()
    s.tell(st, a, fit)
    times.append(time.perf_counter() - t)
print(json.dumps({"esvo": esvo.__file__, "start_mib": start, "peak_mib": peak(),
                  "table_mib": noise.table.nbytes / 2**20, "first_s": times[0],
                  "steps_s": times}))
"""


def memory_case(root, distribution, dim, pairs, steps):
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            MEMORY_CASE,
            str(root),
            distribution,
            str(dim),
            str(pairs),
            str(steps),
        ],
        capture_output=True,
        check=True,
        text=True,
        cwd=root,
    ).stdout
    result = json.loads(out)
    assert Path(result["esvo"]).resolve().is_relative_to(Path(root).resolve()), result["esvo"]
    return result


def memory(baseline, repeats, steps):
    """Peak RSS and step times per case, before (baseline) and after (this tree)."""
    here = Path(__file__).resolve().parents[1]
    trees = ([("before", Path(baseline).resolve())] if baseline else []) + [("after", here)]
    pairs = 500
    print(f"numpy {np.__version__}; BLAS threads: {blas_threads()}")
    print(f"n = {pairs}; default table size; per case {repeats} processes")
    print(f"per tree, alternated, each {steps} Strategy.tell. peak: max RSS over the processes")
    print("(MiB); first: the first step (s; builds what the update derives from the table),")
    print("median over processes; step: median of the other steps over all processes (ms).")
    for name, root in trees:
        print(f"  {name}: {root}")
    cols = " ".join(f"{f'{c}/{n}':>12}" for c in ("peak", "first", "step") for n, _ in trees)
    print(f"{'':>9} {'d':>5} {'table':>6} {cols}", flush=True)
    for distribution in ("isotropic", "separable"):
        for dim in (10**6, 10**7):
            runs = {name: [] for name, _ in trees}
            for r in range(repeats):
                for name, root in trees if r % 2 == 0 else trees[::-1]:
                    runs[name].append(memory_case(root, distribution, dim, pairs, steps))
            row = [f"{max(x['peak_mib'] for x in runs[n]):>12.0f}" for n, _ in trees]
            row += [f"{statistics.median(x['first_s'] for x in runs[n]):>12.2f}" for n, _ in trees]
            row += [
                f"{statistics.median(t for x in runs[n] for t in x['steps_s'][1:]) * 1e3:>12.0f}"
                for n, _ in trees
            ]
            table_mib = runs["after"][0]["table_mib"]
            print(f"{distribution:>9} {dim:>5.0e} {table_mib:>6.0f} {' '.join(row)}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats, skip d=1e6 generator")
    p.add_argument("--squares", action="store_true", help="only squares table vs in cache")
    p.add_argument("--lowrank", action="store_true", help="only lowrank vs separable steps")
    p.add_argument("--memory", action="store_true", help="peak driver memory (subprocesses)")
    p.add_argument("--baseline", help="with --memory: a source tree of the esvo to compare")
    p.add_argument("--repeats", type=int, default=3, help="with --memory: processes per case")
    p.add_argument("--steps", type=int, default=4, help="with --memory: tells per process (>= 2)")
    args = p.parse_args()
    if args.memory:
        memory(args.baseline, args.repeats, args.steps)
        return
    reps = 3 if args.quick else 5
    if args.squares or args.lowrank:
        print(f"numpy {np.__version__}; BLAS threads: {blas_threads()}; median of {reps}")
        if args.lowrank:
            lowrank_section(reps)
        if args.squares:
            squares_section(reps)
        return
    print(f"numpy {np.__version__}; BLAS threads: {blas_threads()}")
    print(f"times in ms (z in us); median of {reps}")
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

    squares_section(reps)
    lowrank_section(reps)


def squares_section(reps):
    print("\nseparable step, n = 500: sum_k b_k z_k^2 from a table of squares or squared in cache")
    print(
        f"(ms; same table, alternated; SQUARES_MAX = 2^{noise_mod.SQUARES_MAX.bit_length() - 1}):"
    )
    for dim in (10**6, 10**7):
        table_t, cache_t, ratio = squares_vs_cache(dim, 500, reps)
        size = noise_mod.default_table_size(dim)
        print(
            f"  d = {dim:.0e} (table 2^{np.log2(size):.2f}): squares {table_t * 1e3:8.1f}, "
            f"in cache {cache_t * 1e3:8.1f}, in cache / squares {ratio:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
