"""Large-scale least squares: LSMR, the 2-D subspace step, column grouping, sparse
Jacobians (autodiff, finite differences, host matrices and operators).

References are scipy's own functions run in the same process: ``lsmr``,
``solve_trust_region_2d``, ``group_columns``, ``approx_derivative`` and
``least_squares(tr_solver='lsmr')``, and ``jax.jacfwd`` for the sparse autodiff
Jacobian.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from scipy.interpolate import BSpline
from scipy.optimize._lsq.common import solve_trust_region_2d as scipy_trust_region_2d
from scipy.optimize._numdiff import approx_derivative
from scipy.optimize._numdiff import group_columns as scipy_group_columns
from scipy.sparse import csr_matrix, issparse, lil_array
from scipy.sparse import random as sparse_random
from scipy.sparse.linalg import LinearOperator, aslinearoperator
from scipy.sparse.linalg import lsmr as scipy_lsmr

import nlsq
from nlsq.host import NumPyModelWarning
from nlsq.solvers.lsmr import LsmrOptions, lsmr
from nlsq.solvers.sparse import Coloring, colored_difference_jacobian, colored_jvp_jacobian
from nlsq.solvers.subspace import solve_trust_region_2d
from nlsq.sparsity import group_columns, sparsity_pattern
from tests.stopping import assert_same_or_legitimate_status, gradient_test_value

# --------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------


def broyden_np(x):
    f = (3 - x) * x + 1
    f[1:] -= x[:-1]
    f[:-1] -= 2 * x[1:]
    return f


def broyden_jax(x):
    x = jnp.asarray(x)
    f = (3 - x) * x + 1
    f = f.at[1:].add(-x[:-1])
    return f.at[:-1].add(-2 * x[1:])


def broyden_sparse_jac(x):
    n = x.size
    J = lil_array((n, n))
    i = np.arange(n)
    J[i, i] = 3 - 2 * x
    J[i[1:], i[1:] - 1] = -1
    J[i[:-1], i[:-1] + 1] = -2
    return J.tocsr()


def broyden_sparsity(n):
    S = lil_array((n, n), dtype=int)
    i = np.arange(n)
    S[i, i] = 1
    S[i[1:], i[1:] - 1] = 1
    S[i[:-1], i[:-1] + 1] = 1
    return S


def broyden_start(n):
    """scipy's test problem: a perturbed start and bounds around the solution."""
    rng = np.random.default_rng(123440)
    lb = np.linspace(-2, -1.5, n) + 0.1 * rng.standard_normal(n)
    ub = np.linspace(-0.8, 0.0, n) + 0.1 * rng.standard_normal(n)
    x0 = np.clip(-np.ones(n) + 0.1 * rng.standard_normal(n), lb + 1e-3, ub - 1e-3)
    return x0, lb, ub


#: A banded curve fit: log-intensity as a cubic B-spline, y = exp(spline(t)). Each
#: point depends on the 4 coefficients whose basis functions cover it.
SPLINE_DEGREE = 3
N_COEF = 40
KNOTS = np.concatenate(
    [np.zeros(SPLINE_DEGREE), np.linspace(0, 1, N_COEF - SPLINE_DEGREE + 1), np.ones(SPLINE_DEGREE)]
)
T = np.linspace(0, 1, 400)
BASIS = BSpline.design_matrix(T, KNOTS, SPLINE_DEGREE).toarray()
TRUE_COEF = np.sin(np.linspace(0, 6, N_COEF))
Y = np.exp(BASIS @ TRUE_COEF) + 0.01 * np.random.default_rng(0).standard_normal(T.size)


def spline_np(c):
    return np.exp(BASIS @ c) - Y


def spline_jac_np(c):
    return csr_matrix(np.exp(BASIS @ c)[:, None] * BASIS)


BASIS_JAX = jnp.asarray(BASIS)


def spline_jax(c):
    return jnp.exp(BASIS_JAX @ c) - Y


