"""Solver options after scipy's validation: ``least_squares``'s, ``leastsq``'s, and the
keywords ``curve_fit`` passes on to either."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlsq.bounds import prepare_bounds
from nlsq.jacobian import resolve_jacobian_mode
from nlsq.loss import BUILTIN_LOSSES
from nlsq.precision import resolve_dtype
from nlsq.program.spec import SolverInputs
from nlsq.scipy_types import is_bounds
from nlsq.solvers.lsmr import LsmrOptions

EPS = np.finfo(float).eps


FINITE_DIFFERENCE_SCHEMES = ("2-point", "3-point", "cs")


@dataclass(frozen=True)
class ValidatedOptions:
    """``least_squares`` options after scipy's validation and defaults."""

    inputs: SolverInputs
    bounded: bool
    jac_scale: bool
    jacobian_mode: str
    loss: str | Callable
    verbose: int
    dtype: type[np.floating]
    method: str = "trf"
    #: '2-point', '3-point', 'cs', 'minpack' or None (exact Jacobian).
    jac_scheme: str | None = None
    diff_step: float | tuple[float, ...] | None = None
    callback: Callable | None = None
    #: Evaluations counted per Jacobian (MINPACK's lmdif counts its differences).
    jac_nfev: int = 0
    #: None (chosen by the Jacobian's type, as scipy), 'exact' or 'lsmr'.
    tr_solver: str | None = None
    #: LSMR's options and scipy's ``regularize``, from ``tr_options``.
    lsmr_options: LsmrOptions = LsmrOptions()
    regularize: bool = True
    #: ``jac_sparsity`` as given (checked against the residuals' size later).
    jac_sparsity: Any = None
    #: ``tr_options`` as given, as ``(key, value)`` pairs: a host Jacobian found sparse
    #: at ``x0`` switches ``tr_solver=None`` to 'lsmr' after validation.
    tr_options: tuple = ()


#: ``tr_options`` keys that scipy's ``lsmr`` takes; ``show`` (printing) is accepted
#: and ignored.
LSMR_KEYWORDS = ("damp", "atol", "btol", "conlim", "maxiter", "show")


def lsmr_settings(tr_options: dict | None, method: str) -> tuple[LsmrOptions, bool]:
    """``tr_options`` as ``(LsmrOptions, regularize)``, with scipy's errors.

    Raises
    ------
    TypeError
        For a key ``lsmr`` does not take, in Python's words (as scipy, whose call
        ``lsmr(..., **tr_options)`` raises it).
    """
    options = dict(tr_options or {})
    # dogbox has no use for it (scipy warns and drops it).
    regularize = bool(options.pop("regularize", True))
    for key in options:
        if key not in LSMR_KEYWORDS:
            raise TypeError(f"lsmr() got an unexpected keyword argument '{key}'")
    options.pop("show", None)
    maxiter = options.pop("maxiter", None)
    return (
        LsmrOptions(
            **{key: float(value) for key, value in options.items()},
            maxiter=None if maxiter is None else int(maxiter),
        ),
        regularize,
    )


def tolerance_warns(tol: float | None) -> bool:
    """Whether ``least_squares`` warns for this tolerance (below the machine epsilon)."""
    return tol is not None and tol < EPS


def _check_tolerance(tol: float | None, name: str) -> float:
    if tol is None:
        return 0.0
    if tolerance_warns(tol):
        warnings.warn(
            f"Setting `{name}` below the machine epsilon ({EPS:.2e}) effectively "
            f"disables the corresponding termination condition.",
            stacklevel=4,
        )
    return float(tol)


def _check_x_scale(x_scale: Any, x0: np.ndarray, method: str) -> np.ndarray | str:
    if x_scale is None:
        x_scale = "jac" if method == "lm" else 1.0
    if isinstance(x_scale, str) and x_scale == "jac":
        return x_scale
    try:
        x_scale = np.asarray(x_scale, dtype=float)
        valid = bool(np.isfinite(x_scale).all() and (x_scale > 0).all())
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise ValueError("`x_scale` must be 'jac' or array_like with positive numbers.")
    if x_scale.ndim == 0:
        x_scale = np.full(x0.shape, x_scale)
    if x_scale.shape != x0.shape:
        raise ValueError("Inconsistent shapes between `x_scale` and `x0`.")
    return x_scale


