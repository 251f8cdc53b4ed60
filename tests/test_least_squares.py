"""Parity of ``nlsq.least_squares`` with ``scipy.optimize.least_squares(method='trf')``.

scipy gets an analytic Jacobian written with NumPy; nlsq gets the same Jacobian written
with ``jax.numpy``, or ``jac=None`` (autodiff, equal to it up to rounding). With the same
Jacobian both run the same iterations, so the stopping reason and the number of function
and Jacobian evaluations must be identical and the solution equal to rounding.

Every model is written once as a factory of the array module (``np`` or ``jnp``) and
instantiated for both libraries at import time, so each nlsq model is compiled once.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq.host import NumPyModelWarning

#: Relative tolerance for ``x`` and ``cost``.
RTOL = 1e-8
#: Absolute floor for components of ``x`` near zero.
X_ATOL = 1e-12


@dataclass(frozen=True)
class Model:
    """A residual function and its Jacobian, for NumPy (scipy) and for jax.numpy (nlsq)."""

    np_fun: Callable
    np_jac: Callable
    jax_fun: Callable
    jax_jac: Callable


def _model(factory: Callable) -> Model:
    np_fun, np_jac = factory(np)
    jax_fun, jax_jac = factory(jnp)
    return Model(np_fun, np_jac, jax_fun, jax_jac)


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


def _rosenbrock(xp):
    def fun(x):
        return xp.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    def jac(x):
        return xp.array([[-20 * x[0], 10.0], [-1.0, 0.0]])

    return fun, jac


def _exponential_decay(xp):
    """``a * exp(-b * t) + c - y``; data passed through ``args``/``kwargs``."""

    def fun(x, t, y):
        return x[0] * xp.exp(-x[1] * t) + x[2] - y

    def jac(x, t, y):
        e = xp.exp(-x[1] * t)
        return xp.stack([e, -x[0] * t * e, xp.ones_like(t)], axis=1)

    return fun, jac


def _two_exponentials(xp):
    def fun(x, t, y):
        return x[0] * xp.exp(-x[1] * t) + x[2] * xp.exp(-x[3] * t) - y

    def jac(x, t, y):
        e1, e2 = xp.exp(-x[1] * t), xp.exp(-x[3] * t)
        return xp.stack([e1, -x[0] * t * e1, e2, -x[2] * t * e2], axis=1)

    return fun, jac


def _sum_only(xp):
    """Residuals depending on ``x0 + x1`` only: the Jacobian has rank 1 everywhere."""

    def fun(x, t, y):
        return xp.exp(-(x[0] + x[1]) * t) - y

    def jac(x, t, y):
        d = -t * xp.exp(-(x[0] + x[1]) * t)
        return xp.stack([d, d], axis=1)

    return fun, jac


def _unused_parameter(xp):
    """``a * exp(-b * t) - y`` with a third parameter that the model ignores (J[:, 2] = 0)."""

    def fun(x, t, y):
        return x[0] * xp.exp(-x[1] * t) + 0.0 * x[2] - y

    def jac(x, t, y):
        e = xp.exp(-x[1] * t)
        return xp.stack([e, -x[0] * t * e, xp.zeros_like(t)], axis=1)

    return fun, jac


def _underdetermined(xp):
    """Two residuals, three variables (m < n)."""

    def fun(x):
        return xp.array([x[0] ** 2 + x[1] ** 2 + x[2] ** 2 - 1, x[0] - x[1] - 0.5])

    def jac(x):
        return xp.array([[2 * x[0], 2 * x[1], 2 * x[2]], [1.0, -1.0, 0.0]])

    return fun, jac


def _logarithm(xp):
    """``log(x) - log(target)``: a long step to x <= 0 makes the residuals non-finite."""

    def fun(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.array([xp.log(x[0]) - np.log(0.01), x[1] - 1.0])

    def jac(x):
        return xp.array([[1 / x[0], 0.0], [0.0, 1.0]])

    return fun, jac


def _two_lines(xp):
    """``[x - 1, x + 1]``: the scipy example where gtol overrides an ftol stop."""

    def fun(x):
        return xp.array([x[0] - 1, x[0] + 1])

    def jac(x):
        return xp.array([[1.0], [1.0]])

    return fun, jac


ROSENBROCK = _model(_rosenbrock)
EXPONENTIAL_DECAY = _model(_exponential_decay)
TWO_EXPONENTIALS = _model(_two_exponentials)
SUM_ONLY = _model(_sum_only)
UNUSED_PARAMETER = _model(_unused_parameter)
UNDERDETERMINED = _model(_underdetermined)
LOGARITHM = _model(_logarithm)
TWO_LINES = _model(_two_lines)


def _power_loss(xp):
    """A callable loss ``rho(z) = 4 ((1 + z)^(1/4) - 1)`` with its two derivatives."""

    def rho(z):
        return xp.stack([4 * ((1 + z) ** 0.25 - 1), (1 + z) ** -0.75, -0.75 * (1 + z) ** -1.75])

    return rho


NP_POWER_LOSS = _power_loss(np)
JAX_POWER_LOSS = _power_loss(jnp)

# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

_rng = np.random.default_rng(1234)
T = np.linspace(0.0, 4.0, 25)
Y = 2.5 * np.exp(-1.3 * T) + 0.5 + 0.02 * _rng.standard_normal(T.size)
Y_OUTLIERS = Y.copy()
Y_OUTLIERS[[3, 10, 17]] += [1.0, -0.8, 1.5]
T2 = np.linspace(0.0, 6.0, 40)
Y2 = 3.0 * np.exp(-2.0 * T2) + 1.0 * np.exp(-0.3 * T2) + 0.005 * _rng.standard_normal(T2.size)
Y_SUM = np.exp(-0.7 * T) + 0.01 * _rng.standard_normal(T.size)


# --------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One ``least_squares`` call; ``status`` documents (and checks) why scipy stops."""

    id: str
    model: Model
    x0: Any
    status: int
    options: dict = field(default_factory=dict)
    autodiff: bool = False
    np_options: dict = field(default_factory=dict)
    jax_options: dict = field(default_factory=dict)


