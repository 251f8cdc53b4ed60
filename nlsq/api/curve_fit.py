"""``nlsq.curve_fit``: scipy's ``curve_fit`` on the compiled TRF solver."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from scipy.linalg import LinAlgError, cholesky
from scipy.optimize import Bounds, OptimizeWarning, leastsq

from nlsq import config
from nlsq.api import large
from nlsq.api.least_squares import ValidatedOptions, solve, validate_options
from nlsq.api.program import SolverInputs
from nlsq.bounds import prepare_bounds
from nlsq.errors import TraceTimeInputError
from nlsq.host import host_callable, host_fit, runs_on_host, warn_once
from nlsq.identity import model_key
from nlsq.jacobian import resolve_jacobian_mode
from nlsq.pointwise import acts_pointwise
from nlsq.precision import resolve_dtype
from nlsq.result import FitData, FitResult
from nlsq.solvers.termination import TERMINATION_MESSAGES


def _number_of_parameters(f: Callable) -> int:
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


def _initialize_feasible(lb: np.ndarray, ub: np.ndarray) -> np.ndarray:
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


def _is_array_like(xdata: Any) -> bool:
    return isinstance(xdata, list | tuple | np.ndarray | jax.Array)


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


def _sigma_transform(sigma: Any, size: int) -> tuple[str, np.ndarray | None]:
    """scipy's weighting: ``1/sigma`` for errors, the Cholesky factor for a covariance."""
    if sigma is None:
        return "none", None
    # sigma keeps its dtype, as in scipy (float32 sigma gives float32 weights).
    sigma = np.asarray(sigma)
    if sigma.size == 1 or sigma.shape == (size,):
        return "diagonal", 1.0 / sigma
    if sigma.shape == (size, size):
        try:
            return "covariance", cholesky(sigma, lower=True)
        except LinAlgError as error:
            raise ValueError("`sigma` must be positive definite.") from error
    raise ValueError("`sigma` has incorrect shape.")


def _weighted(kind: str, transform: jax.Array | None, values: jax.Array) -> jax.Array:
    if kind == "diagonal":
        return transform.reshape(transform.shape + (1,) * (values.ndim - 1)) * values
    if kind == "covariance":
        return jsl.solve_triangular(transform, values, lower=True)
    return values


def _model_residual(model_at: Callable, kind: str) -> Callable:
    """``residual(p, data)``: weighted ``model - ydata``.

    ``model_at(p, xdata, *extra)`` evaluates the model; ``data`` is ``(xdata, ydata,
    transform, *extra)`` (``extra``: the host token of a NumPy model).
    """

    def residual(p: jax.Array, data: tuple) -> jax.Array:
        xdata, ydata, transform, *extra = data
        model = jnp.asarray(model_at(p, xdata, *extra))
        try:
            np.broadcast_shapes(model.shape, ydata.shape)
        except ValueError as error:
            raise TraceTimeInputError(
                f"The model returned shape {model.shape}, which does not match "
                f"`ydata` of shape {ydata.shape}."
            ) from error
        return _weighted(kind, transform, model - ydata)

    return residual


def _model_jacobian(jac_at: Callable, kind: str) -> Callable:
    """``jacobian(p, data)``: the model's Jacobian weighted as the residuals."""

    def jacobian(p: jax.Array, data: tuple) -> jax.Array:
        xdata, _, transform, *extra = data
        return _weighted(kind, transform, jnp.asarray(jac_at(p, xdata, *extra)))

    return jacobian


def _traced_model(f: Callable) -> Callable:
    return lambda p, xdata: f(xdata, *p)


def _traced_jacobian(jac: Callable, col_deriv: bool) -> Callable:
    if col_deriv:
        return lambda p, xdata: jnp.transpose(jnp.asarray(jac(xdata, *p)))
    return lambda p, xdata: jac(xdata, *p)


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


@dataclass(frozen=True)
class LeastsqSettings:
    """The ``leastsq`` options of ``curve_fit(method='lm')``."""

    maxfev: int
    epsfcn: float | None
    col_deriv: bool


#: leastsq's info code for each least_squares status.
_LEASTSQ_INFO = {-1: 0, 0: 5, 1: 4, 2: 1, 3: 2, 4: 3}


