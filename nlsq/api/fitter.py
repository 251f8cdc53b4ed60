"""``CurveFit``: a reusable fitter, for one model and many datasets or as the published
nlsq's ``CurveFit().curve_fit(f, ...)``."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from nlsq.api.batch import curve_fit_batch
from nlsq.api.pipeline import curve_fit_call, curve_fit_outputs, warn_if_no_covariance
from nlsq.batch_result import BatchResult
from nlsq.result import FitResult

#: ``curve_fit``'s named parameters, which a fitter's options may preset.
FIT_ARGUMENTS = (
    "p0",
    "sigma",
    "absolute_sigma",
    "check_finite",
    "bounds",
    "method",
    "jac",
    "nan_policy",
)

#: Switches of the published nlsq's constructor for features this library does not
#: have; their off value is accepted so that code written for it runs unchanged.
_PUBLISHED_SWITCHES = ("enable_stability", "enable_recovery", "enable_overflow_check")


def _fixed_length(flength: Any) -> int | None:
    """``flength`` as a positive number of points, or None."""
    if flength is None:
        return None
    if isinstance(flength, bool) or not isinstance(flength, numbers.Real):
        raise TypeError("`flength` must be a number of data points.")
    if flength < 1 or int(flength) != flength:
        raise ValueError("`flength` must be a positive whole number of data points.")
    return int(flength)


class CurveFit:
    """Fit models to many datasets, reusing their compiled solvers.

    Two ways to use it, the same path underneath:

    * ``CurveFit(f, **options)`` binds a model: :meth:`fit` and :meth:`fit_batch` fit
      it to each dataset;
    * ``CurveFit()`` is the published nlsq's fitter: ``cf.curve_fit(f, xdata, ydata,
      ...)`` has :func:`nlsq.curve_fit`'s signature and results.

    Every fit with the same model and options and a data length in the same size
    bucket runs the same compiled program, so after the first no compilation
    happens (see ``result.cache_stats``).

    Parameters
    ----------
    f : callable, optional
        Model ``f(x, p1, ..., pn)`` written with ``jax.numpy``, for :meth:`fit` and
        :meth:`fit_batch`. A number here is taken as ``flength``, as in the published
        nlsq's ``CurveFit(flength)``.
    flength : int, optional
        Fixed padded length (the published nlsq's): data of up to ``flength`` points
        are padded to exactly ``flength``, so that every such dataset runs one
        compiled program; longer data use the usual size buckets.
    use_dynamic_sizing : bool, optional
        True ignores ``flength`` and pads to the size buckets (next power of two),
        as the published nlsq does for data of varying size.
    **options
        Any keyword of :func:`nlsq.curve_fit` (``p0``, ``sigma``,
        ``absolute_sigma``, ``check_finite``, ``bounds``, ``method``, ``jac``,
        ``nan_policy``, ``chunk_size``) or of :func:`nlsq.least_squares` (``loss``,
        ``f_scale``, ``x_scale``, ``ftol``, ``xtol``, ``gtol``, ``max_nfev``,
        ``dtype``, ``jacobian_mode``, ...), the default of every fit. The published
        nlsq's ``enable_stability``, ``enable_recovery`` and ``enable_overflow_check``
        are accepted when False (their default) and refused when True.

    Examples
    --------
    >>> import jax.numpy as jnp, numpy as np
    >>> x = np.linspace(0, 4, 50)
    >>> y = 2.0 * np.exp(-0.5 * x)
    >>> fitter = CurveFit(lambda x, a, b: a * jnp.exp(-b * x), p0=[1.0, 1.0])
    >>> popt, pcov = fitter.fit(x, y)
    >>> np.round(popt, 6)
    array([2. , 0.5])
    >>> cf = CurveFit()
    >>> popt, pcov = cf.curve_fit(lambda x, a, b: a * jnp.exp(-b * x), x, y, p0=[1.0, 1.0])
    >>> np.round(popt, 6)
    array([2. , 0.5])
    """

    def __init__(
        self,
        f: Callable | None = None,
        flength: int | None = None,
        use_dynamic_sizing: bool = False,
        **options: Any,
    ) -> None:
        if f is not None and not callable(f):
            if not isinstance(f, numbers.Real) or flength is not None:
                raise TypeError("`f` must be callable.")
            f, flength = None, f
        for name in _PUBLISHED_SWITCHES:
            if options.pop(name, False):
                raise ValueError(
                    f"`{name}=True` (a feature of the published nlsq) is not provided by "
                    "this nlsq; remove it."
                )
        self.f = f
        self.flength = _fixed_length(flength)
        self.use_dynamic_sizing = bool(use_dynamic_sizing)
        self.options = options

    def _fixed_length(self) -> int | None:
        return None if self.use_dynamic_sizing else self.flength

    def _bound_model(self) -> Callable:
        if self.f is None:
            raise TypeError(
                "This CurveFit has no model: create it as CurveFit(f) to use fit(), or "
                "call cf.curve_fit(f, xdata, ydata, ...)."
            )
        return self.f

    def _options(self, overrides: dict[str, Any], **named: Any) -> dict[str, Any]:
        options = {**self.options, **overrides}
        for name, value in named.items():
            if value is not None:
                options[name] = value
        return options

    def _fit(
        self, f: Callable, xdata: Any, ydata: Any, options: dict[str, Any], full_output: bool
    ) -> tuple:
        arguments = {name: options.pop(name) for name in FIT_ARGUMENTS if name in options}
        if arguments.get("bounds") is None:
            arguments["bounds"] = (-np.inf, np.inf)
        return curve_fit_call(
            f,
            xdata,
            ydata,
            options,
            **arguments,
            full_output=full_output,
            fixed_length=self._fixed_length(),
        )

    def fit(
        self,
        xdata: Any,
        ydata: Any,
        p0: Any = None,
        sigma: Any = None,
        bounds: Any = None,
        **overrides: Any,
    ) -> FitResult:
        """Fit the bound model to one dataset.

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
            Unpacks and indexes as ``popt, pcov``; also carries ``status``, ``nfev``,
            ``cost``, ``residuals``, ``perr`` and ``cache_stats``, a report
            (:meth:`nlsq.FitResult.summary`) and confidence intervals
            (:meth:`nlsq.FitResult.conf_int`).

        Raises
        ------
        RuntimeError
            If the fit does not converge, as :func:`nlsq.curve_fit`.
        TypeError
            If the fitter was created without a model.
        """
        options = self._options(overrides, p0=p0, sigma=sigma, bounds=bounds)
        result, _, _ = self._fit(self._bound_model(), xdata, ydata, options, False)
        warn_if_no_covariance(result)
        return result

    def curve_fit(
        self,
        f: Callable,
        xdata: Any,
        ydata: Any,
        p0: Any = None,
        sigma: Any = None,
        absolute_sigma: bool | None = None,
        check_finite: bool | None = None,
        bounds: Any = None,
        method: str | None = None,
        jac: Callable | str | None = None,
        *,
        full_output: bool = False,
        nan_policy: str | None = None,
        **kwargs: Any,
    ) -> tuple:
        """:func:`nlsq.curve_fit` with this fitter's options as defaults.

        The published nlsq's ``cf.curve_fit(f, xdata, ydata, ...)``: the same
        signature, exceptions, warnings and results as :func:`nlsq.curve_fit`
        (``popt, pcov``, and ``infodict, mesg, ier`` with ``full_output``). Fits of
        one model with data in one size bucket (or up to ``flength`` points) share
        one compiled program.
        """
        options = self._options(
            kwargs,
            p0=p0,
            sigma=sigma,
            absolute_sigma=absolute_sigma,
            check_finite=check_finite,
            bounds=bounds,
            method=method,
            jac=jac,
            nan_policy=nan_policy,
        )
        return curve_fit_outputs(*self._fit(f, xdata, ydata, options, full_output), full_output)

    def fit_batch(
        self,
        xdata: Any,
        ydata: Any,
        p0: Any = None,
        sigma: Any = None,
        bounds: Any = None,
        **overrides: Any,
    ) -> BatchResult:
        """Fit the bound model to many datasets at once (:func:`nlsq.curve_fit_batch`).

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
        options = self._options(overrides, p0=p0, sigma=sigma, bounds=bounds)
        # chunk_size splits one large fit; it has no meaning for a batch.
        if "chunk_size" not in overrides:
            options.pop("chunk_size", None)
        if options.get("bounds") is None:
            options["bounds"] = (-np.inf, np.inf)
        return curve_fit_batch(self._bound_model(), xdata, ydata, **options)
