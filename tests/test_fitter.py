"""``nlsq.CurveFit``: a reusable fitter, checked field by field against scipy's curve_fit.

scipy runs ``method='trf'`` with the analytic Jacobian in NumPy; nlsq the same model in
``jax.numpy``. The TRF iterations are then the same, so ``popt`` agrees to rounding and
the evaluation count, status and message are identical.
"""

from __future__ import annotations

import re
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from scipy.optimize import OptimizeWarning

import nlsq
from nlsq import CurveFit, FitResult

POPT_RTOL = 1e-8
PCOV_RTOL = 1e-6
P0 = [1.0, 1.0, 0.0]


#: Settings that change what these tests count; the disk-cache ones are left alone (the
#: process-wide persistent cache is configured once, by whichever fit comes first).


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def np_model(x, a, b, c):
    return a * np.exp(-b * x) + c


def np_jac(x, a, b, c):
    e = np.exp(-b * x)
    return np.stack([e, -a * x * e, np.ones_like(x)], axis=1)


def jax_jac(x, a, b, c):
    e = jnp.exp(-b * x)
    return jnp.stack([e, -a * x * e, jnp.ones_like(x)], axis=1)


def _data(m: int = 50, seed: int = 0, outliers: bool = False):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 4.0, m)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.standard_normal(m)
    if outliers:
        y[::7] += 1.0
    return x, y


def _loss_cost(fvec: np.ndarray, loss: str, f_scale: float) -> float:
    """scipy's ``cost`` from the weighted residuals, for the losses used here."""
    z = (fvec / f_scale) ** 2
    if loss == "linear":
        rho = z
    elif loss == "soft_l1":
        rho = 2.0 * (np.sqrt(1.0 + z) - 1.0)
    else:  # pragma: no cover - not used
        raise ValueError(loss)
    return 0.5 * f_scale**2 * float(np.sum(rho))


SIGMA = 0.02 * (1.0 + 0.5 * np.sin(np.arange(50)))

