"""``nlsq.least_squares``: scipy's ``least_squares`` on the compiled TRF solver."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from scipy.optimize import Bounds, OptimizeResult
from scipy.sparse import issparse
from scipy.sparse.linalg import LinearOperator

from nlsq.api.callback import callback_fit
from nlsq.api.program import SolverInputs, SolverSpec, cached_program, run_program
from nlsq.bounds import prepare_bounds
from nlsq.host import host_callable, host_fit, runs_on_host, warn_once
from nlsq.identity import model_key
from nlsq.jacobian import resolve_jacobian_mode
from nlsq.loss import BUILTIN_LOSSES
from nlsq.precision import resolve_dtype
from nlsq.result import to_optimize_result
from nlsq.solvers.progress import print_header
from nlsq.solvers.termination import INITIAL_NOT_FINITE, TERMINATION_MESSAGES
from nlsq.solvers.trf import TRFResult

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
    #: None or 'exact' (the only solver there is; 'exact' makes sparse Jacobians errors).
    tr_solver: str | None = None


def _check_tolerance(tol: float | None, name: str) -> float:
    if tol is None:
        return 0.0
    if tol < EPS:
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
) -> ValidatedOptions:
    """Validate ``least_squares`` arguments in scipy's order, with scipy's messages.

    Raises
    ------
    ValueError
        For any invalid argument, as scipy does.
    NotImplementedError
        For ``tr_solver='lsmr'`` and ``jac_sparsity`` (sparse problems).
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

    if isinstance(bounds, Bounds):
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
        # The sparse-problem options of scipy's: refuse them loudly rather than
        # silently solving with a different subproblem solver.
        if tr_solver == "lsmr":
            raise NotImplementedError(
                "tr_solver='lsmr' is not available in nlsq; the exact (SVD) solver is "
                "used with tr_solver=None or 'exact'."
            )
        if jac_sparsity is not None:
            if tr_solver == "exact":
                raise ValueError("tr_solver='exact' is incompatible with `jac_sparsity`.")
            raise NotImplementedError(
                "`jac_sparsity` is not supported by nlsq; drop it (nlsq uses the dense "
                "Jacobian) or use scipy.optimize.least_squares(tr_solver='lsmr') for sparse "
                "problems."
            )
    if method == "lm" and callback is not None:
        warnings.warn(
            "Callback function specified, but not supported with `lm` method.", stacklevel=3
        )
        callback = None

    jac_scale = isinstance(x_scale, str)
    jacobian_mode = resolve_jacobian_mode(jacobian_mode)
    n = x0.shape[0]
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
    )


def _hashable_step(diff_step: Any) -> float | tuple[float, ...] | None:
    """``diff_step`` as a value that can be part of a program's cache key."""
    if diff_step is None:
        return None
    step = np.asarray(diff_step, dtype=float)
    return float(step) if step.ndim == 0 else tuple(step.ravel().tolist())


def solve(
    options: ValidatedOptions,
    model_key: Any,
    build: Callable,
    data: Any,
    *,
    with_covariance: bool,
    n_residuals: int | None = None,
    lm_factors: bool = False,
) -> tuple[TRFResult, Any, dict]:
    """Run the cached compiled program for a validated problem.

    ``n_residuals`` is the number of real residuals when ``data`` is padded to a
    size bucket (``None``: not padded). ``lm_factors`` (method 'lm' with covariance)
    also returns MINPACK's factorisation, for ``leastsq``'s ``infodict``.

    Returns
    -------
    raw : TRFResult
        Solver output (``fun`` and ``jac`` fetched on demand).
    pcov_unscaled : ndarray, tuple or None
        When ``with_covariance``: ``pinv(J^T J)`` at the solution, or for 'lm'
        ``leastsq``'s ``cov_x`` (NaN if ``R`` is singular); with ``lm_factors`` the
        tuple ``(cov_x, fjac, ipvt, qtf)`` (``fjac`` in MINPACK's (m, n) layout).
    cache_stats : dict
        Compile figures of this call and the process totals.

    Raises
    ------
    ValueError
        If the residuals at the initial point are not finite.
    """
    spec = SolverSpec(
        method=options.method,
        bounded=options.bounded,
        loss=options.loss,
        jac_scale=options.jac_scale,
        jacobian_mode=options.jacobian_mode,
        # Only verbose=2 prints from inside the compiled loop.
        verbose=2 if options.verbose == 2 else 0,
        with_covariance=with_covariance,
        lm_factors=lm_factors and with_covariance and options.method == "lm",
        dtype=np.dtype(options.dtype).name,
        callback=options.callback is not None,
        jac_nfev=options.jac_nfev,
        jac_scheme=options.jac_scheme,
        diff_step=options.diff_step,
    )
    program = cached_program(model_key, spec, build)
    if options.verbose == 2 and options.method != "lm":
        print_header()
    with callback_fit(options.callback) as token:
        if token is not None:
            data = (data, token)
        raw, pcov, cache_stats = run_program(
            program, options.inputs, data, options.dtype, n_residuals
        )
    if raw.status == INITIAL_NOT_FINITE:
        raise ValueError("Residuals are not finite in the initial point.")
    if options.verbose >= 1:
        print(TERMINATION_MESSAGES[raw.status])
        print(
            f"Function evaluations {raw.nfev}, initial cost {float(raw.initial_cost):.4e}, "
            f"final cost {float(raw.cost):.4e}, "
            f"first-order optimality {float(raw.optimality):.2e}."
        )
    return raw, pcov, cache_stats


