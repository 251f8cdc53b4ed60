"""Repeated curve_fit calls (:mod:`nlsq.prepare.repeat`): a call that repeats an earlier
one with new values reuses its decisions and gives exactly what the full path gives.

The reference for "exactly" is the full path in the same process (the plans switched
off): both run the same compiled program on the same inputs, so the results are equal
bit for bit. scipy in the same process checks that both are right.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq import cache


def _model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def _numpy_model(x, a, b, c):
    return a * np.exp(-b * x) + c


def _data(seed: int, m: int = 90):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 4.0, m)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.standard_normal(m)
    return x, y


def _full_path(monkeypatch: pytest.MonkeyPatch, *args, **kwargs):
    with monkeypatch.context() as patch:
        patch.setattr(cache.repeat_plans, "get", lambda key: None)
        return nlsq.curve_fit(*args, **kwargs)


CASES = {
    "trf": {},
    "bounded": {"bounds": ([0.0, 0.0, -1.0], [10.0, 5.0, 2.0])},
    "dogbox": {"method": "dogbox", "bounds": ([0.0, 0.0, -1.0], [10.0, 5.0, 2.0])},
    "lm": {"method": "lm"},
    "sigma": {"sigma": np.linspace(0.5, 1.5, 90), "absolute_sigma": True},
    "loss": {"loss": "soft_l1", "f_scale": 0.1},
}


@pytest.mark.parametrize("case", CASES)
def test_repeated_calls_equal_the_full_path(case, monkeypatch: pytest.MonkeyPatch) -> None:
    options = CASES[case]
    x, y = _data(0)
    nlsq.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0], **options)
    hits = cache.repeat_plans.hits
    for seed, p0 in ((1, [2.0, 1.0, 0.1]), (2, [1.5, 2.0, 0.3])):
        x, y = _data(seed)
        popt, pcov = nlsq.curve_fit(_model, x, y, p0=p0, **options)
        popt_full, pcov_full = _full_path(monkeypatch, _model, x, y, p0=p0, **options)
        np.testing.assert_array_equal(popt, popt_full)
        np.testing.assert_array_equal(pcov, pcov_full)
        scipy_options = {k: v for k, v in options.items() if k != "method"}
        method = options.get("method", "trf")
        popt_scipy, pcov_scipy = so.curve_fit(
            _numpy_model, x, y, p0=p0, method=method, **scipy_options
        )
        np.testing.assert_allclose(popt, popt_scipy, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(pcov, pcov_scipy, rtol=1e-4, atol=1e-12)
    assert cache.repeat_plans.hits == hits + 2


def test_repeated_calls_without_p0_equal_the_full_path(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds = ([0.0, 0.0, -1.0], [10.0, 5.0, 2.0])
    x, y = _data(11)
    nlsq.curve_fit(_model, x, y, bounds=bounds)
    hits = cache.repeat_plans.hits
    x, y = _data(12)
    popt, pcov = nlsq.curve_fit(_model, x, y, bounds=bounds)
    assert cache.repeat_plans.hits == hits + 1
    popt_full, pcov_full = _full_path(monkeypatch, _model, x, y, bounds=bounds)
    np.testing.assert_array_equal(popt, popt_full)
    np.testing.assert_array_equal(pcov, pcov_full)
    popt_scipy, _ = so.curve_fit(_numpy_model, x, y, bounds=bounds)
    np.testing.assert_allclose(popt, popt_scipy, rtol=1e-6)


def test_new_bound_values_are_inputs_of_the_repeated_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = _data(3)
    nlsq.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0], bounds=(0.0, 10.0))
    # b's true value 1.3 lies outside the new upper bound: the fit ends on it.
    bounds = ([0.0, 0.0, 0.0], [10.0, 1.0, 10.0])
    popt, _ = nlsq.curve_fit(_model, x, y, p0=[1.0, 0.5, 0.0], bounds=bounds)
    assert popt[1] == pytest.approx(1.0, abs=1e-8)
    popt_full, _ = _full_path(monkeypatch, _model, x, y, p0=[1.0, 0.5, 0.0], bounds=bounds)
    np.testing.assert_array_equal(popt, popt_full)


def _scipy_error(**kwargs) -> str:
    with pytest.raises(ValueError) as caught:
        so.curve_fit(_numpy_model, **kwargs)
    return str(caught.value)


@pytest.mark.parametrize(
    "change",
    ["nan in ydata", "inf in xdata", "p0 outside the bounds", "empty bounds"],
)
def test_a_repeated_call_refuses_bad_values_as_scipy(change) -> None:
    x, y = _data(4)
    bounds = ([0.0, 0.0, -1.0], [10.0, 5.0, 2.0])
    nlsq.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0], bounds=bounds)
    call = {"xdata": x.copy(), "ydata": y.copy(), "p0": [1.0, 1.0, 0.0], "bounds": bounds}
    if change == "nan in ydata":
        call["ydata"][5] = np.nan
    elif change == "inf in xdata":
        call["xdata"][7] = np.inf
    elif change == "p0 outside the bounds":
        call["p0"] = [1.0, 9.0, 0.0]
    else:
        call["bounds"] = ([0.0, 2.0, -1.0], [10.0, 2.0, 2.0])
    expected = _scipy_error(**call)
    with pytest.raises(ValueError) as caught:
        nlsq.curve_fit(_model, **call)
    assert str(caught.value) == expected


def test_a_bad_tolerance_is_refused_as_by_a_full_call() -> None:
    x, y = _data(13)
    nlsq.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0])
    bad = x.copy()
    bad[3] = np.nan
    # The full path checks the data before the options, whatever the earlier calls.
    with pytest.raises(ValueError, match="infs or NaNs"):
        nlsq.curve_fit(_model, bad, y, p0=[1.0, 1.0, 0.0], ftol="tight")


def test_a_warning_of_the_options_repeats_on_every_call() -> None:
    x, y = _data(5)
    for _ in range(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nlsq.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0], ftol=1e-20)
        assert any("machine epsilon" in str(w.message) for w in caught)


def test_a_changed_setting_is_a_new_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data(6)
    nlsq.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0])
    programs = nlsq.cache_info()["programs"]
    monkeypatch.setenv("NLSQ_JACOBIAN_MODE", "rev")
    popt, _ = nlsq.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0])
    # Another Jacobian mode is another program, not the plan of the first call.
    assert nlsq.cache_info()["programs"] == programs + 1
    popt_scipy, _ = so.curve_fit(_numpy_model, x, y, p0=[1.0, 1.0, 0.0], method="trf")
    np.testing.assert_allclose(popt, popt_scipy, rtol=1e-6)


def test_a_reused_curvefit_repeats_its_plan() -> None:
    fitter = nlsq.CurveFit()
    x, y = _data(7)
    fitter.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0])
    hits = cache.repeat_plans.hits
    for seed in (8, 9):
        x, y = _data(seed)
        popt, _ = fitter.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0])
        popt_scipy, _ = so.curve_fit(_numpy_model, x, y, p0=[1.0, 1.0, 0.0], method="trf")
        np.testing.assert_allclose(popt, popt_scipy, rtol=1e-6)
    assert cache.repeat_plans.hits == hits + 2


def test_clear_cache_drops_the_plans() -> None:
    x, y = _data(10)
    nlsq.curve_fit(_model, x, y, p0=[1.0, 1.0, 0.0])
    assert len(cache.repeat_plans) >= 1
    nlsq.clear_cache()
    assert len(cache.repeat_plans) == 0