OPTIONS = {
    "plain": {},
    "bounds": {"bounds": ([0.0, 0.0, -np.inf], [10.0, 1.2, np.inf])},  # b's bound active
    "sigma": {"sigma": SIGMA, "absolute_sigma": True},
    "loss": {"loss": "soft_l1", "f_scale": 0.1},
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_result_fields_equal_scipy(name: str) -> None:
    options = OPTIONS[name]
    x, y = _data(outliers=name == "loss")
    result = CurveFit(model, p0=P0, **options).fit(x, y)
    popt, pcov, info, mesg, ier = so.curve_fit(
        np_model, x, y, p0=P0, jac=np_jac, method="trf", full_output=True, **options
    )
    assert isinstance(result, FitResult)
    np.testing.assert_allclose(result.popt, popt, rtol=POPT_RTOL)
    np.testing.assert_allclose(result.pcov, pcov, rtol=PCOV_RTOL)
    np.testing.assert_allclose(result.residuals, info["fvec"], rtol=1e-6, atol=1e-10)
    assert result.nfev == info["nfev"]
    assert (result.status, result.message) == (ier, mesg)
    assert result.success is True
    np.testing.assert_allclose(
        result.cost,
        _loss_cost(info["fvec"], options.get("loss", "linear"), options.get("f_scale", 1.0)),
        rtol=1e-10,
    )
    np.testing.assert_allclose(result.perr, np.sqrt(np.diag(pcov)), rtol=PCOV_RTOL)
    if name == "bounds":
        np.testing.assert_array_equal(result.active_mask, [0, 1, 0])
        assert result.popt[1] == pytest.approx(1.2, rel=1e-12)


def test_unpacks_as_popt_pcov() -> None:
    x, y = _data()
    result = CurveFit(model, p0=P0).fit(x, y)
    popt, pcov = result
    assert popt is result.popt and pcov is result.pcov
    assert isinstance(popt, np.ndarray) and popt.dtype == np.float64 and popt.shape == (3,)
    assert isinstance(pcov, np.ndarray) and pcov.dtype == np.float64 and pcov.shape == (3, 3)
    np.testing.assert_array_equal(result.perr, np.sqrt(np.diag(pcov)))
    # The same numbers as the function interface.
    popt_f, pcov_f = nlsq.curve_fit(model, x, y, p0=P0)
    np.testing.assert_array_equal(popt, popt_f)
    np.testing.assert_array_equal(pcov, pcov_f)


def test_callable_jac_option_matches_scipy() -> None:
    x, y = _data(m=40)
    result = CurveFit(model, p0=P0, jac=jax_jac).fit(x, y)
    popt, pcov, info, _, ier = so.curve_fit(
        np_model, x, y, p0=P0, jac=np_jac, method="trf", full_output=True
    )
    np.testing.assert_allclose(result.popt, popt, rtol=POPT_RTOL)
    np.testing.assert_allclose(result.pcov, pcov, rtol=PCOV_RTOL)
    assert (result.nfev, result.status) == (info["nfev"], ier)


def test_overrides_apply_to_one_fit_only() -> None:
    x, y = _data(outliers=True)
    fitter = CurveFit(model, p0=P0, loss="soft_l1", f_scale=0.1)
    robust = fitter.fit(x, y)
    linear = fitter.fit(x, y, loss="linear", f_scale=1.0)
    again = fitter.fit(x, y)
    np.testing.assert_array_equal(again.popt, robust.popt)
    assert fitter.options == {"p0": P0, "loss": "soft_l1", "f_scale": 0.1}

    reference = CurveFit(model, p0=P0).fit(x, y)
    np.testing.assert_array_equal(linear.popt, reference.popt)
    assert not np.allclose(linear.popt, robust.popt, rtol=1e-3)

    # p0, sigma and bounds as arguments of fit().
    bounds = OPTIONS["bounds"]["bounds"]
    bounded = fitter.fit(x, y, p0=[2.0, 1.0, 0.0], bounds=bounds, loss="linear", f_scale=1.0)
    popt, _ = so.curve_fit(np_model, x, y, p0=[2.0, 1.0, 0.0], jac=np_jac, bounds=bounds)
    np.testing.assert_allclose(bounded.popt, popt, rtol=POPT_RTOL)

    sigma = 0.02 * (1.0 + 0.5 * np.sin(np.arange(50)))
    weighted = fitter.fit(x, y, sigma=sigma, absolute_sigma=True, loss="linear", f_scale=1.0)
    popt, pcov = so.curve_fit(
        np_model, x, y, p0=P0, jac=np_jac, sigma=sigma, absolute_sigma=True, method="trf"
    )
    np.testing.assert_allclose(weighted.popt, popt, rtol=POPT_RTOL)
    np.testing.assert_allclose(weighted.pcov, pcov, rtol=PCOV_RTOL)


def test_reuse_across_fits_of_one_bucket_compiles_nothing_after_the_first() -> None:
    fitter = CurveFit(model, p0=P0)
    # Lengths 33..63 share the bucket of 64 (64 itself: see test_cache.py, xfail).
    results = [fitter.fit(*_data(m, seed)) for seed, m in enumerate((40, 33, 63, 50, 57))]
    assert results[0].cache_stats["compiles"] + results[0].cache_stats["disk_hit"] <= 1
    for result in results[1:]:
        assert result.cache_stats["hit"] is True
        assert result.cache_stats["compiles"] == 0


def test_non_convergence_raises_runtime_error_like_curve_fit() -> None:
    x, y = _data()
    with pytest.raises(RuntimeError) as expected:
        so.curve_fit(np_model, x, y, p0=P0, jac=np_jac, method="trf", max_nfev=2)
    fitter = CurveFit(model, p0=P0, max_nfev=2)
    with pytest.raises(RuntimeError, match=re.escape(str(expected.value))):
        fitter.fit(x, y)
    # As an override too, and the fitter stays usable.
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        CurveFit(model, p0=P0).fit(x, y, maxfev=2)
    assert CurveFit(model, p0=P0).fit(x, y).success


def test_covariance_not_estimated_warns_like_curve_fit() -> None:
    def line(x, a, b):
        return a * x + b

    x, y = np.array([1.0, 2.0]), np.array([3.0, 5.0])  # as many points as parameters
    with pytest.warns(OptimizeWarning, match="Covariance of the parameters could not be"):
        popt_ref, pcov_ref = so.curve_fit(line, x, y, p0=[1.0, 1.0], method="trf")
    with pytest.warns(OptimizeWarning, match="Covariance of the parameters could not be"):
        result = CurveFit(line, p0=[1.0, 1.0]).fit(x, y)
    np.testing.assert_allclose(result.popt, popt_ref, rtol=1e-6)
    assert np.isinf(result.pcov).all() and np.isinf(pcov_ref).all()
    assert np.isinf(result.perr).all()
    # absolute_sigma keeps the covariance: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = CurveFit(line, p0=[1.0, 1.0], absolute_sigma=True).fit(x, y)
    assert np.isfinite(result.pcov).all()


def test_rejects_a_non_callable_model() -> None:
    with pytest.raises(TypeError, match="callable"):
        CurveFit(np.arange(3))
