"""Parity of ``nlsq.curve_fit`` with ``scipy.optimize.curve_fit(method='trf')``.

scipy gets an analytic Jacobian written with NumPy; nlsq gets the same Jacobian written
with ``jax.numpy`` (or autodiff). Both then run the same TRF iterations, so ``popt``
agrees to rounding, ``pcov`` to a little more (it goes through an SVD), and the
evaluation count, status and message of ``full_output`` are identical. Warnings are
compared too: nlsq must warn exactly when scipy does, with the same category and text.
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
from scipy.optimize import OptimizeWarning

import nlsq

POPT_RTOL = 1e-8
PCOV_RTOL = 1e-6


@dataclass(frozen=True)
class Model:
    """``f(x, *p)`` and its Jacobian in NumPy (for scipy) and jax.numpy (for nlsq)."""

    np_f: Callable
    np_jac: Callable
    jax_f: Callable
    jax_jac: Callable


def _model(factory: Callable) -> Model:
    np_f, np_jac = factory(np)
    jax_f, jax_jac = factory(jnp)
    return Model(np_f, np_jac, jax_f, jax_jac)


def _decay(xp):
    def f(x, a, b, c):
        return a * xp.exp(-b * x) + c

    def jac(x, a, b, c):
        e = xp.exp(-b * x)
        return xp.stack([e, -a * x * e, xp.ones_like(x)], axis=1)

    return f, jac


def _two_predictors(xp):
    """``a * x0 + b * exp(-c * x1)`` with ``xdata`` of shape (2, m)."""

    def f(x, a, b, c):
        return a * x[0] + b * xp.exp(-c * x[1])

    def jac(x, a, b, c):
        e = xp.exp(-c * x[1])
        return xp.stack([x[0], e, -b * x[1] * e], axis=1)

    return f, jac


def _flat(xp):
    """scipy's ``test_pcov`` ``f_flat``: ``b`` does not enter the model."""

    def f(x, a, b):
        return a * x

    def jac(x, a, b):
        return xp.stack([x, xp.zeros_like(x)], axis=1)

    return f, jac


def _line(xp):
    def f(x, a, b):
        return a * x + b

    def jac(x, a, b):
        return xp.stack([x, xp.ones_like(x)], axis=1)

    return f, jac


DECAY = _model(_decay)
TWO_PREDICTORS = _model(_two_predictors)
FLAT = _model(_flat)
LINE = _model(_line)

_rng = np.random.default_rng(20240607)
X = np.linspace(0.0, 4.0, 30)
Y = 2.5 * np.exp(-1.3 * X) + 0.5 + 0.05 * _rng.standard_normal(X.size)
Y_OUTLIERS = Y.copy()
Y_OUTLIERS[[4, 12, 21]] += [1.0, -0.7, 1.2]
SIGMA_1D = 0.03 + 0.05 * _rng.random(X.size)
_A = _rng.standard_normal((X.size, X.size))
SIGMA_2D = 0.002 * (_A @ _A.T / X.size) + np.diag(SIGMA_1D**2)
P0 = [1.0, 1.0, 0.0]

X2 = np.vstack([np.linspace(-1.0, 1.0, 30), np.linspace(0.0, 3.0, 30) ** 1.5])
Y2 = 0.7 * X2[0] + 2.0 * np.exp(-0.8 * X2[1]) + 0.02 * _rng.standard_normal(30)

# scipy's test_pcov data
X_PCOV = np.array([0, 1, 2, 3, 4, 5])
Y_PCOV = np.array([1, 1, 5, 7, 8, 12])
SIGMA_PCOV = np.array([1, 2, 1, 2, 1, 2])


