import math

import numpy as np
import pytest

from esvo.core.optimizers import OPTIMIZERS, make_optimizer

G1 = np.array([1.0, -2.0])
G2 = np.array([0.5, 4.0])


def two_steps(opt):
    state = opt.init(2)
    d1, state = opt.step(state, G1)
    d2, state = opt.step(state, G2)
    assert state.step == 2
    return d1, d2


def test_sgd():
    d1, d2 = two_steps(make_optimizer("sgd", lr=0.5))
    np.testing.assert_allclose(d1, [0.5, -1.0])
    np.testing.assert_allclose(d2, [0.25, 2.0])


def test_momentum():
    d1, d2 = two_steps(make_optimizer("momentum", lr=0.1, momentum=0.9))
    np.testing.assert_allclose(d1, [0.1, -0.2])
    # v2 = 0.9 * [1, -2] + [0.5, 4] = [1.4, 2.2]
    np.testing.assert_allclose(d2, [0.14, 0.22])


def test_nesterov():
    d1, d2 = two_steps(make_optimizer("nesterov", lr=0.1, momentum=0.9))
    # v1 = g1; d1 = lr (g1 + 0.9 v1) = 0.1 * 1.9 * g1
    np.testing.assert_allclose(d1, [0.19, -0.38])
    # v2 = [1.4, 2.2]; d2 = 0.1 ([0.5, 4] + 0.9 [1.4, 2.2]) = [0.176, 0.598]
    np.testing.assert_allclose(d2, [0.176, 0.598])


def test_adagrad():
    d1, d2 = two_steps(make_optimizer("adagrad", lr=0.1, eps=0.0))
    np.testing.assert_allclose(d1, [0.1, -0.1])
    np.testing.assert_allclose(d2, [0.1 * 0.5 / math.sqrt(1.25), 0.1 * 4 / math.sqrt(20)])


def test_rmsprop():
    d1, d2 = two_steps(make_optimizer("rmsprop", lr=0.01, rho=0.9, eps=0.0))
    np.testing.assert_allclose(d1, [0.01 / math.sqrt(0.1), -0.02 / math.sqrt(0.4)])
    e2 = np.array([0.9 * 0.1 + 0.1 * 0.25, 0.9 * 0.4 + 0.1 * 16])
    np.testing.assert_allclose(d2, 0.01 * G2 / np.sqrt(e2))


def test_adadelta():
    d1, d2 = two_steps(make_optimizer("adadelta", lr=1.0, rho=0.9, eps=1e-6))
    eg1 = 0.1 * G1**2
    dx1 = np.sqrt(1e-6) / np.sqrt(eg1 + 1e-6) * G1
    np.testing.assert_allclose(d1, dx1)
    ed1 = 0.1 * dx1**2
    eg2 = 0.9 * eg1 + 0.1 * G2**2
    np.testing.assert_allclose(d2, np.sqrt(ed1 + 1e-6) / np.sqrt(eg2 + 1e-6) * G2)


def test_adam():
    d1, d2 = two_steps(make_optimizer("adam", lr=0.01, beta1=0.9, beta2=0.999, eps=0.0))
    # first bias-corrected step is lr * sign(g)
    np.testing.assert_allclose(d1, [0.01, -0.01])
    m = 0.9 * 0.1 * G1 + 0.1 * G2
    v = 0.999 * 0.001 * G1**2 + 0.001 * G2**2
    np.testing.assert_allclose(d2, 0.01 * (m / 0.19) / np.sqrt(v / (1 - 0.999**2)))


def test_clipup():
    d1, d2 = two_steps(make_optimizer("clipup", max_speed=0.2, momentum=0.9))
    # lr = max_speed / 2 = 0.1; v1 = 0.1 g1/|g1|, |v1| = 0.1 <= 0.2
    np.testing.assert_allclose(d1, 0.1 * G1 / np.linalg.norm(G1))
    v2 = 0.9 * d1 + 0.1 * G2 / np.linalg.norm(G2)
    np.testing.assert_allclose(d2, v2)  # |v2| ~ 0.056 < 0.2: not clipped
    # a large lr: the velocity is clipped to max_speed
    opt = make_optimizer("clipup", max_speed=0.2, lr=1.0)
    d, _ = opt.step(opt.init(2), G1)
    assert np.linalg.norm(d) == pytest.approx(0.2)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_step_does_not_mutate_the_old_state(kind):
    opt = make_optimizer(kind)
    s0 = opt.init(2)
    before = {k: v.copy() for k, v in s0.slots.items()}
    opt.step(s0, G1)
    assert s0.step == 0
    for k, v in s0.slots.items():
        np.testing.assert_array_equal(v, before[k])


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("adamw")
