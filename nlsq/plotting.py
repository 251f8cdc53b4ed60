"""Plot a fit: the data, the fitted curve and the residuals (needs matplotlib).

matplotlib is an optional dependency (``pip install "nlsq[plot]"``); nlsq itself
imports without it, and only :func:`plot_fit` needs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from nlsq.result import FitResult


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "nlsq.plotting needs matplotlib, an optional dependency; install it with "
            '`pip install "nlsq[plot]"` (or `pip install matplotlib`).'
        ) from error
    return plt


def _curve(result: FitResult, x: np.ndarray, points: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The fitted curve: on a fine grid over the data's range, or at the data points."""
    if points is None or result.model is None:
        order = np.argsort(x, kind="stable")
        return x[order], result.best_fit[order]
    grid = np.linspace(np.min(x), np.max(x), points)
    # 64-bit, as the fit ran, without touching the global JAX configuration.
    with jax.enable_x64(True):
        values = np.asarray(result.model(grid, *result.popt), dtype=float)
    return grid, np.broadcast_to(values, grid.shape)


def plot_fit(
    result: FitResult,
    *,
    grid_points: int | None = 400,
    title: str | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    fig: Figure | None = None,
) -> Figure:
    """Draw the data with the fitted curve above, and the residuals below.

    Parameters
    ----------
    result : FitResult
        A fit of 1-D ``xdata`` (from :meth:`nlsq.CurveFit.fit` or
        :func:`nlsq.curve_fit_large`). With ``sigma``, the data get error bars.
    grid_points : int or None, optional
        Draw the curve at this many evenly spaced ``x`` over the data's range,
        calling the model; this assumes the model's value at a point depends on that
        point only. ``None`` draws it through the fitted values at the data points.
    title : str, optional
        Title of the figure.
    xlabel, ylabel : str, optional
        Axis labels.
    fig : matplotlib.figure.Figure, optional
        Figure to draw into (it is cleared); by default a new pyplot figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure, with the fit axes first and the residual axes second.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    ValueError
        If the fit kept no data, or its ``xdata`` is not 1-D with one value per point.

    Examples
    --------
    >>> result = nlsq.CurveFit(model, p0=p0).fit(x, y)  # doctest: +SKIP
    >>> plot_fit(result).savefig("fit.png")  # doctest: +SKIP
    """
    plt = _pyplot()
    if result.data is None:
        raise ValueError(
            "plot_fit needs the data of the fit, and this fit kept none (it streamed "
            "them from a chunk source); plot your data with f(x, *result.popt) yourself."
        )
    x = np.asarray(result.data.xdata, dtype=float)
    y = np.asarray(result.data.ydata, dtype=float)
    if x.shape != y.shape:
        raise ValueError(
            f"plot_fit draws fits with 1-D xdata, one value per point; this fit's xdata "
            f"has shape {x.shape} for {y.size} points. Plot result.best_fit against an "
            "axis of your choice instead."
        )
    sigma = result.data.sigma
    residuals = y - result.best_fit

    if fig is None:
        fig = plt.figure(figsize=(7.0, 5.5))
    else:
        fig.clear()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    points = {"fmt": "o", "markersize": 3, "color": "0.35", "elinewidth": 0.8, "zorder": 1}
    top.errorbar(x, y, yerr=sigma, label="data", **points)
    curve_x, curve_y = _curve(result, x, grid_points)
    statistics = f"$R^2$ = {result.rsquared:.5g}, reduced $\\chi^2$ = {result.redchi:.4g}"
    top.plot(curve_x, curve_y, color="C3", linewidth=2, label=f"fit ({statistics})", zorder=2)
    top.set_ylabel(ylabel)
    top.legend(loc="best", frameon=False, fontsize="small")
    if title is not None:
        top.set_title(title)

    bottom.axhline(0.0, color="C3", linewidth=1)
    bottom.errorbar(x, residuals, yerr=sigma, **points)
    bottom.set_xlabel(xlabel)
    bottom.set_ylabel("data - fit")
    fig.align_ylabels((top, bottom))
    fig.tight_layout()
    return fig