@dataclass(frozen=True)
class Fit:
    """One ``curve_fit`` call, given to scipy (method='trf') and to nlsq."""

    id: str
    model: Model
    xdata: Any
    ydata: Any
    options: dict = field(default_factory=dict)
    autodiff: bool = False
    #: nlsq's ``method``: None (its default, TRF) or 'trf'.
    nlsq_method: str | None = None
    #: Passed to scipy instead of ``xdata``/``ydata`` (scipy's NumPy model needs NumPy input).
    scipy_xdata: Any = None
    scipy_ydata: Any = None
    #: Replace entries of ``options`` for scipy only.
    scipy_options: dict = field(default_factory=dict)


FITS = [
    Fit("decay", DECAY, X, Y, {"p0": P0}),
    Fit("decay-method-trf", DECAY, X, Y, {"p0": P0}, nlsq_method="trf"),
    Fit("decay-p0-none", DECAY, X, Y),
    Fit("decay-absolute-sigma-no-sigma", DECAY, X, Y, {"p0": P0, "absolute_sigma": True}),
    # scipy cannot combine a scalar sigma with a callable jac (its Jacobian wrapper takes
    # the 0-d transform for a Cholesky factor: "expected square matrix"), so scipy gets
    # the same sigma as an (m,) array: the same weights, bit for bit.
    Fit(
        "decay-scalar-sigma",
        DECAY,
        X,
        Y,
        {"p0": P0, "sigma": 0.05},
        scipy_options={"sigma": np.full(X.size, 0.05)},
    ),
    Fit(
        "decay-scalar-sigma-absolute",
        DECAY,
        X,
        Y,
        {"p0": P0, "sigma": 0.05, "absolute_sigma": True},
        scipy_options={"sigma": np.full(X.size, 0.05)},
    ),
    Fit("decay-1d-sigma", DECAY, X, Y, {"p0": P0, "sigma": SIGMA_1D}),
    Fit(
        "decay-1d-sigma-absolute",
        DECAY,
        X,
        Y,
        {"p0": P0, "sigma": SIGMA_1D, "absolute_sigma": True},
    ),
    Fit("decay-2d-sigma", DECAY, X, Y, {"p0": P0, "sigma": SIGMA_2D}),
    Fit(
        "decay-2d-sigma-absolute",
        DECAY,
        X,
        Y,
        {"p0": P0, "sigma": SIGMA_2D, "absolute_sigma": True},
    ),
    Fit(
        "decay-bounds-tuple",
        DECAY,
        X,
        Y,
        {"p0": [1.0, 1.0, 0.4], "bounds": ([0.0, 0.0, 0.0], [2.0, 5.0, 1.0])},
    ),
    Fit(
        "decay-bounds-object",
        DECAY,
        X,
        Y,
        {"p0": [1.0, 1.0, 0.4], "bounds": so.Bounds([0.0, 0.0, 0.0], [2.0, 5.0, 1.0])},
    ),
    Fit(
        "decay-bounds-scalar",
        DECAY,
        X,
        Y,
        {"p0": [1.0, 1.0, 0.4], "bounds": (0.0, 2.2)},
    ),
    Fit(
        "decay-p0-none-bounds-midpoint",
        DECAY,
        X,
        Y,
        {"bounds": ([0.0, 0.0, 0.0], [4.0, 3.0, 1.0])},
    ),
    Fit(
        "decay-p0-none-one-sided-bounds",
        DECAY,
        X,
        Y,
        # a: lb + 1 = 1.5; b: midpoint 1.5; c: ub - 1 = 0.0
        {"bounds": ([0.5, 0.0, -np.inf], [np.inf, 3.0, 1.0])},
    ),
    Fit(
        "decay-soft_l1",
        DECAY,
        X,
        Y_OUTLIERS,
        {"p0": P0, "loss": "soft_l1", "f_scale": 0.1},
    ),
    Fit(
        "decay-tolerances-x-scale",
        DECAY,
        X,
        Y,
        {"p0": P0, "ftol": 1e-12, "xtol": 1e-12, "gtol": 1e-12, "x_scale": [1.0, 2.0, 0.5]},
    ),
    Fit("decay-maxfev", DECAY, X, Y, {"p0": P0, "maxfev": 50}),
    Fit("decay-max_nfev", DECAY, X, Y, {"p0": P0, "max_nfev": 50}),
    Fit(
        "decay-nan-policy-raise-without-nan",
        DECAY,
        X,
        Y,
        {"p0": P0, "nan_policy": "raise"},
    ),
    Fit(
        "two-predictors-nan-omit-x-and-y-2d-sigma",
        TWO_PREDICTORS,
        np.where((np.arange(30) % 8 == 5) & (np.arange(2)[:, None] == 1), np.nan, X2),
        np.where(np.arange(30) % 7 == 3, np.nan, Y2),
        {"p0": [1.0, 1.0, 1.0], "nan_policy": "omit", "sigma": SIGMA_2D},
        autodiff=True,
    ),
    Fit(
        "pcov-line-sigma",
        LINE,
        X_PCOV,
        Y_PCOV,
        {"p0": [2, 0], "sigma": SIGMA_PCOV},
    ),
    Fit(
        "pcov-line-sigma-absolute",
        LINE,
        X_PCOV,
        Y_PCOV,
        {"p0": [2, 0], "sigma": 3 * SIGMA_PCOV, "absolute_sigma": True},
    ),
    Fit(
        "pcov-flat-rank-deficient-autodiff",
        FLAT,
        X_PCOV,
        Y_PCOV,
        {"p0": [2, 0], "sigma": SIGMA_PCOV},
        autodiff=True,
    ),
    Fit("m-equals-n", LINE, X_PCOV[:2], Y_PCOV[:2], {"p0": [2, 0]}, nlsq_method="trf"),
    Fit(
        "m-equals-n-absolute-sigma",
        LINE,
        X_PCOV[:2],
        Y_PCOV[:2],
        {"p0": [2, 0], "absolute_sigma": True},
        nlsq_method="trf",
    ),
    Fit(
        "inputs-lists-of-ints",
        LINE,
        X_PCOV.tolist(),
        Y_PCOV.tolist(),
        {"p0": [2, 0], "sigma": SIGMA_PCOV.tolist()},
        scipy_xdata=X_PCOV.tolist(),
        scipy_ydata=Y_PCOV.tolist(),
    ),
    Fit(
        "inputs-int-arrays",
        LINE,
        X_PCOV,
        Y_PCOV,
        {"p0": np.array([2, 0]), "sigma": SIGMA_PCOV},
    ),
    Fit(
        "inputs-float32",
        DECAY,
        X.astype(np.float32),
        Y.astype(np.float32),
        {"p0": np.array(P0, dtype=np.float32)},
    ),
    # scipy keeps sigma's dtype: a float32 sigma gives float32 weights 1/sigma.
    Fit(
        "inputs-float32-sigma",
        DECAY,
        X.astype(np.float32),
        Y.astype(np.float32),
        {"p0": np.array(P0, dtype=np.float32), "sigma": SIGMA_1D.astype(np.float32)},
    ),
    # Without jax_enable_x64 these jax arrays hold float32 values; scipy gets the same
    # values as float64 NumPy arrays.
    Fit(
        "inputs-jax-arrays",
        DECAY,
        jnp.asarray(X),
        jnp.asarray(Y),
        {"p0": jnp.asarray(P0)},
        scipy_xdata=np.asarray(jnp.asarray(X), dtype=float),
        scipy_ydata=np.asarray(jnp.asarray(Y), dtype=float),
        scipy_options={"p0": P0},
    ),
    Fit(
        "inputs-tuple",
        LINE,
        tuple(X_PCOV),
        tuple(Y_PCOV),
        {"p0": (2, 0), "sigma": tuple(SIGMA_PCOV)},
    ),
]


