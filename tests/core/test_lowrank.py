"""``distribution="lowrank"`` (covariance sigma^2 (I + U U^T)) against independent references:
R1-NES's published equations (k = 1), the natural gradient computed from the exact Fisher
matrix of the parameters (any k), Monte-Carlo estimates on quadratics, scipy's density."""

import numpy as np
import pytest
import scipy.stats

from esvo.core import Strategy
from esvo.core.distributions import Gradients, LowRank, LowRankParams, SigmaBounds
from esvo.core.noise import NoiseGenerator, NoiseTable, perturbation_ids

K = 4.0  # standard errors


def params_of(d, k, seed=0, sigma=0.6):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return LowRankParams(np.asarray(sigma), q * rng.uniform(0.5, 3.0, k))  # orthogonal columns


def pair_data(d, k, n, seed=1):
    noise = NoiseGenerator(d + k)
    ids = perturbation_ids(seed, 0, n)
    u = np.random.default_rng(seed).standard_normal((n, 2))
    return noise, ids, u[:, 0] - u[:, 1], u[:, 0] + u[:, 1]


def test_rank_one_is_r1nes():
    # Sun et al. (arXiv:1106.1998) eqs. (5)-(6), as in PyBrain's Rank1NES, with w = y + z u:
    # da = sum_i u_i [(|w|^2 - d) - ((v'w)^2 - 1)] / (2 (d - 1))
    # du = sum_i u_i [kappa_i v + (v'w_i / r) w_i],
    # kappa = [(r^2 - d + 2)(v'w)^2 - (r^2 + 1)|w|^2] / (2 r (d - 1)).
    # Both are even in w, so the antithetic pair enters with b_k = u_k+ + u_k-.
    d, n = 7, 9
    params = params_of(d, 1)
    noise, ids, a, b = pair_data(d, 1, n)
    grads = LowRank(1).gradients(params, noise, ids, a, b)
    u = params.U[:, 0]
    r = np.linalg.norm(u)
    v = u / r
    zs = np.stack([noise.get(p) for p in ids]).astype(np.float64)
    w = zs[:, :d] + zs[:, d:] * u  # (n, d)
    ww, wv = np.sum(w * w, axis=1), w @ v
    da = b @ ((ww - d) - (wv**2 - 1)) / (2 * (d - 1))
    kappa = ((r**2 - d + 2) * wv**2 - (r**2 + 1) * ww) / (2 * r * (d - 1))
    du = (b @ kappa) * v + ((b * wv / r) @ w)
    np.testing.assert_allclose(grads.log_sigma, da, rtol=1e-10)
    np.testing.assert_allclose(grads.cov[:, 0], du, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grads.mean, params.sigma * ((a @ zs[:, :d]) + (a @ zs[:, d]) * u))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_update_is_the_natural_gradient_of_the_exact_fisher(k):
    # theta = (log sigma, vec U); Sigma(theta) = sigma^2 (I + U U'). The natural gradient of
    # sum_i u_i log p(x_i | theta) is F^+ grad, F_ij = 1/2 tr(S^-1 dS_i S^-1 dS_j). Compared
    # through the change of Sigma it induces (U has a rotation gauge: parameters differ by it).
    d, n = 6, 11
    params = params_of(d, k, seed=k)
    noise, ids, a, b = pair_data(d, k, n, seed=k + 10)
    grads = LowRank(k).gradients(params, noise, ids, a, b)
    sigma, u = float(params.sigma), params.U
    cov = sigma**2 * (np.eye(d) + u @ u.T)
    inv = np.linalg.inv(cov)
    tangents = [2 * cov]  # d Sigma / d log sigma
    for i in range(d):
        for j in range(k):
            e = np.zeros((d, k))
            e[i, j] = 1.0
            tangents.append(sigma**2 * (e @ u.T + u @ e.T))  # d Sigma / d U_ij
    zs = np.stack([noise.get(p) for p in ids]).astype(np.float64)
    x = params.step(zs)  # (n, d); the -x member has the same outer product
    scatter = (x.T * b) @ x - b.sum() * cov  # sum_i u_i (x_i x_i' - Sigma)
    grad = np.array([0.5 * np.trace(inv @ scatter @ inv @ t) for t in tangents])
    fisher = np.array([[0.5 * np.trace(inv @ s @ inv @ t) for t in tangents] for s in tangents])
    natural = np.linalg.pinv(fisher, rcond=1e-10) @ grad
    reference = sum(c * t for c, t in zip(natural, tangents, strict=True))
    du = grads.cov
    mine = sigma**2 * (2 * grads.log_sigma * (np.eye(d) + u @ u.T) + du @ u.T + u @ du.T)
    np.testing.assert_allclose(mine, reference, rtol=1e-8, atol=1e-10 * np.abs(reference).max())


