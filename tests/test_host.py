"""Models and Jacobians written with NumPy, run on the host (nlsq.host).

Reference: scipy fitting the very same NumPy functions; scipy differentiates them by
finite differences, and so must nlsq.
"""

import warnings

import numpy as np
import pytest
import scipy.optimize

import nlsq
from nlsq.host import NumPyModelWarning


def exp_decay(x, a, b, c):
    return a * np.exp(-b * x) + c


def gaussian(x, a, mu, sigma):
    return a * np.exp(-((x - mu) ** 2) / (2 * sigma**2))


def poly4(x, c0, c1, c2, c3, c4):
    # np.polyval makes it NumPy code (Horner's rule in plain arithmetic would trace).
    return np.polyval([c4, c3, c2, c1, c0], x)


def sinusoid(x, a, w, phi, c):
    return a * np.sin(w * x + phi) + c


def _data(model, truth, x, seed=0):
    rng = np.random.default_rng(seed)
    y = model(x, *truth)
    return y + 0.02 * np.abs(y).max() * rng.standard_normal(x.size)


X = np.linspace(0.0, 5.0, 80)
STANDARD_MODELS = [
    pytest.param(exp_decay, (2.5, 1.3, 0.5), (1.0, 1.0, 0.0), id="exp_decay"),
    pytest.param(gaussian, (3.0, 2.2, 0.7), (2.0, 2.0, 1.0), id="gaussian"),
    pytest.param(poly4, (1.0, -2.0, 0.5, 0.3, -0.05), (0.0,) * 5, id="poly4"),
    pytest.param(sinusoid, (1.5, 2.0, 0.3, 0.2), (1.0, 2.1, 0.0, 0.0), id="sinusoid"),
]


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumPyModelWarning)
        return function(*args, **kwargs)


@pytest.mark.parametrize("method", ["trf", "dogbox", "lm"])
@pytest.mark.parametrize(("model", "truth", "p0"), STANDARD_MODELS)
def test_numpy_model_fits_equal_scipy(model, truth, p0, method):
    # On [0, 5] the powers up to x**4 make finite differences noisy enough that a
    # 1e-15 difference in an iterate (QR + SVD here, SVD in scipy) changes the
    # stopping iteration; [-1, 1] keeps the comparison about the algorithm.
    x = np.linspace(-1.0, 1.0, 80) if model is poly4 else X
    y = _data(model, truth, x)
    expected = scipy.optimize.curve_fit(model, x, y, p0=p0, method=method, full_output=True)
    popt, pcov, info, mesg, ier = _quiet(
        nlsq.curve_fit, model, x, y, p0=p0, method=method, full_output=True
    )
    # 1e-7 relative to the largest parameter: MINPACK's differences amplify rounding
    # in the iterates, and poly4's smallest coefficient is the least determined.
    np.testing.assert_allclose(popt, expected[0], rtol=1e-7, atol=1e-7 * np.abs(expected[0]).max())
    # Both covariances are computed as scipy's ('lm': from MINPACK's last QR factor),
    # from Jacobians that carry the iterates' differences.
    scale = np.abs(np.diag(expected[1])).max()
    np.testing.assert_allclose(pcov, expected[1], rtol=1e-6, atol=1e-6 * scale)
    # Finite differences amplify 1e-16 differences in the iterates, so the last
    # iteration may stop on another test (ftol vs ftol and xtol) than scipy's.
    assert ier in (1, 2, 3, 4) and expected[4] in (1, 2, 3, 4)
    assert abs(info["nfev"] - expected[2]["nfev"]) <= 1


def test_numpy_model_warns_once_per_model():
    y = _data(exp_decay, (2.5, 1.3, 0.5), X)

    def local_model(x, a, b, c):
        return a * np.exp(-b * x) + c

    with pytest.warns(NumPyModelWarning, match="jax.numpy"):
        nlsq.curve_fit(local_model, X, y, p0=[1.0, 1.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nlsq.curve_fit(local_model, X, y, p0=[1.1, 1.0, 0.0])


@pytest.mark.parametrize("method", ["trf", "dogbox", "lm"])
@pytest.mark.parametrize("jac", ["2-point", "3-point", "cs"])
def test_numpy_residuals_in_least_squares_equal_scipy(method, jac):
    def fun(x, t, y):
        return x[0] * np.exp(-x[1] * t) - y

    t = np.linspace(0, 3, 30)
    y = 2.0 * np.exp(-0.7 * t) + 0.01 * np.cos(5 * t)
    expected = scipy.optimize.least_squares(
        fun, [1.0, 1.0], jac=jac, method=method, args=(t, y), diff_step=1e-6
    )
    result = _quiet(
        nlsq.least_squares, fun, [1.0, 1.0], jac=jac, method=method, args=(t, y), diff_step=1e-6
    )
    np.testing.assert_allclose(result.x, expected.x, rtol=1e-9)
    assert (result.status, result.nfev, result.njev) == (
        expected.status,
        expected.nfev,
        expected.njev,
    )
    np.testing.assert_allclose(result.jac, expected.jac, rtol=1e-6, atol=1e-12)


def test_numpy_jacobian_is_used_as_given():
    def fun(x):
        return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])

    def jac(x):
        return np.array([[-20 * x[0], 10.0], [-1.0, 0.0]])

    expected = scipy.optimize.least_squares(fun, [-1.2, 1.0], jac=jac)
    result = _quiet(nlsq.least_squares, fun, [-1.2, 1.0], jac=jac)
    np.testing.assert_allclose(result.x, expected.x, rtol=1e-12)
    assert (result.nfev, result.njev) == (expected.nfev, expected.njev)