DECAY_X0 = [1.0, 0.5, 0.0]

PROBLEMS = [
    Problem("rosenbrock", ROSENBROCK, [-2.0, 1.0], status=1),
    Problem(
        "rosenbrock-bound-active",
        ROSENBROCK,
        [2.0, 2.0],
        status=2,
        options={"bounds": ([-np.inf, 1.5], np.inf)},
    ),
    Problem(
        "rosenbrock-bounds-object",
        ROSENBROCK,
        [2.0, 2.0],
        status=2,
        options={"bounds": so.Bounds([-np.inf, 1.5], [np.inf, np.inf])},
    ),
    Problem("decay-ftol", EXPONENTIAL_DECAY, DECAY_X0, status=2, options={"args": (T, Y)}),
    Problem(
        "decay-args-and-kwargs-autodiff",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=2,
        options={"args": (T,), "kwargs": {"y": Y}},
        autodiff=True,
    ),
    Problem(
        "decay-loose-ftol",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=2,
        options={"args": (T, Y), "ftol": 1e-3},
    ),
    Problem(
        "decay-xtol",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=3,
        options={"args": (T, Y), "xtol": 1e-3},
    ),
    Problem(
        "decay-gtol",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=1,
        options={"args": (T, Y), "gtol": 1e-3},
    ),
    Problem(
        "decay-ftol-none",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=1,
        options={"args": (T, Y), "ftol": None},
    ),
    Problem(
        "decay-only-xtol",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=3,
        # xtol fires while the cost still falls clearly (an xtol stop at the noise floor of
        # the cost would depend on the last bits of exp()).
        options={"args": (T, Y), "ftol": None, "gtol": None, "xtol": 1e-6},
    ),
    Problem(
        "decay-only-ftol",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=2,
        options={"args": (T, Y), "xtol": None, "gtol": None},
    ),
    Problem(
        "decay-ftol-and-xtol",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=4,
        options={"args": (T, Y), "ftol": 1e-2, "xtol": 1e-2},
    ),
    Problem(
        "decay-max-nfev",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=0,
        options={"args": (T, Y), "max_nfev": 4},
    ),
    Problem(
        "decay-x-scale-array",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=1,
        options={"args": (T, Y), "x_scale": [1.0, 10.0, 0.1]},
    ),
    Problem(
        "decay-lower-bounds",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=2,
        options={"args": (T, Y), "bounds": ([0.0, 0.0, -np.inf], np.inf)},
    ),
    Problem(
        "decay-upper-bound-active",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=2,
        options={"args": (T, Y), "bounds": (-np.inf, [np.inf, np.inf, 0.45])},
    ),
    Problem(
        "decay-box-bounds-active",
        EXPONENTIAL_DECAY,
        [1.0, 0.5, 0.8],
        status=1,
        options={"args": (T, Y), "bounds": ([0.0, 0.0, 0.6], [3.0, 1.2, 1.0])},
    ),
    Problem(
        "decay-box-x-scale-jac",
        EXPONENTIAL_DECAY,
        [1.0, 0.5, 0.8],
        status=1,
        options={"args": (T, Y), "bounds": ([0.0, 0.0, 0.6], [3.0, 1.2, 1.0]), "x_scale": "jac"},
    ),
    Problem(
        "decay-callable-loss",
        EXPONENTIAL_DECAY,
        DECAY_X0,
        status=2,
        options={"args": (T, Y_OUTLIERS), "f_scale": 0.1},
        np_options={"loss": NP_POWER_LOSS},
        jax_options={"loss": JAX_POWER_LOSS},
    ),
    Problem(
        "two-exponentials",
        TWO_EXPONENTIALS,
        [1.0, 1.0, 2.0, 0.1],
        status=1,
        options={"args": (T2, Y2)},
    ),
    Problem(
        "rank-deficient-zero-column",
        UNUSED_PARAMETER,
        [1.0, 0.5, 1.0],
        status=2,
        options={"args": (T, Y)},
    ),
    Problem("m-less-than-n", UNDERDETERMINED, [1.0, 1.0, 1.0], status=1),
    Problem(
        "m-less-than-n-bounded",
        UNDERDETERMINED,
        [1.0, 1.0, 1.0],
        status=1,
        options={"bounds": ([0.5, -np.inf, 0.0], np.inf)},
    ),
    Problem("nonfinite-trial-step", LOGARITHM, [10.0, 3.0], status=1),
    Problem("gtol-overrides-ftol", TWO_LINES, [0.1], status=1, options={"ftol": 0.1}),
    Problem(
        "ftol-without-gtol",
        TWO_LINES,
        [0.1],
        status=2,
        options={"ftol": 0.1, "gtol": None},
    ),
]

