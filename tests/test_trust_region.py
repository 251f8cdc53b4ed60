"""Trust-region building blocks of nlsq.solvers.trust_region: hand values and scipy parity.

For a rank-deficient ``J`` the SVD returns the zero singular values as rounding (``3e-17``
with one LAPACK kernel, exactly ``0`` with another), and the step, scipy's and nlsq's
alike, has a component ``-s_i (U^T f)_i / (s_i**2 + alpha)`` along that null direction:
rounding, amplified by the last Newton iterate ``alpha``, which can come close to zero or
pass below it. Hand values for such ``J`` are therefore asserted along the directions the
data determine, and the null-space part through that formula, on every machine.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import scipy.optimize._lsq.common as scipy_common

from nlsq.solvers import trf, trust_region

EPS = float(np.finfo(np.float64).eps)

# n, m, eps, rtol and max_iter are Python values the solver branches on.
solve_lsq_trust_region = jax.jit(
    trust_region.solve_lsq_trust_region, static_argnums=(0, 1, 7, 8, 9)
)
update_tr_radius = jax.jit(trust_region.update_tr_radius)
intersect_trust_region = jax.jit(trust_region.intersect_trust_region)
build_quadratic_1d = jax.jit(trust_region.build_quadratic_1d)
evaluate_quadratic = jax.jit(trust_region.evaluate_quadratic)
minimize_quadratic_1d = jax.jit(trust_region.minimize_quadratic_1d)


pytestmark = pytest.mark.usefixtures("x64")


def f64(*values) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def svd_parts(J: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``uf = U^T f``, ``s`` and ``V`` of the economic SVD of ``J``."""
    U, s, Vt = np.linalg.svd(J, full_matrices=False)
    return U.T @ f, s, Vt.T


def solve(J, f, Delta, initial_alpha=0.0, *tight):
    m, n = J.shape
    uf, s, V = svd_parts(J, f)
    p, alpha = solve_lsq_trust_region(n, m, uf, s, V, Delta, initial_alpha, EPS, *tight)
    return np.asarray(p), float(alpha)


def lm_residual(J: np.ndarray, f: np.ndarray, p: np.ndarray, alpha: float) -> float:
    """Relative residual of ``(J^T J + alpha I) p = -J^T f``."""
    lhs = (J.T @ J + alpha * np.eye(J.shape[1])) @ p
    return np.linalg.norm(lhs + J.T @ f) / np.linalg.norm(J.T @ f)


# A diagonal problem: J^T J = diag(4, 1), J^T f = [2, 1], Gauss-Newton step [-0.5, -1].
J_DIAG = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
F_DIAG = f64(1.0, 1.0, 1.0)
TIGHT = (1e-13, 60)  # rtol, max_iter: iterate the secular equation to convergence


# --- solve_lsq_trust_region ------------------------------------------------------------


def test_gauss_newton_step_inside_the_region():
    p, alpha = solve(J_DIAG, F_DIAG, 2.0, 0.7)
    np.testing.assert_allclose(p, [-0.5, -1.0], rtol=1e-15)
    assert alpha == 0.0


def test_gauss_newton_step_exactly_on_the_radius_is_taken():
    # J = diag(2, 1) (plus a zero row), f = [1.5, 1, 1]: p = [-0.75, -1] has norm 1.25 exactly.
    J, f = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), f64(1.5, 1.0, 1.0)
    p, alpha = solve(J, f, 1.25, 0.7)
    np.testing.assert_array_equal(p, [-0.75, -1.0])
    assert alpha == 0.0


def test_ill_conditioned_jacobian_gets_no_gauss_newton_shortcut():
    # s[-1] = 1e-20 <= eps * m * s[0]: treated as rank deficient, so the step is scaled to
    # the radius (norm 2) instead of returning the Gauss-Newton step [-1, -1] (norm sqrt 2).
    J, f = np.diag([1.0, 1e-20]), f64(1.0, 1e-20)
    p, _ = solve(J, f, 2.0, 0.7)
    assert np.linalg.norm(p) == pytest.approx(2.0, rel=1e-15)
    np.testing.assert_allclose(p, [-2.0, 0.0], atol=1e-15)
    uf, s, V = svd_parts(J, f)
    expected_p, _, _ = scipy_common.solve_lsq_trust_region(2, 2, uf, s, V, 2.0, initial_alpha=0.7)
    np.testing.assert_allclose(p, expected_p, rtol=1e-10, atol=1e-15)


