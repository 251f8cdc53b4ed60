"""``CurveFit``: a reusable fitter for one model and many datasets."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning

from nlsq.api.batch import curve_fit_batch
from nlsq.api.curve_fit import fit_prepared, prepare
from nlsq.batch_result import BatchResult
from nlsq.result import FitResult


class CurveFit:
    """Fit one model to many datasets, reusing its compiled solver.

    Options given here apply to every :meth:`fit`; ``fit`` may override any of
    them. Every fit with the same options and a data length in the same size
    bucket (next power of two) runs the same compiled program, so after the first
    fit no compilation happens (see ``result.cache_stats``).

    Parameters
    ----------
    f : callable
        Model ``f(x, p1, ..., pn)`` written with ``jax.numpy``.
    **options
        Any keyword of :func:`nlsq.curve_fit` (``p0``, ``sigma``,
        ``absolute_sigma``, ``check_finite``, ``bounds``, ``method``, ``jac``,
        ``nan_policy``) or of :func:`nlsq.least_squares` (``loss``, ``f_scale``,
        ``x_scale``, ``ftol``, ``xtol``, ``gtol``, ``max_nfev``, ``dtype``,
        ``jacobian_mode``, ...).

    Examples
    --------
    >>> import jax.numpy as jnp, numpy as np
    >>> fitter = CurveFit(lambda x, a, b: a * jnp.exp(-b * x), p0=[1.0, 1.0])
    >>> x = np.linspace(0, 4, 50)
    >>> popt, pcov = fitter.fit(x, 2.0 * np.exp(-0.5 * x))
    >>> np.round(popt, 6)
    array([2. , 0.5])
    """

    _FIT_ARGUMENTS = (
        "p0",
        "sigma",
        "absolute_sigma",
        "check_finite",
        "bounds",
        "method",
        "jac",
        "nan_policy",
    )

    def __init__(self, f: Callable, **options: Any) -> None:
        if not callable(f):
            raise TypeError("`f` must be callable.")
        self.f = f
        self.options = options

    def fit(
        self,
        xdata: Any,
        ydata: Any,
        p0: Any = None,
        sigma: Any = None,
        bounds: Any = None,
        **overrides: Any,
    ) -> FitResult:
        """Fit the model to one dataset.

        Parameters
        ----------
        xdata, ydata : array_like
            The data, as in :func:`nlsq.curve_fit`.
        p0, sigma, bounds : optional
            Override the fitter's values for this fit.
        **overrides
            Any other option of the constructor, for this fit only.

        Returns
        -------
        FitResult
            Unpacks as ``popt, pcov``; also carries ``status``, ``nfev``, ``cost``,
            ``residuals``, ``perr`` and ``cache_stats``, a report
            (:meth:`nlsq.FitResult.summary`) and confidence intervals
            (:meth:`nlsq.FitResult.conf_int`).

        Raises
        ------
        RuntimeError
            If the fit does not converge, as :func:`nlsq.curve_fit`.
        """
        options = {**self.options, **overrides}
        for name, value in (("p0", p0), ("sigma", sigma), ("bounds", bounds)):
            if value is not None:
                options[name] = value
        arguments = {name: options.pop(name, None) for name in self._FIT_ARGUMENTS}
        absolute_sigma = bool(arguments.pop("absolute_sigma") or False)
        if arguments["bounds"] is None:
            arguments["bounds"] = (-np.inf, np.inf)
        prepared = prepare(self.f, xdata, ydata, kwargs=options, **arguments)
        result = fit_prepared(self.f, arguments["jac"], prepared, absolute_sigma)
        if result.covariance_warning:
            warnings.warn(
                "Covariance of the parameters could not be estimated",
                category=OptimizeWarning,
                stacklevel=2,
            )
        return result

    def fit_batch(
        self,
        xdata: Any,
        ydata: Any,
        p0: Any = None,
        sigma: Any = None,
        bounds: Any = None,
        **overrides: Any,
    ) -> BatchResult:
        """Fit the model to many datasets at once (see :func:`nlsq.curve_fit_batch`).

        Parameters
        ----------
        xdata, ydata : array_like
            The data of every fit, as in :func:`nlsq.curve_fit_batch`.
        p0, sigma, bounds : optional
            Override the fitter's values for this batch (shared or per fit).
        **overrides
            Any other option of the constructor or of :func:`nlsq.curve_fit_batch`
            (``mask``, ``fits_per_chunk``, ``progress``, ...), for this batch only.

        Returns
        -------
        BatchResult
            One row per fit; unpacks as ``popt, pcov``.
        """
        # chunk_size splits one large fit; it has no meaning for a batch.
        stored = {k: v for k, v in self.options.items() if k != "chunk_size"}
        options = {**stored, **overrides}
        for name, value in (("p0", p0), ("sigma", sigma), ("bounds", bounds)):
            if value is not None:
                options[name] = value
        if options.get("bounds") is None:
            options["bounds"] = (-np.inf, np.inf)
        return curve_fit_batch(self.f, xdata, ydata, **options)
