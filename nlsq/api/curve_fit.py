"""``nlsq.curve_fit``: scipy's ``curve_fit`` on the compiled solvers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nlsq.api.pipeline import curve_fit_call, curve_fit_outputs


def curve_fit(
    f: Callable,
    xdata: Any,
    ydata: Any,
    p0: Any = None,
    sigma: Any = None,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    bounds: Any = (-np.inf, np.inf),
    method: str | None = None,
    jac: Callable | str | None = None,
    *,
    full_output: bool = False,
    nan_policy: str | None = None,
    **kwargs: Any,
):
    """Use non-linear least squares to fit a function, ``f``, to data.

    A drop-in for :func:`scipy.optimize.curve_fit`: same signature, results,
    exceptions and warnings, with the fit running as one compiled JAX program.
    Assumes ``ydata = f(xdata, *params) + eps``.

    Parameters
    ----------
    f : callable
        The model ``f(x, p1, p2, ...)``, written with ``jax.numpy``.
    xdata : array_like or pytree of arrays
        The independent variable, of any shape (e.g. ``(k, M)`` for k predictors).
    ydata : array_like
        The dependent data, length ``M``.
    p0 : array_like, optional
        Initial guess; by default 1 for each parameter (inside the bounds if given),
        with the number of parameters taken from the signature of ``f``.
    sigma : None or scalar or M-length or MxM array_like, optional
        Uncertainty of ``ydata``: standard deviations (1-D) or a covariance matrix
        (2-D), as in scipy.
    absolute_sigma : bool, optional
        If True, ``sigma`` is absolute and ``pcov`` is not rescaled by the reduced
        chi-square.
    check_finite : bool, optional
        Check the inputs for NaN/inf (default: True unless ``nan_policy`` is given).
    bounds : 2-tuple of array_like or `scipy.optimize.Bounds`, optional
        Bounds on the parameters.
    method : {None, 'trf', 'dogbox', 'lm'}, optional
        ``None`` means 'trf' for every problem (scipy uses 'lm' for unbounded problems
        by default). 'lm' runs as scipy's ``leastsq``: its defaults, messages, ``ier``,
        covariance and, with ``full_output``, ``infodict`` (``fjac``, ``ipvt``, ``qtf``).
    jac : callable or None, optional
        ``jac(x, p1, ...)`` returning the (M, n) Jacobian of the model; by default
        the exact Jacobian from JAX autodiff.
    full_output : bool, optional
        Also return ``infodict, mesg, ier`` as scipy does.
    nan_policy : {'raise', 'omit', None}, optional
        What to do with NaNs in the input, as in scipy.
    **kwargs
        Passed to :func:`nlsq.least_squares` (``ftol``, ``xtol``, ``gtol``,
        ``x_scale``, ``loss``, ``f_scale``, ``max_nfev``/``maxfev``, ``verbose``,
        and the nlsq extensions ``dtype`` and ``jacobian_mode``), and the extension
        ``chunk_size``: fit in chunks of that many points without forming the
        Jacobian (see :func:`nlsq.curve_fit_large`); large fits are chunked
        automatically when the in-memory fit would exceed ``large.memory_budget``.

    Returns
    -------
    popt : ndarray
        Optimal parameters.
    pcov : ndarray
        Estimated covariance of ``popt``.
    infodict, mesg, ier
        Only with ``full_output=True``.

    Raises
    ------
    ValueError
        For invalid input, as scipy.
    RuntimeError
        If the fit does not converge.
    OptimizeWarning
        (warning) If the covariance cannot be estimated.
    """
    fitted = curve_fit_call(
        f,
        xdata,
        ydata,
        kwargs,
        p0=p0,
        sigma=sigma,
        absolute_sigma=absolute_sigma,
        check_finite=check_finite,
        bounds=bounds,
        method=method,
        jac=jac,
        nan_policy=nan_policy,
        full_output=full_output,
    )
    return curve_fit_outputs(*fitted, full_output)