def test_step_on_the_boundary_solves_damped_normal_equations():
    p, alpha = solve(J_DIAG, F_DIAG, 0.5, 0.0, *TIGHT)
    assert np.linalg.norm(p) == pytest.approx(0.5, rel=1e-15)
    assert alpha > 0
    assert lm_residual(J_DIAG, F_DIAG, p, alpha) < 1e-12
    # Componentwise: p = -[2 / (4 + alpha), 1 / (1 + alpha)].
    np.testing.assert_allclose(p, [-2 / (4 + alpha), -1 / (1 + alpha)], rtol=1e-12)


def test_step_on_the_boundary_default_tolerance():
    # scipy's rtol = 0.01 stops early; p is rescaled to the radius, alpha is approximate.
    p, alpha = solve(J_DIAG, F_DIAG, 0.5)
    _, alpha_exact = solve(J_DIAG, F_DIAG, 0.5, 0.0, *TIGHT)
    assert np.linalg.norm(p) == pytest.approx(0.5, rel=1e-15)
    assert alpha == pytest.approx(alpha_exact, rel=0.02)
    assert lm_residual(J_DIAG, F_DIAG, p, alpha) < 0.02


def test_wide_jacobian_hand_values():
    # J = [3, 4], f = 5: p(alpha) = -J^T f / (25 + alpha), ||p|| = 25 / (25 + alpha).
    # Delta = 0.5 -> alpha = 25 and p = -0.5 [0.6, 0.8].
    J, f = np.array([[3.0, 4.0]]), f64(5.0)
    p, alpha = solve(J, f, 0.5, 0.0, *TIGHT)
    np.testing.assert_allclose(p, [-0.3, -0.4], rtol=1e-14)
    assert alpha == pytest.approx(25.0, rel=1e-12)
    p, alpha = solve(J, f, 0.5)
    np.testing.assert_allclose(p, [-0.3, -0.4], rtol=1e-14)
    assert alpha == pytest.approx(25.0, rel=0.02)


def test_wide_jacobian_always_ends_on_the_radius():
    # m < n is never "full rank", so even a radius larger than the minimum-norm step
    # (norm 1 here) returns a step of norm Delta, as scipy does.
    J, f = np.array([[3.0, 4.0]]), f64(5.0)
    p, _ = solve(J, f, 2.0)
    np.testing.assert_allclose(p, [-1.2, -1.6], rtol=1e-14)


def test_rank_deficient_hand_values():
    # J^T J = 4 e e^T with e = [1, 1] / sqrt 2, J^T f = 2 sqrt 2 e:
    # p = -2 sqrt 2 / (4 + alpha) e; Delta = 0.5 -> alpha = 4 sqrt 2 - 4.
    J = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    f = F_DIAG
    p, alpha = solve(J, f, 0.5, 0.0, *TIGHT)
    np.testing.assert_allclose(p, -0.5 / math.sqrt(2) * f64(1, 1), rtol=1e-14)
    assert alpha == pytest.approx(4 * math.sqrt(2) - 4, rel=1e-12)
    assert lm_residual(J, f, p, alpha) < 1e-12
    # No Gauss-Newton shortcut for a rank-deficient J: the step is scaled to the radius,
    # along e up to the null-space part of the module docstring (here 4.5e-7 of the step
    # on AVX-512 machines, 0 where the SVD returns the zero singular value as 0).
    p, alpha = solve(J, f, 3.0)
    assert np.linalg.norm(p) == pytest.approx(3.0, rel=1e-15)
    uf, s, V = svd_parts(J, f)
    along_null = abs(s[1] * uf[1] / (s[1] ** 2 + alpha))
    along_e = abs(s[0] * uf[0] / (s[0] ** 2 + alpha))
    ratio = along_null / along_e
    assert abs(p @ V[:, 1]) == pytest.approx(3.0 * ratio / np.hypot(1, ratio), rel=1e-6, abs=1e-14)
    e = f64(1, 1) / math.sqrt(2)  # (the SVD's sign of V[:, 0] is the kernel's choice)
    assert p @ e == pytest.approx(-3.0 / np.hypot(1, ratio), rel=1e-12)