SPLINE_SPARSITY = csr_matrix(BASIS != 0)


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "n", "damp"), [(30, 10, 0.0), (10, 30, 0.5), (60, 20, 1e-2)])
@pytest.mark.parametrize("options", [{}, {"atol": 1e-12, "btol": 1e-12}, {"maxiter": 3}])
def test_lsmr_matches_scipy(x64, m, n, damp, options):
    rng = np.random.default_rng(m + n)
    A = rng.normal(size=(m, n))
    b = rng.normal(size=m)
    expected = scipy_lsmr(A, b, damp=damp, **options)[0]
    solve = jax.jit(
        lambda A, b: lsmr(lambda v: A @ v, lambda u: A.T @ u, b, n, damp, LsmrOptions(**options))
    )
    np.testing.assert_allclose(solve(A, b), expected, rtol=1e-9, atol=1e-12)


def test_lsmr_of_zero_right_hand_side_is_zero(x64):
    A = np.eye(3)
    x = lsmr(lambda v: A @ v, lambda u: A.T @ u, jnp.zeros(3), 3, 0.0, LsmrOptions())
    np.testing.assert_array_equal(x, np.zeros(3))


def test_trust_region_2d_matches_scipy(x64):
    rng = np.random.default_rng(1)
    solve = jax.jit(solve_trust_region_2d)
    for i in range(300):
        M = rng.normal(size=(2, 2))
        # Positive definite, indefinite and singular model matrices.
        B = (M @ M.T, M + M.T, np.outer(M[0], M[0]))[i % 3]
        g = rng.normal(size=2) * 10 ** rng.uniform(-3, 3)
        Delta = 10 ** rng.uniform(-2, 2)
        expected = scipy_trust_region_2d(B, g, Delta)[0]
        np.testing.assert_allclose(solve(B, g, Delta), expected, rtol=1e-9, atol=1e-12 * Delta)


@pytest.mark.parametrize("seed", range(8))
def test_group_columns_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    A = sparse_random(50, 35, density=rng.uniform(0.02, 0.3), random_state=seed)
    np.testing.assert_array_equal(group_columns(A), scipy_group_columns(A))
    np.testing.assert_array_equal(group_columns(A.toarray()), scipy_group_columns(A.toarray()))


def test_groups_share_no_row():
    S = broyden_sparsity(30).toarray() != 0
    groups = group_columns(S)
    for group in np.unique(groups):
        assert (S[:, groups == group].sum(axis=1) <= 1).all()


def _coloring(structure):
    pattern = sparsity_pattern(structure)
    return Coloring(
        jnp.asarray(pattern.rows),
        jnp.asarray(pattern.cols),
        jnp.asarray(pattern.groups),
        pattern.n_groups,
        pattern.shape[0],
    )


def _dense(J):
    dense = np.zeros(J.shape)
    np.add.at(dense, (np.asarray(J.rows), np.asarray(J.cols)), np.asarray(J.values))
    return dense


def test_sparse_autodiff_equals_jacfwd(x64):
    x = np.random.default_rng(2).normal(size=N_COEF)
    jac = jax.jit(colored_jvp_jacobian(spline_jax, _coloring(SPLINE_SPARSITY)))
    np.testing.assert_allclose(_dense(jac(x)), jax.jacfwd(spline_jax)(x), rtol=1e-14, atol=0)
    x = np.linspace(-1, 1, 25)
    jac = jax.jit(colored_jvp_jacobian(broyden_jax, _coloring(broyden_sparsity(25))))
    np.testing.assert_allclose(_dense(jac(x)), jax.jacfwd(broyden_jax)(x), rtol=1e-14, atol=0)


@pytest.mark.parametrize("scheme", ["2-point", "3-point", "cs"])
def test_grouped_differences_match_scipy(x64, scheme):
    from nlsq.finite_diff import difference_steps

    n = 25
    x = np.linspace(-1.5, -0.5, n)
    lb, ub = np.full(n, -1.5), np.full(n, np.inf)
    structure = broyden_sparsity(n)
    bounds = (-np.inf, np.inf) if scheme == "cs" else (lb, ub)
    expected = approx_derivative(
        broyden_np, x, method=scheme, sparsity=structure, bounds=bounds
    ).toarray()

    def steps(x, f0):
        return difference_steps(x, f0, scheme, None, *(bounds if scheme != "cs" else (None, None)))

    jac = colored_difference_jacobian(broyden_jax, _coloring(structure), steps, scheme)
    values = jax.jit(jac)(x, broyden_jax(x))
    # The same steps and formulas; what differs is the rounding of f (XLA may fuse
    # (3 - x) * x + 1), which a difference amplifies by 1 / h_rel: sqrt(eps) for
    # '2-point', eps**(1/3) for '3-point', nothing for 'cs'.
    eps = np.finfo(float).eps
    rtol = {"2-point": 20 * eps**0.5, "3-point": 20 * eps ** (2 / 3), "cs": 1e-13}[scheme]
    np.testing.assert_allclose(_dense(values), expected, rtol=rtol, atol=rtol)


