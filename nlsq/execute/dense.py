"""Running a fit in memory: one call into its compiled program, the model traced or
called on the host."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from nlsq import config
from nlsq.host import (
    host_callable,
    host_fit,
    host_linear_operator,
    host_operator_jacobian,
    runs_on_host,
    warn_once,
)
from nlsq.identity import model_key
from nlsq.prepare.arguments import PreparedFit, finite_difference_options, split_arguments
from nlsq.prepare.options import LeastsqSettings, ValidatedOptions, lsmr_settings
from nlsq.program.build import build_program, single_program
from nlsq.program.callback import callback_fit
from nlsq.program.model import (
    model_jacobian,
    model_residual,
    model_runs_on_host,
    traced_jacobian,
    traced_model,
)
from nlsq.program.padding import bucketed_data, pad_to_bucket
from nlsq.program.run import run_program
from nlsq.program.spec import SolverSpec
from nlsq.scipy_types import is_linear_operator, is_sparse_matrix
from nlsq.solvers.progress import print_header
from nlsq.solvers.termination import INITIAL_NOT_FINITE, TERMINATION_MESSAGES
from nlsq.solvers.trf import TRFResult

if TYPE_CHECKING:
    from nlsq.sparsity import SparsityPattern


def solve(
    options: ValidatedOptions,
    model_key: Any,
    build: Callable,
    data: Any,
    *,
    with_covariance: bool,
    n_residuals: int | None = None,
    lm_factors: bool = False,
    pattern: SparsityPattern | None = None,
    jacobian_values: bool = False,
) -> tuple[TRFResult, Any, dict]:
    """Run the cached compiled program for a validated problem (:func:`dense_program`,
    then :func:`run_dense`).

    ``n_residuals`` is the number of real residuals when ``data`` is padded to a
    size bucket (``None``: not padded). ``lm_factors`` (method 'lm' with covariance)
    also returns MINPACK's factorisation, for ``leastsq``'s ``infodict``. A sparse
    Jacobian has the nonzero ``pattern`` (by default that of ``jac_sparsity``), and
    ``jacobian_values`` says that the program's ``jacobian`` returns its values.

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
    program, options, data = dense_program(
        options,
        model_key,
        build,
        data,
        with_covariance=with_covariance,
        lm_factors=lm_factors,
        pattern=pattern,
        jacobian_values=jacobian_values,
    )
    return run_dense(program, options, data, n_residuals)


def dense_program(
    options: ValidatedOptions,
    model_key: Any,
    build: Callable,
    data: Any,
    *,
    with_covariance: bool,
    lm_factors: bool = False,
    pattern: SparsityPattern | None = None,
    jacobian_values: bool = False,
) -> tuple[Callable, ValidatedOptions, Any]:
    """The cached compiled program of a validated problem, with the options and data it
    runs with (a sparsity pattern read from the model, and its index arrays, added)."""
    # The sparse machinery (and scipy.sparse) is loaded only for sparse problems.
    if isinstance(options.jac_sparsity, str):
        from nlsq.structure import jacobian_sparsity

        # 'auto': the pattern read from the residual function's jaxpr.
        residual, _ = build()
        x0 = options.inputs.x0.astype(options.dtype)
        structure = jacobian_sparsity(lambda x: residual(x, data), x0)
        options = dataclasses.replace(options, jac_sparsity=structure)
    if pattern is None and options.jac_sparsity is not None:
        from nlsq.sparsity import sparsity_pattern

        pattern = sparsity_pattern(options.jac_sparsity)
    lsmr = options.tr_solver == "lsmr"
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
        # LSMR's settings only where LSMR runs: an 'exact' program is one program (one
        # cache entry, shared with nlsq.fit) whatever tr_options say.
        tr_solver="lsmr" if lsmr else "exact",
        lsmr_options=options.lsmr_options if lsmr else None,
        regularize=options.regularize if lsmr else True,
        sparsity=None if pattern is None else (*pattern.shape, pattern.n_groups),
        jacobian_values=jacobian_values,
    )
    if pattern is not None:
        data = (data, (pattern.rows, pattern.cols, pattern.groups))

    program = single_program(model_key, spec, lambda: build_program(*build(), spec))
    return program, options, data