# The SVD of [[1, 1], [1, 1], [0, 0]] and f = 1 as one LAPACK kernel returns it: the zero
# singular value as 3.35e-17 and U^T f along it as 1.1e-16 (another kernel gives 0, 0).
HALF = math.sqrt(0.5)
S_NOISY, UF_NOISY = f64(2.0, 3.354704451405225e-17), f64(-2 * HALF, 1.1102230246251565e-16)
V_HAND = np.array([[-HALF, HALF], [-HALF, -HALF]])


def test_rank_deficient_step_carries_the_rounding_of_a_zero_singular_value():
    """The 4.5e-7 difference between p[0] and p[1] seen on AVX-512 machines: rounding.

    With the noisy SVD, ten Newton iterations drive alpha to -2.3e-26, below
    -s[1]**2 = -1.1e-33, so the null-space component s[1] uf[1] / (s[1]**2 + alpha) =
    -1.6e-7 next to 0.71 along e, and scipy computes the same step. The component obeys
    that formula exactly; what the data determine (the step along e, the model value)
    equals the exact-zero step's to 1e-12.
    """
    p, alpha = (
        np.asarray(v)
        for v in solve_lsq_trust_region(2, 3, UF_NOISY, S_NOISY, V_HAND, 3.0, 0.0, EPS)
    )
    expected_p, expected_alpha, _ = scipy_common.solve_lsq_trust_region(
        2, 3, UF_NOISY, S_NOISY, V_HAND, 3.0, initial_alpha=0.0
    )
    np.testing.assert_allclose(p, expected_p, rtol=1e-12)
    assert float(alpha) == pytest.approx(expected_alpha, rel=1e-9)
    suf = S_NOISY * UF_NOISY
    unscaled = suf / (S_NOISY**2 + float(alpha))
    np.testing.assert_allclose(p @ V_HAND, -3.0 * unscaled / np.linalg.norm(unscaled), rtol=1e-9)
    assert (p[0] - p[1]) / p[0] == pytest.approx(-4.5466e-7, rel=1e-3)
    exact, _ = solve_lsq_trust_region(
        2, 3, UF_NOISY * f64(1, 0), S_NOISY * f64(1, 0), V_HAND, 3.0, 0.0, EPS
    )
    np.testing.assert_allclose(p @ V_HAND[:, 0], np.asarray(exact) @ V_HAND[:, 0], rtol=1e-12)
    J, f = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]), F_DIAG
    model = np.linalg.norm(J @ p + f)
    assert model == pytest.approx(np.linalg.norm(J @ np.asarray(exact) + f), rel=1e-12)


@pytest.mark.parametrize("shape", [(6, 3), (3, 3), (2, 4), (7, 2)])
def test_solve_lsq_trust_region_matches_scipy(shape):
    m, n = shape
    rng = np.random.default_rng(m * 10 + n)
    for k in range(25):
        J = rng.standard_normal((m, n)) * 10.0 ** rng.uniform(-2, 2)
        if k % 3 == 0:
            J[:, -1] = J[:, 0]  # rank deficient
        f = rng.standard_normal(m)
        uf, s, V = svd_parts(J, f)
        gauss_newton_norm = np.linalg.norm(np.linalg.lstsq(J, f, rcond=None)[0])
        Delta = gauss_newton_norm * rng.uniform(0.05, 1.5)
        initial_alpha = 0.0 if k % 2 == 0 else rng.uniform(0.0, 5.0)
        expected_p, expected_alpha, _ = scipy_common.solve_lsq_trust_region(
            n, m, uf, s, V, Delta, initial_alpha=initial_alpha
        )
        p, alpha = solve_lsq_trust_region(n, m, uf, s, V, Delta, initial_alpha, EPS)
        np.testing.assert_allclose(p, expected_p, rtol=1e-10, atol=1e-12 * Delta)
        np.testing.assert_allclose(float(alpha), expected_alpha, rtol=1e-10)