# --------------------------------------------------------------------------------------
# least_squares against scipy
# --------------------------------------------------------------------------------------


#: With a robust loss, LSMR's approximate steps make the path sensitive to rounding:
#: scipy itself needs 10 or 11 evaluations for the cauchy Broyden fit from -1 (trf)
#: depending on whether the same Jacobian is a sparse matrix or a LinearOperator.
ROBUST_NFEV_SLACK = 3


def _compare(res, ref, method, lb, ub, gtol=1e-8, rtol=1e-7, atol=1e-10, nfev_slack=0):
    """Same status (or two convergence stops at a tie), evaluations (up to
    ``nfev_slack``) and solution."""
    J_n = res.jac.toarray() if issparse(res.jac) else res.jac
    J_s = ref.jac.toarray() if issparse(ref.jac) else ref.jac
    assert_same_or_legitimate_status(
        res.status,
        ref.status,
        gradient_test_value(method, res.x, J_n, res.fun, lb, ub),
        gradient_test_value(method, ref.x, J_s, ref.fun, lb, ub),
        gtol,
        method,
    )
    if res.status == ref.status:
        assert abs(res.nfev - ref.nfev) <= nfev_slack
        assert abs(res.njev - ref.njev) <= nfev_slack
    np.testing.assert_allclose(res.x, ref.x, rtol=rtol, atol=atol)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-6, atol=1e-18)


BROYDEN_CASES = [
    {},
    {"x_scale": "jac"},
    {"loss": "soft_l1"},
    {"bounds": "scipy"},
    {"bounds": "scipy", "x_scale": "jac", "loss": "huber"},
    {"tr_options": {"regularize": False}},
    {"tr_options": {"btol": 1e-10, "atol": 1e-10}},
]


@pytest.mark.parametrize("method", ["trf", "dogbox"])
@pytest.mark.parametrize("case", BROYDEN_CASES, ids=str)
def test_broyden_autodiff_sparsity_matches_scipy_lsmr(method, case):
    n = 60
    x0, lb, ub = broyden_start(n)
    kwargs = dict(case)
    if kwargs.pop("bounds", None):
        kwargs["bounds"] = (lb, ub)
    else:
        lb, ub = np.full(n, -np.inf), np.full(n, np.inf)
    if method == "dogbox" and "regularize" in kwargs.get("tr_options", {}):
        pytest.skip("'regularize' is a trf option")
    ref = so.least_squares(broyden_np, x0, jac=broyden_sparse_jac, method=method, **kwargs)
    res = nlsq.least_squares(
        broyden_jax, x0, jac_sparsity=broyden_sparsity(n), method=method, **kwargs
    )
    assert issparse(res.jac)
    slack = ROBUST_NFEV_SLACK if "loss" in kwargs else 0
    _compare(res, ref, method, lb, ub, nfev_slack=slack)


@pytest.mark.parametrize("method", ["trf", "dogbox"])
@pytest.mark.parametrize("scheme", ["2-point", "3-point"])
def test_numpy_model_grouped_differences_match_scipy(method, scheme):
    n = 40
    x0, lb, ub = broyden_start(n)
    S = broyden_sparsity(n)
    ref = so.least_squares(broyden_np, x0, jac=scheme, jac_sparsity=S, method=method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumPyModelWarning)
        res = nlsq.least_squares(broyden_np, x0, jac=scheme, jac_sparsity=S, method=method)
    _compare(res, ref, method, np.full(n, -np.inf), np.full(n, np.inf))