def leastsq_message(status: int, options: ValidatedOptions) -> tuple[int, str]:
    """``(ier, mesg)`` of ``scipy.optimize.leastsq`` for a solver status."""
    info = _LEASTSQ_INFO.get(status, status)
    ftol, xtol, gtol = options.inputs.ftol, options.inputs.xtol, options.inputs.gtol
    maxfev = options.inputs.max_nfev
    messages = {
        0: "Improper input parameters.",
        1: "Both actual and predicted relative reductions in the sum of squares\n"
        f"  are at most {ftol:f}",
        2: f"The relative error between two consecutive iterates is at most {xtol:f}",
        3: "Both actual and predicted relative reductions in the sum of squares\n"
        f"  are at most {ftol:f} and the relative error between two consecutive "
        f"iterates is at \n  most {xtol:f}",
        4: "The cosine of the angle between func(x) and any column of the\n"
        f"  Jacobian is at most {gtol:f} in absolute value",
        5: f"Number of calls to function has reached maxfev = {maxfev}.",
        6: f"ftol={ftol:f} is too small, no further reduction in the sum of squares\n"
        "  is possible.",
        7: f"xtol={xtol:f} is too small, no further improvement in the approximate\n"
        "  solution is possible.",
        8: f"gtol={gtol:f} is too small, func(x) is orthogonal to the columns of\n"
        "  the Jacobian to machine precision.",
    }
    return info, messages[info]


#: Smallest padded length; shorter data are padded up to it.
MIN_BUCKET = 16


#: Above this length buckets are finer than powers of two (8 per octave).
FINE_BUCKETS_FROM = 1 << 16