# --- update_tr_radius ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "predicted", "bound_hit", "expected_Delta", "expected_ratio"),
    [
        (0.1, 1.0, True, 0.25 * 0.8, 0.1),  # ratio < 0.25: shrink to a quarter of the step
        (0.9, 1.0, True, 2.0, 0.9),  # ratio > 0.75 at the boundary: double
        (0.9, 1.0, False, 1.0, 0.9),  # ratio > 0.75 inside: unchanged
        (0.5, 1.0, True, 1.0, 0.5),  # in between: unchanged
        (0.25, 1.0, True, 1.0, 0.25),  # the thresholds are strict
        (0.75, 1.0, True, 1.0, 0.75),
        (0.5, 0.0, True, 0.25 * 0.8, 0.0),  # no predicted reduction: ratio 0
        (-2.0, -1.0, True, 0.25 * 0.8, 0.0),  # not 2: a negative prediction gives ratio 0
        (0.0, 0.0, False, 1.0, 1.0),  # both zero: ratio 1
        (0.0, 0.0, True, 2.0, 1.0),
        (3.0, 2.0, True, 2.0, 1.5),
    ],
)
def test_update_tr_radius_branches(actual, predicted, bound_hit, expected_Delta, expected_ratio):
    Delta, ratio = update_tr_radius(1.0, actual, predicted, 0.8, bound_hit)
    assert float(Delta) == expected_Delta
    assert float(ratio) == expected_ratio


def test_update_tr_radius_nan_reduction_keeps_radius():
    # scipy: NaN ratio fails both comparisons, so Delta is unchanged.
    Delta, ratio = update_tr_radius(1.0, math.nan, 1.0, 0.8, True)
    assert float(Delta) == 1.0
    assert math.isnan(float(ratio))


def test_update_tr_radius_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(100):
        Delta = rng.uniform(0.1, 10.0)
        predicted = rng.choice([0.0, -1.0, 1.0]) * rng.uniform(0.0, 2.0)
        actual = rng.choice([0.0, rng.uniform(-2.0, 2.0)])
        step_norm = rng.uniform(0.0, Delta)
        bound_hit = bool(rng.random() < 0.5)
        expected = scipy_common.update_tr_radius(Delta, actual, predicted, step_norm, bound_hit)
        result = update_tr_radius(Delta, actual, predicted, step_norm, bound_hit)
        np.testing.assert_allclose([float(r) for r in result], expected, rtol=1e-15)


# --- intersect_trust_region ------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "s", "Delta", "expected"),
    [
        (f64(0, 0), f64(1, 0), 2.0, (-2.0, 2.0)),
        (f64(1, 0), f64(1, 0), 2.0, (-3.0, 1.0)),
        (f64(-1, 0), f64(1, 0), 2.0, (-1.0, 3.0)),
        (f64(0, 1), f64(1, 0), math.sqrt(2), (-1.0, 1.0)),  # t**2 + 1 = 2
        (f64(0.6, 0), f64(0, 0.8), 1.0, (-1.0, 1.0)),  # 0.36 + 0.64 t**2 = 1
        (f64(0, 0, 0), f64(0, -2, 0), 1.0, (-0.5, 0.5)),
        (f64(2, 0), f64(-1, 0), 2.0, (0.0, 4.0)),  # x on the sphere
    ],
)
def test_intersect_trust_region_hand_roots(x, s, Delta, expected):
    t1, t2 = intersect_trust_region(x, s, Delta)
    np.testing.assert_allclose([float(t1), float(t2)], expected, rtol=1e-15, atol=1e-15)


def test_intersect_trust_region_degenerate_inputs():
    # scipy raises for s == 0 and for x outside the region. Here s == 0 and a line that
    # misses the sphere give NaN; a line from an outside x that crosses the sphere gives
    # its two real roots (both of one sign) rather than NaN.
    assert all(math.isnan(float(t)) for t in intersect_trust_region(f64(0, 0), f64(0, 0), 1.0))
    assert all(math.isnan(float(t)) for t in intersect_trust_region(f64(3, 0), f64(0, 1), 1.0))
    t1, t2 = intersect_trust_region(f64(3, 0), f64(1, 0), 1.0)
    assert (float(t1), float(t2)) == (-4.0, -2.0)


def test_intersect_trust_region_matches_scipy():
    rng = np.random.default_rng(1)
    for _ in range(100):
        x = rng.standard_normal(3) * rng.uniform(0.0, 1.0)
        s = rng.standard_normal(3) * 10.0 ** rng.uniform(-3, 3)
        Delta = np.linalg.norm(x) * rng.uniform(1.0, 3.0) + 1e-3
        expected = scipy_common.intersect_trust_region(x, s, Delta)
        t1, t2 = intersect_trust_region(x, s, Delta)
        np.testing.assert_allclose([float(t1), float(t2)], expected, rtol=1e-13)
        for t in (float(t1), float(t2)):
            assert np.linalg.norm(x + t * s) == pytest.approx(Delta, rel=1e-12)