@pytest.mark.parametrize("method", ["trf", "dogbox"])
@pytest.mark.parametrize("kind", ["sparse", "operator"])
def test_numpy_sparse_jacobians_match_scipy(method, kind):
    n = 40
    x0, lb, ub = broyden_start(n)
    if kind == "sparse":
        jac = broyden_sparse_jac
    else:

        def jac(x):
            return aslinearoperator(broyden_sparse_jac(x))

    ref = so.least_squares(broyden_np, x0, jac=jac, method=method, loss="cauchy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumPyModelWarning)
        res = nlsq.least_squares(broyden_np, x0, jac=jac, method=method, loss="cauchy")
    assert isinstance(res.jac, LinearOperator if kind == "operator" else csr_matrix)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-7, atol=1e-9)
    assert res.status == ref.status
    assert abs(res.nfev - ref.nfev) <= ROBUST_NFEV_SLACK
    # The returned operator is the loss-scaled Jacobian at the solution, as scipy's.
    v = np.linspace(-1, 1, n)
    np.testing.assert_allclose(res.jac @ v, ref.jac @ v, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["trf", "dogbox"])
def test_banded_spline_fit_matches_scipy(method):
    c0 = np.zeros(N_COEF)
    ref = so.least_squares(spline_np, c0, jac=spline_jac_np, method=method)
    res = nlsq.least_squares(spline_jax, c0, jac_sparsity=SPLINE_SPARSITY, method=method)
    # Solutions agree to what xtol leaves open, amplified by the approximate steps.
    free = np.full(N_COEF, np.inf)
    _compare(res, ref, method, -free, free, rtol=1e-5, atol=1e-6)


def test_lsmr_on_a_dense_jacobian_matches_scipy():
    n = 30
    x0, lb, ub = broyden_start(n)

    def jac_np(x):
        return broyden_sparse_jac(x).toarray()

    def jac_jax(x):
        return jax.jacfwd(broyden_jax)(x)

    ref = so.least_squares(broyden_np, x0, jac=jac_np, tr_solver="lsmr", bounds=(lb, ub))
    res = nlsq.least_squares(broyden_jax, x0, jac=jac_jax, tr_solver="lsmr", bounds=(lb, ub))
    assert isinstance(res.jac, np.ndarray)
    _compare(res, ref, "trf", lb, ub)


def test_curve_fit_with_jac_sparsity_matches_dense_fit():
    def model(t, *c):
        return jnp.exp(BASIS_JAX @ jnp.asarray(c))

    # Tight tolerances (LSMR's too): both fits then end at the same minimum to
    # rounding, and the covariance of the sparse fit (from J^T J) equals the dense one
    # (from an SVD).
    tight = {"p0": np.zeros(N_COEF), "ftol": 1e-14, "xtol": 1e-14, "gtol": 1e-14}
    lsmr_tight = {"atol": 1e-14, "btol": 1e-14}
    popt, pcov = nlsq.curve_fit(
        model, T, Y, jac_sparsity=SPLINE_SPARSITY, tr_options=lsmr_tight, **tight
    )
    popt_d, pcov_d = nlsq.curve_fit(model, T, Y, **tight)
    np.testing.assert_allclose(popt, popt_d, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pcov, pcov_d, rtol=1e-7, atol=1e-16)


# --------------------------------------------------------------------------------------
# scipy's validation, message for message
# --------------------------------------------------------------------------------------


def _message(call, error):
    with pytest.raises(error) as info:
        call()
    return str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tr_solver": "exact", "jac_sparsity": broyden_sparsity(10)},
        {"jac_sparsity": broyden_sparsity(10)[:-1]},
        {"tr_solver": "lsmr", "tr_options": {"tol": 1e-10}},
        {"method": "lm", "jac_sparsity": broyden_sparsity(10)},
        {"jac": broyden_sparse_jac, "tr_solver": "exact"},
        {"jac": broyden_sparse_jac, "method": "lm"},
        {"jac": lambda x: aslinearoperator(broyden_sparse_jac(x)), "x_scale": "jac"},
    ],
    ids=lambda kwargs: "-".join(sorted(kwargs)),
)
def test_errors_match_scipy(kwargs):
    x0 = -np.ones(10)
    error = TypeError if "tr_options" in kwargs else ValueError
    expected = _message(lambda: so.least_squares(broyden_np, x0, **kwargs), error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumPyModelWarning)
        actual = _message(lambda: nlsq.least_squares(broyden_np, x0, **kwargs), error)
    assert actual == expected