def run_dense(
    program: Callable, options: ValidatedOptions, data: Any, n_residuals: int | None
) -> tuple[TRFResult, Any, dict]:
    """One call of a single-fit program (see :func:`solve`), with ``verbose``'s output."""
    if options.verbose == 2 and options.method != "lm":
        print_header()
    with callback_fit(options.callback) as token:
        if token is not None:
            data = (data, token)
        raw, pcov, cache_stats = run_program(program, options.inputs, data, n_residuals)
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


def fit_dense(
    f: Callable,
    jac: Callable | str | None,
    prepared: PreparedFit,
    lm_factors: bool = False,
    fixed_length: int | None = None,
) -> tuple[dict[str, Any], ValidatedOptions]:
    """Run the in-memory fit of prepared inputs: traced, or with the model on the host.

    With ``lm_factors`` (method 'lm') the outputs also hold MINPACK's ``(fjac, ipvt,
    qtf)`` for ``leastsq``'s ``infodict``. ``fixed_length`` pads data of at most that
    many points to it (the published nlsq's ``flength``) instead of a size bucket.

    Returns
    -------
    outputs : dict
        The fit's outputs for :func:`nlsq.finish.assemble.finish_fit`, and under
        ``"plan"`` the :class:`DensePlan` that a repeated call may reuse (None where
        the decisions depend on more than the inputs' shapes).
    options : ValidatedOptions
        The options it ran with (finite differences chosen for a NumPy model).
    """
    options = prepared.options
    real = options.dtype
    x0 = options.inputs.x0.astype(real)
    xdata = prepared.xdata
    if isinstance(xdata, np.ndarray):
        xdata = xdata.astype(real, copy=False)
    key = model_key(f)
    col_deriv = prepared.leastsq is not None and prepared.leastsq.col_deriv
    jac_at = traced_jacobian(jac, col_deriv) if callable(jac) else None
    jac_key = model_key(jac) if callable(jac) else jac
    identified = key is not None and (not callable(jac) or jac_key is not None)
    probe: dict = {}
    model_on_host = model_runs_on_host(f, key if identified else None, x0, xdata, probe=probe)
    jac_probe: dict = {}
    jac_on_host = jac_at is not None and runs_on_host(
        jac_at, ("curve_fit jac", key, jac_key) if identified else None, x0, xdata, probe=jac_probe
    )
    if "value" in jac_probe:
        probe["jac"] = jac_probe["value"]
    options = finite_difference_options(prepared, jac, model_on_host)
    fit_key = ("curve_fit", key, jac_key, prepared.sigma_kind)
    plan = None
    if model_on_host or jac_on_host:
        raw, pcov, cache_stats = _solve_model_on_host(
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
        raw, pcov, cache_stats, plan = _solve_traced(
            f, jac_at, prepared, options, fit_key, xdata, lm_factors, fixed_length
        )
    outputs = dense_outputs(raw, pcov, cache_stats)
    outputs["plan"] = plan
    return outputs, options


def program_data(
    xdata: Any, ydata: np.ndarray, transform: np.ndarray | None, real: type[np.floating]
) -> tuple:
    """``(xdata, ydata, transform)`` as a single-fit program takes them: the values in
    the working dtype (copied only to convert; the program never writes its inputs)."""
    weights = None if transform is None else transform.astype(real, copy=False)
    return xdata, ydata.astype(real, copy=False), weights


def dense_outputs(raw: TRFResult, pcov: Any, cache_stats: dict) -> dict[str, Any]:
    """A single fit's outputs, for :func:`nlsq.finish.assemble.finish_fit`."""
    factors = None
    if isinstance(pcov, tuple):
        pcov, *factors = pcov
    return {
        "x": raw.x,
        "cost": raw.cost,
        "optimality": raw.optimality,
        "active_mask": raw.active_mask,
        "nfev": raw.nfev,
        "njev": raw.njev,
        "status": raw.status,
        "pcov": pcov,
        "n_points": len(raw.fun),
        "cache_stats": cache_stats,
        "residuals": raw.fun,
        "jac": raw.jac,
        # MINPACK's (fjac, ipvt, qtf), for leastsq's infodict.
        "lm_factors": factors,
    }


def _solve_traced(
    f: Callable,
    jac_at: Callable | None,
    prepared: PreparedFit,
    options: ValidatedOptions,
    fit_key: tuple,
    xdata: Any,
    lm_factors: bool = False,
    fixed_length: int | None = None,
) -> tuple:
    """The compiled fit of a JAX model, padded to a size bucket when exact."""
    real = options.dtype
    if not isinstance(xdata, np.ndarray | jax.Array) and hasattr(xdata, "__array__"):
        # A pandas-like object: the compiled program takes its values, not the object.
        xdata = np.asarray(xdata, real)
    ydata, transform = prepared.ydata, prepared.transform
    n_residuals = None
    bucketed = None
    if jac_at is None and options.jac_scheme is None and options.jac_sparsity is None:
        bucketed = bucketed_data(
            f,
            fit_key[1],
            xdata,
            ydata,
            prepared.sigma_kind,
            transform,
            options.inputs.x0,
            fixed_length,
        )
    if bucketed is not None:
        (xdata, ydata, transform), n_residuals = bucketed
    data = program_data(xdata, ydata, transform, real)

    def build():
        residual = model_residual(traced_model(f), prepared.sigma_kind)
        return residual, None if jac_at is None else model_jacobian(jac_at, prepared.sigma_kind)

    program, run_options, data = dense_program(
        options, fit_key, build, data, with_covariance=True, lm_factors=lm_factors
    )
    raw, pcov, cache_stats = run_dense(program, run_options, data, n_residuals)
    plan = None
    if _repeatable(fit_key, jac_at, options, lm_factors):
        bucket = None if n_residuals is None else data[1].size
        plan = DensePlan(program, options, prepared.sigma_kind, prepared.leastsq, bucket)
    return raw, pcov, cache_stats, plan


@dataclass(frozen=True)
class DensePlan:
    """What an in-memory fit of a traced model decided from the shapes of its inputs:
    a call with new values of the same shapes runs it again (:func:`rerun_dense`)."""

    program: Callable
    #: The options it ran with (``x0`` and the bounds are replaced on a new call).
    options: ValidatedOptions
    sigma_kind: str
    leastsq: LeastsqSettings | None
    #: The size bucket the data were padded to; None: run at their own length.
    bucket: int | None


def _repeatable(
    fit_key: tuple, jac_at: Callable | None, options: ValidatedOptions, lm_factors: bool
) -> bool:
    """A fit whose decisions hold for any values of the same shapes: a model with an
    identity, no callable ``jac`` or host callbacks, programs kept in the cache."""
    return (
        fit_key[1] is not None
        and jac_at is None
        and not lm_factors
        and options.callback is None
        and options.verbose == 0
        and options.jac_scheme is None
        and options.jac_sparsity is None
        and config.get("cache_config.enable")
    )


def rerun_dense(
    plan: DensePlan,
    x0: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    xdata: np.ndarray,
    ydata: np.ndarray,
    transform: np.ndarray | None,
) -> tuple[dict[str, Any], ValidatedOptions]:
    """Run a :class:`DensePlan` on new values (checked as a full call checks them):
    the same program, padding rule and outputs as :func:`fit_dense`."""
    lb, ub = bounds
    inputs = dataclasses.replace(plan.options.inputs, x0=x0, lb=lb, ub=ub)
    options = dataclasses.replace(plan.options, inputs=inputs)
    real = options.dtype
    xdata = xdata.astype(real, copy=False)
    n_residuals = None
    if plan.bucket is not None:
        n_residuals = ydata.size
        if plan.bucket != ydata.size:
            xdata, ydata, transform = pad_to_bucket(
                xdata, ydata, plan.sigma_kind, transform, plan.bucket
            )
    data = program_data(xdata, ydata, transform, real)
    raw, pcov, cache_stats = run_dense(plan.program, options, data, n_residuals)
    return dense_outputs(raw, pcov, cache_stats), options


def _solve_model_on_host(
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
    _refuse_auto_sparsity(options)
    real = options.dtype
    x0 = options.inputs.x0.astype(real)
    if not isinstance(xdata, np.ndarray):
        captured, xdata, fit_key = xdata, None, None
    else:
        captured = None

    def host_x(x: Any) -> Any:
        return captured if x is None else x

    initial = {}
    model_at = traced_model(f)
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
        residual = model_residual(model_at, prepared.sigma_kind)
        jacobian = None if jac_model is None else model_jacobian(jac_model, prepared.sigma_kind)
        return residual, jacobian

    # The host functions' output shapes are part of the program.
    shapes = tuple(np.shape(value) for value in initial.values())
    host_key = None if fit_key is None else (fit_key, "host", model_on_host, jac_on_host, shapes)
    with host_fit(x0, initial) as token:
        data = (
            xdata,
            prepared.ydata.astype(real),
            None if transform is None else transform.astype(real),
            token,
        )
        return solve(options, host_key, build, data, with_covariance=True, lm_factors=lm_factors)


def _refuse_auto_sparsity(options: ValidatedOptions) -> None:
    """``jac_sparsity='auto'`` reads a JAX model's jaxpr; a NumPy model has none."""
    if isinstance(options.jac_sparsity, str):
        raise ValueError(
            "jac_sparsity='auto' needs a model written with jax.numpy (its pattern is "
            "read from the traced program); pass the pattern as `jac_sparsity`."
        )


def _sparse_jacobian_options(J0: Any, options: ValidatedOptions) -> ValidatedOptions:
    """The options for a sparse ``J0``: scipy's errors where it refuses one, else
    ``tr_solver='lsmr'`` (scipy's choice for ``tr_solver=None``)."""
    if options.method == "lm":
        raise ValueError("method='lm' works only with dense Jacobian matrices.")
    if options.tr_solver == "exact":
        raise ValueError("tr_solver='exact' works only with dense Jacobian matrices.")
    if is_linear_operator(J0) and options.jac_scale:
        raise ValueError("x_scale='jac' can't be used when `jac` returns LinearOperator.")
    if options.tr_solver == "lsmr":
        return options
    if options.method == "dogbox" and "regularize" in dict(options.tr_options):
        warnings.warn(
            "The keyword 'regularize' in `tr_options` is not relevant for 'dogbox' method.",
            stacklevel=5,
        )
    lsmr_options, regularize = lsmr_settings(dict(options.tr_options), options.method)
    return dataclasses.replace(
        options, tr_solver="lsmr", lsmr_options=lsmr_options, regularize=regularize
    )


def _values_on_pattern(J: Any, pattern: SparsityPattern) -> np.ndarray:
    """The entries of a sparse ``J`` at ``pattern``'s positions.

    Raises
    ------
    ValueError
        If ``J`` has a nonzero outside the pattern (the one ``jac`` had at ``x0``).
    """
    if not is_sparse_matrix(J):
        raise TypeError("`jac` returned a dense array where it returned a sparse matrix at x0.")
    from scipy.sparse import csr_array  # loaded already: J is a scipy sparse matrix

    A = csr_array(J)
    if A.shape != pattern.shape:
        raise ValueError(
            f"The return value of `jac` has wrong shape: expected {pattern.shape}, "
            f"actual {A.shape}."
        )
    values = np.asarray(A[pattern.rows, pattern.cols]).ravel()
    if np.count_nonzero(A.data) > np.count_nonzero(values):
        raise ValueError(
            "`jac` returned a sparse matrix with nonzeros outside the pattern it had "
            "at the initial point; return every entry that can be nonzero (explicit "
            "zeros are kept)."
        )
    return values


def solve_residuals_on_host(
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
        scipy refuses it; ``jac_sparsity='auto'`` (a NumPy model has no jaxpr).
    """
    _refuse_auto_sparsity(options)
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
        # Pointing at the caller of least_squares, through fit_residuals.
        warn_once(key[1], "fun", stacklevel=5)
        initial["fun"] = f0
        fun_on_device = host_callable(residual, f0.shape, "fun")

        def device_residual(x, data):
            return fun_on_device(x, *data)

    else:

        def device_residual(x, data):
            return residual(x, data[0])

    device_jacobian = None
    pattern = None
    operator = False
    if jacobian is not None:
        if jac_on_host:
            shape = (f0.size, x0.size)
            J0 = jac_probe["value"] if "value" in jac_probe else jacobian(x0, data)
            sparse = is_sparse_matrix(J0) or is_linear_operator(J0)
            if not sparse:
                J0 = np.atleast_2d(np.asarray(J0))
            if J0.shape != shape:
                raise ValueError(
                    "The return value of `jac` has wrong shape: expected "
                    f"{shape}, actual {J0.shape}."
                )
            if sparse:
                options = _sparse_jacobian_options(J0, options)
            if is_linear_operator(J0):
                operator_on_device = host_operator_jacobian(jacobian, *shape)
                operator = True

                def device_jacobian(x, data):
                    return operator_on_device(x, *data)

            elif sparse:
                from nlsq.sparsity import fixed_pattern

                pattern = fixed_pattern(J0)
                initial["jac"] = _values_on_pattern(J0, pattern)
                values_on_device = host_callable(
                    lambda x, data: _values_on_pattern(jacobian(x, data), pattern),
                    (pattern.nnz,),
                    "jac",
                )

                def device_jacobian(x, data):
                    return values_on_device(x, *data)

            else:
                initial["jac"] = J0
                jac_on_device = host_callable(jacobian, shape, "jac")

                def device_jacobian(x, data):
                    return jac_on_device(x, *data)

        else:

            def device_jacobian(x, data):
                return jacobian(x, data[0])

    elif options.jac_scheme is None:
        options = dataclasses.replace(options, jac_scheme="2-point")
    kind = "operator" if operator else "sparse" if pattern is not None else "dense"
    host_key = (key, "host", fun_on_host, jac_on_host, f0.shape, kind)
    with host_fit(x0, initial) as token:
        raw, _, _ = solve(
            options,
            host_key,
            lambda: (device_residual, device_jacobian),
            (data, token),
            with_covariance=False,
            pattern=pattern,
            jacobian_values=pattern is not None,
        )
        if operator:
            # The final operator, loss-scaled as scipy returns it, before the fit's
            # operators are released.
            raw = raw._replace(jac=HostJacobian(host_linear_operator(raw.jac.array, int(token))))
    return raw


class HostJacobian:
    """A Jacobian already on the host (a ``LinearOperator``), as a result field."""

    def __init__(self, value: Any) -> None:
        self._value = value

    def __len__(self) -> int:
        return self._value.shape[0]

    def numpy(self) -> Any:
        return self._value


def fit_residuals(
    fun: Callable, jac: Callable | str | None, options: ValidatedOptions, args: tuple, kwargs: dict
) -> TRFResult:
    """Run ``least_squares``'s fit of ``fun(x, *args, **kwargs)``, traced or on the host.

    Arrays and floats among ``args`` and ``kwargs`` are the program's data; the rest
    is part of its cache key.
    """
    dynamic, static_key, merge = split_arguments(args, kwargs, options.dtype)

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
        raw = solve_residuals_on_host(
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
    return raw