# --- build_quadratic_1d / evaluate_quadratic -------------------------------------------

J_Q = np.array([[1.0, 2.0], [3.0, 4.0]])
G_Q = f64(1.0, -1.0)
S_Q = f64(1.0, 1.0)
S0_Q = f64(1.0, 0.0)
DIAG_Q = f64(2.0, 0.0)


def test_evaluate_quadratic_hand_values():
    # J s = [3, 7]: 0.5 * (58 + s.diag.s = 2) + g.s = 0 -> 30
    assert float(evaluate_quadratic(J_Q, G_Q, S_Q, DIAG_Q)) == 30.0
    assert float(evaluate_quadratic(J_Q, G_Q, S_Q)) == 29.0
    # J s0 = [1, 3]: 0.5 * (10 + 2) + 1 -> 7
    assert float(evaluate_quadratic(J_Q, G_Q, S0_Q, DIAG_Q)) == 7.0


def test_build_quadratic_1d_hand_values():
    # q(s0 + t s) = 0.5 ||[1, 3] + t [3, 7]||**2 + (1 + t)**2 + 1 = 30 t**2 + 26 t + 7
    abc = [float(v) for v in build_quadratic_1d(J_Q, G_Q, S_Q, DIAG_Q, S0_Q)]
    assert abc == [30.0, 26.0, 7.0]
    # without diag: 29 t**2 + 24 t + 6; without s0: c = 0 and b = g.s
    abc = [float(v) for v in build_quadratic_1d(J_Q, G_Q, S_Q, None, S0_Q)]
    assert abc == [29.0, 24.0, 6.0]
    abc = [float(v) for v in build_quadratic_1d(J_Q, G_Q, S_Q, DIAG_Q)]
    assert abc == [30.0, 0.0, 0.0]


def test_build_quadratic_1d_is_the_model_along_the_line():
    rng = np.random.default_rng(2)
    for _ in range(20):
        J = rng.standard_normal((5, 3))
        g, s, s0 = rng.standard_normal((3, 3))
        diag = rng.uniform(0.0, 2.0, 3)
        a, b, c = (float(v) for v in build_quadratic_1d(J, g, s, diag, s0))
        for t in (-1.5, 0.0, 0.3, 2.0):
            y = s0 + t * s
            explicit = 0.5 * (J @ y) @ (J @ y) + 0.5 * y @ (diag * y) + g @ y
            assert a * t**2 + b * t + c == pytest.approx(explicit, rel=1e-12, abs=1e-12)
            assert float(evaluate_quadratic(J, g, y, diag)) == pytest.approx(explicit, rel=1e-13)


def test_quadratics_match_scipy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        J = rng.standard_normal((4, 3))
        g, s, s0 = rng.standard_normal((3, 3))
        diag = rng.uniform(0.0, 2.0, 3)
        np.testing.assert_allclose(
            [float(v) for v in build_quadratic_1d(J, g, s, diag, s0)],
            scipy_common.build_quadratic_1d(J, g, s, diag=diag, s0=s0),
            rtol=1e-14,
        )
        np.testing.assert_allclose(
            [float(v) for v in build_quadratic_1d(J, g, s)][:2],
            scipy_common.build_quadratic_1d(J, g, s),
            rtol=1e-14,
        )
        np.testing.assert_allclose(
            float(evaluate_quadratic(J, g, s, diag)),
            scipy_common.evaluate_quadratic(J, g, s, diag=diag),
            rtol=1e-14,
        )


# --- minimize_quadratic_1d -------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "lb", "ub", "c", "expected"),
    [
        (1.0, -2.0, 0.0, 3.0, 5.0, (1.0, 4.0)),  # extremum t = 1 inside
        (1.0, -2.0, 2.0, 3.0, 0.0, (2.0, 0.0)),  # extremum left of the interval
        (1.0, -2.0, -3.0, 0.0, 0.0, (0.0, 0.0)),  # extremum right of the interval
        (1.0, -2.0, 1.0, 3.0, 0.0, (1.0, -1.0)),  # extremum on a bound: not a candidate
        (0.0, 1.0, -1.0, 2.0, 0.0, (-1.0, -1.0)),  # linear
        (0.0, -1.0, -1.0, 2.0, 0.5, (2.0, -1.5)),
        (-1.0, 0.0, -1.0, 2.0, 0.0, (2.0, -4.0)),  # concave: the extremum is a maximum
        (-1.0, 0.0, -1.0, 1.0, 0.0, (-1.0, -1.0)),  # tie between the bounds: lb first
        (0.0, 0.0, -1.0, 1.0, 3.0, (-1.0, 3.0)),  # constant: lb first
        (2.0, 1.0, 0.5, 0.5, 0.0, (0.5, 1.0)),  # degenerate interval
    ],
)
def test_minimize_quadratic_1d_hand_values(a, b, lb, ub, c, expected):
    t, value = minimize_quadratic_1d(a, b, lb, ub, c)
    assert (float(t), float(value)) == expected


