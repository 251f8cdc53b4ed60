"""FitResult's statistics, confidence intervals and report, against hand-derived formulas."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import nlsq
from nlsq.result import FitData, FitResult, parameter_names

TRUE = np.array([2.5, 1.3, 0.5])


def model(x, amplitude, rate, offset):
    return amplitude * jnp.exp(-rate * x) + offset


def model_np(x, amplitude, rate, offset):
    return amplitude * np.exp(-rate * x) + offset


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 4.0, 60)
    sigma = 0.02 + 0.05 * rng.random(x.size)
    y = model_np(x, *TRUE) + sigma * rng.standard_normal(x.size)
    return x, y, sigma


@pytest.fixture(scope="module")
def fitter():
    return nlsq.CurveFit(model, p0=[2.0, 1.0, 0.0])


class Rows:
    """Stands in for the device residuals of a result built by hand."""

    def __init__(self, values):
        self.values = np.asarray(values, float)

    def __len__(self):
        return self.values.size

    def numpy(self):
        return self.values


def hand_result(popt, pcov, residuals, data=None, absolute_sigma=False, m=None, model=None):
    return FitResult(
        popt=np.asarray(popt, float),
        pcov=np.asarray(pcov, float),
        status=1,
        message="`gtol` termination condition is satisfied.",
        success=True,
        nfev=3,
        njev=3,
        cost=0.5 * float(np.sum(np.square(residuals))),
        optimality=0.0,
        active_mask=np.zeros(len(popt), int),
        device_residuals=Rows(residuals),
        n_points=m,
        absolute_sigma=absolute_sigma,
        model=model,
        data=data,
    )


def test_unweighted_statistics_match_hand_formulas(fitter, data):
    x, y, _ = data
    result = fitter.fit(x, y)
    popt_scipy, pcov_scipy = scipy.optimize.curve_fit(
        model_np, x, y, p0=[2.0, 1.0, 0.0], method="trf"
    )
    np.testing.assert_allclose(result.popt, popt_scipy, rtol=1e-6)
    np.testing.assert_allclose(result.pcov, pcov_scipy, rtol=1e-5)

    fitted = model_np(x, *result.popt)
    ss_res = np.sum((y - fitted) ** 2)
    ss_tot = np.sum((y - y.mean()) ** 2)
    m, n = x.size, 3
    assert result.n_points == m and result.dof == m - n
    assert result.param_names == ("amplitude", "rate", "offset")
    np.testing.assert_allclose(result.best_fit, fitted, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.chisqr, ss_res, rtol=1e-10)
    np.testing.assert_allclose(result.redchi, ss_res / (m - n), rtol=1e-10)
    np.testing.assert_allclose(result.rsquared, 1 - ss_res / ss_tot, rtol=1e-10)

    perr = np.sqrt(np.diag(pcov_scipy))
    for alpha in (0.05, 0.32):
        q = scipy.stats.t.ppf(1 - alpha / 2, m - n)
        expected = np.column_stack([popt_scipy - q * perr, popt_scipy + q * perr])
        np.testing.assert_allclose(result.conf_int(alpha), expected, rtol=1e-5)
    correlation = pcov_scipy / np.outer(perr, perr)
    np.testing.assert_allclose(result.correlation, correlation, rtol=1e-5, atol=1e-8)


def test_weighted_statistics_and_absolute_sigma(fitter, data):
    x, y, sigma = data
    result = fitter.fit(x, y, sigma=sigma, absolute_sigma=True)
    fitted = model_np(x, *result.popt)
    w = 1 / sigma**2
    chi2 = np.sum(w * (y - fitted) ** 2)
    mean_w = np.sum(w * y) / np.sum(w)
    tss_w = np.sum(w * (y - mean_w) ** 2)
    np.testing.assert_allclose(result.best_fit, fitted, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.chisqr, chi2, rtol=1e-10)
    np.testing.assert_allclose(result.rsquared, 1 - chi2 / tss_w, rtol=1e-10)
    # Known variances: normal quantiles, not Student's t.
    z = scipy.stats.norm.ppf(0.975)
    expected = np.column_stack([result.popt - z * result.perr, result.popt + z * result.perr])
    np.testing.assert_allclose(result.conf_int(), expected, rtol=1e-12)
    assert "absolute sigma" in result.summary()


def test_covariance_sigma_uses_generalised_least_squares(fitter, data):
    x, y, sigma = data
    # An AR(1)-like covariance between neighbouring points.
    rho = 0.3
    lags = np.abs(np.subtract.outer(np.arange(x.size), np.arange(x.size)))
    covariance = np.outer(sigma, sigma) * rho**lags
    result = fitter.fit(x, y, sigma=covariance)
    fitted = model_np(x, *result.popt)
    inverse = np.linalg.inv(covariance)
    r = y - fitted
    ones = np.ones_like(y)
    mean_gls = (ones @ inverse @ y) / (ones @ inverse @ ones)
    tss = (y - mean_gls) @ inverse @ (y - mean_gls)
    np.testing.assert_allclose(result.best_fit, fitted, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(result.chisqr, r @ inverse @ r, rtol=1e-8)
    np.testing.assert_allclose(result.rsquared, 1 - (r @ inverse @ r) / tss, rtol=1e-8)
    np.testing.assert_allclose(result.data.sigma, sigma, rtol=1e-12)


def test_summary_reports_every_item(fitter, data):
    x, y, _ = data
    result = fitter.fit(x, y)
    text = result.summary(correlation_threshold=0.1)
    for name, value in zip(result.param_names, result.popt, strict=True):
        line = next(line for line in text.splitlines() if line.strip().startswith(name + " "))
        assert f"{value:.7g}" in line
    assert f"chi-square         = {result.chisqr:.7g}" in text
    assert f"reduced chi-square = {result.redchi:.7g}" in text
    assert f"R-squared          = {result.rsquared:.7g}" in text
    assert f"degrees of freedom = {x.size - 3}" in text
    assert f"function evals     = {result.nfev}" in text
    assert result.message in text and "converged" in text
    correlation = result.correlation
    pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
    names = result.param_names
    for i, j in pairs:
        listed = f"C({names[i]}, {names[j]})" in text
        assert listed == (abs(correlation[i, j]) > 0.1)
    assert "[[Correlations]]" not in result.summary(correlation_threshold=1.0)


def test_large_fit_carries_the_same_statistics(data):
    x, y, sigma = data
    in_memory = nlsq.CurveFit(model, p0=[2.0, 1.0, 0.0]).fit(x, y, sigma=sigma)
    chunked = nlsq.curve_fit_large(model, x, y, p0=[2.0, 1.0, 0.0], sigma=sigma, chunk_size=16)
    assert chunked.n_points == x.size and chunked.param_names == in_memory.param_names
    np.testing.assert_allclose(chunked.chisqr, in_memory.chisqr, rtol=1e-8)
    np.testing.assert_allclose(chunked.rsquared, in_memory.rsquared, rtol=1e-8)
    np.testing.assert_allclose(chunked.best_fit, in_memory.best_fit, rtol=1e-8)


def test_conf_int_edge_cases():
    popt, pcov = [1.0, 2.0], np.diag([0.04, 0.09])
    result = hand_result(popt, pcov, residuals=[0.1, -0.2, 0.3, 0.0], m=4)
    q = scipy.stats.t.ppf(0.95, 2)
    np.testing.assert_allclose(
        result.conf_int(0.1), [[1 - q * 0.2, 1 + q * 0.2], [2 - q * 0.3, 2 + q * 0.3]]
    )
    for alpha in (0.0, 1.0, -0.1, 2.0):
        with pytest.raises(ValueError, match="`alpha` must be in"):
            result.conf_int(alpha)
    # No degrees of freedom, or a covariance that could not be estimated: unbounded.
    saturated = hand_result(popt, np.full((2, 2), np.inf), residuals=[0.0, 0.0], m=2)
    assert saturated.dof == 0 and np.isnan(saturated.redchi)
    np.testing.assert_array_equal(saturated.conf_int(), [[-np.inf, np.inf]] * 2)


def test_results_without_data_or_names():
    result = hand_result([1.0, 2.0], np.eye(2), residuals=[0.5, -0.5, 1.0], m=3)
    assert result.param_names == ("p0", "p1")
    assert np.isnan(result.rsquared)
    np.testing.assert_allclose(result.chisqr, 1.5)
    with pytest.raises(ValueError, match="kept no data"):
        _ = result.best_fit
    assert "R-squared          = nan" in result.summary()


def test_parameter_names():
    assert parameter_names(model, 3) == ("amplitude", "rate", "offset")
    assert parameter_names(lambda x, *p: x, 2) == ("p0", "p1")
    assert parameter_names(lambda x, a, b: x, 3) == ("p0", "p1", "p2")
    assert parameter_names(np.add, 1) == ("p0",)


def test_constant_data_has_no_r_squared():
    y = np.full(4, 3.0)
    data = FitData(np.arange(4.0), y)
    result = hand_result([3.0], [[0.0]], residuals=np.zeros(4), data=data, m=4)
    assert np.isnan(result.rsquared)
    np.testing.assert_array_equal(result.best_fit, y)
