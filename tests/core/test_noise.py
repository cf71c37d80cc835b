import gc
import math
import subprocess
import sys
import tracemalloc
import weakref
from math import comb

import numpy as np
import pytest

import esvo.core.noise as noise_mod
from esvo.core.noise import (
    SMALL,
    SQ_BLOCK,
    NoiseGenerator,
    NoiseTable,
    _sums_dense,
    build_table,
    default_table_size,
    make_noise,
    perturbation_ids,
)

TABLE_SIZE = 1 << 20


def sources(dim):
    return [NoiseGenerator(dim, seed=3), NoiseTable(dim, seed=3, size=TABLE_SIZE)]


def test_ids_are_a_pure_function_and_distinct():
    a = perturbation_ids(7, 11, 100_000)
    assert a.dtype == np.uint64
    np.testing.assert_array_equal(a, perturbation_ids(7, 11, 100_000))
    assert len(np.unique(a)) == a.size
    # another generation or seed names other perturbations
    assert not np.intersect1d(a, perturbation_ids(7, 12, 100_000)).size
    assert not np.intersect1d(a, perturbation_ids(8, 11, 100_000)).size
    # a subset of indices gives the same ids as the full range
    np.testing.assert_array_equal(perturbation_ids(7, 11, np.array([5, 99_999])), a[[5, 99_999]])


