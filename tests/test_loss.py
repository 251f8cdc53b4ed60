"""Robust losses of nlsq.loss against hand-derived values, autodiff and scipy."""

from __future__ import annotations

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize._lsq.common as scipy_common

from nlsq import loss as loss_module
from nlsq.loss import BUILTIN_LOSSES, arctan, cauchy, huber, resolve_loss, soft_l1

# The loss function is static (Python callable); compiling once per shape keeps this fast.
evaluate_loss = jax.jit(loss_module.evaluate_loss, static_argnums=0)
loss_cost = jax.jit(loss_module.loss_cost, static_argnums=0)
scale_for_robust_loss = jax.jit(loss_module.scale_for_robust_loss, static_argnums=3)

# ``scipy.optimize._lsq.least_squares`` is shadowed by the function of that name.
scipy_least_squares = importlib.import_module("scipy.optimize._lsq.least_squares")

EPS = float(np.finfo(np.float64).eps)
ROBUST = ["huber", "soft_l1", "cauchy", "arctan"]


pytestmark = pytest.mark.usefixtures("x64")


def f64(*values) -> np.ndarray:
    return np.array(values, dtype=np.float64)


# (loss, z, (rho, rho', rho'')) worked out by hand from the formulas.
HAND_VALUES = [
    (huber, 0.25, (0.25, 1.0, 0.0)),
    (huber, 1.0, (1.0, 1.0, 0.0)),  # z <= 1 is the quadratic branch
    (huber, 4.0, (2 * 2 - 1, 1 / 2, -0.5 / 8)),
    (soft_l1, 0.0, (0.0, 1.0, -0.5)),
    (soft_l1, 3.0, (2 * (2 - 1), 1 / 2, -0.5 / 8)),
    (cauchy, 1.0, (math.log(2), 1 / 2, -1 / 4)),
    (cauchy, 3.0, (math.log(4), 1 / 4, -1 / 16)),
    (arctan, 0.0, (0.0, 1.0, 0.0)),
    (arctan, 1.0, (math.pi / 4, 1 / 2, -2 / 4)),
    (arctan, math.sqrt(3), (math.pi / 3, 1 / 4, -2 * math.sqrt(3) / 16)),
]


@pytest.mark.parametrize(("loss", "z", "expected"), HAND_VALUES)
def test_hand_values(loss, z, expected):
    rho = loss(f64(z))
    assert rho.shape == (3, 1)
    np.testing.assert_allclose(np.asarray(rho)[:, 0], expected, rtol=1e-15, atol=1e-300)


def test_vector_input_gives_rows_value_first_second():
    rho = np.asarray(huber(f64(0.25, 4.0)))
    np.testing.assert_array_equal(rho, [[0.25, 3.0], [1.0, 0.5], [0.0, -1 / 16]])


Z_GRID = f64(0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 10.0, 1e3)


