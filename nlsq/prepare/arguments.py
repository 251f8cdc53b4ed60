"""``curve_fit``'s and ``least_squares``'s arguments as validated problem data.

Validation runs in scipy's order with scipy's messages, in NumPy, before anything is
traced; every fit, single or batched, in memory or chunked, is prepared here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from nlsq.bounds import prepare_bounds
from nlsq.prepare.options import LeastsqSettings, ValidatedOptions, keyword_options, leastsq_options
from nlsq.scipy_types import is_bounds


def number_of_parameters(f: Callable) -> int:
    """Parameters of ``f(x, p1, ..., pn)`` counted from its signature, as scipy does."""
    try:
        signature = inspect.signature(f)
    except (TypeError, ValueError) as error:
        raise ValueError("Unable to determine number of fit parameters.") from error
    positional = [
        p
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) < 2:
        raise ValueError("Unable to determine number of fit parameters.")
    return len(positional) - 1


def initialize_feasible(lb: np.ndarray, ub: np.ndarray) -> np.ndarray:
    """Default ``p0``: 1, the midpoint of a finite box, or 1 inside a one-sided bound."""
    p0 = np.ones_like(lb)
    lb_finite, ub_finite = np.isfinite(lb), np.isfinite(ub)
    both = lb_finite & ub_finite
    p0[both] = 0.5 * (lb[both] + ub[both])
    only_lower = lb_finite & ~ub_finite
    p0[only_lower] = lb[only_lower] + 1
    only_upper = ~lb_finite & ub_finite
    p0[only_upper] = ub[only_upper] - 1
    return p0


def is_array_like(xdata: Any) -> bool:
    # The plain types first: an isinstance check against jax.Array is an ABC lookup.
    return isinstance(xdata, list | tuple | np.ndarray) or isinstance(xdata, jax.Array)


def _omit_nan(
    xdata: np.ndarray, ydata: np.ndarray, sigma: Any
) -> tuple[np.ndarray, np.ndarray, Any]:
    """Drop the points where ``ydata`` or any ``xdata`` coordinate is NaN."""
    has_nan = np.isnan(xdata)
    has_nan = has_nan.any(axis=tuple(range(has_nan.ndim - 1)))
    has_nan |= np.isnan(ydata)
    keep = ~has_nan
    if sigma is not None:
        sigma = np.asarray(sigma)
        if sigma.ndim == 1:
            sigma = sigma[keep]
        elif sigma.ndim == 2:
            sigma = sigma[keep][:, keep]
    return xdata[..., keep], ydata[keep], sigma


def _contains_nan(a: Any) -> bool:
    try:
        return bool(np.isnan(np.sum(np.asarray(a, dtype=float))))
    except (TypeError, ValueError):
        return False


def sigma_transform(sigma: Any, size: int) -> tuple[str, np.ndarray | None]:
    """scipy's weighting: ``1/sigma`` for errors, the Cholesky factor for a covariance."""
    if sigma is None:
        return "none", None
    # sigma keeps its dtype, as in scipy (float32 sigma gives float32 weights).
    sigma = np.asarray(sigma)
    if sigma.size == 1 or sigma.shape == (size,):
        return "diagonal", 1.0 / sigma
    if sigma.shape == (size, size):
        from scipy.linalg import LinAlgError, cholesky

        try:
            return "covariance", cholesky(sigma, lower=True)
        except LinAlgError as error:
            raise ValueError("`sigma` must be positive definite.") from error
    raise ValueError("`sigma` has incorrect shape.")


def _residual_count(f: Callable, xdata: Any, ydata: np.ndarray, p0: np.ndarray) -> int:
    """Residuals of the fit: the model's output broadcast against ``ydata``.

    scipy counts the residual function's output, so a scalar ``ydata`` (as in
    ``curve_fit(f, xdata, 0)``) gives as many residuals as the model has values. A
    model that cannot be evaluated here counts as ``ydata.size``; its error comes
    with the fit.
    """
    try:
        with jax.enable_x64(True):
            shape = np.shape(f(xdata, *p0))
        return int(np.prod(np.broadcast_shapes(shape, ydata.shape)))
    except Exception:  # noqa: BLE001 - the fit reports the model's own error
        return ydata.size