def bucket_size(m: int) -> int:
    """Padded length for ``m`` data points.

    Up to 65536 points: the next power of two (at least 16), so every length in
    ``(2**(k-1), 2**k]`` shares one compiled program and padding at most doubles a
    small fit's work (25% on average). Beyond, where the fit's run time outweighs its
    compile time, the next multiple of ``2**(k-3)``: at most 12.5% padding.
    """
    if m <= FINE_BUCKETS_FROM:
        return max(MIN_BUCKET, 1 << (m - 1).bit_length())
    step = 1 << ((m - 1).bit_length() - 4)
    return -(-m // step) * step


_pointwise_verdicts: dict[tuple, bool] = {}


def _acts_pointwise(f: Callable, key: str, xdata: np.ndarray, p0: np.ndarray) -> bool:
    """:func:`nlsq.pointwise.acts_pointwise`, decided once per model and data rank."""
    verdict_key = (key, xdata.ndim)
    if verdict_key not in _pointwise_verdicts:
        _pointwise_verdicts[verdict_key] = acts_pointwise(f, xdata, p0)
    return _pointwise_verdicts[verdict_key]


def _pad_to_bucket(
    xdata: np.ndarray, ydata: np.ndarray, kind: str, transform: np.ndarray | None, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pad the data to ``size`` points; the solver zeroes the padded residuals.

    ``xdata`` repeats its last point so the model stays finite there; padded weights
    are 1 (an identity block for a covariance factor).
    """
    m = ydata.size
    padded_x = np.empty(xdata.shape[:-1] + (size,), xdata.dtype)
    padded_x[..., :m] = xdata
    padded_x[..., m:] = xdata[..., -1:]
    padded_y = np.zeros(size, ydata.dtype)
    padded_y[:m] = ydata
    if kind == "diagonal" and transform.size > 1:
        padded_t = np.ones(size, transform.dtype)
        padded_t[:m] = transform
        transform = padded_t
    elif kind == "covariance":
        padded_t = np.eye(size, dtype=transform.dtype)
        padded_t[:m, :m] = transform
        transform = padded_t
    return padded_x, padded_y, transform


def fit_prepared(
    f: Callable, jac: Callable | str | None, prepared: PreparedFit, absolute_sigma: bool
) -> FitResult:
    """Run the compiled fit for validated inputs and scale the covariance like scipy.

    Raises
    ------
    RuntimeError
        If the fit does not converge (scipy's message).
    """
    return _fit(f, jac, prepared, absolute_sigma)[0]


def _fit(
    f: Callable,
    jac: Callable | str | None,
    prepared: PreparedFit,
    absolute_sigma: bool,
    lm_factors: bool = False,
) -> tuple[FitResult, dict[str, np.ndarray] | None]:
    """:func:`fit_prepared`, and with ``lm_factors`` (method 'lm') ``leastsq``'s
    ``fjac``, ``ipvt`` and ``qtf`` for its ``infodict`` (else ``None``)."""
    options = prepared.options
    real = options.dtype
    x0 = options.inputs.x0.astype(real)
    xdata = prepared.xdata
    if isinstance(xdata, np.ndarray):
        xdata = xdata.astype(real, copy=False)
    key = model_key(f)
    col_deriv = prepared.leastsq is not None and prepared.leastsq.col_deriv
    jac_at = _traced_jacobian(jac, col_deriv) if callable(jac) else None
    jac_key = model_key(jac) if callable(jac) else jac
    identified = key is not None and (not callable(jac) or jac_key is not None)
    probe: dict = {}
    model_on_host = runs_on_host(
        _traced_model(f), ("curve_fit", key) if identified else None, x0, xdata, probe=probe
    )
    jac_probe: dict = {}
    jac_on_host = jac_at is not None and runs_on_host(
        jac_at, ("curve_fit jac", key, jac_key) if identified else None, x0, xdata, probe=jac_probe
    )
    if "value" in jac_probe:
        probe["jac"] = jac_probe["value"]
    options = _finite_difference_options(prepared, jac, model_on_host)
    fit_key = ("curve_fit", key, jac_key, prepared.sigma_kind)
    if model_on_host or jac_on_host:
        raw, pcov, cache_stats = _solve_on_host(
            f,
            jac_at,
            prepared,
            options,
            fit_key,
            xdata,
            model_on_host,
            jac_on_host,
            probe,
            lm_factors,
        )
    else:
        raw, pcov, cache_stats = _solve_traced(
            f, jac_at, prepared, options, fit_key, xdata, lm_factors
        )
    factors = None
    if isinstance(pcov, tuple):
        pcov, fjac, ipvt, qtf = pcov
        factors = leastsq_factors(fjac, ipvt, qtf, len(raw.fun))
        if options.jac_scheme != "minpack":
            # leastsq counts Jacobian evaluations only when it has a Dfun (lmder).
            factors = {"njev": raw.njev, **factors}

    if prepared.leastsq is not None:
        ier, message = leastsq_message(raw.status, options)
        converged = ier in (1, 2, 3, 4)
    else:
        message = TERMINATION_MESSAGES[raw.status]
        converged = raw.status > 0
    if not converged:
        raise RuntimeError("Optimal parameters not found: " + message)
    pcov, covariance_warning = scale_covariance(
        np.array(pcov, dtype=float),
        2 * float(raw.cost),
        len(raw.fun),
        prepared.n_params,
        absolute_sigma,
    )
    result = FitResult(
        popt=np.asarray(raw.x, dtype=float),
        pcov=pcov,
        status=raw.status,
        message=message,
        success=True,
        nfev=raw.nfev,
        njev=raw.njev,
        cost=float(raw.cost),
        optimality=float(raw.optimality),
        active_mask=np.asarray(raw.active_mask, dtype=int),
        cache_stats=cache_stats,
        covariance_warning=covariance_warning,
        device_residuals=raw.fun,
        device_jac=raw.jac,
        n_points=prepared.ydata.size,
        absolute_sigma=absolute_sigma,
        model=f,
        data=FitData(prepared.xdata, prepared.ydata, prepared.sigma_kind, prepared.transform),
    )
    return result, factors


@functools.cache
def _ipvt_offset() -> int:
    """What the installed scipy's ``leastsq`` adds to 0-based column indices in ``ipvt``.

    scipy's Fortran MINPACK returned them 1-based; its C translation returns them
    0-based. A one-parameter fit, whose ``ipvt`` is ``[first index]``, tells which.
    """
    *_, infodict, _, _ = leastsq(lambda p: np.array([p[0], p[0]]), [1.0], full_output=True)
    return int(infodict["ipvt"][0])


def leastsq_factors(
    fjac: np.ndarray, ipvt: np.ndarray, qtf: np.ndarray, m: int
) -> dict[str, np.ndarray]:
    """MINPACK's factorisation in the layout of ``leastsq``'s ``infodict``.

    Parameters
    ----------
    fjac : ndarray, shape (m_padded, n)
        MINPACK's ``fjac`` (rows past ``m`` pad the data to a size bucket).
    ipvt : ndarray, shape (n,)
        0-based column pivoting.
    qtf : ndarray, shape (n,)
    m : int
        Number of real residuals.

    Returns
    -------
    dict
        ``fjac`` (n, m), its transpose as scipy stores it; ``ipvt`` as int32 in the
        installed scipy's base; ``qtf``.
    """
    return {
        "fjac": np.array(np.asarray(fjac, dtype=float)[:m].T),
        "ipvt": np.asarray(ipvt, dtype=np.int32) + _ipvt_offset(),
        "qtf": np.asarray(qtf, dtype=float),
    }


def _finite_difference_options(
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


def _solve_traced(
    f: Callable,
    jac_at: Callable | None,
    prepared: PreparedFit,
    options: ValidatedOptions,
    fit_key: tuple,
    xdata: Any,
    lm_factors: bool = False,
) -> tuple:
    """The compiled fit of a JAX model, padded to a size bucket when exact."""
    real = options.dtype
    if not isinstance(xdata, np.ndarray | jax.Array) and hasattr(xdata, "__array__"):
        # A pandas-like object: the compiled program takes its values, not the object.
        xdata = np.asarray(xdata, real)
    ydata, transform = prepared.ydata, prepared.transform
    m = ydata.size
    n_residuals = None
    if (
        jac_at is None
        and options.jac_scheme is None
        and config.get("cache_config.size_buckets")
        and isinstance(xdata, np.ndarray)
        and xdata.ndim >= 1
        and xdata.shape[-1] == m
        and _acts_pointwise(f, fit_key[1], xdata, options.inputs.x0)
    ):
        # A length equal to its bucket still runs the bucket's (masked) program.
        if bucket_size(m) != m:
            xdata, ydata, transform = _pad_to_bucket(
                xdata, ydata, prepared.sigma_kind, transform, bucket_size(m)
            )
        n_residuals = m
    data = (xdata, ydata.astype(real), None if transform is None else transform.astype(real))

    def build():
        residual = _model_residual(_traced_model(f), prepared.sigma_kind)
        return residual, None if jac_at is None else _model_jacobian(jac_at, prepared.sigma_kind)

    return solve(
        options,
        fit_key,
        build,
        data,
        with_covariance=True,
        n_residuals=n_residuals,
        lm_factors=lm_factors,
    )


def _solve_on_host(
    f: Callable,
    jac_at: Callable | None,
    prepared: PreparedFit,
    options: ValidatedOptions,
    fit_key: tuple,
    xdata: Any,
    model_on_host: bool,
    jac_on_host: bool,
    probe: dict,
    lm_factors: bool = False,
) -> tuple:
    """The fit of a NumPy model (or Jacobian), called on the host at each evaluation.

    The model (and Jacobian) at ``p0`` is computed here first, as scipy does, to
    learn the shapes, unless the traceability probe already did (``probe["value"]``,
    ``probe["jac"]``): each is called once at ``p0``, as in scipy. ``xdata`` that is
    not an array stays on the host, captured by the program, which is then not
    cached.
    """
    real = options.dtype
    x0 = options.inputs.x0.astype(real)
    if not isinstance(xdata, np.ndarray):
        captured, xdata, fit_key = xdata, None, None
    else:
        captured = None

    def host_x(x: Any) -> Any:
        return captured if x is None else x

    initial = {}
    model_at = _traced_model(f)
    if model_on_host:
        warn_once(fit_key and fit_key[1], "f")
        f0 = np.asarray(probe["value"] if "value" in probe else f(host_x(xdata), *x0))
        initial["fun"] = f0
        model_at = host_callable(lambda p, x: f(host_x(x), *p), f0.shape, "fun")
    jac_model = jac_at
    if jac_on_host:
        J0 = np.asarray(probe["jac"] if "jac" in probe else jac_at(x0, host_x(xdata)))
        initial["jac"] = J0
        jac_model = host_callable(lambda p, x: jac_at(p, host_x(x)), J0.shape, "jac")

    def untokened(function: Callable) -> Callable:
        return lambda p, x, token: function(p, x)

    if not model_on_host:
        model_at = untokened(model_at)
    if jac_model is not None and not jac_on_host:
        jac_model = untokened(jac_model)
    transform = prepared.transform

    def build():
        residual = _model_residual(model_at, prepared.sigma_kind)
        jacobian = None if jac_model is None else _model_jacobian(jac_model, prepared.sigma_kind)
        return residual, jacobian

    host_key = None if fit_key is None else (fit_key, "host", model_on_host, jac_on_host)
    with host_fit(x0, initial) as token:
        data = (
            xdata,
            prepared.ydata.astype(real),
            None if transform is None else transform.astype(real),
            token,
        )
        return solve(options, host_key, build, data, with_covariance=True, lm_factors=lm_factors)


def _leastsq_options(p0: np.ndarray, kwargs: dict) -> tuple[ValidatedOptions, LeastsqSettings]:
    """Options of ``leastsq(func, p0, Dfun=jac, full_output=1, **kwargs)``, as scipy's
    ``curve_fit(method='lm')`` calls it (its defaults: ``gtol=0``, tolerances
    1.49012e-8)."""
    dtype = kwargs.pop("dtype", None)
    jacobian_mode = kwargs.pop("jacobian_mode", None)
    for name in kwargs:
        if name not in _LEASTSQ_KEYWORDS:
            raise TypeError(f"leastsq() got an unexpected keyword argument '{name}'")
    if kwargs.get("factor", 100) != 100:
        raise NotImplementedError(
            "curve_fit(method='lm') supports only MINPACK's default factor=100; remove `factor`."
        )
    ftol = float(kwargs.get("ftol", 1.49012e-8))
    xtol = float(kwargs.get("xtol", 1.49012e-8))
    gtol = float(kwargs.get("gtol", 0.0))
    maxfev = int(kwargs.get("maxfev", 0))
    diag = kwargs.get("diag")
    n = p0.size
    x_scale = np.ones(n)
    if diag is not None:
        diag = np.asarray(diag, dtype=float)
        if diag.shape != (n,) or (diag <= 0).any():
            raise RuntimeError("Optimal parameters not found: Improper input parameters.")
        x_scale = 1 / diag
    if min(ftol, xtol, gtol) < 0 or maxfev < 0:
        raise RuntimeError("Optimal parameters not found: Improper input parameters.")
    options = ValidatedOptions(
        inputs=SolverInputs(
            x0=p0.astype(float),
            lb=np.full(n, -np.inf),
            ub=np.full(n, np.inf),
            ftol=ftol,
            xtol=xtol,
            gtol=gtol,
            max_nfev=maxfev,
            x_scale=x_scale,
            f_scale=1.0,
        ),
        bounded=False,
        jac_scale=diag is None,
        jacobian_mode=resolve_jacobian_mode(jacobian_mode),
        loss="linear",
        verbose=0,
        dtype=resolve_dtype(dtype),
        method="lm",
        diff_step=kwargs.get("epsfcn"),
    )
    settings = LeastsqSettings(
        maxfev=maxfev, epsfcn=kwargs.get("epsfcn"), col_deriv=bool(kwargs.get("col_deriv", 0))
    )
    return options, settings


#: Keyword arguments of ``scipy.optimize.leastsq`` that ``curve_fit`` passes on.
_LEASTSQ_KEYWORDS = ("col_deriv", "ftol", "xtol", "gtol", "maxfev", "epsfcn", "factor", "diag")


def scale_covariance(
    pcov: np.ndarray, chi2: float, ysize: int, n_params: int, absolute_sigma: bool
) -> tuple[np.ndarray, bool]:
    """scipy's covariance rule: scale by ``chi2 / dof`` unless ``absolute_sigma``.

    Returns the covariance and whether it could not be estimated (then all ``inf``).
    """
    if np.isnan(pcov).any():
        return np.full_like(pcov, np.inf), True
    if absolute_sigma:
        return pcov, False
    if ysize > n_params:
        return pcov * (chi2 / (ysize - n_params)), False
    return np.full_like(pcov, np.inf), True


def prepare(
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
        Validated options and NumPy data, ready for :func:`fit_prepared`.
    """
    kwargs = dict(kwargs)
    if p0 is None:
        n = _number_of_parameters(f)
    else:
        p0 = np.atleast_1d(p0)
        n = p0.size

    if isinstance(bounds, Bounds):
        lb, ub = prepare_bounds((bounds.lb, bounds.ub), n)
    else:
        lb, ub = prepare_bounds(bounds, n)
    if p0 is None:
        p0 = _initialize_feasible(lb, ub)

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
    if check_finite:
        ydata = np.asarray_chkfinite(ydata, float)
    else:
        ydata = np.asarray(ydata, float)
    if _is_array_like(xdata):
        xdata = np.asarray_chkfinite(xdata, float) if check_finite else np.asarray(xdata, float)
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

    kind, transform = _sigma_transform(sigma, ydata.size)

    if "args" in kwargs:
        raise ValueError("'args' is not a supported keyword argument.")
    if (method == "lm" or not user_chose_method) and not bounded_problem and n > ydata.size:
        # 'lm' (scipy's default for this problem) refuses it.
        if ydata.size == 1:
            raise TypeError(
                f"Improper input: func input vector length N={n} must not exceed "
                f"func output vector length M={ydata.size}"
            )
        raise TypeError(
            f"The number of func parameters={n} must not exceed the number of "
            f"data points={ydata.size}"
        )
    if method == "lm":
        options, leastsq = _leastsq_options(p0, kwargs)
        return PreparedFit(options, xdata, ydata, kind, transform, p0.size, leastsq)

    if "max_nfev" not in kwargs:
        kwargs["max_nfev"] = kwargs.pop("maxfev", None)
    options = validate_options(
        p0,
        jac=jac,
        bounds=(lb, ub),
        method=method,
        ftol=kwargs.pop("ftol", 1e-8),
        xtol=kwargs.pop("xtol", 1e-8),
        gtol=kwargs.pop("gtol", 1e-8),
        x_scale=kwargs.pop("x_scale", None),
        loss=kwargs.pop("loss", "linear"),
        f_scale=kwargs.pop("f_scale", 1.0),
        tr_solver=kwargs.pop("tr_solver", None),
        jac_sparsity=kwargs.pop("jac_sparsity", None),
        max_nfev=kwargs.pop("max_nfev"),
        verbose=kwargs.pop("verbose", 0),
        callback=kwargs.pop("callback", None),
        dtype=kwargs.pop("dtype", None),
        jacobian_mode=kwargs.pop("jacobian_mode", None),
        diff_step=kwargs.pop("diff_step", None),
    )
    for ignored in ("tr_options", "workers"):
        kwargs.pop(ignored, None)
    if kwargs:
        raise TypeError(
            f"least_squares() got an unexpected keyword argument '{next(iter(kwargs))}'"
        )

    return PreparedFit(options, xdata, ydata, kind, transform, p0.size)


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
    chunk_size = kwargs.pop("chunk_size", None)
    prepared = prepare(
        f, xdata, ydata, p0, sigma, check_finite, bounds, method, jac, nan_policy, kwargs
    )
    factors = None
    if large.use_chunked(f, jac, prepared, chunk_size):
        result = large.curve_fit_chunked(f, prepared, absolute_sigma, chunk_size)
    else:
        result, factors = _fit(
            f, jac, prepared, absolute_sigma, lm_factors=full_output and method == "lm"
        )
    if result.covariance_warning:
        warnings.warn(
            "Covariance of the parameters could not be estimated",
            category=OptimizeWarning,
            stacklevel=2,
        )
    if full_output:
        if factors is None:
            infodict = {"nfev": result.nfev, "fvec": result.residuals}
        else:
            # leastsq's keys, in its order.
            infodict = {"fvec": result.residuals, "nfev": result.nfev, **factors}
        infodict["cache_stats"] = result.cache_stats
        ier = result.status
        if prepared.leastsq is not None:
            ier, _ = leastsq_message(result.status, prepared.options)
        return result.popt, result.pcov, infodict, result.message, ier
    return result.popt, result.pcov