@pytest.mark.parametrize("name", ROBUST)
def test_derivatives_match_autodiff(name):
    loss = BUILTIN_LOSSES[name]
    rho = np.asarray(loss(Z_GRID))
    first = jax.jit(jax.vmap(jax.grad(lambda z: loss(z)[0])))(Z_GRID)
    second = jax.jit(jax.vmap(jax.grad(lambda z: loss(z)[1])))(Z_GRID)
    # Finite everywhere, including z = 0 where huber's unused branch would divide by 0.
    assert np.all(np.isfinite(first)) and np.all(np.isfinite(second))
    np.testing.assert_allclose(first, rho[1], rtol=1e-14, atol=1e-300)
    np.testing.assert_allclose(second, rho[2], rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("name", ROBUST)
def test_builtin_losses_match_scipy(name):
    z = np.concatenate([Z_GRID, np.random.default_rng(0).exponential(2.0, 20)])
    expected = np.empty((3, z.size))
    getattr(scipy_least_squares, name)(z, expected, cost_only=False)
    np.testing.assert_allclose(BUILTIN_LOSSES[name](z), expected, rtol=1e-15, atol=1e-300)


def test_resolve_loss():
    assert resolve_loss("linear") is None
    assert resolve_loss("huber") is huber
    assert resolve_loss("soft_l1") is soft_l1
    assert resolve_loss("cauchy") is cauchy
    assert resolve_loss("arctan") is arctan

    def custom(z):
        return jnp.stack([z, jnp.ones_like(z), jnp.zeros_like(z)])

    assert resolve_loss(custom) is custom
    assert set(BUILTIN_LOSSES) == set(scipy_least_squares.IMPLEMENTED_LOSSES)


# --- evaluate_loss / loss_cost ---------------------------------------------------------


def test_evaluate_loss_scales_by_f_scale():
    # f_scale C = 0.5 and f = [1, 0, -0.5] give z = (f / C)**2 = [4, 0, 1].
    f, C = f64(1.0, 0.0, -0.5), 0.5
    rho = np.asarray(evaluate_loss(huber, f, C))
    # huber(z) = [[3, 0, 1], [0.5, 1, 1], [-1/16, 0, 0]]; rho0 * C**2, rho2 / C**2.
    np.testing.assert_array_equal(rho, [[0.75, 0.0, 0.25], [0.5, 1.0, 1.0], [-0.25, 0.0, 0.0]])

    rho = np.asarray(evaluate_loss(soft_l1, f, C))
    expected = [
        [2 * (math.sqrt(5) - 1) / 4, 0.0, 2 * (math.sqrt(2) - 1) / 4],
        [1 / math.sqrt(5), 1.0, 1 / math.sqrt(2)],
        [-0.5 * 5**-1.5 * 4, -0.5 * 4, -0.5 * 2**-1.5 * 4],
    ]
    np.testing.assert_allclose(rho, expected, rtol=1e-15)


def test_evaluate_loss_is_chain_rule_in_f():
    # d/df [rho0] = 2 f rho1 for the scaled rho (C**2 rho(f**2 / C**2)).
    f, C = f64(-3.0, -0.2, 0.4, 2.5), 1.7
    for name in ROBUST:
        loss = BUILTIN_LOSSES[name]
        rho = np.asarray(evaluate_loss(loss, f, C))
        dvalue, dslope = jax.jit(
            jax.vmap(jax.jacfwd(lambda x, loss=loss: loss_module.evaluate_loss(loss, x, C)[:2]))
        )(f).T
        np.testing.assert_allclose(dvalue, 2 * f * rho[1], rtol=1e-14)
        # d/df [rho1] = 2 f / C**2 * rho''(z) = 2 f * scaled rho2
        np.testing.assert_allclose(dslope, 2 * f * rho[2], rtol=1e-14)


def test_loss_cost_hand_value():
    # 0.5 * sum(C**2 * huber([4, 0, 1])[0]) = 0.5 * 0.25 * (3 + 0 + 1) = 0.5
    assert float(loss_cost(huber, f64(1.0, 0.0, -0.5), 0.5)) == 0.5
    # 0.5 * 4 * (log 2 + log 4) for cauchy with C = 2 and f = [2, 2 sqrt 3]
    cost = float(loss_cost(cauchy, f64(2.0, 2 * math.sqrt(3)), 2.0))
    assert cost == pytest.approx(2 * math.log(8), rel=1e-15)


@pytest.mark.parametrize("name", ROBUST)
@pytest.mark.parametrize("f_scale", [0.1, 1.0, 3.0])
def test_evaluate_loss_and_cost_match_scipy(name, f_scale):
    f = np.random.default_rng(1).standard_normal(12) * 2.0
    scipy_loss = scipy_least_squares.construct_loss_function(f.size, name, f_scale)
    expected_rho = scipy_loss(f).copy()
    expected_cost = scipy_loss(f, cost_only=True)
    loss = BUILTIN_LOSSES[name]
    np.testing.assert_allclose(evaluate_loss(loss, f, f_scale), expected_rho, rtol=1e-14)
    assert float(loss_cost(loss, f, f_scale)) == pytest.approx(expected_cost, rel=1e-14)
    rho = np.asarray(evaluate_loss(loss, f, f_scale))
    assert float(loss_cost(loss, f, f_scale)) == pytest.approx(0.5 * rho[0].sum(), rel=1e-14)


def test_callable_loss_matches_scipy():
    def custom(z):
        return jnp.stack([z**2, 2 * z, 2 * jnp.ones_like(z)])

    f = f64(-1.0, 0.5, 2.0)
    scipy_loss = scipy_least_squares.construct_loss_function(3, lambda z: np.array(custom(z)), 2.0)
    np.testing.assert_allclose(evaluate_loss(custom, f, 2.0), scipy_loss(f), rtol=1e-15)
    assert float(loss_cost(custom, f, 2.0)) == pytest.approx(
        scipy_loss(f, cost_only=True), rel=1e-15
    )


# --- scale_for_robust_loss -------------------------------------------------------------


def test_scale_for_robust_loss_identity_for_linear_rho():
    J = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    f = f64(1.0, -2.0, 3.0)
    rho = np.stack([f**2, np.ones(3), np.zeros(3)])
    J_s, f_s = scale_for_robust_loss(J, f, rho, EPS)
    np.testing.assert_array_equal(J_s, J)
    np.testing.assert_array_equal(f_s, f)


def test_scale_for_robust_loss_hand_values():
    # soft_l1, C = 1: f = sqrt(3) -> z = 3, rho1 = 1/2, rho2 = -1/16, w = 1/2 - 2*3/16 = 1/8.
    # cauchy,  C = 1: f = 0.5     -> rho1 = 0.8, rho2 = -0.64, w = 0.8 - 2*0.64*0.25 = 0.48.
    J = np.array([[1.0, 2.0], [3.0, -1.0]])
    f = f64(math.sqrt(3), 0.5)
    rho = np.stack([np.zeros(2), f64(0.5, 0.8), f64(-1 / 16, -0.64)])
    J_s, f_s = scale_for_robust_loss(J, f, rho, EPS)
    w = np.sqrt(f64(1 / 8, 0.48))
    np.testing.assert_allclose(J_s, J * w[:, None], rtol=1e-15)
    np.testing.assert_allclose(f_s, [math.sqrt(6), 0.8 * 0.5 / math.sqrt(0.48)], rtol=1e-15)


def test_scale_for_robust_loss_floors_weights_at_eps():
    # huber with C = 1 beyond z = 1: w = z**-0.5 - z**-1.5 * f**2 = 0 (up to rounding);
    # cauchy at z = 2: w = 1/3 - 2 * 2 / 9 < 0. Both are floored at eps.
    f = f64(3.0, math.sqrt(2))
    rho = np.stack([np.zeros(2), f64(1 / 3, 1 / 3), f64(-0.5 / 27, -1 / 9)])
    J = np.ones((2, 1))
    J_s, f_s = scale_for_robust_loss(J, f, rho, EPS)
    np.testing.assert_array_equal(J_s, np.full((2, 1), math.sqrt(EPS)))
    np.testing.assert_allclose(f_s, rho[1] * f / math.sqrt(EPS), rtol=1e-15)


@pytest.mark.parametrize("name", ROBUST)
def test_scale_for_robust_loss_matches_scipy(name):
    rng = np.random.default_rng(2)
    J = rng.standard_normal((15, 3))
    f = rng.standard_normal(15) * 3.0
    rho = scipy_least_squares.construct_loss_function(15, name, 1.5)(f).copy()
    # scipy scales J and f in place.
    expected_J, expected_f = scipy_common.scale_for_robust_loss_function(
        J.copy(), f.copy(), rho.copy()
    )
    J_s, f_s = scale_for_robust_loss(J, f, rho, EPS)
    np.testing.assert_allclose(J_s, expected_J, rtol=1e-14)
    np.testing.assert_allclose(f_s, expected_f, rtol=1e-14)