LOSSES = ["linear", "soft_l1", "huber", "cauchy", "arctan"]
for _loss in LOSSES:
    for _f_scale in (1.0, 0.1):
        PROBLEMS.append(
            Problem(
                f"decay-{_loss}-f_scale={_f_scale}",
                EXPONENTIAL_DECAY,
                DECAY_X0,
                status=2,
                options={"args": (T, Y_OUTLIERS), "loss": _loss, "f_scale": _f_scale},
            )
        )
PROBLEMS.append(
    Problem(
        "decay-cauchy-bounded",
        EXPONENTIAL_DECAY,
        [1.0, 0.5, 0.3],
        status=1,
        options={
            "args": (T, Y_OUTLIERS),
            "loss": "cauchy",
            "f_scale": 0.2,
            "bounds": ([0.0, 0.0, 0.0], [5.0, 5.0, 0.45]),
        },
    )
)


def _run_scipy(problem: Problem, **extra: Any) -> so.OptimizeResult:
    return so.least_squares(
        problem.model.np_fun,
        problem.x0,
        jac=problem.model.np_jac,
        method="trf",
        **problem.options,
        **problem.np_options,
        **extra,
    )


def _run_nlsq(problem: Problem, **extra: Any) -> so.OptimizeResult:
    return nlsq.least_squares(
        problem.model.jax_fun,
        problem.x0,
        jac=None if problem.autodiff else problem.model.jax_jac,
        **problem.options,
        **problem.jax_options,
        **extra,
    )


