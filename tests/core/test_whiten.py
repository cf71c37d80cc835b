"""``Distribution.whiten`` is the inverse of ``step``: with it a point drawn from one member of a
family gets its density and its gradient terms in another member's frame (importance mixing,
adaptation sampling)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from esvo.core.distributions import make_distribution
from esvo.core.noise import ArrayNoise

D = 6


def random_params(name, rng):
    """Parameters away from their initial shape (a random B or U, unequal sigmas)."""
    dist = make_distribution(name, rank=2)
    if name == "isotropic":
        return dist, dist.init(D, 0.7)
    if name == "separable":
        return dist, dist.init(D, rng.uniform(0.2, 2.0, D))
    params = dist.init(D, 0.7, seed=3)
    if name == "full":
        return dist, type(params)(params.sigma, params.B + 0.3 * rng.standard_normal((D, D)))
    q, _ = np.linalg.qr(rng.standard_normal((D, 2)))  # lowrank keeps U's columns orthogonal
    return dist, type(params)(params.sigma, q * np.array([1.5, 0.4]))


def params_noise_dim(params):
    return D + (params.U.shape[1] if hasattr(params, "U") else 0)


def _cov(params):
    # Sigma = S S^T with S the step's matrix on the noise (columns: step of unit vectors)
    s = np.stack([params.step(e) for e in np.eye(params_noise_dim(params))], axis=1)
    return s @ s.T


@pytest.mark.parametrize("name", ["isotropic", "separable", "full", "lowrank"])
def test_whiten_inverts_step_and_gives_the_density_of_the_point(name):
    rng = np.random.default_rng(0)
    dist, params = random_params(name, rng)
    x = rng.standard_normal((7, D)) * 1.5
    z = dist.whiten(params, x)
    np.testing.assert_allclose(params.step(z), x, rtol=1e-12, atol=1e-12)
    expect = multivariate_normal(np.zeros(D), _cov(params)).logpdf(x)
    np.testing.assert_allclose(dist.log_density(params, z), expect, rtol=1e-10)


@pytest.mark.parametrize("name", ["isotropic", "separable", "full", "lowrank"])
def test_gradients_of_whitened_points_equal_those_of_the_original_noise(name):
    # Noise z and whiten(step(z)) name the same points (for lowrank a different z); the
    # natural-gradient estimates depend on the points only.
    rng = np.random.default_rng(1)
    dist, params = random_params(name, rng)
    z = rng.standard_normal((9, dist.noise_dim(D)))
    a, b = rng.standard_normal(9), rng.standard_normal(9)
    ids = np.arange(9)
    g0 = dist.gradients(params, ArrayNoise(z), ids, a, b)
    g1 = dist.gradients(params, ArrayNoise(dist.whiten(params, params.step(z))), ids, a, b)
    np.testing.assert_allclose(g1.mean, g0.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g1.log_sigma, g0.log_sigma, rtol=1e-9, atol=1e-12)
    if g0.cov is not None:
        np.testing.assert_allclose(g1.cov, g0.cov, rtol=1e-9, atol=1e-12)