def _refuse_underdetermined(f: Callable, xdata: Any, ydata: np.ndarray, p0: np.ndarray) -> None:
    """scipy's ``TypeError`` of 'lm' (its default method) for more parameters than data.

    As in scipy, a scalar ``ydata`` is broadcast against the model (then ``leastsq``'s
    own test counts the residuals); otherwise the data points are counted.
    """
    n = p0.size
    if ydata.size != 1:
        raise TypeError(
            f"The number of func parameters={n} must not exceed the number of "
            f"data points={ydata.size}"
        )
    m = _residual_count(f, xdata, ydata, p0)
    if n > m:
        raise TypeError(
            f"Improper input: func input vector length N={n} must not exceed "
            f"func output vector length M={m}"
        )


@dataclass(frozen=True)
class PreparedFit:
    """``curve_fit`` inputs after validation."""

    options: ValidatedOptions
    xdata: Any
    ydata: np.ndarray
    sigma_kind: str
    transform: np.ndarray | None
    n_params: int
    #: ``method='lm'``: scipy runs ``leastsq`` (MINPACK), with its own defaults.
    leastsq: LeastsqSettings | None = None


def checked_data(xdata: Any, ydata: Any, check_finite: bool) -> tuple[Any, np.ndarray]:
    """``xdata`` (when array-like) and ``ydata`` as float arrays, refused by NumPy's
    ``asarray_chkfinite`` when ``check_finite`` and they hold NaN or inf (scipy's error)."""
    convert = np.asarray_chkfinite if check_finite else np.asarray
    ydata = convert(ydata, float)
    if is_array_like(xdata):
        xdata = convert(xdata, float)
    return xdata, ydata


def prepare_curve_fit(
    f: Callable,
    xdata: Any,
    ydata: Any,
    p0: Any,
    sigma: Any,
    check_finite: bool | None,
    bounds: Any,
    method: str | None,
    jac: Callable | str | None,
    nan_policy: str | None,
    kwargs: dict[str, Any],
) -> PreparedFit:
    """Validate ``curve_fit``'s inputs in scipy's order, with scipy's messages.

    Returns
    -------
    PreparedFit
        Validated options and NumPy data, ready for the plan and run stages
        (:func:`nlsq.api.pipeline.fit_curve`).
    """
    kwargs = dict(kwargs)
    n = parameter_count(f, p0)
    lb, ub = bounds_arrays(bounds, n)
    p0 = initialize_feasible(lb, ub) if p0 is None else np.atleast_1d(p0)

    bounded_problem = bool(((lb > -np.inf) | (ub < np.inf)).any())
    user_chose_method = method is not None
    if method is None:
        method = "trf"
    if method == "lm" and bounded_problem:
        raise ValueError(
            "Method 'lm' only works for unconstrained problems. Use 'trf' or 'dogbox' instead."
        )

    if check_finite is None:
        check_finite = nan_policy is None
    xdata, ydata = checked_data(xdata, ydata, check_finite)
    if ydata.size == 0:
        raise ValueError("`ydata` must not be empty!")

    if not check_finite and nan_policy is not None:
        if nan_policy == "propagate":
            raise ValueError("`nan_policy='propagate'` is not supported by this function.")
        if nan_policy not in ("raise", "omit"):
            raise ValueError("nan_policy must be one of {None, 'raise', 'omit'}")
        contains_nan = _contains_nan(xdata) or _contains_nan(ydata)
        if contains_nan and nan_policy == "raise":
            raise ValueError("The input contains nan values")
        if contains_nan:
            xdata, ydata, sigma = _omit_nan(xdata, ydata, sigma)

    kind, transform = sigma_transform(sigma, ydata.size)

    if "args" in kwargs:
        raise ValueError("'args' is not a supported keyword argument.")
    if (method == "lm" or not user_chose_method) and not bounded_problem and n > ydata.size:
        _refuse_underdetermined(f, xdata, ydata, p0)
    if method == "lm":
        options, leastsq = leastsq_options(p0, kwargs)
        return PreparedFit(options, xdata, ydata, kind, transform, p0.size, leastsq)

    options = keyword_options(p0, jac=jac, bounds=(lb, ub), method=method, kwargs=kwargs)
    return PreparedFit(options, xdata, ydata, kind, transform, p0.size)