def _call_recording_warnings(call: Callable) -> tuple[Any, list[tuple[type, str]]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [(w.category, str(w.message)) for w in caught]


def _run_scipy(fit: Fit, **extra: Any):
    xdata = fit.xdata if fit.scipy_xdata is None else fit.scipy_xdata
    ydata = fit.ydata if fit.scipy_ydata is None else fit.scipy_ydata
    return _call_recording_warnings(
        lambda: so.curve_fit(
            fit.model.np_f,
            xdata,
            ydata,
            method="trf",
            jac=fit.model.np_jac,
            full_output=True,
            **{**fit.options, **fit.scipy_options},
            **extra,
        )
    )


def _run_nlsq(fit: Fit, **extra: Any):
    return _call_recording_warnings(
        lambda: nlsq.curve_fit(
            fit.model.jax_f,
            fit.xdata,
            fit.ydata,
            method=fit.nlsq_method,
            jac=None if fit.autodiff else fit.model.jax_jac,
            full_output=True,
            **fit.options,
            **extra,
        )
    )


def _assert_pcov_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == np.float64
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(actual), finite)
    np.testing.assert_array_equal(actual[~finite], expected[~finite])
    if finite.any():
        scale = np.max(np.abs(expected[finite]))
        np.testing.assert_allclose(
            actual[finite], expected[finite], rtol=PCOV_RTOL, atol=1e-12 * scale
        )