def validate_options(
    x0: Any,
    *,
    jac: Any,
    bounds: Any,
    method: str,
    ftol: float | None,
    xtol: float | None,
    gtol: float | None,
    x_scale: Any,
    loss: str | Callable,
    f_scale: float,
    tr_solver: str | None,
    jac_sparsity: Any,
    max_nfev: int | None,
    verbose: int,
    callback: Callable | None,
    dtype: Any,
    jacobian_mode: str | None = None,
    diff_step: Any = None,
    tr_options: dict | None = None,
) -> ValidatedOptions:
    """Validate ``least_squares`` arguments in scipy's order, with scipy's messages.

    Raises
    ------
    ValueError
        For any invalid argument, as scipy does.
    TypeError
        For ``tr_options`` that ``lsmr`` does not take (with ``tr_solver='lsmr'``).
    """
    if method not in ("trf", "dogbox", "lm"):
        raise ValueError("`method` must be 'trf', 'dogbox' or 'lm'.")
    if jac is not None and jac not in FINITE_DIFFERENCE_SCHEMES and not callable(jac):
        raise ValueError("`jac` must be '2-point', '3-point', 'cs' or callable.")
    if tr_solver not in (None, "exact", "lsmr"):
        raise ValueError("`tr_solver` must be None, 'exact' or 'lsmr'.")
    if not callable(loss) and loss not in BUILTIN_LOSSES:
        raise ValueError(f"`loss` must be one of {BUILTIN_LOSSES.keys()} or a callable.")
    if method == "lm" and loss != "linear":
        raise ValueError("method='lm' supports only 'linear' loss function.")
    if verbose not in (0, 1, 2):
        raise ValueError("`verbose` must be in [0, 1, 2].")
    if max_nfev is not None and max_nfev <= 0:
        raise ValueError("`max_nfev` must be None or positive integer.")
    if np.iscomplexobj(x0):
        raise ValueError("`x0` must be real.")
    x0 = np.atleast_1d(np.asarray(x0)).astype(float)
    if x0.ndim > 1:
        raise ValueError("`x0` must have at most 1 dimension.")

    if is_bounds(bounds):
        lb, ub = prepare_bounds((bounds.lb, bounds.ub), x0.shape[0])
    elif len(bounds) == 2:
        lb, ub = prepare_bounds(bounds, x0.shape[0])
    else:
        raise ValueError("`bounds` must contain 2 elements.")
    bounded = bool(np.isfinite(lb).any() or np.isfinite(ub).any())
    if method == "lm" and bounded:
        raise ValueError("Method 'lm' doesn't support bounds.")
    if lb.shape != x0.shape or ub.shape != x0.shape:
        raise ValueError("Inconsistent shapes between bounds and `x0`.")
    if (lb >= ub).any():
        raise ValueError("Each lower bound must be strictly less than each upper bound.")
    if not ((x0 >= lb) & (x0 <= ub)).all():
        raise ValueError("Initial guess is outside of provided bounds")

    x_scale = _check_x_scale(x_scale, x0, method)
    ftol = _check_tolerance(ftol, "ftol")
    xtol = _check_tolerance(xtol, "xtol")
    gtol = _check_tolerance(gtol, "gtol")
    if method == "lm" and (ftol < EPS or xtol < EPS or gtol < EPS):
        raise ValueError(
            f"All tolerances must be higher than machine epsilon ({EPS:.2e}) for method 'lm'."
        )
    if ftol < EPS and xtol < EPS and gtol < EPS:
        raise ValueError(
            f"At least one of the tolerances must be higher than machine epsilon ({EPS:.2e})."
        )

    if method == "lm":
        # scipy's 'lm' ignores tr_solver, and jac_sparsity when jac is a callable.
        if jac_sparsity is not None and not callable(jac):
            raise ValueError("method='lm' does not support `jac_sparsity`.")
        tr_solver = None
    else:
        # scipy ignores jac_sparsity when jac is a callable.
        if callable(jac):
            jac_sparsity = None
        if jac_sparsity is not None:
            if tr_solver == "exact":
                raise ValueError("tr_solver='exact' is incompatible with `jac_sparsity`.")
            tr_solver = "lsmr"
    if method == "lm" and callback is not None:
        warnings.warn(
            "Callback function specified, but not supported with `lm` method.", stacklevel=3
        )
        callback = None

    jac_scale = isinstance(x_scale, str)
    jacobian_mode = resolve_jacobian_mode(jacobian_mode)
    n = x0.shape[0]
    if isinstance(jac_sparsity, str):
        if jac_sparsity != "auto":
            raise ValueError("`jac_sparsity` must be None, 'auto', an array or a sparse matrix.")
    elif jac_sparsity is not None and np.shape(jac_sparsity)[-1:] != (n,):
        raise ValueError("`jac_sparsity` has wrong shape.")
    lsmr_options, regularize = LsmrOptions(), True
    if tr_solver == "lsmr":
        lsmr_options, regularize = lsmr_settings(tr_options, method)
        if method == "dogbox" and tr_options and "regularize" in tr_options:
            warnings.warn(
                "The keyword 'regularize' in `tr_options` is not relevant for 'dogbox' method.",
                stacklevel=3,
            )
    return ValidatedOptions(
        inputs=SolverInputs(
            x0=x0,
            lb=lb,
            ub=ub,
            ftol=ftol,
            xtol=xtol,
            gtol=gtol,
            max_nfev=100 * n if max_nfev is None else int(max_nfev),
            x_scale=np.ones(n) if jac_scale else x_scale,
            f_scale=float(f_scale),
        ),
        bounded=bounded,
        jac_scale=jac_scale,
        jacobian_mode=jacobian_mode,
        loss=loss,
        verbose=verbose,
        dtype=resolve_dtype(dtype),
        method=method,
        jac_scheme=jac if isinstance(jac, str) else None,
        diff_step=_hashable_step(diff_step),
        callback=callback,
        tr_solver=tr_solver,
        lsmr_options=lsmr_options,
        regularize=regularize,
        jac_sparsity=jac_sparsity,
        tr_options=tuple((tr_options or {}).items()),
    )