def assert_same_result(actual: so.OptimizeResult, expected: so.OptimizeResult) -> None:
    """Same stopping reason and evaluation counts; same solution up to rounding."""
    assert actual.status == expected.status
    assert actual.message == expected.message
    assert actual.success == expected.success
    assert actual.nfev == expected.nfev
    assert actual.njev == expected.njev
    np.testing.assert_allclose(actual.x, expected.x, rtol=RTOL, atol=X_ATOL)
    np.testing.assert_allclose(actual.cost, expected.cost, rtol=RTOL, atol=1e-20)
    fun_scale = max(1.0, float(np.max(np.abs(expected.fun))))
    np.testing.assert_allclose(actual.fun, expected.fun, rtol=RTOL, atol=1e-10 * fun_scale)
    jac_scale = max(1.0, float(np.max(np.abs(expected.jac))))
    np.testing.assert_allclose(actual.jac, expected.jac, rtol=1e-7, atol=1e-10 * jac_scale)
    # The gradient vanishes at the solution: compare it on the scale of |J| |f|.
    grad_atol = 1e-9 * jac_scale * fun_scale
    np.testing.assert_allclose(actual.grad, expected.grad, rtol=1e-6, atol=grad_atol)
    np.testing.assert_allclose(actual.optimality, expected.optimality, rtol=1e-6, atol=grad_atol)
    np.testing.assert_array_equal(actual.active_mask, expected.active_mask)
    assert actual.x.dtype == np.float64
    assert actual.fun.shape == expected.fun.shape
    assert actual.jac.shape == expected.jac.shape


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_parity_with_scipy(problem: Problem) -> None:
    expected = _run_scipy(problem)
    assert expected.status == problem.status, "the scenario no longer tests what it says"
    assert_same_result(_run_nlsq(problem), expected)


def test_nonfinite_trial_step_happens_in_scipy() -> None:
    """The non-finite scenario really sends scipy to a point where the residuals are NaN/inf."""
    nonfinite = []

    def counting_fun(x):
        f = LOGARITHM.np_fun(x)
        nonfinite.append(not np.all(np.isfinite(f)))
        return f

    problem = next(p for p in PROBLEMS if p.id == "nonfinite-trial-step")
    result = so.least_squares(counting_fun, problem.x0, jac=LOGARITHM.np_jac, method="trf")
    assert result.success
    assert any(nonfinite)
    assert_same_result(_run_nlsq(problem), result)


def test_rank_deficient_sum_only() -> None:
    """Residuals depending on ``x0 + x1`` only: J = [d, d] has rank 1 in exact arithmetic.

    Its computed second singular value is rounding noise, and so is the part of each
    trust-region step along the null direction (1, -1): the split of ``x0 + x1`` between
    ``x0`` and ``x1`` is decided by the last bits of J. scipy's own answer moves from
    x = (3.72, -3.03) to (1.68, -0.99) when ``exp(-(x0 + x1) t)`` is computed as
    ``exp(-x0 t - x1 t)``, and its path, so its status and counts, moves with it: on
    another CPU, or between scipy's and nlsq's arithmetic, the two may take different
    paths to the same fit. Both must stop converged, and everything the data determine
    must agree to what the stopping tests leave unresolved.
    """
    problem = Problem(
        "rank-deficient",
        SUM_ONLY,
        [0.3, 0.2],
        status=1,
        options={"args": (T, Y_SUM)},
    )
    expected = _run_scipy(problem)
    actual = _run_nlsq(problem)
    assert expected.status in (1, 2, 3, 4) and actual.status in (1, 2, 3, 4)
    # Two converged stops are as far apart as ftol (the default 1e-8) leaves: in the
    # space of predictions 2 sqrt(ftol) ||f||, with a factor 10 of slack (the fuzz rule).
    ftol = 1e-8
    f_norm = np.linalg.norm(expected.fun)
    bound = 20 * np.sqrt(ftol) * f_norm
    assert np.linalg.norm(actual.fun - expected.fun) <= bound
    d = np.linalg.norm(expected.jac[:, 0])  # J = [d, d]: predictions move by d * sum
    assert abs(actual.x.sum() - expected.x.sum()) * d <= bound
    np.testing.assert_allclose(actual.cost, expected.cost, rtol=10 * ftol)
    # Within a relative cost delta of the minimum, ||g|| <= ||J|| ||f|| sqrt(delta).
    g_bound = np.linalg.norm(expected.jac) * f_norm * np.sqrt(10 * ftol)
    assert max(np.linalg.norm(actual.grad), np.linalg.norm(expected.grad)) <= g_bound