@pytest.mark.parametrize("fit", FITS, ids=lambda f: f.id)
def test_parity_with_scipy(fit: Fit) -> None:
    (popt_s, pcov_s, info_s, mesg_s, ier_s), warnings_s = _run_scipy(fit)
    (popt, pcov, info, mesg, ier), warnings_n = _run_nlsq(fit)

    assert type(popt) is np.ndarray and popt.dtype == np.float64
    assert type(pcov) is np.ndarray and pcov.dtype == np.float64
    assert ier == ier_s
    assert mesg == mesg_s
    assert info["nfev"] == info_s["nfev"]
    # nlsq adds its compile statistics to scipy's infodict.
    assert set(info) == set(info_s) | {"cache_stats"}
    np.testing.assert_allclose(popt, popt_s, rtol=POPT_RTOL, atol=1e-12)
    _assert_pcov_close(pcov, pcov_s)
    fvec_scale = max(1.0, float(np.max(np.abs(info_s["fvec"]))))
    np.testing.assert_allclose(info["fvec"], info_s["fvec"], rtol=1e-7, atol=1e-10 * fvec_scale)
    assert warnings_n == warnings_s


def test_full_output_false_returns_two_arrays() -> None:
    fit = FITS[0]
    popt, pcov = nlsq.curve_fit(fit.model.jax_f, fit.xdata, fit.ydata, jac=fit.model.jax_jac, p0=P0)
    popt_s, pcov_s = so.curve_fit(
        fit.model.np_f, fit.xdata, fit.ydata, p0=P0, method="trf", jac=fit.model.np_jac
    )
    np.testing.assert_allclose(popt, popt_s, rtol=POPT_RTOL)
    _assert_pcov_close(pcov, pcov_s)


def test_scenarios_cover_what_they_claim() -> None:
    """Sanity checks on the scenarios themselves (on scipy's results)."""
    by_id = {fit.id: fit for fit in FITS}
    # Rank-deficient: finite pcov with a zero row/column and no warning (scipy trf).
    (_, pcov, *_), caught = _run_scipy(by_id["pcov-flat-rank-deficient-autodiff"])
    assert np.all(np.isfinite(pcov)) and pcov[1, 1] == 0 and pcov[0, 0] > 0 and not caught
    # m == n: pcov all inf with an OptimizeWarning, unless sigma is absolute.
    (_, pcov, *_), caught = _run_scipy(by_id["m-equals-n"])
    assert np.all(np.isinf(pcov)) and [c for c, _ in caught] == [OptimizeWarning]
    (_, pcov, *_), caught = _run_scipy(by_id["m-equals-n-absolute-sigma"])
    assert np.all(np.isfinite(pcov)) and not caught
    # Bounds active at the solution.
    (popt, *_), _ = _run_scipy(by_id["decay-bounds-scalar"])
    assert np.any(popt == 0.0) or np.any(np.isclose(popt, 2.2))