def test_numpy_model_is_called_as_often_as_in_scipy():
    """Numeric calls only: nlsq also calls the model once with tracers, to learn
    that it cannot be traced."""
    calls = {"nlsq": 0, "scipy": 0}

    def counting(name):
        def model(x, a, b):
            if isinstance(a, float):
                calls[name] += 1
            return a * np.exp(-b * x)

        return model

    y = _data(lambda x, a, b: a * np.exp(-b * x), (2.0, 0.8), X)
    scipy.optimize.curve_fit(counting("scipy"), X, y, p0=[1.0, 1.0], method="trf")
    _quiet(nlsq.curve_fit, counting("nlsq"), X, y, p0=[1.0, 1.0], method="trf")
    # The first fit of a model reuses its detection call as f(p0); whether that call
    # is counted here depends on the arguments it saw, so allow one call of slack.
    assert abs(calls["nlsq"] - calls["scipy"]) <= 1


def test_exception_in_numpy_model_surfaces_with_its_type_and_traceback():
    class ModelError(Exception):
        pass

    def failing(x, a, b):
        if a > 1.5:
            raise ModelError("a is too large")
        return a * np.exp(-b * x)

    y = _data(lambda x, a, b: a * np.exp(-b * x), (2.0, 0.8), X)
    with pytest.raises(ModelError, match="a is too large") as info:
        _quiet(nlsq.curve_fit, failing, X, y, p0=[1.0, 1.0])
    assert any(entry.name == "failing" for entry in info.traceback)


def test_model_returning_a_different_shape_later_raises():
    def shifty(x, a, b):
        value = a * np.exp(-b * x)
        return value if a < 1.2 else value[:-1]

    y = _data(lambda x, a, b: a * np.exp(-b * x), (2.0, 0.8), X)
    with pytest.raises(ValueError, match="returned shape"):
        _quiet(nlsq.curve_fit, shifty, X, y, p0=[1.0, 1.0])


def test_numpy_model_in_float64_sees_float64_parameters():
    seen = []

    def model(x, a, b):
        seen.append(np.asarray(a).dtype)
        return a * np.exp(-b * x)

    y = _data(lambda x, a, b: a * np.exp(-b * x), (2.0, 0.8), X)
    _quiet(nlsq.curve_fit, model, X, y, p0=[1.0, 1.0])
    assert set(seen) == {np.dtype(np.float64)}


def _never_twice_in_a_row(function):
    """``function`` that fails when called twice in a row with the same parameters,
    and records the parameters of every call it gets as NumPy values."""

    def checked(x, *p):
        values = tuple(float(v) for v in p)
        assert values != checked.last, f"called again with {values}"
        checked.last = values
        return function(x, *p)

    checked.last = None
    return checked


def test_probe_is_not_seen_as_a_repeated_call():
    """As scipy's ``test_gh13670``: the traceability probe's values at ``p0`` are reused, so a
    stateful NumPy model and Jacobian are not called at ``p0`` a second time."""
    rng = np.random.default_rng(8250058582555444926)
    x = np.linspace(0, 3, 101)
    y = 2 * x + 1 + rng.normal(size=x.size) * 0.5
    line = _never_twice_in_a_row(lambda x, a, b: x * a + b)
    jac = _never_twice_in_a_row(lambda x, a, b: np.array([x, np.ones_like(x)]).T)
    popt, _ = _quiet(nlsq.curve_fit, line, x, y, [1.0, 5.0], method="lm", jac=jac)
    expected, _ = scipy.optimize.curve_fit(lambda x, a, b: x * a + b, x, y, [1.0, 5.0], method="lm")
    np.testing.assert_allclose(popt, expected, rtol=1e-7)


def test_model_mixing_probe_arrays_with_numpy_values_runs_in_64_bit():
    """A model that keeps the JAX arrays it was probed with and mixes them with the
    NumPy values of later calls must not meet 32-bit JAX (a truncation warning)."""
    seen = []

    def model(x, a, b):
        if seen:
            np.asarray(seen[-1] != a)  # a JAX float64 array against a NumPy float64
        seen.append(a)
        return a * np.exp(-b * x)

    y = 2.0 * np.exp(-0.5 * X)
    popt, _ = _quiet(nlsq.curve_fit, model, X, y, [1.0, 1.0])
    np.testing.assert_allclose(popt, [2.0, 0.5], rtol=1e-6)


def test_a_jax_model_is_recognised_without_running_it_eagerly():
    """Deciding that a jax.numpy model is traceable compiles nothing: the first fit
    compiles the solver at most (running the model eagerly would compile each of its
    operations)."""
    import jax
    import jax.numpy as jnp

    compiles = []

    def on_duration(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(kwargs.get("fun_name"))

    def model(x, a, b, c):  # code of its own: no program of it is cached yet
        return a * jnp.tanh(b * x) - c * 0.25

    x = np.linspace(0.0, 3.0, 37)
    y = 1.5 * np.tanh(0.8 * x) - 0.1
    jax.monitoring.register_event_duration_secs_listener(on_duration)
    try:
        popt, _ = nlsq.curve_fit(model, x, y, p0=[1.0, 1.0, 0.0])
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
    reference, _ = scipy.optimize.curve_fit(
        lambda x, a, b, c: a * np.tanh(b * x) - c * 0.25, x, y, p0=[1.0, 1.0, 0.0]
    )
    np.testing.assert_allclose(popt, reference, rtol=1e-6)
    # None at all when an earlier run left the solver on disk.
    assert set(compiles) <= {"jit(program)"}