def test_minimize_quadratic_1d_default_c_is_zero():
    t, value = minimize_quadratic_1d(1.0, -2.0, 0.0, 3.0)
    assert (float(t), float(value)) == (1.0, -1.0)


def test_minimize_quadratic_1d_matches_scipy():
    rng = np.random.default_rng(4)
    for _ in range(100):
        a = rng.choice([0.0, 1.0, -1.0]) * rng.uniform(0.0, 3.0)
        b = rng.standard_normal()
        lb = rng.uniform(-2.0, 1.0)
        ub = lb + rng.choice([0.0, rng.uniform(0.0, 3.0)])
        c = rng.standard_normal()
        expected = scipy_common.minimize_quadratic_1d(a, b, lb, ub, c=c)
        result = minimize_quadratic_1d(a, b, lb, ub, c)
        np.testing.assert_allclose([float(r) for r in result], expected, rtol=1e-15, atol=1e-15)


def test_solve_lsq_trust_region_under_vmap_matches_scipy():
    # A batch in which some problems stop at once (Gauss-Newton), some after a few Newton
    # iterations and some after many: each must keep its own alpha.
    rng = np.random.default_rng(5)
    m, n, batch = 5, 3, 16
    cases = []
    for k in range(batch):
        J = rng.standard_normal((m, n))
        if k % 4 == 0:
            J[:, -1] = J[:, 0]
        f = rng.standard_normal(m)
        uf, s, V = svd_parts(J, f)
        gauss_newton_norm = np.linalg.norm(np.linalg.lstsq(J, f, rcond=None)[0])
        Delta = gauss_newton_norm * rng.choice([0.01, 0.3, 0.9, 2.0])
        cases.append((uf, s, V, Delta, rng.choice([0.0, 1.0])))
    uf, s, V, Delta, initial_alpha = (np.array(column) for column in zip(*cases, strict=True))
    batched = jax.jit(jax.vmap(lambda *a: trust_region.solve_lsq_trust_region(n, m, *a, EPS)))
    p, alpha = batched(uf, s, V, Delta, initial_alpha)
    for k, case in enumerate(cases):
        expected_p, expected_alpha, _ = scipy_common.solve_lsq_trust_region(
            n, m, *case[:4], initial_alpha=case[4]
        )
        np.testing.assert_allclose(p[k], expected_p, rtol=1e-10, atol=1e-12 * case[3])
        np.testing.assert_allclose(float(alpha[k]), expected_alpha, rtol=1e-10)


# --- the small SVD behind the trust-region subproblem --------------------------------------

svd_of_scaled_jacobian = jax.jit(trf.svd_of_scaled_jacobian)


@pytest.mark.parametrize("with_diag", [False, True], ids=["unbounded", "bounded"])
@pytest.mark.parametrize("n", [3, 10])
def test_svd_of_scaled_jacobian_matches_numpy(with_diag, n):
    rng = np.random.default_rng(n + with_diag)
    m = 20
    J = rng.standard_normal((m, n)) * np.logspace(0, 3, n)
    f = rng.standard_normal(m)
    diag = rng.uniform(0.0, 2.0, n) if with_diag else None
    A, b = J, f
    if with_diag:
        A, b = np.vstack([J, np.diag(np.sqrt(diag))]), np.concatenate([f, np.zeros(n)])
    s, V, uf = (np.asarray(a) for a in svd_of_scaled_jacobian(J, f, diag))
    expected = np.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(s, expected, rtol=1e-13)
    # Quantities free of the singular vectors' signs: A^T b and the least-squares solution.
    np.testing.assert_allclose(
        V @ (s * uf), A.T @ b, rtol=1e-12, atol=1e-12 * np.abs(A.T @ b).max()
    )
    np.testing.assert_allclose(V @ (uf / s), np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-10)