@pytest.mark.parametrize(
    ("bounds", "p0"),
    [
        (([0.5, 0.0, -np.inf], [np.inf, 3.0, 1.0]), [1.5, 1.5, 0.0]),
        (([-np.inf, -1.0, -np.inf], [np.inf, 2.0, np.inf]), [1.0, 0.5, 1.0]),
    ],
    ids=["lb+1-midpoint-ub-1", "unbounded-1"],
)
def test_p0_inferred_from_signature_and_bounds(bounds: tuple, p0: list) -> None:
    """p0=None: 1 unbounded, the midpoint of a box, lb + 1, ub - 1 (scipy's rule).

    A huge gtol stops the fit at its (strictly feasible) starting point.
    """
    popt, _, info, _, status = nlsq.curve_fit(
        DECAY.jax_f, X, Y, bounds=bounds, jac=DECAY.jax_jac, gtol=1e10, full_output=True
    )
    assert (status, info["nfev"]) == (1, 1)
    np.testing.assert_array_equal(popt, p0)
    popt_s, *_ = so.curve_fit(
        DECAY.np_f, X, Y, bounds=bounds, jac=DECAY.np_jac, gtol=1e10, method="trf"
    )
    np.testing.assert_array_equal(popt_s, p0)


# --------------------------------------------------------------------------------------
# Invalid input: scipy's exception type and message
# --------------------------------------------------------------------------------------


def _wrong_shape(xp):
    def f(x, a, b):
        return a * x[:-1] + b

    def jac(x, a, b):
        return xp.stack([x[:-1], xp.ones_like(x[:-1])], axis=1)

    return f, jac


def _wrong_jac_shape(xp):
    def f(x, a, b):
        return a * x + b

    def jac(x, a, b):
        return xp.ones((x.size, 3))

    return f, jac


WRONG_SHAPE = _model(_wrong_shape)
WRONG_JAC_SHAPE = _model(_wrong_jac_shape)

_NOT_PD = np.eye(X_PCOV.size)
_NOT_PD[0, 1] = _NOT_PD[1, 0] = 2.0


@dataclass(frozen=True)
class BadFit:
    id: str
    model: Model = LINE
    xdata: Any = field(default_factory=lambda: X_PCOV)
    ydata: Any = field(default_factory=lambda: Y_PCOV)
    options: dict = field(default_factory=lambda: {"p0": [2.0, 0.0]})
    #: scipy's method; nlsq is always called with its default (None).
    scipy_method: str | None = "trf"


#: scipy fails inside NumPy (``f(xdata, *p) - ydata`` cannot broadcast): same type only.
SHAPE_MISMATCHES = [
    BadFit("x-y-length-mismatch", xdata=np.arange(5.0)),
    BadFit("model-shape-mismatch", model=WRONG_SHAPE),
]