def parameter_count(f: Callable, p0: Any) -> int:
    """The number of parameters: the size of ``p0``, or counted from ``f``'s signature.

    Raises
    ------
    ValueError
        If ``p0`` is None and ``f``'s signature does not tell.
    """
    return number_of_parameters(f) if p0 is None else int(np.size(p0))


def bounds_arrays(bounds: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lb, ub)`` float arrays of length ``n`` from a 2-tuple or a ``Bounds``."""
    if is_bounds(bounds):
        bounds = (bounds.lb, bounds.ub)
    return prepare_bounds(bounds, n)


def initial_guess(f: Callable, p0: Any, bounds: Any) -> tuple[np.ndarray, Any]:
    """``p0`` as a float array (by default :func:`initialize_feasible`) and the bounds
    as ``(lb, ub)`` arrays."""
    lb, ub = bounds_arrays(bounds, parameter_count(f, p0))
    if p0 is None:
        p0 = initialize_feasible(lb, ub)
    return np.atleast_1d(np.asarray(p0, float)), (lb, ub)


def _is_dynamic(leaf: Any) -> bool:
    """Arrays and floats are traced; ints, strings and objects stay Python values."""
    return isinstance(leaf, np.ndarray | jax.Array | float | np.floating)


def split_arguments(args: tuple, kwargs: dict, dtype: type[np.floating]):
    """Split ``(args, kwargs)`` into traced leaves and a hashable static description."""
    leaves, treedef = jax.tree.flatten((tuple(args), dict(kwargs)))
    dynamic_mask = tuple(_is_dynamic(leaf) for leaf in leaves)
    dynamic = []
    for leaf, is_dynamic in zip(leaves, dynamic_mask, strict=True):
        if is_dynamic:
            leaf = np.asarray(leaf)
            if np.issubdtype(leaf.dtype, np.floating):
                leaf = leaf.astype(dtype)
            dynamic.append(leaf)
    static = tuple(leaf for leaf, d in zip(leaves, dynamic_mask, strict=True) if not d)

    def merge(dynamic_leaves: list) -> tuple[tuple, dict]:
        dynamic_iter, static_iter = iter(dynamic_leaves), iter(static)
        merged = [next(dynamic_iter) if d else next(static_iter) for d in dynamic_mask]
        return jax.tree.unflatten(treedef, merged)

    return dynamic, (treedef, dynamic_mask, static), merge


def finite_difference_options(
    prepared: PreparedFit, jac: Callable | str | None, model_on_host: bool
) -> ValidatedOptions:
    """Finite differences where scipy would use them and no exact Jacobian exists.

    A NumPy model without ``jac`` gets scipy's differences: '2-point' for 'trf' and
    'dogbox', MINPACK's forward differences (counted in nfev) for 'lm'. A JAX model
    keeps its exact autodiff Jacobian; with 'lm' it then runs as ``leastsq`` with
    a ``Dfun`` (``maxfev = 100 * (n + 1)``).
    """
    options = prepared.options
    leastsq = prepared.leastsq
    n = prepared.n_params
    if leastsq is None:
        if model_on_host and jac is None:
            return dataclasses.replace(options, jac_scheme="2-point")
        return options
    differences = not callable(jac) and (model_on_host or isinstance(jac, str))
    if differences:
        maxfev = leastsq.maxfev or 200 * (n + 1)
        options = dataclasses.replace(options, jac_scheme="minpack", jac_nfev=n)
    else:
        maxfev = leastsq.maxfev or 100 * (n + 1)
    inputs = dataclasses.replace(options.inputs, max_nfev=maxfev)
    return dataclasses.replace(options, inputs=inputs)