@pytest.mark.parametrize("problem_id", ["rosenbrock", "rosenbrock-bound-active"])
def test_result_fields_and_types_match_scipy(problem_id: str) -> None:
    """Same fields; arrays with scipy's dtypes (scipy's unbounded active_mask is float)."""
    problem = next(p for p in PROBLEMS if p.id == problem_id)
    expected, actual = _run_scipy(problem), _run_nlsq(problem)
    assert sorted(actual.keys()) == sorted(expected.keys())
    for key in ("x", "fun", "jac", "grad", "active_mask"):
        assert type(actual[key]) is np.ndarray, key
        assert actual[key].dtype == expected[key].dtype, key
    for key in ("cost", "optimality"):
        assert isinstance(actual[key], float), key
    for key in ("nfev", "njev", "status"):
        assert type(actual[key]) is int, key
    assert type(actual.success) is bool


def test_active_mask_reports_bounds() -> None:
    problem = next(p for p in PROBLEMS if p.id == "decay-box-bounds-active")
    result = _run_nlsq(problem)
    np.testing.assert_array_equal(result.active_mask, [0, 1, -1])
    np.testing.assert_allclose(result.x[1:], [1.2, 0.6])


def test_gtol_overrides_ftol_counts() -> None:
    """scipy's documented corner: status 1 with default gtol, 2 without; 2 fev, 2 jev."""
    for gtol, status in ((1e-8, 1), (None, 2)):
        result = nlsq.least_squares(
            TWO_LINES.jax_fun, 0.1, jac=TWO_LINES.jax_jac, ftol=0.1, gtol=gtol
        )
        assert (result.status, result.nfev, result.njev) == (status, 2, 2)


def test_new_data_same_program_still_matches() -> None:
    """Data passed through ``args`` is an input of the compiled program, not a constant."""
    problem = next(p for p in PROBLEMS if p.id == "decay-ftol")
    for y in (Y, Y_OUTLIERS, 2 * Y):
        options = dict(problem.options, args=(T, y))
        expected = so.least_squares(
            EXPONENTIAL_DECAY.np_fun, problem.x0, jac=EXPONENTIAL_DECAY.np_jac, **options
        )
        actual = nlsq.least_squares(
            EXPONENTIAL_DECAY.jax_fun, problem.x0, jac=EXPONENTIAL_DECAY.jax_jac, **options
        )
        assert_same_result(actual, expected)


# --------------------------------------------------------------------------------------
# verbose
# --------------------------------------------------------------------------------------

# verbose is a static option (each level is its own program): a few cases only.
VERBOSE_CASES = [
    ("rosenbrock", 1),
    ("decay-box-bounds-active", 2),
    ("nonfinite-trial-step", 2),
]


