import subprocess
import sys

import numpy as np
import pytest

from esvo.core.noise import (
    SMALL,
    NoiseGenerator,
    NoiseTable,
    _sums_dense,
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
