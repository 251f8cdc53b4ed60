"""Hostile inputs: nlsq does what scipy does, or a documented, safer thing.

The reference is scipy run with the same method (nlsq's ``curve_fit`` always uses
'trf' unless told otherwise, where scipy's default for unbounded problems is 'lm', so
scipy is called with ``method='trf'``). Where scipy raises, nlsq must raise the same
type with the same message; where scipy returns, nlsq must return the same answer.
Documented differences (each asserted below):

- a model returning complex values: scipy's 'trf' silently fits the complex residuals
  (its 'lm' raises ``minpack.error``); nlsq raises ``TypeError``;
- a model returning the wrong shape: both raise ``ValueError``; nlsq's message names
  the model's shape and ``ydata``'s instead of numpy's broadcasting error;
- a model that is NaN in part of the parameter space, with 'dogbox': scipy's dense
  ``lstsq`` raises ``LinAlgError``; nlsq rejects the steps into that region and
  returns, like scipy's 'trf' does.
- ``xdata`` that is neither an array nor a list but has ``__array__`` (pandas): scipy
  hands the object itself to the model; so does nlsq for a model that runs on the
  host, while a traced (JAX) model gets the object's values as an array.

Every model is defined once at module level so that its compiled program is reused
across tests; every test runs under a timeout.
"""

from __future__ import annotations

import re
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq.host import NumPyModelWarning

pytestmark = pytest.mark.timeout(120)

X = np.linspace(0.0, 1.0, 10)
Y = 2.0 * X + 1.0
EPS = np.finfo(float).eps


def line(x, a, b):
    """Runs as JAX (traced) and as NumPy (scipy) alike."""
    return a * x + b


def line_jac(x, a, b):
    return jnp.stack([x, jnp.ones_like(x)], axis=1)


def np_line_jac(x, a, b):
    return np.stack([x, np.ones_like(x)], axis=1)