def _is_dynamic(leaf: Any) -> bool:
    """Arrays and floats are traced; ints, strings and objects stay Python values."""
    return isinstance(leaf, np.ndarray | jax.Array | float | np.floating)


def _split_arguments(args: tuple, kwargs: dict, dtype: type[np.floating]):
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


def least_squares(
    fun: Callable,
    x0: Any,
    jac: Callable | str | None = None,
    bounds: Any = (-np.inf, np.inf),
    method: str = "trf",
    ftol: float | None = 1e-8,
    xtol: float | None = 1e-8,
    gtol: float | None = 1e-8,
    x_scale: Any = None,
    loss: str | Callable = "linear",
    f_scale: float = 1.0,
    diff_step: Any = None,
    tr_solver: str | None = None,
    tr_options: dict | None = None,
    jac_sparsity: Any = None,
    max_nfev: int | None = None,
    verbose: int = 0,
    args: tuple = (),
    kwargs: dict | None = None,
    callback: Callable | None = None,
    workers: Any = None,
    *,
    dtype: Any = None,
    jacobian_mode: str | None = None,
) -> OptimizeResult:
    """Solve a nonlinear least-squares problem with bounds on the variables.

    A drop-in for :func:`scipy.optimize.least_squares` whose solver runs as one
    compiled JAX program. Given residuals ``f(x)`` (an m-D real function of n real
    variables) and a loss function ``rho(s)``, finds a local minimum of
    ``F(x) = 0.5 * sum(rho(f_i(x)**2))`` subject to ``lb <= x <= ub``.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args, **kwargs)`` returning the residuals, shape (m,), written with
        ``jax.numpy`` so that it can be traced and differentiated.
    x0 : array_like, shape (n,) or float
        Initial guess.
    jac : {None, '2-point', '3-point', 'cs'} or callable, optional
        ``None`` (default): exact Jacobian by JAX autodiff (scipy's default is
        '2-point'). The finite-difference schemes take scipy's steps (``diff_step``).
        A callable ``jac(x, *args, **kwargs)`` returning shape (m, n) is used as
        given; one written with NumPy runs on the host. A sparse matrix or
        ``LinearOperator`` raises scipy's ``ValueError`` where scipy refuses it
        ('lm', ``tr_solver='exact'``), else ``NotImplementedError``.
    bounds : 2-tuple of array_like or `scipy.optimize.Bounds`, optional
        Lower and upper bounds on the variables; ``np.inf`` with a sign disables a
        bound. Default: no bounds.
    method : {'trf', 'dogbox', 'lm'}, optional
        Trust Region Reflective (default), dogleg with rectangular trust regions, or
        MINPACK's Levenberg-Marquardt (unbounded, linear loss, ``m >= n``), as in
        scipy.
    ftol, xtol, gtol : float or None, optional
        Tolerances for termination by the change of the cost, of the variables and
        by the norm of the scaled gradient, as in scipy. ``None`` disables a test.
    x_scale : array_like or 'jac', optional
        Characteristic scale of each variable. Default 1.0; 'jac' uses the inverse
        norms of the Jacobian's columns.
    loss : {'linear', 'soft_l1', 'huber', 'cauchy', 'arctan'} or callable, optional
        Loss function; a callable ``rho(z)`` must return shape (3, m) (value, first
        and second derivative) and be traceable by JAX.
    f_scale : float, optional
        Soft margin between inlier and outlier residuals. Default 1.0.
    diff_step : None or array_like, optional
        Relative step of the finite-difference schemes, as in scipy.
    tr_solver : {None, 'exact'}, optional
        Trust-region subproblem solver; only the exact (SVD) one is available
        ('lsmr' raises ``NotImplementedError``; 'lm' ignores it, as scipy does).
    tr_options : dict, optional
        Ignored (no option applies to the exact solver).
    jac_sparsity : None, optional
        Not supported (``NotImplementedError``; scipy's ``ValueError`` where scipy
        refuses it: 'lm' with a finite-difference ``jac``, ``tr_solver='exact'``).
    max_nfev : None or int, optional
        Maximum number of function evaluations; default ``100 * n``.
    verbose : {0, 1, 2}, optional
        1 prints a termination report, 2 also prints progress per iteration.
    args, kwargs : tuple and dict, optional
        Extra arguments of `fun` and `jac`. Arrays and floats among them are passed
        to the compiled program as data (new values do not recompile); ints,
        strings and other objects are treated as constants of the program.
    callback : None or callable, optional
        ``callback(intermediate_result)`` or ``callback(x)`` after each iteration
        ('trf', 'dogbox'); returning True or raising ``StopIteration`` stops the fit
        with status -2. Ignored with a warning by 'lm', as in scipy.
    workers : optional
        Accepted for compatibility and ignored: finite differences of a JAX model run
        inside the compiled program, those of a NumPy model on the host, point by
        point (a forking ``multiprocessing.Pool`` is unsafe once JAX has started its
        threads).
    dtype : {None, 'float64', 'float32'}, optional
        Working precision (nlsq extension). Default float64.
    jacobian_mode : {None, 'auto', 'fwd', 'rev'}, optional
        Autodiff mode for ``jac=None`` (nlsq extension). ``None`` takes the
        ``NLSQ_JACOBIAN_MODE`` environment variable, then the config file, then 'auto'
        (see :mod:`nlsq.config`).

    Returns
    -------
    OptimizeResult
        With fields ``x, cost, fun, jac, grad, optimality, active_mask, nfev, njev,
        status, message, success``, as scipy's.

    Raises
    ------
    ValueError
        For invalid arguments (scipy's messages), or when the residuals at ``x0``
        are not finite.
    """
    options = validate_options(
        x0,
        jac=jac,
        bounds=bounds,
        method=method,
        ftol=ftol,
        xtol=xtol,
        gtol=gtol,
        x_scale=x_scale,
        loss=loss,
        f_scale=f_scale,
        tr_solver=tr_solver,
        jac_sparsity=jac_sparsity,
        max_nfev=max_nfev,
        verbose=verbose,
        callback=callback,
        dtype=dtype,
        jacobian_mode=jacobian_mode,
        diff_step=diff_step,
    )
    dynamic, static_key, merge = _split_arguments(args, kwargs or {}, options.dtype)

    def residual(x, data):
        call_args, call_kwargs = merge(data)
        return fun(x, *call_args, **call_kwargs)

    def jacobian(x, data):
        call_args, call_kwargs = merge(data)
        return jac(x, *call_args, **call_kwargs)

    key = ("least_squares", model_key(fun), model_key(jac) if callable(jac) else jac, static_key)
    user_jacobian = jacobian if callable(jac) else None
    x0 = options.inputs.x0.astype(options.dtype)
    identified = key[1] is not None and (not callable(jac) or key[2] is not None)
    probe: dict = {}
    fun_on_host = runs_on_host(
        residual, (key, "fun") if identified else None, x0, dynamic, probe=probe
    )
    jac_probe: dict = {}
    jac_on_host = user_jacobian is not None and runs_on_host(
        jacobian, (key, "jac") if identified else None, x0, dynamic, probe=jac_probe
    )
    if not (fun_on_host or jac_on_host):
        raw, _, _ = solve(
            options, key, lambda: (residual, user_jacobian), dynamic, with_covariance=False
        )
    else:
        raw = _solve_on_host(
            options,
            key,
            residual,
            user_jacobian,
            fun_on_host,
            jac_on_host,
            dynamic,
            probe,
            jac_probe,
        )
    result = to_optimize_result(raw, options.bounded)
    if options.method == "lm" and not callable(jac):
        result.njev = None
    return result