BAD_FITS = [
    BadFit("nan-in-ydata", ydata=np.array([1.0, np.nan, 5, 7, 8, 12])),
    BadFit("inf-in-ydata", ydata=np.array([1.0, np.inf, 5, 7, 8, 12])),
    BadFit("nan-in-xdata", xdata=np.array([0.0, 1, np.nan, 3, 4, 5])),
    BadFit(
        "nan-with-check-finite-true",
        xdata=np.array([0.0, 1, np.nan, 3, 4, 5]),
        options={"p0": [2.0, 0.0], "check_finite": True, "nan_policy": "omit"},
    ),
    BadFit("p0-outside-bounds", options={"p0": [2.0, 0.0], "bounds": ([0.0, 0.5], [5.0, 5.0])}),
    BadFit("lb-equals-ub", options={"p0": [2.0, 0.0], "bounds": ([0.0, 0.0], [5.0, 0.0])}),
    BadFit("lb-above-ub", options={"p0": [2.0, 0.0], "bounds": ([3.0, -1.0], [1.0, 5.0])}),
    BadFit("bounds-shape", options={"p0": [2.0, 0.0], "bounds": ([0.0] * 3, [5.0] * 3)}),
    BadFit("empty-ydata", xdata=np.array([]), ydata=np.array([])),
    BadFit(
        "fewer-points-than-parameters-default-method",
        model=DECAY,
        xdata=X_PCOV[:2],
        ydata=Y_PCOV[:2],
        options={"p0": P0},
        scipy_method=None,
    ),
    # scipy's default method for an unbounded problem is 'lm': curve_fit skips its own
    # count check when ydata has one element, and MINPACK then refuses n > m.
    BadFit(
        "one-point-two-parameters-default-method",
        xdata=np.array([1.0]),
        ydata=np.array([3.0]),
        scipy_method=None,
    ),
    BadFit("jac-wrong-shape", model=WRONG_JAC_SHAPE),
    BadFit(
        "jac-wrong-shape-with-sigma",
        model=WRONG_JAC_SHAPE,
        options={"p0": [2.0, 0.0], "sigma": SIGMA_PCOV},
    ),
    BadFit("sigma-not-positive-definite", options={"p0": [2.0, 0.0], "sigma": _NOT_PD}),
    BadFit("sigma-wrong-length", options={"p0": [2.0, 0.0], "sigma": np.ones(5)}),
    BadFit("sigma-wrong-2d-shape", options={"p0": [2.0, 0.0], "sigma": np.ones((6, 5))}),
    BadFit("sigma-3d", options={"p0": [2.0, 0.0], "sigma": np.ones((6, 6, 1))}),
    BadFit(
        "all-tolerances-none",
        options={"p0": [2.0, 0.0], "ftol": None, "xtol": None, "gtol": None},
    ),
    BadFit("args-in-kwargs", options={"p0": [2.0, 0.0], "args": (1.0,)}),
    BadFit(
        "nan-policy-propagate",
        ydata=np.array([1.0, np.nan, 5, 7, 8, 12]),
        options={"p0": [2.0, 0.0], "nan_policy": "propagate"},
    ),
    BadFit("nan-policy-invalid", options={"p0": [2.0, 0.0], "nan_policy": "drop"}),
    BadFit(
        "nan-policy-raise",
        ydata=np.array([1.0, np.nan, 5, 7, 8, 12]),
        options={"p0": [2.0, 0.0], "nan_policy": "raise"},
    ),
    BadFit(
        "nan-policy-raise-nan-in-x",
        xdata=np.array([0.0, 1, np.nan, 3, 4, 5]),
        options={"p0": [2.0, 0.0], "nan_policy": "raise"},
    ),
    # NaN residuals everywhere (the model output minus all-NaN data): must raise, not hang.
    BadFit(
        "residuals-nan-everywhere",
        ydata=np.full(X_PCOV.size, np.nan),
        options={"p0": [2.0, 0.0], "sigma": SIGMA_PCOV, "check_finite": False},
    ),
    BadFit("max-nfev-too-small", model=DECAY, xdata=X, ydata=Y, options={"p0": P0, "max_nfev": 3}),
    BadFit("maxfev-too-small", model=DECAY, xdata=X, ydata=Y, options={"p0": P0, "maxfev": 3}),
    BadFit("method-lm-with-bounds", options={"p0": [2.0, 0.0], "bounds": (0.0, 5.0)}),
    BadFit("p0-none-no-parameters", model=Model(*([lambda x: x] * 4)), options={}),
]
# scipy checks 'lm' against bounds before anything else; nlsq must do the same.
BAD_FITS[-2] = BadFit(
    "method-lm-with-bounds",
    options={"p0": [2.0, 0.0], "bounds": (0.0, 5.0), "method": "lm"},
    scipy_method="lm",
)