def test_gradient_estimates_of_a_quadratic():
    # maximize f(x) = -1/2 x' H x + g' x (x = w - mean) with raw shaping: the estimates are
    # unbiased for the natural gradients: Sigma grad f(mean) for the mean, and for the shape
    # the projection (previous test) of xNES's ambient natural gradient, the linear map
    # E[f (x x' - Sigma)] = -Sigma H Sigma. Standard errors from 20 batches of 1,000 pairs.
    d, k, n, batches = 5, 2, 1000, 20
    params = params_of(d, k, seed=4, sigma=0.5)
    rng = np.random.default_rng(5)
    h = np.diag(rng.uniform(0.5, 3.0, d))
    g = rng.standard_normal(d)
    cov = float(params.sigma) ** 2 * (np.eye(d) + params.U @ params.U.T)
    mean_est, shape_est = [], []
    for batch in range(batches):
        es = Strategy(d, maximize=True, distribution=LowRank(k), num_pairs=n, shaping="raw",
                      noise="generator", seed=100 + batch)  # fmt: skip
        ids = es.ask(es.init(np.zeros(d))).ids
        x = params.step(np.stack([es.noise.get(p) for p in ids]))
        xs = np.stack([x, -x], axis=1)
        f = -0.5 * np.einsum("kid,de,kie->ki", xs, h, xs) + xs @ g
        u = es.utilities(f)
        grads = LowRank(k).gradients(params, es.noise, ids, u[:, 0] - u[:, 1], u[:, 0] + u[:, 1])
        du = grads.cov
        u_mat = params.U
        shape = float(params.sigma) ** 2 * (
            2 * grads.log_sigma * (np.eye(d) + u_mat @ u_mat.T) + du @ u_mat.T + u_mat @ du.T
        )
        mean_est.append(grads.mean)
        shape_est.append(shape)
    mean_est, shape_est = np.array(mean_est), np.array(shape_est)
    # the projection of the true ambient natural gradient, through the Fisher as above
    true_ambient = -cov @ h @ cov
    u_mat, sigma = params.U, float(params.sigma)
    inv = np.linalg.inv(cov)
    tangents = [2 * cov] + [
        sigma**2 * (e @ u_mat.T + u_mat @ e.T)
        for e in (np.eye(d * k)[i].reshape(d, k) for i in range(d * k))
    ]
    fisher = np.array([[0.5 * np.trace(inv @ s @ inv @ t) for t in tangents] for s in tangents])
    grad = np.array([0.5 * np.trace(inv @ true_ambient @ inv @ t) for t in tangents])
    natural = np.linalg.pinv(fisher, rcond=1e-10) @ grad
    expect_shape = sum(c * t for c, t in zip(natural, tangents, strict=True))
    se = shape_est.std(axis=0, ddof=1) / np.sqrt(batches)
    assert np.all(np.abs(shape_est.mean(axis=0) - expect_shape) < K * se + 1e-12)
    se_mean = mean_est.std(axis=0, ddof=1) / np.sqrt(batches)
    assert np.all(np.abs(mean_est.mean(axis=0) - cov @ g) < K * se_mean)


def test_log_density_and_samples_match_the_covariance():
    d, k = 6, 2
    params = params_of(d, k, seed=6)
    cov = float(params.sigma) ** 2 * (np.eye(d) + params.U @ params.U.T)
    z = np.random.default_rng(7).standard_normal((200_000, d + k))
    x = params.step(z)
    expect = scipy.stats.multivariate_normal(np.zeros(d), cov).logpdf(x[:5])
    np.testing.assert_allclose(LowRank(k).log_density(params, z[:5]), expect, rtol=1e-10)
    # sample covariance: each entry within 5 standard errors (Var of x_i x_j is S_ii S_jj + S_ij^2)
    emp = x.T @ x / len(x)
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / len(x))
    assert np.all(np.abs(emp - cov) < 5 * se)


def test_update_keeps_orthogonal_columns_and_rejects_non_finite_shapes():
    d, k = 8, 3
    params = params_of(d, k, seed=8)
    noise, ids, a, b = pair_data(d, k, 10, seed=9)
    dist = LowRank(k)
    new, metrics = dist.update(params, dist.gradients(params, noise, ids, a, b), 0.1, 0.1,
                               SigmaBounds())  # fmt: skip
    gram = new.U.T @ new.U
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-12 * gram.max())
    assert metrics["cov_rejected"] == 0 and not np.array_equal(new.U, params.U)
    bad = Gradients(np.zeros(d), np.zeros(()), np.full((d, k), np.inf))
    kept, metrics = dist.update(params, bad, 0.1, 0.1, SigmaBounds())
    assert metrics["cov_rejected"] == 1
    np.testing.assert_array_equal(kept.U, params.U)


