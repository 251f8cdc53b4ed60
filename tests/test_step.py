"""Step selection of bounded TRF (nlsq.solvers.step) against hand values, a NumPy reference
written from the specification, and scipy's private ``select_step``."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.optimize._lsq.common as scipy_common
import scipy.optimize._lsq.trf as scipy_trf

from nlsq.solvers import step as step_module

_select_step = jax.jit(step_module.select_step)


def select_step(*args):
    # Same dtypes on every call (no weak Python floats), so each shape compiles once.
    return _select_step(*(np.asarray(a, dtype=np.float64) for a in args))


pytestmark = pytest.mark.usefixtures("x64")


def f64(*values) -> np.ndarray:
    return np.array(values, dtype=np.float64)


# --- an independent NumPy reference, written from the specification --------------------


def _to_bound(x, s, lb, ub):
    t = np.full(x.shape, np.inf)
    moving = s != 0
    with np.errstate(over="ignore"):
        t[moving] = np.maximum((lb - x)[moving] / s[moving], (ub - x)[moving] / s[moving])
    t_min = t.min()
    return t_min, np.where(t == t_min, np.sign(s), 0.0)


def _model(J, g, diag, y):
    Jy = J @ y
    return 0.5 * (Jy @ Jy + y @ (diag * y)) + g @ y


def _minimize_on_interval(fun, lo, hi, a):
    """Minimise a quadratic with leading coefficient ``a`` over ``[lo, hi]``."""
    candidates = [lo, hi]
    # The vertex from three samples of the quadratic: f(t) = a t**2 + b t + c.
    if a != 0:
        b = fun(1.0) - fun(0.0) - a
        vertex = -b / (2 * a)
        if lo < vertex < hi:
            candidates.append(vertex)
    values = [fun(t) for t in candidates]
    best = int(np.argmin(values))
    return candidates[best], values[best]


def reference_select_step(x, J_h, diag_h, g_h, p, p_h, d, Delta, lb, ub, theta):
    """Returns ``(step, step_h, predicted_reduction, kind)`` with kind in {"inside", "p",
    "reflected", "cauchy"}."""

    def q(y):
        return _model(J_h, g_h, diag_h, y)

    if np.all((x + p >= lb) & (x + p <= ub)):
        return p, p_h, -q(p_h), "inside"

    p_stride, hits = _to_bound(x, p, lb, ub)
    r_h = np.where(hits != 0, -p_h, p_h)
    p_h = p_stride * p_h
    p = p_stride * p
    x_on_bound = x + p

    # Positive root of ||p_h + t r_h|| = Delta.
    aa, bb, cc = r_h @ r_h, p_h @ r_h, p_h @ p_h - Delta**2
    to_tr = (-bb + np.sqrt(bb**2 - aa * cc)) / aa
    to_bound, _ = _to_bound(x_on_bound, d * r_h, lb, ub)
    r_stride = min(to_bound, to_tr)
    if r_stride > 0:
        lo = (1 - theta) * p_stride / r_stride
        hi = theta * to_bound if r_stride == to_bound else to_tr
    else:
        lo, hi = 0.0, -1.0
    if lo <= hi:
        a = 0.5 * ((J_h @ r_h) @ (J_h @ r_h) + r_h @ (diag_h * r_h))
        t, r_value = _minimize_on_interval(lambda t: q(p_h + t * r_h), lo, hi, a)
        r_h = p_h + t * r_h
    else:
        r_value = np.inf

    p_h = theta * p_h
    p = theta * p
    p_value = q(p_h)

    ag_h = -g_h
    to_tr = Delta / np.linalg.norm(ag_h)
    to_bound, _ = _to_bound(x, d * ag_h, lb, ub)
    upper = theta * to_bound if to_bound < to_tr else to_tr
    a = 0.5 * ((J_h @ ag_h) @ (J_h @ ag_h) + ag_h @ (diag_h * ag_h))
    t, ag_value = _minimize_on_interval(lambda t: q(t * ag_h), 0.0, upper, a)
    ag_h = t * ag_h

    if p_value < r_value and p_value < ag_value:
        return p, p_h, -p_value, "p"
    if r_value < p_value and r_value < ag_value:
        return d * r_h, r_h, -r_value, "reflected"
    return d * ag_h, ag_h, -ag_value, "cauchy"


def random_case(rng: np.random.Generator, m: int, n: int, realistic: bool) -> tuple:
    """Random inputs in a small box, with some infinite bounds.

    ``realistic``: built as the TRF loop builds them (Coleman-Li scaling, a trust-region
    step from the SVD); such steps seldom leave the box. Otherwise ``d``, ``diag_h`` and a
    step of norm at most ``Delta`` are drawn directly, which reaches the bounds often.
    """
    J = rng.standard_normal((m, n))
    f = rng.standard_normal(m) * 3.0
    lb = -rng.uniform(0.01, 1.0, n)
    ub = rng.uniform(0.01, 1.0, n)
    lb[rng.random(n) < 0.15] = -np.inf
    ub[rng.random(n) < 0.15] = np.inf
    lo = np.where(np.isfinite(lb), lb, -1.0)
    hi = np.where(np.isfinite(ub), ub, 1.0)
    x = lo + (hi - lo) * rng.uniform(0.02, 0.98, n)
    g = J.T @ f
    v, dv = scipy_common.CL_scaling_vector(x, g, lb, ub)
    Delta = rng.uniform(0.2, 5.0)
    theta = max(0.995, 1 - np.linalg.norm(g * v, np.inf))
    if realistic:
        d = np.sqrt(v)
        diag_h = g * dv
        J_h = J * d
        g_h = d * g
        A = np.vstack([J_h, np.diag(np.sqrt(diag_h))])
        U, s, Vt = np.linalg.svd(A, full_matrices=False)
        uf = U.T @ np.concatenate([f, np.zeros(n)])
        p_h, _, _ = scipy_common.solve_lsq_trust_region(n, m, uf, s, Vt.T, Delta, 0.0)
    else:
        d = rng.uniform(0.2, 2.0, n)
        diag_h = rng.uniform(0.0, 1.0, n) * (rng.random(n) < 0.5)
        J_h = J * d
        g_h = d * g
        p_h = rng.standard_normal(n)
        p_h *= Delta * rng.uniform(0.3, 1.0) / np.linalg.norm(p_h)
        theta = rng.choice([theta, 0.9])
    return x, J_h, diag_h, g_h, d * p_h, p_h, d, Delta, lb, ub, theta


def assert_step_close(result, expected, rtol=1e-12):
    step, step_h, predicted = (np.asarray(r) for r in result)
    np.testing.assert_allclose(step, expected[0], rtol=rtol, atol=rtol * np.abs(expected[0]).max())
    np.testing.assert_allclose(
        step_h, expected[1], rtol=rtol, atol=rtol * np.abs(expected[1]).max()
    )
    np.testing.assert_allclose(predicted, expected[2], rtol=rtol, atol=1e-15)


# --- hand-derived cases ----------------------------------------------------------------


def test_step_inside_the_box_is_returned_unchanged():
    x, lb, ub = f64(0.5, 0.5), f64(0, 0), f64(1, 1)
    J_h = np.array([[2.0, 0.0], [0.0, 1.0]])
    g_h, diag_h, d = f64(-2, 1), f64(0.5, 0), f64(2, 1)
    p_h = f64(0.1, -0.2)
    p = d * p_h  # x + p = [0.7, 0.3]
    step, step_h, predicted = select_step(x, J_h, diag_h, g_h, p, p_h, d, 1.0, lb, ub, 0.995)
    np.testing.assert_array_equal(step, p)
    np.testing.assert_array_equal(step_h, p_h)
    # -q(p_h) = -(0.5 * (0.2**2 + 0.2**2 + 0.5 * 0.1**2) + (-0.2 - 0.2)) = 0.3575
    assert float(predicted) == pytest.approx(0.3575, rel=1e-15)


def test_step_reaching_the_bound_exactly_counts_as_inside():
    x, lb, ub = f64(0.5), f64(0), f64(1)
    J_h, g_h, diag_h, d = np.eye(1), f64(-1), f64(0), f64(1)
    step, _, predicted = select_step(x, J_h, diag_h, g_h, f64(0.5), f64(0.5), d, 1.0, lb, ub, 0.9)
    np.testing.assert_array_equal(step, [0.5])
    assert float(predicted) == 0.375  # -(0.125 - 0.5)


def test_one_dimensional_step_stops_short_of_the_bound():
    # q(y) = 0.5 y**2 - 2 y, x = 0.5 in [0, 1], trust-region step 2 (Delta = 2).
    # In 1-D the shortened step and the Cauchy step both end at x + theta * (ub - x):
    # y = 0.995 * 0.5 = 0.4975; the reflected step goes back and is worse.
    x, lb, ub = f64(0.5), f64(0), f64(1)
    J_h, g_h, diag_h, d = np.eye(1), f64(-2), f64(0), f64(1)
    args = (x, J_h, diag_h, g_h, f64(2), f64(2), d, 2.0, lb, ub, 0.995)
    step, step_h, predicted = select_step(*args)
    np.testing.assert_allclose(step, [0.4975], rtol=1e-15)
    np.testing.assert_allclose(step_h, [0.4975], rtol=1e-15)
    assert float(predicted) == pytest.approx(-(0.5 * 0.4975**2 - 2 * 0.4975), rel=1e-15)
    assert_step_close((step, step_h, predicted), reference_select_step(*args)[:3])


def test_one_dimensional_scaled_step():
    # d = 0.5: the scaled step 0.4975 / 0.5 = 0.995 corresponds to the same original step.
    x, lb, ub = f64(0.5), f64(0), f64(1)
    J_h, g_h, diag_h, d = np.eye(1) * 0.5, f64(-1), f64(0), f64(0.5)
    p_h = f64(4.0)
    args = (x, J_h, diag_h, g_h, d * p_h, p_h, d, 4.0, lb, ub, 0.995)
    step, step_h, predicted = select_step(*args)
    np.testing.assert_allclose(step, [0.4975], rtol=1e-15)
    np.testing.assert_allclose(step_h, [0.995], rtol=1e-15)
    assert float(predicted) == pytest.approx(-(0.125 * 0.995**2 - 0.995), rel=1e-15)


def two_bound_problem(ub: np.ndarray) -> tuple:
    """q(y) = 0.5 |y|**2 - y1 - y2 (J_h = I, g_h = [-1, -1]); x = 0, lb = -1, p_h = [2, 6],
    Delta = 8, theta = 0.5."""
    x, lb, p_h = f64(0, 0), f64(-1, -1), f64(2, 6)
    J_h, diag_h, g_h, d = np.eye(2), f64(0, 0), f64(-1, -1), f64(1, 1)
    return x, J_h, diag_h, g_h, p_h, p_h, d, 8.0, lb, ub, 0.5


def test_tie_between_shortened_and_cauchy_steps_goes_to_cauchy():
    # p_h = [2, 6] reaches ub = [1, 3] at stride 0.5 in both components; shrunk by theta it is
    # y = [0.5, 1.5] with q = 1.25 - 2 = -0.75. Cauchy: along [1, 1] to theta * 1 = 0.5,
    # y = [0.5, 0.5] with q = 0.25 - 1 = -0.75. The reflected interval is empty
    # (lo = 0.375 > hi = 1/3). Equal values: the Cauchy step wins.
    args = two_bound_problem(ub=f64(1, 3))
    step, step_h, predicted = select_step(*args)
    np.testing.assert_array_equal(step, [0.5, 0.5])
    np.testing.assert_array_equal(step_h, [0.5, 0.5])
    assert float(predicted) == 0.75
    assert reference_select_step(*args)[3] == "cauchy"
    scipy_step, _, scipy_predicted = scipy_trf.select_step(*[np.copy(a) for a in args])
    np.testing.assert_array_equal(scipy_step, [0.5, 0.5])
    assert scipy_predicted == 0.75


def test_strictly_better_shortened_step_is_taken():
    # Same problem with ub = [1, 2.5]: p_h = [2, 6] now stops at stride 5/12 on the second
    # bound; shrunk, y = 0.5 * 5/12 * [2, 6] = [5/12, 5/4], q = -0.799 < -0.75 (Cauchy).
    args = two_bound_problem(ub=f64(1, 2.5))
    step, step_h, predicted = select_step(*args)
    y = f64(5 / 12, 5 / 4)
    np.testing.assert_allclose(step, y, rtol=1e-15)
    np.testing.assert_allclose(step_h, y, rtol=1e-15)
    assert float(predicted) == pytest.approx(-(0.5 * y @ y - y.sum()), rel=1e-15)
    assert reference_select_step(*args)[3] == "p"


def test_tie_between_shortened_and_reflected_steps_goes_to_cauchy():
    # J_h = [[1, 0.5], [0.5, 1]] (J^T J = [[1.25, 1], [1, 1.25]]), g_h = [-2, -1], x = 0 in
    # [-0.5, 0.5] x [-0.5, 2], p_h = [1, 1], Delta = 4, theta = 0.75.
    # Shortened: stride 0.5 (hits [1, 0]), y = 0.375 [1, 1], q = 0.31640625 - 1.125 = -0.80859375.
    # Reflected: r_h = [-1, 1] from [0.5, 0.5], t in [0.125, 0.75], q = 0.25 t**2 + t - 0.9375
    # is increasing: t = 0.125, y = [0.375, 0.625], q = -0.80859375 (the same value).
    # Cauchy: along [2, 1] to 0.75 * 0.25, y = [0.375, 0.1875], q = -0.75732421875.
    # Neither of the tied candidates is strictly best, so the (worse) Cauchy step is taken.
    x, lb, ub = f64(0, 0), f64(-0.5, -0.5), f64(0.5, 2)
    J_h, g_h, diag_h, d = np.array([[1, 0.5], [0.5, 1]]), f64(-2, -1), f64(0, 0), f64(1, 1)
    p_h = f64(1, 1)
    args = (x, J_h, diag_h, g_h, p_h, p_h, d, 4.0, lb, ub, 0.75)
    step, step_h, predicted = select_step(*args)
    np.testing.assert_array_equal(step, [0.375, 0.1875])
    np.testing.assert_array_equal(step_h, [0.375, 0.1875])
    assert float(predicted) == 0.75732421875
    scipy_step, _, scipy_predicted = scipy_trf.select_step(*[np.copy(a) for a in args])
    np.testing.assert_array_equal(scipy_step, [0.375, 0.1875])
    assert scipy_predicted == 0.75732421875


def test_reflected_step_wins():
    # q(y) = 0.5 |y|**2 - 2 y1 - 2 y2 (minimum at [2, 2]); x = 0 in [-0.5, 0.5] x [-1, 1].
    # p_h = [-1, 0.5] meets y1 = -0.5 at stride 0.5 (hits [-1, 0]); reflected direction
    # r_h = [1, 0.5] from [-0.5, 0.25] reaches y1 = 0.5 at t = 1 (before the sphere of radius
    # 4), so t is in [0.25 * 0.5 / 1, 0.75 * 1] = [0.125, 0.75]. Along the line
    # q = 0.625 t**2 - 3.375 t + 0.65625, vertex 2.7 > 0.75: t = 0.75, y = [0.25, 0.625],
    # q = -1.5234375. Shortened: y = 0.75 * [-0.5, 0.25], q = +0.462890625. Cauchy: along
    # [2, 2] to 0.75 * 0.25, y = [0.375, 0.375], q = -1.359375. The reflected step wins.
    x, lb, ub = f64(0, 0), f64(-0.5, -1), f64(0.5, 1)
    J_h, g_h, diag_h, d, p_h = np.eye(2), f64(-2, -2), f64(0, 0), f64(1, 1), f64(-1, 0.5)
    args = (x, J_h, diag_h, g_h, p_h, p_h, d, 4.0, lb, ub, 0.75)
    step, step_h, predicted = select_step(*args)
    np.testing.assert_array_equal(step, [0.25, 0.625])
    np.testing.assert_array_equal(step_h, [0.25, 0.625])
    assert float(predicted) == 1.5234375
    assert reference_select_step(*args)[3] == "reflected"


def test_reflected_step_in_scaled_variables():
    # As above with d = [2, 1]: the returned step is d * step_h; compare with the reference.
    x, lb, ub = f64(0, 0), f64(-0.5, -1), f64(0.5, 1)
    d = f64(2, 1)
    J_h, g_h, diag_h, p_h = np.diag(d), d * f64(-2, -2), f64(0.5, 0), f64(-0.5, 0.5)
    args = (x, J_h, diag_h, g_h, d * p_h, p_h, d, 4.0, lb, ub, 0.75)
    expected = reference_select_step(*args)
    assert expected[3] == "reflected"
    result = select_step(*args)
    np.testing.assert_allclose(np.asarray(result[0]), d * np.asarray(result[1]), rtol=1e-15)
    assert_step_close(result, expected[:3])


# --- the reference, nlsq and scipy on random bounded cases ------------------------------


@pytest.mark.parametrize(("m", "n"), [(1, 1), (2, 2), (5, 2), (3, 4)])
@pytest.mark.parametrize("realistic", [True, False], ids=["trf-inputs", "generic-inputs"])
def test_select_step_matches_reference_and_scipy(m, n, realistic):
    rng = np.random.default_rng(10 * m + n + realistic)
    kinds = dict.fromkeys(["inside", "p", "reflected", "cauchy"], 0)
    for _ in range(40):
        args = random_case(rng, m, n, realistic)
        expected = reference_select_step(*[np.copy(a) for a in args])
        kinds[expected[3]] += 1
        result = select_step(*args)
        assert_step_close(result, expected[:3])
        # scipy scales p and p_h in place.
        assert_step_close(result, scipy_trf.select_step(*[np.copy(a) for a in args]))
    assert kinds["inside"] > 0
    if not realistic:
        assert kinds["p"] + kinds["reflected"] + kinds["cauchy"] >= 10


def test_every_candidate_kind_is_exercised():
    rng = np.random.default_rng(123)
    seen = set()
    for k in range(200):
        args = random_case(rng, 5, 2, realistic=k % 4 == 0)
        expected = reference_select_step(*[np.copy(a) for a in args])
        if expected[3] not in seen:
            seen.add(expected[3])
            assert_step_close(select_step(*args), expected[:3])
    assert seen == {"inside", "p", "reflected", "cauchy"}


def test_select_step_under_vmap_matches_scipy():
    # lax.cond becomes a select under vmap: both branches run for every element.
    rng = np.random.default_rng(7)
    cases = [random_case(rng, 5, 2, realistic=k % 3 == 0) for k in range(24)]
    columns = [np.array(column, dtype=np.float64) for column in zip(*cases, strict=True)]
    step, step_h, predicted = jax.jit(jax.vmap(step_module.select_step))(*columns)
    for k, case in enumerate(cases):
        expected = scipy_trf.select_step(*[np.copy(a) for a in case])
        assert_step_close((step[k], step_h[k], predicted[k]), expected)


def test_select_step_with_the_svd_factor_matches_scipy():
    # TRF passes S V^T of [J_h; diag(sqrt(diag_h))] (n x n, the same Gram matrix) and no
    # diagonal: every quadratic form of the model is unchanged.
    def select_with_factor(x, F, g_h, p, p_h, d, Delta, lb, ub, theta):
        return step_module.select_step(x, F, None, g_h, p, p_h, d, Delta, lb, ub, theta)

    select = jax.jit(select_with_factor)
    rng = np.random.default_rng(17)
    kinds = set()
    for k in range(40):
        args = random_case(rng, 6, 3, realistic=k % 2 == 0)
        x, J_h, diag_h, g_h, p, p_h, d, Delta, lb, ub, theta = args
        _, s, Vt = np.linalg.svd(np.vstack([J_h, np.diag(np.sqrt(diag_h))]), full_matrices=False)
        inputs = (x, s[:, None] * Vt, g_h, p, p_h, d, Delta, lb, ub, theta)
        result = select(*(np.asarray(a, dtype=np.float64) for a in inputs))
        kinds.add(reference_select_step(*[np.copy(a) for a in args])[3])
        assert_step_close(result, scipy_trf.select_step(*[np.copy(a) for a in args]), rtol=1e-11)
    assert {"inside", "cauchy"} <= kinds