@pytest.mark.parametrize("kind", ["generator", "table"])
def test_same_id_same_noise_in_another_process(kind):
    dim, ids = 1000, perturbation_ids(1, 2, 4)
    here = make_noise(kind, dim, seed=5, size=TABLE_SIZE if kind == "table" else None)
    code = (
        "import sys, numpy as np; from esvo.core.noise import make_noise;"
        f"n = make_noise({kind!r}, {dim}, seed=5, size={TABLE_SIZE if kind == 'table' else None});"
        f"sys.stdout.buffer.write(b''.join(n.get(int(p)).tobytes() for p in {ids.tolist()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    theirs = np.frombuffer(out, dtype=np.float32).reshape(len(ids), dim)
    for k, pid in enumerate(ids):
        assert here.get(int(pid)).dtype == np.float32
        np.testing.assert_array_equal(here.get(int(pid)), theirs[k])


@pytest.mark.parametrize("noise", sources(500), ids=["generator", "table"])
def test_different_ids_differ_and_order_does_not_matter(noise):
    ids = perturbation_ids(0, 0, 20)
    forward = [noise.get(int(p)).copy() for p in ids]
    backward = [noise.get(int(p)).copy() for p in ids[::-1]][::-1]
    for f, b in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(f, b)
    z = np.stack(forward)
    corr = np.corrcoef(z)[np.triu_indices(len(ids), 1)]
    # independent N(0,1) vectors of length 500: |corr| < 5/sqrt(500) with overwhelming odds
    assert np.abs(corr).max() < 5 / np.sqrt(500)


def stand_in(dim, size):
    """A NoiseTable of any size without its memory: offsets depend only on (dim, size)."""
    return NoiseTable(dim, size=size, table=np.broadcast_to(np.float32(0), (size,)))


def test_table_is_rebuilt_from_its_chunk_streams():
    seed, chunk = 4, 1 << 22
    size = chunk + 1000  # a whole chunk and a partial one
    table = build_table(seed, size)
    for c, start in enumerate((0, chunk)):
        ss = np.random.SeedSequence(seed, spawn_key=(c,))
        want = np.random.Generator(np.random.SFC64(ss)).standard_normal(
            min(chunk, size - start), dtype=np.float32
        )
        np.testing.assert_array_equal(table[start : start + chunk], want)


@pytest.mark.parametrize("dim", [1, 500, TABLE_SIZE - 3, TABLE_SIZE])
def test_slice_of_an_id_is_the_id_modulo_the_slice_count(dim):
    noise = NoiseTable(dim, seed=3, size=TABLE_SIZE)
    slices = TABLE_SIZE - dim + 1
    edge = [0, 1, slices - 1, slices, 2**63, 2**64 - 1]
    ids = np.concatenate([perturbation_ids(5, 6, 50), np.array(edge, dtype=np.uint64)])
    want = [int(p) % slices for p in ids]  # Python integers, no uint64 or float arithmetic
    assert noise.offsets(ids).tolist() == want
    base = noise.table.__array_interface__["data"][0]
    for pid, o in zip(ids, want, strict=True):
        z = noise.get(int(pid))
        assert z.__array_interface__["data"][0] - base == 4 * o  # a view at float32 offset o
        np.testing.assert_array_equal(z, noise.table[o : o + dim])


def test_slice_offsets_are_exact_for_tables_too_large_to_build():
    # 2**52 slices: float64 arithmetic on the 64-bit ids would round them first
    ids = np.concatenate([perturbation_ids(5, 7, 1000), np.array([2**64 - 1], dtype=np.uint64)])
    assert stand_in(1000, 2**52).offsets(ids).tolist() == [int(p) % (2**52 - 999) for p in ids]


def test_ids_of_a_generation_never_share_a_slice_offset():
    # n ids per generation with uniform offsets over m slices collide with probability
    # <= n (n - 1) / (2 m) per generation: 2000 generations of 500 pairs over ~2**52 offsets
    # give <= 5.5e-8 in all, so one shared offset would mean a broken map.
    gens, n, dim, size = 2000, 500, 1000, 2**52
    m = size - dim + 1
    assert gens * comb(n, 2) / m < 1e-7
    noise = stand_in(dim, size)
    offs = np.stack([noise.offsets(perturbation_ids(9, g, n)) for g in range(gens)])
    offs.sort(axis=1)
    assert np.all(np.diff(offs, axis=1) > 0)


def overlapping_pairs(offs, dim):
    """Pairs of a generation whose slices share an entry, ``|o_i - o_j| < dim``."""
    s = np.sort(offs)
    return int((np.searchsorted(s, s + dim, side="left") - np.arange(len(s)) - 1).sum())


def test_overlapping_slices_are_as_rare_as_with_uniform_offsets():
    # The default table for d = 1e4 (2**24 entries) and 500 pairs: slices of one generation
    # overlap (|o_i - o_j| < d) in ~150 of its 124,750 pairs. Under offsets uniform on
    # {0..m-1}, c(x) = #{y : |y - x| < d} = min(x, d-1) + min(m-1-x, d-1) + 1, so per pair
    # p = sum_x c(x) / m^2 and per triple q = P(i~j, i~k) = sum_x c(x)^2 / m^3; the count over
    # a generation's C(n,2) pairs has mean C(n,2) p and variance
    # C(n,2) p (1-p) + 6 C(n,3) (q - p^2) (pairs sharing one index covary; the rest are
    # independent). Generations are independent.
    gens, n, dim = 40, 500, 10_000
    size = default_table_size(dim)
    m = size - dim + 1
    edge = range(dim, 2 * dim - 1)  # c(x) for x < d - 1, and mirrored at the top end
    sum_c = (m - 2 * (dim - 1)) * (2 * dim - 1) + 2 * sum(edge)
    sum_c2 = (m - 2 * (dim - 1)) * (2 * dim - 1) ** 2 + 2 * sum(c * c for c in edge)
    p, q = sum_c / m**2, sum_c2 / m**3
    assert sum_c == (2 * dim - 1) * m - dim * (dim - 1)  # the closed form of sum_x c(x)
    mean = gens * comb(n, 2) * p
    sd = np.sqrt(gens * (comb(n, 2) * p * (1 - p) + 6 * comb(n, 3) * (q - p * p)))
    noise = stand_in(dim, size)
    count = sum(
        overlapping_pairs(noise.offsets(perturbation_ids(2, g, n)), dim) for g in range(gens)
    )
    assert abs(count - mean) < 5 * sd, (count, mean, sd)  # mean ~5,950, sd ~77
    # the statistic rejects maps that crowd or spread the slices
    consecutive = sum(overlapping_pairs(np.arange(n) + 17 * g, dim) for g in range(gens))
    spread = sum(overlapping_pairs(np.arange(n) * (m // n), dim) for _ in range(gens))
    assert abs(consecutive - mean) > 5 * sd and abs(spread - mean) > 5 * sd


def test_noise_is_standard_normal():
    z = np.concatenate([n.get(int(p)) for n in sources(10_000) for p in perturbation_ids(0, 0, 5)])
    m = z.size
    assert abs(z.mean()) < 5 / np.sqrt(m)  # SE of the mean is 1/sqrt(m)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / m)  # SE of the variance is sqrt(2/m)


@pytest.mark.parametrize("noise", sources(7), ids=["generator", "table"])
def test_noise_is_read_only(noise):
    with pytest.raises(ValueError):
        noise.get(1)[0] = 1.0


def test_streamed_sums_equal_the_dense_reference():
    dim = 70_000  # > one column block, and n * d above the dense threshold
    ids = perturbation_ids(0, 3, SMALL // dim + 3)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(len(ids)), rng.standard_normal(len(ids))
    table = NoiseTable(dim, seed=1, size=TABLE_SIZE)
    got = table.weighted_sums(ids, a, b, sq_norms=True)
    want = _sums_dense(np.stack([table.get(int(p)) for p in ids]), a, b, True)
    # float32 accumulation over n terms of size ~|a| * |z|: relative error ~ n * 2**-24
    scale = np.abs(a).sum() * 5
    np.testing.assert_allclose(got.s1, want.s1, atol=scale * len(ids) * 2**-23)
    np.testing.assert_allclose(got.s2, want.s2, atol=np.abs(b).sum() * 25 * len(ids) * 2**-23)
    np.testing.assert_allclose(got.sq_norms, want.sq_norms, rtol=1e-5)


def test_separable_sums_are_the_same_bits_with_or_without_the_table_of_squares(monkeypatch):
    dim = 70_001  # > one column block, n * d above the dense threshold, a ragged last block
    ids = perturbation_ids(0, 4, SMALL // dim + 3)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(len(ids)), rng.standard_normal(len(ids))
    kept = NoiseTable(dim, seed=1, size=TABLE_SIZE)
    want = kept.weighted_sums(ids, a, b)
    assert kept.squares() is not None
    monkeypatch.setattr(noise_mod, "SQUARES_MAX", TABLE_SIZE - 1)
    squared_in_cache = NoiseTable(dim, seed=1, size=TABLE_SIZE)
    got = squared_in_cache.weighted_sums(ids, a, b)
    assert squared_in_cache.squares() is None
    np.testing.assert_array_equal(got.s1, want.s1)
    np.testing.assert_array_equal(got.s2, want.s2)


@pytest.mark.parametrize("dim", [1, 100, SQ_BLOCK, 3 * SQ_BLOCK + 5, 70_000])
def test_sq_norms_equal_the_exact_sums(dim):
    size = TABLE_SIZE + 777  # not a whole number of blocks
    noise = NoiseTable(dim, seed=8, size=size)
    slices = size - dim + 1
    ends = [0, 1, SQ_BLOCK - 1, SQ_BLOCK, 5 * SQ_BLOCK + 3, slices // 2, slices - 1]
    offs = np.concatenate([ends, np.random.default_rng(0).integers(0, slices, 20)])
    got = noise.sq_norms(offs)
    # float32 squares are exact in float64, so fsum rounds the exact sum once
    want = np.array([math.fsum(noise.table[o : o + dim].astype(np.float64) ** 2) for o in offs])
    # Summing k nonnegative terms errs by <= (k - 1) u times their sum (u = 2**-53): each block
    # sum (k = SQ_BLOCK), the block prefix (k <= size / SQ_BLOCK blocks), the two partial
    # blocks; all are <= the table's total T, and two prefixes and two partials are combined.
    total = math.fsum(noise.table.astype(np.float64) ** 2)
    bound = 4 * (size // SQ_BLOCK + SQ_BLOCK + 2) * 2.0**-53 * total  # ~2e-6 here
    np.testing.assert_allclose(got, want, rtol=0, atol=bound)


def test_table_is_shared_while_held_and_freed_with_its_last_holder():
    noise = NoiseTable(1000, seed=21, size=TABLE_SIZE)
    assert NoiseTable(5, seed=21, size=TABLE_SIZE).table is noise.table
    assert build_table(21, TABLE_SIZE) is noise.table
    table = weakref.ref(noise.table)
    del noise
    gc.collect()
    assert table() is None


@pytest.mark.parametrize("keep_squares", [True, False], ids=["squares", "in-cache"])
def test_update_memory_is_bounded_and_freed_with_the_noise(monkeypatch, keep_squares):
    if not keep_squares:
        monkeypatch.setattr(noise_mod, "SQUARES_MAX", TABLE_SIZE - 1)
    dim = 70_000
    ids = perturbation_ids(0, 5, SMALL // dim + 3)  # the streamed update
    a = np.linspace(-1, 1, len(ids))
    NoiseTable(dim, seed=1, size=TABLE_SIZE).weighted_sums(ids, a, a, sq_norms=True)  # warm up
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        noise = NoiseTable(dim, seed=23, size=TABLE_SIZE)
        noise.weighted_sums(ids, a, a)  # separable
        noise.weighted_sums(ids, a, None, sq_norms=True)  # isotropic
        held = tracemalloc.get_traced_memory()[0] - start
        del noise
        gc.collect()
        left = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    table = 4 * TABLE_SIZE
    derived = 8 * (TABLE_SIZE // SQ_BLOCK + 1) + (4 * TABLE_SIZE if keep_squares else 0)
    assert table + derived <= held < table + derived + (64 << 10), held - table - derived
    assert left < 64 << 10, (held - table - derived, left)


def test_generator_sums_are_chunked_and_equal_the_dense_reference():
    dim = 50_000
    noise = NoiseGenerator(dim)
    ids = perturbation_ids(0, 0, 2 * (SMALL // dim) + 1)  # three chunks
    a = np.linspace(-1, 1, len(ids))
    got = noise.weighted_sums(ids, a, a, sq_norms=True)
    want = _sums_dense(np.stack([noise.get(int(p)) for p in ids]), a, a, True)
    np.testing.assert_allclose(got.s1, want.s1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.s2, want.s2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.sq_norms, want.sq_norms, rtol=1e-12)


def test_bad_noise_arguments():
    with pytest.raises(ValueError, match="smaller than the dimension"):
        NoiseTable(100, size=50)
    with pytest.raises(ValueError, match="noise kind"):
        make_noise("bogus", 3)