@pytest.mark.parametrize(
    ("problem", "verbose"),
    [(next(p for p in PROBLEMS if p.id == name), v) for name, v in VERBOSE_CASES],
    ids=[f"{name}-verbose={v}" for name, v in VERBOSE_CASES],
)
def test_verbose_output_matches_scipy(problem: Problem, verbose: int, capsys) -> None:
    _run_scipy(problem, verbose=verbose)
    expected = capsys.readouterr().out.splitlines()
    _run_nlsq(problem, verbose=verbose)
    actual = capsys.readouterr().out.splitlines()
    assert len(expected) >= 2
    assert actual == expected


def test_verbose_zero_prints_nothing(capsys) -> None:
    _run_nlsq(PROBLEMS[0])
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------------------
# Invalid input: scipy's exception type and message
# --------------------------------------------------------------------------------------


def _two_d(xp):
    def fun(x):
        return xp.stack([x, x])

    def jac(x):
        return xp.ones((4, 2))

    return fun, jac


def _wrong_jac_shape(xp):
    def fun(x):
        return xp.array([x[0] - 1, x[1] - 2])

    def jac(x):
        return xp.ones((2, 3))

    return fun, jac


def _wrong_loss(xp):
    # Four rows: scipy checks the shape only after it has scaled rows 0 and 2 (with two
    # rows it fails with an IndexError).
    def rho(z):
        return xp.stack([z, xp.ones_like(z), xp.zeros_like(z), xp.zeros_like(z)])

    return rho


TWO_D = _model(_two_d)
WRONG_JAC_SHAPE = _model(_wrong_jac_shape)
NP_WRONG_LOSS = _wrong_loss(np)
JAX_WRONG_LOSS = _wrong_loss(jnp)


@dataclass(frozen=True)
class BadCall:
    id: str
    model: Model = ROSENBROCK
    x0: Any = (2.0, 2.0)
    options: dict = field(default_factory=dict)
    np_options: dict = field(default_factory=dict)
    jax_options: dict = field(default_factory=dict)


BAD_CALLS = [
    BadCall("method", options={"method": "newton"}),
    BadCall("loss", options={"loss": "l1"}),
    BadCall("verbose", options={"verbose": 3}),
    BadCall("max_nfev-zero", options={"max_nfev": 0}),
    BadCall("max_nfev-negative", options={"max_nfev": -5}),
    BadCall("x0-complex", x0=[1.0 + 1j, 2.0]),
    BadCall("x0-2d", x0=[[1.0, 2.0], [3.0, 4.0]]),
    BadCall("bounds-3-elements", options={"bounds": (0.0, 1.0, 2.0)}),
    BadCall("bounds-shape", options={"bounds": ([0.0, 0.0, 0.0], [3.0, 3.0, 3.0])}),
    BadCall("bounds-object-shape", options={"bounds": so.Bounds([0.0, 0.0, 0.0], 3.0)}),
    BadCall("lb-equals-ub", options={"bounds": ([0.0, 2.0], [3.0, 2.0])}),
    BadCall("lb-above-ub", options={"bounds": ([0.0, 4.0], [3.0, 3.0])}),
    BadCall("x0-below-lb", options={"bounds": ([2.5, 0.0], [3.0, 3.0])}),
    BadCall("x0-above-ub", options={"bounds": (-np.inf, [np.inf, 1.0])}),
    BadCall("x_scale-negative", options={"x_scale": -1.0}),
    BadCall("x_scale-zero-entry", options={"x_scale": [1.0, 0.0]}),
    BadCall("x_scale-nan", options={"x_scale": [1.0, np.nan]}),
    BadCall("x_scale-string", options={"x_scale": "auto"}),
    BadCall("x_scale-shape", options={"x_scale": [1.0, 2.0, 3.0]}),
    BadCall("all-tolerances-none", options={"ftol": None, "xtol": None, "gtol": None}),
    BadCall("fun-2d", model=TWO_D),
    BadCall("nonfinite-at-x0", model=LOGARITHM, x0=(0.0, 3.0)),
    BadCall("jac-wrong-shape", model=WRONG_JAC_SHAPE),
    BadCall(
        "loss-wrong-shape",
        np_options={"loss": NP_WRONG_LOSS},
        jax_options={"loss": JAX_WRONG_LOSS},
    ),
]