def _hashable_step(diff_step: Any) -> float | tuple[float, ...] | None:
    """``diff_step`` as a value that can be part of a program's cache key."""
    if diff_step is None:
        return None
    step = np.asarray(diff_step, dtype=float)
    return float(step) if step.ndim == 0 else tuple(step.ravel().tolist())


@dataclass(frozen=True)
class LeastsqSettings:
    """The ``leastsq`` options of ``curve_fit(method='lm')``."""

    maxfev: int
    epsfcn: float | None
    col_deriv: bool


def leastsq_options(p0: np.ndarray, kwargs: dict) -> tuple[ValidatedOptions, LeastsqSettings]:
    """Options of ``leastsq(func, p0, Dfun=jac, full_output=1, **kwargs)``, as scipy's
    ``curve_fit(method='lm')`` calls it (its defaults: ``gtol=0``, tolerances
    1.49012e-8)."""
    dtype = kwargs.pop("dtype", None)
    jacobian_mode = kwargs.pop("jacobian_mode", None)
    for name in kwargs:
        if name not in LEASTSQ_KEYWORDS:
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
LEASTSQ_KEYWORDS = ("col_deriv", "ftol", "xtol", "gtol", "maxfev", "epsfcn", "factor", "diag")


def keyword_options(
    p0: np.ndarray,
    *,
    jac: Callable | str | None,
    bounds: Any,
    method: str,
    kwargs: dict[str, Any],
    caller: str = "least_squares",
    in_memory: bool = True,
) -> ValidatedOptions:
    """``curve_fit``'s keyword arguments as validated ``least_squares`` options.

    ``maxfev`` is an alias of ``max_nfev``; with ``in_memory`` the in-memory solver's
    own keywords are taken too (``workers`` is accepted and ignored, see
    :func:`nlsq.least_squares`).

    Raises
    ------
    TypeError
        For a keyword that ``caller`` does not take, in Python's words.
    """
    kwargs = dict(kwargs)
    if "max_nfev" not in kwargs:
        kwargs["max_nfev"] = kwargs.pop("maxfev", None)
    tr_solver = kwargs.pop("tr_solver", None) if in_memory else None
    tr_options = kwargs.pop("tr_options", None) if in_memory else None
    jac_sparsity = kwargs.pop("jac_sparsity", None) if in_memory else None
    diff_step = kwargs.pop("diff_step", None) if in_memory else None
    options = validate_options(
        p0,
        jac=jac,
        bounds=bounds,
        method=method,
        ftol=kwargs.pop("ftol", 1e-8),
        xtol=kwargs.pop("xtol", 1e-8),
        gtol=kwargs.pop("gtol", 1e-8),
        x_scale=kwargs.pop("x_scale", None),
        loss=kwargs.pop("loss", "linear"),
        f_scale=kwargs.pop("f_scale", 1.0),
        tr_solver=tr_solver,
        jac_sparsity=jac_sparsity,
        max_nfev=kwargs.pop("max_nfev"),
        verbose=kwargs.pop("verbose", 0),
        callback=kwargs.pop("callback", None),
        dtype=kwargs.pop("dtype", None),
        jacobian_mode=kwargs.pop("jacobian_mode", None),
        diff_step=diff_step,
        tr_options=tr_options,
    )
    if in_memory:
        kwargs.pop("workers", None)
    if kwargs:
        raise TypeError(f"{caller}() got an unexpected keyword argument '{next(iter(kwargs))}'")
    return options