def outcome(fit, *args, **kwargs):
    """``('ok', popt)`` or ``('raise', type, message)``."""
    try:
        result = fit(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - the outcome is what is compared
        return ("raise", type(error), str(error))
    return ("ok", np.asarray(result[0] if isinstance(result, tuple) else result.x))


def assert_same_outcome(expected, actual, rtol: float = 1e-10, atol: float = 0.0) -> None:
    assert expected[0] == actual[0], (expected, actual)
    if expected[0] == "raise":
        assert actual[1:] == expected[1:]
    else:
        np.testing.assert_allclose(actual[1], expected[1], rtol=rtol, atol=atol)


def compare_curve_fit(xdata, ydata, *, model=line, rtol=1e-10, atol=0.0, **kwargs):
    kwargs.setdefault("method", "trf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = outcome(so.curve_fit, model, xdata, ydata, **kwargs)
    actual = outcome(nlsq.curve_fit, model, xdata, ydata, **kwargs)
    assert_same_outcome(expected, actual, rtol, atol)
    return actual


def _with(values: np.ndarray, index: int, value: float) -> np.ndarray:
    changed = np.array(values, dtype=float)
    changed[index] = value
    return changed


# --- NaN and inf ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["x", "y"])
def test_non_finite_data_checked_like_scipy(where, bad) -> None:
    xdata = _with(X, 3, bad) if where == "x" else X
    ydata = _with(Y, 3, bad) if where == "y" else Y
    result = compare_curve_fit(xdata, ydata)
    assert result[:2] == ("raise", ValueError)


@pytest.mark.parametrize(
    "case",
    [
        {"xdata": _with(X, 3, np.nan), "check_finite": False},
        {"ydata": _with(Y, 3, np.inf), "check_finite": False},
        {"sigma": _with(np.ones(10), 2, np.nan)},
        {"sigma": _with(np.ones(10), 2, 0.0)},
        {"p0": [np.inf, 1.0]},
    ],
    ids=["nan-x-unchecked", "inf-y-unchecked", "nan-sigma", "zero-sigma", "inf-p0"],
)
def test_non_finite_initial_residuals_like_scipy(case) -> None:
    case = dict(case)
    xdata, ydata = case.pop("xdata", X), case.pop("ydata", Y)
    if "sigma" in case and (case["sigma"] == 0).any():
        # 1/sigma, as in scipy, with numpy's warning (scipy's too).
        with pytest.warns(RuntimeWarning, match="divide by zero"):
            result = compare_curve_fit(xdata, ydata, **case)
    else:
        result = compare_curve_fit(xdata, ydata, **case)
    assert result == ("raise", ValueError, "Residuals are not finite in the initial point.")


@pytest.mark.parametrize(
    "case",
    [
        {"p0": [np.nan, 1.0]},
        {"p0": [1.0, 1.0], "bounds": ([np.nan, 0.0], [10.0, 10.0])},
        {"p0": [1.0, 1.0], "bounds": ([0.0, 0.0], [np.nan, 10.0])},
        {"p0": [1.0, 1.0], "bounds": ([np.inf, 0.0], [np.inf, 10.0])},
        {"p0": [1.0, 1.0], "bounds": ([-np.inf, 0.0], [-np.inf, 10.0])},
    ],
    ids=["nan-p0", "nan-lb", "nan-ub", "lb-ub-inf", "lb-ub-minus-inf"],
)
def test_non_finite_p0_and_bounds_like_scipy(case) -> None:
    result = compare_curve_fit(X, Y, **case)
    assert result[:2] == ("raise", ValueError)


@pytest.mark.parametrize(
    "sigma",
    [_with(np.ones(10), 2, np.inf), -np.ones(10), -2.0, _with(np.ones(10), 4, -3.0)],
    ids=["inf-entry", "all-negative", "negative-scalar", "one-negative"],
)
def test_infinite_or_negative_sigma_like_scipy(sigma) -> None:
    """scipy weights by ``1/sigma`` without checking its sign; so does nlsq.

    scipy differences its Jacobian, nlsq's is exact: the answers agree to the
    termination tolerances."""
    result = compare_curve_fit(X, Y + 0.01 * np.sin(7 * X), sigma=sigma, rtol=1e-7)
    assert result[0] == "ok"


# --- integers, overflow and extreme scales ------------------------------------------


def test_int8_data_like_scipy() -> None:
    t = np.arange(10, dtype=np.int8)
    assert compare_curve_fit(t, (2 * t + 1).astype(np.int8))[0] == "ok"


def test_huge_integers_like_scipy() -> None:
    """int64 and Python integers near the float64 limit of exactness.

    ``y = 2e15 t + 1`` rounds the intercept away (float64 spacing at 1.8e16 is 4), and
    ``J = [t, 1]`` has a condition number of ~1e16, so the intercept is determined only
    to what the termination tests leave unresolved: compare the fits in predictions,
    within that (the bound of ``test_fuzz_scipy``, with scipy's default tolerances).
    """
    t = np.arange(10, dtype=np.int64) * 10**15
    y = t * 2 + 1
    tol = 1e-8
    for xdata, ydata in ((t, y), ([int(v) for v in t], [int(v) for v in y])):
        popt_s, _ = so.curve_fit(line, xdata, ydata, p0=[1, 1], method="trf")
        popt_n, _ = nlsq.curve_fit(line, xdata, ydata, p0=[1, 1])
        x64, y64 = np.asarray(xdata, dtype=float), np.asarray(ydata, dtype=float)
        J = np.column_stack([x64, np.ones_like(x64)])
        j_norm, f_norm = np.linalg.norm(J, 2), np.linalg.norm(line(x64, *popt_s) - y64)
        unresolved = 2 * np.sqrt(tol) * f_norm + 2 * tol * j_norm * (tol + np.linalg.norm(popt_s))
        bound = 10 * unresolved + 1e3 * EPS * np.linalg.norm(y64)
        gap = np.linalg.norm(line(x64, *popt_n) - line(x64, *popt_s))
        assert gap <= bound
        # The slope takes up what the intercept leaves, to the bound relative to the data.
        assert popt_n[0] == pytest.approx(popt_s[0], rel=10 * bound / np.linalg.norm(y64))


def test_integer_too_large_for_float_like_scipy() -> None:
    result = compare_curve_fit([10**400 * i for i in range(10)], list(range(10)))
    assert result == ("raise", OverflowError, "int too large to convert to float")


@pytest.mark.parametrize("scale", [1e-300, 1e300])
def test_extreme_scales_like_scipy(scale) -> None:
    compare_curve_fit(X, Y * scale, p0=[scale, scale], atol=1e-12 * scale)
    compare_curve_fit(X * scale, Y, p0=[1 / scale, 1.0], rtol=1e-8)


def test_overflowing_cost_like_scipy() -> None:
    """``y ~ 1e300`` from ``p0 = 1``: the cost overflows to inf; with the same Jacobian
    both reject every step and stop at ``max_nfev`` (status 0)."""
    y = Y * 1e300
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy: overflow in dot
        expected = so.least_squares(
            lambda p: p[0] * X + p[1] - y, [1.0, 1.0], lambda p: np_line_jac(X, *p), method="trf"
        )
    actual = nlsq.least_squares(
        lambda p: p[0] * X + p[1] - y, [1.0, 1.0], lambda p: line_jac(X, *p), method="trf"
    )
    assert (actual.status, actual.nfev) == (expected.status, expected.nfev) == (0, 200)
    np.testing.assert_array_equal(actual.x, expected.x)
    assert actual.cost == expected.cost == np.inf


# --- p0 on a bound, evaluation budget, tolerances -----------------------------------


@pytest.mark.parametrize("method", ["trf", "dogbox"])
@pytest.mark.parametrize(
    "p0, bounds",
    [
        ([0.0, 1.0], ([0.0, 0.0], [10.0, 10.0])),
        ([10.0, 1.0], ([0.0, 0.0], [10.0, 10.0])),
        ([2.0, 1.0], ([2.0, 0.0], [10.0, 1.0])),
    ],
    ids=["on-lower", "on-upper", "on-both"],
)
def test_p0_on_a_bound_like_scipy(method, p0, bounds) -> None:
    noisy = Y + 0.01 * np.cos(5 * X)
    assert compare_curve_fit(X, noisy, p0=p0, bounds=bounds, method=method, rtol=1e-8)[0] == "ok"


@pytest.mark.parametrize(
    "kwargs",
    [{"max_nfev": 1}, {"maxfev": 1, "method": "lm"}],
    ids=["trf-max_nfev", "lm-maxfev"],
)
def test_one_evaluation_like_scipy(kwargs) -> None:
    result = compare_curve_fit(X, Y, p0=[0.5, 0.5], **kwargs)
    assert result[:2] == ("raise", RuntimeError)


@pytest.mark.parametrize(
    "tolerances",
    [
        {"ftol": 0.0},
        {"ftol": 1.0, "xtol": 1.0, "gtol": 1.0},
        {"ftol": -1.0},
        {"ftol": 0.0, "xtol": 0.0, "gtol": 0.0},
        {"ftol": 1e-300, "xtol": 1e-300, "gtol": 1e-300},
        {"ftol": -1.0, "method": "lm"},
        {"ftol": 0.0, "method": "lm"},
    ],
    ids=["ftol-0", "all-1", "ftol-negative", "all-0", "all-1e-300", "lm-negative", "lm-0"],
)
def test_extreme_tolerances_like_scipy(tolerances) -> None:
    """Same result, or the same exception, and the same warnings as scipy."""
    with warnings.catch_warnings(record=True) as scipy_warnings:
        warnings.simplefilter("always")
        expected = outcome(so.curve_fit, line, X, Y, **{"method": "trf", **tolerances})
    with warnings.catch_warnings(record=True) as nlsq_warnings:
        warnings.simplefilter("always")
        actual = outcome(nlsq.curve_fit, line, X, Y, **{"method": "trf", **tolerances})
    assert_same_outcome(expected, actual, rtol=1e-8)

    def messages(caught):
        return sorted(str(w.message) for w in caught if "machine epsilon" in str(w.message))

    assert messages(nlsq_warnings) == messages(scipy_warnings)


# --- misbehaving models -------------------------------------------------------------


def numpy_model_raising(x, a, b):
    raise ZeroDivisionError("raised inside the model")


def numpy_model_raising_later(x, a, b):
    # Python control flow on the parameters: runs on the host, as in scipy.
    if a > 1.5:
        raise ArithmeticError(f"the model refuses a = {a}")
    return a * x + b


def jax_model_raising(x, a, b):
    raise KeyError("a column the model looks up is missing")


@pytest.mark.parametrize(
    "model, error",
    [
        (numpy_model_raising, ZeroDivisionError),
        (numpy_model_raising_later, ArithmeticError),
        (jax_model_raising, KeyError),
    ],
    ids=["at-p0", "mid-fit", "at-trace"],
)
def test_model_exception_surfaces_with_its_traceback(model, error) -> None:
    """The model's own exception, with the model's frame in the traceback."""
    with pytest.raises(error) as expected:
        so.curve_fit(model, X, Y, p0=[1.0, 1.0], method="trf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumPyModelWarning)
        with pytest.raises(error) as raised:
            nlsq.curve_fit(model, X, Y, p0=[1.0, 1.0])
    # Up to the last digits of a parameter the message may show.
    assert re.sub(r"[\d.]+", "#", str(raised.value)) == re.sub(r"[\d.]+", "#", str(expected.value))
    assert raised.traceback[-1].name == model.__name__


def complex_model(x, a, b):
    return (a * x + b) * (1 + 1j)


def test_complex_model_refused() -> None:
    """A documented difference: scipy's 'trf' fits complex residuals silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popt_s, _ = so.curve_fit(complex_model, X, Y, method="trf")
    assert np.isfinite(popt_s).all()  # no error from scipy: its answer is meaningless
    with pytest.raises(TypeError, match="`fun` returned complex values; residuals must be real"):
        nlsq.curve_fit(complex_model, X, Y)


def short_model(x, a, b):
    return (a * x + b)[:5]


def matrix_model(x, a, b):
    return jnp.stack([a * x + b, a * x])


def test_wrong_shape_raises_value_error_like_scipy() -> None:
    with pytest.raises(ValueError, match="could not be broadcast"):
        so.curve_fit(short_model, X, Y, method="trf")
    with pytest.raises(ValueError, match=re.escape("returned shape (5,)")):
        nlsq.curve_fit(short_model, X, Y)
    with pytest.raises(ValueError):
        so.curve_fit(lambda x, a, b: np.stack([a * x + b, a * x]), X, Y, method="trf")
    with pytest.raises(ValueError, match="at most 1-d"):
        nlsq.curve_fit(matrix_model, X, Y)


T_SQRT = np.linspace(0.0, 1.0, 20)
Y_SQRT = 0.1 * T_SQRT + 0.3


def sqrt_residuals(xp):
    """Residuals that are NaN for ``p[0] < 0``, which the iterations visit."""

    def fun(p):
        return xp.sqrt(p[0]) * T_SQRT + p[1] - Y_SQRT

    def jac(p):
        return xp.stack([T_SQRT / (2 * xp.sqrt(p[0])), xp.ones_like(T_SQRT)], axis=1)

    return fun, jac


def at_start(xp) -> tuple:
    """``(fun, x0, jac)`` for ``least_squares``."""
    fun, jac = sqrt_residuals(xp)
    return fun, [1.0, 1.0], jac


@pytest.mark.parametrize("method", ["trf", "lm"])
def test_nan_in_part_of_parameter_space_like_scipy(method) -> None:
    """Steps into the NaN region are rejected by both, with the same iterations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = so.least_squares(*at_start(np), method=method)
    actual = nlsq.least_squares(*at_start(jnp), method=method)
    assert (actual.status, actual.nfev) == (expected.status, expected.nfev)
    np.testing.assert_allclose(actual.x, expected.x, rtol=1e-6, atol=1e-12)


def test_nan_in_part_of_parameter_space_dogbox() -> None:
    """A documented difference: scipy's dogbox fails in LAPACK; nlsq returns."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(np.linalg.LinAlgError):
            so.least_squares(*at_start(np), method="dogbox")
    actual = nlsq.least_squares(*at_start(jnp), method="dogbox")
    assert np.isfinite(actual.x).all() and np.isfinite(actual.cost)
    assert actual.cost <= 0.5 * np.sum((T_SQRT + 1.0 - Y_SQRT) ** 2)


# --- array-like data ----------------------------------------------------------------


class ArrayLike:
    """A minimal pandas-like container: only ``__array__``."""

    def __init__(self, values) -> None:
        self._values = np.asarray(values)

    def __array__(self, dtype=None, copy=None):
        return self._values if dtype is None else self._values.astype(dtype)


def frame_model(x, a, b):
    return a * np.asarray(x) + b


def test_array_like_ydata_like_scipy() -> None:
    assert compare_curve_fit(X, ArrayLike(Y))[0] == "ok"
    assert compare_curve_fit(X, list(Y))[0] == "ok"


def test_array_like_xdata_for_a_numpy_model_like_scipy() -> None:
    """scipy passes such ``xdata`` to the model as it is; so does nlsq (on the host)."""
    with pytest.warns(NumPyModelWarning):
        assert compare_curve_fit(ArrayLike(X), Y, model=frame_model, rtol=1e-7)[0] == "ok"


def test_array_like_xdata_for_a_jax_model() -> None:
    """A model known to trace gets the object's values in the compiled program."""
    nlsq.curve_fit(line, X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = so.curve_fit(line, ArrayLike(X), Y, method="trf")[0]
    np.testing.assert_allclose(nlsq.curve_fit(line, ArrayLike(X), Y)[0], expected, rtol=1e-10)


def two_predictors(x, a, b):
    return a * x[0] + b * x[1] ** 2


def test_list_of_lists_xdata_like_scipy() -> None:
    xdata = [list(X), list(X + 1)]
    ydata = two_predictors(np.asarray(xdata), 2.0, -0.5)
    assert compare_curve_fit(xdata, ydata, model=two_predictors, rtol=1e-8)[0] == "ok"


def test_pandas_data_like_scipy() -> None:
    pd = pytest.importorskip("pandas")
    assert compare_curve_fit(pd.Series(X), pd.Series(Y))[0] == "ok"