def _scipy_error(call: BadCall) -> Exception:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            so.least_squares(
                call.model.np_fun,
                call.x0,
                jac=call.model.np_jac,
                **call.options,
                **call.np_options,
            )
        except Exception as error:  # noqa: BLE001 - we want scipy's exception, whatever it is
            return error
    raise AssertionError("scipy accepted the call")


@pytest.mark.parametrize("call", BAD_CALLS, ids=lambda c: c.id)
def test_invalid_input_raises_like_scipy(call: BadCall) -> None:
    expected = _scipy_error(call)
    with pytest.raises(type(expected)) as excinfo:
        nlsq.least_squares(
            call.model.jax_fun,
            call.x0,
            jac=call.model.jax_jac,
            **call.options,
            **call.jax_options,
        )
    assert str(excinfo.value) == str(expected)


MODEL_ERRORS = [c for c in BAD_CALLS if c.id in ("fun-2d", "loss-wrong-shape")]


@pytest.mark.parametrize("call", MODEL_ERRORS, ids=lambda c: c.id)
def test_invalid_model_raises_like_scipy_with_autodiff(call: BadCall) -> None:
    expected = _scipy_error(call)
    with pytest.raises(type(expected)) as excinfo:
        nlsq.least_squares(call.model.jax_fun, call.x0, **call.options, **call.jax_options)
    assert str(excinfo.value) == str(expected)


def test_invalid_model_raises_again_on_second_call() -> None:
    """A failed trace must not leave a broken program in the cache."""
    call = next(c for c in BAD_CALLS if c.id == "nonfinite-at-x0")
    for _ in range(2):
        with pytest.raises(ValueError, match="Residuals are not finite in the initial point."):
            nlsq.least_squares(call.model.jax_fun, call.x0, jac=call.model.jax_jac)


def _scipy_warnings(**tolerances: Any) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            so.least_squares(ROSENBROCK.np_fun, [2.0, 2.0], jac=ROSENBROCK.np_jac, **tolerances)
        except ValueError:
            pass
    return caught


@pytest.mark.parametrize("name", ["ftol", "xtol", "gtol"])
def test_one_tolerance_below_eps_warns_like_scipy(name: str) -> None:
    (expected,) = _scipy_warnings(**{name: 1e-20})
    with pytest.warns(expected.category, match=f"^{re.escape(str(expected.message))}$") as record:
        result = nlsq.least_squares(
            ROSENBROCK.jax_fun, [2.0, 2.0], jac=ROSENBROCK.jax_jac, **{name: 1e-20}
        )
    assert len(record) == 1
    assert issubclass(expected.category, UserWarning)
    assert result.success


@pytest.mark.parametrize("tol", [1e-20, 0.0], ids=["tiny", "zero"])
def test_all_tolerances_below_eps_warn_then_raise_like_scipy(tol: float) -> None:
    tolerances = {"ftol": tol, "xtol": tol, "gtol": tol}
    expected_warnings = _scipy_warnings(**tolerances)
    assert len(expected_warnings) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            so.least_squares(ROSENBROCK.np_fun, [2.0, 2.0], jac=ROSENBROCK.np_jac, **tolerances)
        except ValueError as error:
            message = str(error)
    with (
        pytest.warns(UserWarning) as record,
        pytest.raises(ValueError, match=f"^{re.escape(message)}$"),
    ):
        nlsq.least_squares(ROSENBROCK.jax_fun, [2.0, 2.0], jac=ROSENBROCK.jax_jac, **tolerances)
    assert [str(w.message) for w in record] == [str(w.message) for w in expected_warnings]