def test_shapes_defaults_and_bad_ranks():
    es = Strategy(100, maximize=False, distribution="lowrank", rank=2)
    assert es.noise.dim == 102  # y (d) and c (k)
    assert es.sigma_lr == es.cov_lr == 0.1  # PyBrain's Rank1NES
    assert 2 * es.num_pairs >= max(5, 4 * np.log2(100), 0.2 * 100)
    st = es.init(np.zeros(100))
    np.testing.assert_allclose(st.dist.U.T @ st.dist.U, np.eye(2), atol=1e-12)  # unit, orthogonal
    for rank in (0, 100):
        with pytest.raises(ValueError, match="rank"):
            Strategy(100, maximize=False, distribution="lowrank", rank=rank).init(np.zeros(100))


def test_learns_the_long_axis_of_a_rotated_cigar():
    d = 10
    q, _ = np.linalg.qr(np.random.default_rng(12).standard_normal((d, d)))
    c = np.full(d, 1e4)
    c[0] = 1.0

    def f(w):
        return np.sum(c * (w @ q) ** 2, axis=-1)  # long axis q[:, 0]

    es = Strategy(d, maximize=False, distribution="lowrank", sigma_init=1.0, seed=0)
    st = es.init(np.full(d, 1.0))
    for _ in range(1500):
        ask = es.ask(st)
        st, _ = es.tell(st, ask, f(es.population(st, ask)))
    u = st.dist.U[:, 0]
    assert abs(u @ q[:, 0]) / np.linalg.norm(u) > 0.99
    assert np.linalg.norm(u) > 10  # variance along it grew from 2x towards 1e4x


@pytest.mark.parametrize("k", [1, 3])
def test_streamed_reductions_of_the_table_equal_the_dense_ones(k):
    """NoiseTable.project / combine stream column blocks in float32 (the path above SMALL);
    they must equal float64 sums over the exact slices, and the lowrank gradients built from
    them must equal those from the dense fallback (a noise without project/combine)."""
    d, n = 150_000, 16  # n * (d + k) > noise.SMALL: the streamed path
    table = NoiseTable(d + k, seed=3, size=1 << 22)
    ids = perturbation_ids(5, 2, n)
    rng = np.random.default_rng(0)
    v = np.linalg.qr(rng.standard_normal((d, k)))[0]
    w = rng.standard_normal((n, k + 1))
    y = np.stack([table.get(p)[:d] for p in ids]).astype(np.float64)  # the exact slices

    # float32 accumulation of unit-scale sums: error ~ eps32 * sqrt(d) ~ 2e-5 at most
    tol = np.finfo(np.float32).eps * np.sqrt(d)
    q, yy = table.project(ids, v)
    np.testing.assert_allclose(q, y @ v, rtol=0, atol=tol)
    np.testing.assert_allclose(yy, np.einsum("ij,ij->i", y, y), rtol=1e-12)
    out = table.combine(ids, w, d)
    np.testing.assert_allclose(out, w.T @ y, rtol=0, atol=tol * np.sqrt(n) * 3)

    class Dense:  # the fallback the distribution uses for noises without project/combine
        dim = table.dim

        def get(self, pid):
            return table.get(pid)

    dist = LowRank(k)
    params = dist.init(d, 0.3, seed=1)
    a, b = rng.standard_normal(n), rng.standard_normal(n)
    fast = dist.gradients(params, table, ids, a, b)
    slow = dist.gradients(params, Dense(), ids, a, b)
    np.testing.assert_allclose(fast.mean, slow.mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fast.log_sigma, slow.log_sigma, rtol=1e-6)
    np.testing.assert_allclose(fast.cov, slow.cov, rtol=1e-4, atol=1e-4)


def test_streamed_reductions_do_not_depend_on_the_blas_thread_count():
    """The driver's low-rank passes use BLAS sdot/saxpy on slice blocks: the same bits with one
    BLAS thread as with two, so a run's update does not depend on the driver's thread pool."""
    from threadpoolctl import threadpool_limits

    d, k, n = 150_000, 2, 16
    table = NoiseTable(d + k, seed=3, size=1 << 22)
    ids = perturbation_ids(5, 2, n)
    rng = np.random.default_rng(0)
    v = np.linalg.qr(rng.standard_normal((d, k)))[0]
    w = rng.standard_normal((n, k + 1))
    results = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            results.append((*table.project(ids, v), table.combine(ids, w, d)))
    for one, two in zip(*results, strict=True):
        np.testing.assert_array_equal(one, two)