def _scipy_error(bad: BadFit) -> Exception:
    options = dict(bad.options)
    options.setdefault("method", bad.scipy_method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            so.curve_fit(bad.model.np_f, bad.xdata, bad.ydata, jac=bad.model.np_jac, **options)
        except Exception as error:  # noqa: BLE001 - we want scipy's exception, whatever it is
            return error
    raise AssertionError("scipy accepted the call")


@pytest.mark.parametrize("bad", BAD_FITS, ids=lambda b: b.id)
def test_invalid_input_raises_like_scipy(bad: BadFit) -> None:
    expected = _scipy_error(bad)
    with pytest.raises(type(expected)) as excinfo:
        nlsq.curve_fit(bad.model.jax_f, bad.xdata, bad.ydata, jac=bad.model.jax_jac, **bad.options)
    assert str(excinfo.value) == str(expected)


def test_unknown_keyword_raises_type_error_like_scipy() -> None:
    expected = _scipy_error(BadFit("unknown-keyword", options={"p0": [2.0, 0.0], "foo": 1}))
    assert type(expected) is TypeError
    with pytest.raises(TypeError, match="foo"):
        nlsq.curve_fit(LINE.jax_f, X_PCOV, Y_PCOV, p0=[2.0, 0.0], jac=LINE.jax_jac, foo=1)


@pytest.mark.parametrize("autodiff", [False, True], ids=["analytic-jac", "autodiff"])
@pytest.mark.parametrize("bad", SHAPE_MISMATCHES, ids=lambda b: b.id)
def test_shape_mismatch_raises_value_error_like_scipy(bad: BadFit, autodiff: bool) -> None:
    assert type(_scipy_error(bad)) is ValueError
    jac = None if autodiff else bad.model.jax_jac
    with pytest.raises(ValueError, match=r"\(5,\).*\(6,\)"):
        nlsq.curve_fit(bad.model.jax_f, bad.xdata, bad.ydata, jac=jac, **bad.options)


@pytest.mark.parametrize("tol", [1e-20, 0.0], ids=["tiny", "zero"])
def test_all_tolerances_below_eps_warn_then_raise_like_scipy(tol: float) -> None:
    options = {"p0": [2.0, 0.0], "ftol": tol, "xtol": tol, "gtol": tol}
    with warnings.catch_warnings(record=True) as expected_warnings:
        warnings.simplefilter("always")
        with pytest.raises(ValueError) as expected:
            so.curve_fit(LINE.np_f, X_PCOV, Y_PCOV, method="trf", jac=LINE.np_jac, **options)
    with (
        pytest.warns(UserWarning) as record,
        pytest.raises(ValueError, match=f"^{re.escape(str(expected.value))}$"),
    ):
        nlsq.curve_fit(LINE.jax_f, X_PCOV, Y_PCOV, jac=LINE.jax_jac, **options)
    assert [str(w.message) for w in record] == [str(w.message) for w in expected_warnings]


# --------------------------------------------------------------------------------------
# method='lm': leastsq's covariance and infodict (MINPACK's fjac, ipvt, qtf)
# --------------------------------------------------------------------------------------


def _lm_fits(model: Model, numpy_model: bool, **options: Any):
    """scipy's and nlsq's ``curve_fit(method='lm', full_output=True)``, warnings recorded.

    A JAX model gets its exact Jacobian by autodiff, and scipy the same Jacobian as
    ``jac`` (``lmder``); a NumPy model gets MINPACK's forward differences in both
    (``lmdif``).
    """
    expected = _call_recording_warnings(
        lambda: so.curve_fit(
            model.np_f,
            X,
            Y,
            method="lm",
            jac=None if numpy_model else model.np_jac,
            full_output=True,
            **options,
        )
    )
    actual = _call_recording_warnings(
        lambda: nlsq.curve_fit(
            model.np_f if numpy_model else model.jax_f,
            X,
            Y,
            method="lm",
            full_output=True,
            **options,
        )
    )
    return expected, actual


def _assert_relative_to_scale(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Covariances compared entry by entry on the scale ``sqrt(C_ii C_jj)``."""
    scale = np.sqrt(np.outer(np.diag(expected), np.diag(expected)))
    np.testing.assert_array_less(np.abs(actual - expected), rtol * scale + 1e-300)


@pytest.mark.parametrize("numpy_model", [False, True], ids=["jax-model", "numpy-model"])
def test_lm_covariance_and_infodict_match_leastsq(numpy_model: bool) -> None:
    ((popt_s, pcov_s, info_s, mesg_s, ier_s), _), ((popt, pcov, info, mesg, ier), caught) = (
        _lm_fits(DECAY, numpy_model, p0=(1.0, 1.0, 0.0))
    )
    assert [category for category, _ in caught if category is not nlsq.host.NumPyModelWarning] == []
    assert (ier, mesg) == (ier_s, mesg_s)
    # leastsq's keys (njev only with a Jacobian), and nlsq's compile statistics.
    assert list(info) == [*info_s, "cache_stats"]
    assert info["nfev"] == info_s["nfev"] and info.get("njev") == info_s.get("njev")
    # Difference quotients turn rounding differences (XLA sums in its own order) into
    # relative changes of about 1e-8 in J, and so in the iterates.
    rtol = 1e-7 if numpy_model else 1e-10
    np.testing.assert_allclose(popt, popt_s, rtol=rtol)
    _assert_relative_to_scale(pcov, pcov_s, rtol)
    np.testing.assert_array_equal(info["ipvt"], info_s["ipvt"])
    assert info["ipvt"].dtype == info_s["ipvt"].dtype
    assert info["fjac"].shape == info_s["fjac"].shape == (3, X.size)
    scale = np.max(np.abs(info_s["fjac"]))
    np.testing.assert_allclose(info["fjac"], info_s["fjac"], rtol=rtol, atol=rtol * scale)
    f_scale = np.linalg.norm(info_s["fvec"])
    np.testing.assert_allclose(info["qtf"], info_s["qtf"], rtol=rtol, atol=rtol * f_scale)
    np.testing.assert_allclose(info["fvec"], info_s["fvec"], rtol=rtol, atol=rtol * f_scale)


@pytest.mark.parametrize("numpy_model", [False, True], ids=["jax-model", "numpy-model"])
def test_lm_singular_covariance_warns_like_scipy(numpy_model: bool) -> None:
    """A parameter the model ignores: ``R`` is singular, pcov is inf with scipy's warning."""
    ((_, pcov_s, *_), warnings_s), ((_, pcov, *_), warnings_n) = _lm_fits(
        FLAT, numpy_model, p0=(2.0, 0.0)
    )
    assert np.isinf(pcov_s).all() and np.isinf(pcov).all()
    ignored = nlsq.host.NumPyModelWarning
    assert (
        [w for w in warnings_n if w[0] is not ignored]
        == warnings_s
        == [(OptimizeWarning, "Covariance of the parameters could not be estimated")]
    )


@pytest.mark.parametrize("ydata", [[5.0, 9.0, 13.0, 17.0], [5.0]], ids=["m=4", "m=1"])
def test_lm_more_parameters_than_points_raises_type_error_like_scipy(ydata: list) -> None:
    def f(x, a, b, c, d, e):
        return a * x + b + c + d + e

    xdata = np.arange(len(ydata), dtype=float)
    with pytest.raises(TypeError) as expected:
        so.curve_fit(f, xdata, ydata, method="lm")
    with pytest.raises(TypeError, match=f"^{re.escape(str(expected.value))}$"):
        nlsq.curve_fit(f, xdata, ydata, method="lm")