def _refuse_sparse_jacobian(J0: Any, options: ValidatedOptions) -> None:
    """scipy's error for a sparse ``J0`` where it has one, else ``NotImplementedError``.

    scipy solves problems with sparse Jacobians by 'trf' or 'dogbox' with
    ``tr_solver='lsmr'``, which nlsq does not have.
    """
    if options.method == "lm":
        raise ValueError("method='lm' works only with dense Jacobian matrices.")
    if options.tr_solver == "exact":
        raise ValueError("tr_solver='exact' works only with dense Jacobian matrices.")
    if isinstance(J0, LinearOperator) and options.jac_scale:
        raise ValueError("x_scale='jac' can't be used when `jac` returns LinearOperator.")
    raise NotImplementedError(
        "Sparse Jacobians (scipy.sparse matrices, LinearOperator) are not supported by "
        "nlsq; return a dense array."
    )


def _solve_on_host(
    options: ValidatedOptions,
    key: tuple,
    residual: Callable,
    jacobian: Callable | None,
    fun_on_host: bool,
    jac_on_host: bool,
    data: list,
    probe: dict,
    jac_probe: dict,
) -> TRFResult:
    """Fit with ``fun`` and/or ``jac`` written in NumPy, called on the host.

    The residuals and the Jacobian at ``x0`` are computed here, as scipy does first,
    to learn their shapes (they may come from the traceability probes ``probe`` and
    ``jac_probe``, so that a function is called once at ``x0``, as in scipy); without
    a Jacobian, scipy's '2-point' differences are used.

    Raises
    ------
    ValueError
        As scipy: residuals of more than one dimension, fewer residuals than
        variables with 'lm', a Jacobian of the wrong shape, or a sparse one where
        scipy refuses it.
    NotImplementedError
        For a sparse Jacobian that scipy would accept (nlsq has no sparse solver).
    """
    x0 = options.inputs.x0.astype(options.dtype)
    initial = {}
    f0 = np.atleast_1d(np.asarray(probe["value"] if "value" in probe else residual(x0, data)))
    if f0.ndim != 1:
        raise ValueError(f"`fun` must return at most 1-d array_like. f0.shape: {f0.shape}")
    if options.method == "lm" and f0.size < x0.size:
        raise ValueError(
            "Method 'lm' doesn't work when the number of residuals is less than the "
            "number of variables."
        )
    if fun_on_host:
        warn_once(key[1], "fun")
        initial["fun"] = f0
        fun_on_device = host_callable(residual, f0.shape, "fun")

        def device_residual(x, data):
            return fun_on_device(x, *data)

    else:

        def device_residual(x, data):
            return residual(x, data[0])

    device_jacobian = None
    if jacobian is not None:
        if jac_on_host:
            shape = (f0.size, x0.size)
            J0 = jac_probe["value"] if "value" in jac_probe else jacobian(x0, data)
            sparse = issparse(J0) or isinstance(J0, LinearOperator)
            if not sparse:
                J0 = np.atleast_2d(np.asarray(J0))
            if J0.shape != shape:
                raise ValueError(
                    "The return value of `jac` has wrong shape: expected "
                    f"{shape}, actual {J0.shape}."
                )
            if sparse:
                _refuse_sparse_jacobian(J0, options)
            initial["jac"] = J0
            jac_on_device = host_callable(jacobian, shape, "jac")

            def device_jacobian(x, data):
                return jac_on_device(x, *data)

        else:

            def device_jacobian(x, data):
                return jacobian(x, data[0])

    elif options.jac_scheme is None:
        options = dataclasses.replace(options, jac_scheme="2-point")
    host_key = (key, "host", fun_on_host, jac_on_host, f0.shape)
    with host_fit(x0, initial) as token:
        raw, _, _ = solve(
            options,
            host_key,
            lambda: (device_residual, device_jacobian),
            (data, token),
            with_covariance=False,
        )
    return raw
