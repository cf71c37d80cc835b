"""xNES (``distribution="full"``) against closed forms: the antithetic pair sums, the matrix
exponential, gradient estimates on a quadratic, the density, and what the learned covariance
becomes on a rotated ellipsoid."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from esvo.core import Strategy
from esvo.core.distributions import Full, FullParams, Gradients, SigmaBounds, xnes_rate
from esvo.core.distributions.full import fixed_order_matvec, sym_expm
from esvo.core.noise import NoiseGenerator, perturbation_ids
from esvo.core.optimizers import SGD

K = 4.0  # standard errors


def rotation(d, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def random_params(d, seed=0):
    rng = np.random.default_rng(seed)
    b = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    b /= abs(np.linalg.det(b)) ** (1 / d)  # det B = 1
    return FullParams(np.asarray(0.7), b)


def test_pair_sums_equal_the_sums_over_all_2n_samples():
    # G_delta = sum_i u_i s_i, G_M = sum_i u_i (s_i s_i^T - I) over s = +z_k (u_k+), -z_k (u_k-)
    d, n = 5, 7
    noise = NoiseGenerator(d)
    ids = perturbation_ids(3, 0, n)
    rng = np.random.default_rng(1)
    u = rng.standard_normal((n, 2))
    params = random_params(d)
    grads = Full().gradients(params, noise, ids, u[:, 0] - u[:, 1], u[:, 0] + u[:, 1])
    z = np.stack([noise.get(p) for p in ids]).astype(np.float64)
    samples = np.concatenate([z, -z])  # (2n, d)
    utilities = np.concatenate([u[:, 0], u[:, 1]])
    g_delta = utilities @ samples
    g_m = sum(w * (np.outer(s, s) - np.eye(d)) for w, s in zip(utilities, samples, strict=True))
    g_sigma = np.trace(g_m) / d
    np.testing.assert_allclose(grads.mean, params.sigma * params.B @ g_delta, rtol=1e-12)
    np.testing.assert_allclose(grads.log_sigma, g_sigma / 2, rtol=1e-12)
    np.testing.assert_allclose(grads.cov, (g_m - g_sigma * np.eye(d)) / 2, atol=1e-12)


def test_update_is_a_true_matrix_exponential():
    d = 6
    params = random_params(d)
    rng = np.random.default_rng(2)
    g = rng.standard_normal((d, d))
    g = 0.5 * (g + g.T)
    g -= np.trace(g) / d * np.eye(d)  # G_B is symmetric and traceless
    grads = Gradients(np.zeros(d), np.zeros(()), g)
    new, metrics = Full().update(params, grads, 0.0, 0.3, SigmaBounds())
    np.testing.assert_allclose(new.B, params.B @ scipy.linalg.expm(0.3 * g), rtol=1e-12)
    assert metrics["cov_rejected"] == 0
    # not the element-wise exp one library applies there
    assert not np.allclose(new.B, params.B * np.exp(0.3 * g), atol=1e-3)
    assert np.linalg.det(new.B) == pytest.approx(1.0, abs=1e-12)  # traceless: det stays 1
    for dim in (5, 40):  # both of sym_expm's paths
        s = rng.standard_normal((dim, dim))
        s = 0.1 * (s + s.T)
        np.testing.assert_allclose(sym_expm(s), scipy.linalg.expm(s), atol=1e-13)


def test_a_non_finite_shape_is_rejected_and_counted():
    d = 4
    params = random_params(d)
    g = np.full((d, d), np.nan)
    grads = Gradients(np.zeros(d), np.zeros(()), g)
    new, metrics = Full().update(params, grads, 0.0, 0.1, SigmaBounds())
    assert metrics["cov_rejected"] == 1
    np.testing.assert_array_equal(new.B, params.B)


def test_gradient_estimates_of_a_quadratic():
    # maximize f(w) = -1/2 w' H w + g' w at mean m, w = m + A s (A = sigma B): with raw shaping
    # E[G_delta] = A' grad f(m) = A'(g - H m) and E[G_M] = E[f (s s' - I)] = -A' H A.
    d, n = 4, 20_000
    q = rotation(d, 4)
    h = q @ np.diag([1.0, 2.0, 5.0, 0.5]) @ q.T
    g = np.array([1.0, -1.0, 0.5, 2.0])
    mean = np.array([0.3, -0.2, 0.1, 0.4])
    params = random_params(d, 5)
    a_mat = params.sigma * params.B
    es = Strategy(d, maximize=True, distribution="full", num_pairs=n, shaping="raw",
                  noise="generator", seed=6)  # fmt: skip
    ids = es.ask(es.init(mean)).ids
    z = np.stack([es.noise.get(p) for p in ids]).astype(np.float64)
    w = mean + np.stack([z, -z], axis=1) @ a_mat.T  # (n, 2, d)
    f = -0.5 * np.einsum("kid,de,kie->ki", w, h, w) + w @ g
    u = es.utilities(f)
    a, b = u[:, 0] - u[:, 1], u[:, 0] + u[:, 1]
    grads = Full().gradients(params, es.noise, ids, a, b)
    g_delta = np.linalg.solve(params.B, grads.mean / params.sigma)  # g_mean = sigma B G_delta
    g_m = 2 * grads.cov + 2 * grads.log_sigma * np.eye(d)  # G_B + G_sigma I
    # per-pair terms (n times the pair's contribution) give the standard errors
    terms_delta = n * a[:, None] * z
    terms_m = n * b[:, None, None] * (z[:, :, None] * z[:, None, :] - np.eye(d))
    se_delta = terms_delta.std(axis=0) / np.sqrt(n)
    se_m = terms_m.std(axis=0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(g_delta - a_mat.T @ (g - h @ mean)), K * se_delta)
    np.testing.assert_array_less(np.abs(g_m + a_mat.T @ h @ a_mat), K * se_m)


def test_log_density_matches_scipy():
    d = 5
    params = random_params(d, 7)
    z = np.random.default_rng(8).standard_normal((6, d))
    x = params.step(z)
    cov = params.sigma**2 * params.B @ params.B.T
    expect = scipy.stats.multivariate_normal(np.zeros(d), cov).logpdf(x)
    np.testing.assert_allclose(Full().log_density(params, z), expect, rtol=1e-10)


def test_steps_are_bit_identical_alone_batched_and_from_any_memory_offset():
    d = 33
    params = random_params(d, 9)
    z = np.random.default_rng(10).standard_normal((5, d)).astype(np.float32)
    batch = params.step(z)
    np.testing.assert_allclose(batch, params.sigma * z.astype(np.float64) @ params.B.T, rtol=1e-12)
    buf = np.zeros(d + 3, dtype=np.float32)
    for k in range(5):
        buf[3:] = z[k]  # a slice at another alignment, as from a noise table
        assert params.step(buf[3:]).tobytes() == batch[k].tobytes()
    assert fixed_order_matvec(np.eye(3), np.array([1.0, 2.0, 3.0])).tolist() == [1.0, 2.0, 3.0]


def test_defaults_are_the_published_ones():
    d = 10
    es = Strategy(d, maximize=False, distribution="full")
    assert es.sigma_lr == es.cov_lr == pytest.approx((9 + 3 * np.log(d)) / (5 * d * np.sqrt(d)))
    assert es.sigma_lr == xnes_rate(d)
    assert 2 * es.num_pairs in (4 + int(3 * np.log(d)), 5 + int(3 * np.log(d)))
    assert isinstance(es.optimizer, SGD) and es.optimizer.lr == 1.0  # eta_mean = 1


def test_learned_covariance_aligns_with_the_inverse_hessian():
    # rotated ellipsoid d = 10, condition 1e6: near the optimum xNES's Sigma is proportional to
    # H^-1 (the level sets' shape), so H^1/2 Sigma H^1/2 is near a multiple of I.
    d = 10
    q = rotation(d, 11)
    eig = 10.0 ** (6 * np.arange(d) / (d - 1))
    h = q @ np.diag(eig) @ q.T

    def f(w):
        return 0.5 * np.einsum("...i,ij,...j->...", w, h, w)

    es = Strategy(d, maximize=False, distribution="full", sigma_init=1.0, seed=0)
    st = es.init(np.full(d, 3.0))
    while st.best_fitness > 1e-10 and st.generation < 5000:
        ask = es.ask(st)
        st, _ = es.tell(st, ask, f(es.population(st, ask)))
    assert st.best_fitness <= 1e-10
    cov = st.sigma**2 * st.dist.B @ st.dist.B.T
    assert np.allclose(cov, cov.T, atol=1e-12 * np.abs(cov).max())
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    root = q @ np.diag(np.sqrt(eig)) @ q.T
    whitened = np.linalg.eigvalsh(root @ cov @ root)
    # from 1e6: the shape is learned, up to the fluctuation of a covariance estimated from 10
    # samples a generation at rate 0.1 (whitened condition 14 at this seed)
    assert whitened.max() / whitened.min() < 30
    # the condition numbers agree within 3x; the top-m eigenspaces of Sigma and of H^-1 lie
    # within 30 degrees of each other (principal angles; H's eigenvalues are 4.6x apart, so
    # the learned axes may mix neighbours; 6 seeds measured 3-24 degrees)
    vals, vecs = np.linalg.eigh(cov)
    assert 1 / 3 < (vals[-1] / vals[0]) / (eig[-1] / eig[0]) < 3
    for m in range(1, d):
        angles = scipy.linalg.subspace_angles(vecs[:, ::-1][:, :m], q[:, :m])
        assert np.degrees(angles.max()) < 30, (m, np.degrees(angles))