# --------------------------------------------------------------------------------------
# tr_solver='lsmr' on a small dense problem (sparse problems: tests/test_sparse.py)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["trf", "dogbox"])
def test_lsmr_on_rosenbrock_matches_scipy(method: str) -> None:
    ref = so.least_squares(
        ROSENBROCK.np_fun, [2.0, 2.0], jac=ROSENBROCK.np_jac, method=method, tr_solver="lsmr"
    )
    res = nlsq.least_squares(
        ROSENBROCK.jax_fun, [2.0, 2.0], jac=ROSENBROCK.jax_jac, method=method, tr_solver="lsmr"
    )
    assert res.status == ref.status
    assert (res.nfev, res.njev) == (ref.nfev, ref.njev)
    np.testing.assert_allclose(res.x, ref.x, rtol=RTOL, atol=X_ATOL)


# --------------------------------------------------------------------------------------
# Sparse Jacobians where scipy refuses them: scipy's errors, in scipy's order
# --------------------------------------------------------------------------------------


def _sparse_trivial(kind: str):
    """``f(x) = x**2 + 5`` (scipy's ``fun_trivial``) with a sparse or operator ``jac``."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import aslinearoperator

    def fun(x):
        return np.atleast_1d(x**2 + 5.0)

    def jac(x):
        dense = np.atleast_2d(2.0 * np.asarray(x))
        return csr_matrix(dense) if kind == "sparse" else aslinearoperator(dense)

    return fun, jac


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("sparse", {"method": "lm"}),
        ("operator", {"method": "lm"}),
        ("sparse", {"method": "trf", "tr_solver": "exact"}),
        ("operator", {"method": "dogbox", "tr_solver": "exact"}),
        ("operator", {"method": "trf", "x_scale": "jac"}),
        (None, {"method": "lm", "jac_sparsity": [1]}),
        (None, {"method": "trf", "tr_solver": "exact", "jac_sparsity": [[1]]}),
    ],
    ids=lambda v: v if isinstance(v, str) or v is None else "-".join(map(str, v.values())),
)
def test_sparse_jacobian_errors_match_scipy(kind: str | None, options: dict) -> None:
    fun, jac = _sparse_trivial(kind or "sparse")
    jac = jac if kind is not None else "2-point"
    with pytest.raises(ValueError) as expected:
        so.least_squares(fun, 2.0, jac=jac, **options)
    with (
        warnings.catch_warnings(),
        pytest.raises(ValueError, match=f"^{re.escape(str(expected.value))}$"),
    ):
        warnings.simplefilter("ignore", NumPyModelWarning)
        nlsq.least_squares(fun, 2.0, jac=jac, **options)


@pytest.mark.parametrize("kind", ["sparse", "operator"])
def test_sparse_jacobian_scipy_accepts_is_solved_as_scipy(kind: str) -> None:
    """scipy solves it with tr_solver='lsmr', and so does nlsq."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import aslinearoperator

    wrap = csr_matrix if kind == "sparse" else aslinearoperator

    def jac(x):
        return wrap(ROSENBROCK.np_jac(x))

    ref = so.least_squares(ROSENBROCK.np_fun, [2.0, 2.0], jac=jac)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumPyModelWarning)
        res = nlsq.least_squares(ROSENBROCK.np_fun, [2.0, 2.0], jac=jac)
    assert (res.status, res.nfev, res.njev) == (ref.status, ref.nfev, ref.njev)
    np.testing.assert_allclose(res.x, ref.x, rtol=RTOL, atol=X_ATOL)


def test_lm_ignores_tr_solver_like_scipy() -> None:
    """scipy's 'lm' never reads ``tr_solver``: 'lsmr' changes nothing."""
    expected = so.least_squares(
        ROSENBROCK.np_fun, [2.0, 2.0], jac=ROSENBROCK.np_jac, method="lm", tr_solver="lsmr"
    )
    actual = nlsq.least_squares(
        ROSENBROCK.jax_fun, [2.0, 2.0], jac=ROSENBROCK.jax_jac, method="lm", tr_solver="lsmr"
    )
    assert (actual.status, actual.nfev, actual.njev) == (
        expected.status,
        expected.nfev,
        expected.njev,
    )
    np.testing.assert_allclose(actual.x, expected.x, rtol=1e-10)
