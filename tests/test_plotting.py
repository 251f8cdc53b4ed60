"""nlsq.plotting.plot_fit draws what the fit says; nlsq imports without matplotlib."""

import dataclasses
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

import nlsq
from nlsq.plotting import plot_fit


# The model and options of tests/test_result.py: the same compiled program.
def model(x, amplitude, rate, offset):
    return amplitude * jnp.exp(-rate * x) + offset


@pytest.fixture(scope="module")
def pyplot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    yield plt
    plt.close("all")


@pytest.fixture(scope="module")
def fit():
    rng = np.random.default_rng(2)
    x = np.linspace(0.0, 3.0, 40)
    sigma = np.full(x.size, 0.05)
    y = 2.0 * np.exp(-0.7 * x) + 0.3 + sigma * rng.standard_normal(x.size)
    return nlsq.CurveFit(model, p0=[2.0, 1.0, 0.0]).fit(x, y, sigma=sigma), x, y, sigma


def test_plot_shows_data_curve_and_residuals(pyplot, fit, tmp_path):
    result, x, y, sigma = fit
    figure = plot_fit(result, grid_points=50, title="decay")
    top, bottom = figure.axes
    (curve,) = top.get_lines()[-1:]
    grid = np.linspace(x.min(), x.max(), 50)
    np.testing.assert_allclose(curve.get_xdata(), grid)
    a, b, c = result.popt
    np.testing.assert_allclose(curve.get_ydata(), a * np.exp(-b * grid) + c)
    # The data and the residuals are drawn with their error bars.
    data_points = top.containers[0]
    np.testing.assert_allclose(data_points.lines[0].get_ydata(), y)
    residual_points = bottom.containers[0]
    np.testing.assert_allclose(residual_points.lines[0].get_ydata(), y - result.best_fit)
    assert data_points.has_yerr and residual_points.has_yerr
    assert top.get_title() == "decay"
    path = tmp_path / "fit.png"
    figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pyplot.close(figure)


def test_plot_through_the_fitted_values(pyplot, fit):
    result, x, *_ = fit
    figure = pyplot.figure()
    assert plot_fit(result, grid_points=None, fig=figure) is figure
    curve = figure.axes[0].get_lines()[-1]
    np.testing.assert_allclose(curve.get_ydata(), result.best_fit[np.argsort(x)])
    pyplot.close(figure)


def test_plot_refuses_a_fit_without_data(pyplot, fit):
    result = fit[0]
    stripped = dataclasses.replace(result, data=None)
    with pytest.raises(ValueError, match="kept none"):
        plot_fit(stripped)


def test_missing_matplotlib_names_the_extra(monkeypatch, fit):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "nlsq\[plot\]"'):
        plot_fit(fit[0])


def test_nlsq_imports_without_matplotlib():
    code = "import sys; sys.modules['matplotlib'] = None; import nlsq, nlsq.plotting; print('ok')"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