def test_regularize_warns_for_dogbox_as_scipy():
    x0 = -np.ones(10)
    with pytest.warns(UserWarning, match="'regularize' in `tr_options` is not relevant"):
        nlsq.least_squares(
            broyden_jax,
            x0,
            jac_sparsity=broyden_sparsity(10),
            method="dogbox",
            tr_options={"regularize": True},
        )


# --------------------------------------------------------------------------------------
# jac_sparsity='auto': the pattern read from the jaxpr
# --------------------------------------------------------------------------------------


def _mixed(x):
    """Gathers, concatenation, a reduction, max, a product with a known matrix."""
    known = jnp.asarray(np.triu(np.ones((3, 6)), k=2))
    return jnp.concatenate(
        [
            jnp.sin(x[::2]) * x[1::2],
            jnp.array([jnp.sum(x**2)]),
            jnp.maximum(x[:3], x[3:6]),
            known @ x,
            jnp.where(x[:2] > 0, x[4:6], 0.0),
        ]
    )


def test_auto_pattern_is_structural():
    from nlsq.structure import jacobian_sparsity

    for fun, x0, expected in (
        (broyden_jax, -np.ones(30), broyden_sparsity(30)),
        (spline_jax, np.zeros(N_COEF), SPLINE_SPARSITY),
    ):
        found = jacobian_sparsity(fun, x0)
        np.testing.assert_array_equal(found.toarray() != 0, expected.toarray() != 0)
    found = jacobian_sparsity(_mixed, np.ones(6)).toarray() != 0
    expected = np.zeros((12, 6), bool)
    expected[np.arange(3), 2 * np.arange(3)] = expected[np.arange(3), 2 * np.arange(3) + 1] = True
    expected[3] = True
    expected[4 + np.arange(3), np.arange(3)] = expected[4 + np.arange(3), 3 + np.arange(3)] = True
    expected[7:10] = np.triu(np.ones((3, 6)), k=2) != 0
    # where(): both branches count; the condition has no derivative.
    expected[10, 4] = expected[11, 5] = True
    np.testing.assert_array_equal(found, expected)
    # Whatever the point, the Jacobian's nonzeros lie in the pattern.
    for x in np.random.default_rng(3).normal(size=(5, 6)):
        assert not (np.asarray(jax.jacfwd(_mixed)(x)) != 0)[~found].any()


def test_auto_pattern_refuses_what_it_cannot_read():
    from nlsq.structure import StructureError, jacobian_sparsity

    def looped(x):
        return jax.lax.fori_loop(0, 3, lambda i, y: jnp.sin(y), x)

    with pytest.raises(StructureError, match="pass the pattern as `jac_sparsity`"):
        jacobian_sparsity(looped, np.ones(4))


@pytest.mark.parametrize("method", ["trf", "dogbox"])
def test_auto_sparsity_fit_equals_given_pattern(method):
    n = 50
    x0, lb, ub = broyden_start(n)
    given = nlsq.least_squares(
        broyden_jax, x0, jac_sparsity=broyden_sparsity(n), method=method, bounds=(lb, ub)
    )
    auto = nlsq.least_squares(broyden_jax, x0, jac_sparsity="auto", method=method, bounds=(lb, ub))
    assert (auto.status, auto.nfev, auto.njev) == (given.status, given.nfev, given.njev)
    np.testing.assert_array_equal(auto.x, given.x)
    assert auto.jac.nnz == given.jac.nnz


def test_auto_sparsity_of_a_numpy_model_is_refused():
    with (
        warnings.catch_warnings(),
        pytest.raises(ValueError, match="needs a model written with jax.numpy"),
    ):
        warnings.simplefilter("ignore", NumPyModelWarning)
        nlsq.least_squares(broyden_np, -np.ones(5), jac_sparsity="auto")
