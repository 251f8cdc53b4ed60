"""``nlsq.fit``: a curve fit as a function of JAX arrays, for use inside JAX programs.

It runs the program body of :func:`nlsq.curve_fit` (the same solver, from the same
cache) and returns JAX arrays, so it works under ``jax.jit``, ``jax.vmap`` and the
other transformations. ``popt`` is differentiated by the implicit function theorem at
the solution (:mod:`nlsq.implicit`), never through the solver's iterations; ``cost``
and ``pcov`` are computed from the residuals and the Jacobian at ``popt``, so their
derivatives follow from that of ``popt``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from nlsq.batch_result import INVALID_INPUT, NOT_FINITE_AT_P0
from nlsq.covariance import unscaled_covariance
from nlsq.errors import plain_input_errors
from nlsq.finish.covariance import scale_covariances
from nlsq.identity import model_key
from nlsq.implicit import implicit_minimize
from nlsq.jacobian import autodiff_jacobian
from nlsq.loss import evaluate_loss, loss_cost, resolve_loss, scale_for_robust_loss
from nlsq.prepare.options import ValidatedOptions, keyword_options
from nlsq.program.build import build_program, cached_program, single_program
from nlsq.program.compiler import jit_program
from nlsq.program.model import as_residual_vector, model_residual, traced_model
from nlsq.program.padding import bucketed_data
from nlsq.program.run import SCALAR_FIELDS, summary_length
from nlsq.program.spec import SolverSpec, pack_controls
from nlsq.solvers.termination import INITIAL_NOT_FINITE

#: Keywords of ``curve_fit`` that have no meaning for a traced fit.
_REFUSED = {
    "jac": "nlsq.fit differentiates the model by autodiff; `jac` is not supported.",
    "callback": "`callback` is not supported by nlsq.fit.",
    "full_output": "`full_output` is not supported by nlsq.fit: the result holds nfev and status.",
    "nan_policy": "`nan_policy` is not supported by nlsq.fit (shapes must not depend "
    "on values); use weights or curve_fit_batch's `mask`.",
}


class FitOutput(NamedTuple):
    """The result of :func:`nlsq.fit`: a pytree of JAX arrays.

    Attributes
    ----------
    popt : Array, shape (n,)
        Optimal parameters; NaN where ``status`` is negative.
    pcov : Array, shape (n, n)
        Covariance of ``popt`` by ``curve_fit``'s rule; ``inf`` where it cannot be
        estimated, NaN where ``popt`` is NaN.
    cost : Array
        Half the (weighted, robust) sum of squared residuals at ``popt``.
    status : Array of int
        ``least_squares``'s termination status (positive: converged; 0: out of
        evaluations), :data:`nlsq.batch_result.NOT_FINITE_AT_P0` (-3) or
        :data:`nlsq.batch_result.INVALID_INPUT` (-4), as in ``curve_fit_batch``.
    nfev, njev : Array of int
        Function and Jacobian evaluations of the solver (0 when it did not run).
    success : Array of bool
        True where the fit converged (where ``curve_fit`` would return).
    active_mask : Array of int, shape (n,)
        -1 where ``popt`` is at its lower bound, +1 at its upper bound, else 0.
    """

    popt: Array
    pcov: Array
    cost: Array
    status: Array
    nfev: Array
    njev: Array
    success: Array
    active_mask: Array


def _is_traced(tree: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _as_float(value: Any, dtype: np.dtype) -> Any:
    """``value`` in the working dtype: a NumPy array when concrete (no device work, no
    compile), else the traced array, converted only if its dtype differs."""
    if not isinstance(value, jax.core.Tracer):
        return np.asarray(value, dtype)
    return value if value.dtype == dtype else value.astype(dtype)


def _working_dtype(dtype: Any) -> np.dtype:
    """The given ``dtype``, else JAX's default float (float64 with ``jax_enable_x64``)."""
    if dtype is not None:
        return np.dtype(dtype)
    return np.dtype(jnp.zeros(()).dtype)


def _bounds(bounds: Any, n: int, dtype: np.dtype) -> tuple[Array, Array]:
    if bounds is None:
        bounds = (-np.inf, np.inf)
    elif hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        bounds = (bounds.lb, bounds.ub)
    if len(bounds) != 2:
        raise ValueError("`bounds` must contain 2 elements.")
    out = []
    for b in bounds:
        b = _as_float(b, dtype)
        if b.ndim == 0:
            b = jnp.full(n, b, dtype) if isinstance(b, jax.core.Tracer) else np.full(n, b, dtype)
        if b.shape != (n,):
            raise ValueError("Inconsistent shapes between bounds and `x0`.")
        out.append(b)
    return out[0], out[1]


def _weights(sigma: Any, m: int, dtype: np.dtype) -> tuple[str, Array | None]:
    """scipy's weighting, traceable: ``1/sigma`` or the Cholesky factor of ``sigma``.

    A concrete covariance that is not positive definite raises as in ``curve_fit``;
    a traced one gives NaN weights, and the fit the status ``NOT_FINITE_AT_P0``.
    """
    if sigma is None:
        return "none", None
    sigma = _as_float(sigma, dtype)
    if sigma.size == 1 or sigma.shape == (m,):
        return "diagonal", 1.0 / sigma
    if sigma.shape == (m, m):
        if isinstance(sigma, jax.core.Tracer):
            return "covariance", jnp.linalg.cholesky(sigma)
        try:
            return "covariance", np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError as error:
            raise ValueError("`sigma` must be positive definite.") from error
    raise ValueError("`sigma` has incorrect shape.")


def _validated(
    p0: Array, lb: Array, ub: Array, method: str, options: dict[str, Any]
) -> ValidatedOptions:
    """``least_squares``'s validation of the options, in scipy's order and words.

    With concrete ``p0`` and bounds the values are checked too (``p0`` inside the
    bounds, ``lb < ub``); traced ones are checked in the program, into a status.
    """
    if _is_traced((p0, lb, ub)):
        n = p0.shape[0]
        p0, bounds = np.zeros(n), (np.full(n, -np.inf), np.full(n, np.inf))
    else:
        bounds = (np.asarray(lb, float), np.asarray(ub, float))
    return keyword_options(
        np.asarray(p0, float), jac=None, bounds=bounds, method=method, kwargs=options, caller="fit"
    )


def _model(f: Callable, xdata: Any, p0: Array, args: tuple) -> tuple[Callable, Any, Any]:
    """``(model_at, extra, key)``: ``model_at(p, xdata[, extra])`` evaluates ``f``.

    Arrays that ``f`` closes over and that carry a derivative or a trace (tracers) are
    hoisted into ``extra`` by ``jax.closure_convert``, so that the implicit rule sees
    them as inputs. ``key`` (None: not cached) identifies the compiled program; with
    neither ``args`` nor hoisted arrays it is ``curve_fit``'s, so both share programs.
    """
    params = tuple(p0)
    try:
        converted, hoisted = jax.closure_convert(f, xdata, *params, *args)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError) as error:
        raise TypeError("nlsq.fit needs a model written with jax.numpy.") from error
    if hoisted:
        n_args = len(args)

        def model_at(p: Array, x: Any, extra: tuple) -> Any:
            call_args, consts = extra
            return converted(x, *p, *call_args[:n_args], *consts)

        return model_at, (tuple(args), tuple(hoisted)), None
    key = model_key(f)
    if not args:
        return traced_model(f), None, ("curve_fit", key, None)

    def with_args(p: Array, x: Any, extra: tuple) -> Any:
        return f(x, *p, *extra)

    return with_args, tuple(args), ("fit", key, jax.tree.structure(tuple(args)))


def _padding(
    f: Callable, key: Any, xdata: Any, ydata: Array, kind: str, transform: Any, x0: Array
) -> tuple[tuple, Any] | None:
    """``curve_fit``'s size bucket for concrete data of a pointwise model: the padded
    data and the number of real residuals (None: run unpadded)."""
    if key is None or key[0] != "curve_fit":
        return None
    if _is_traced((xdata, ydata, transform, x0)) or not isinstance(xdata, jax.Array | np.ndarray):
        return None
    t_np = None if transform is None else np.asarray(transform)
    bucketed = bucketed_data(
        f, key[1], np.asarray(xdata), np.asarray(ydata), kind, t_np, np.asarray(x0)
    )
    if bucketed is None:
        return None
    data, m = bucketed
    return data, np.asarray(m, np.int64)


def fit(
    f: Callable,
    xdata: Any,
    ydata: Any,
    p0: Any,
    *,
    sigma: Any = None,
    bounds: Any = None,
    method: str = "trf",
    loss: str | Callable = "linear",
    absolute_sigma: bool = False,
    check_finite: bool = True,
    args: tuple = (),
    **options: Any,
) -> FitOutput:
    """Fit ``f(xdata, *params, *args)`` to ``ydata``, traceably and differentiably.

    The solver and the covariance rule are those of :func:`nlsq.curve_fit`. Unlike
    ``curve_fit``, ``fit`` takes and returns JAX arrays and can be called inside
    ``jax.jit``, ``jax.vmap`` (one fit per batch element, as
    :func:`nlsq.curve_fit_batch`), ``jax.grad`` and the other transformations. Its
    derivatives (forward and reverse mode) with respect to ``xdata``, ``ydata``,
    ``sigma``, the bounds, ``args`` and any array ``f`` closes over come from the
    implicit function theorem at ``popt`` (the optimality condition of the fit, with
    parameters at an active bound held there), not from differentiating the
    iterations. ``p0`` does not change a converged ``popt``: its derivative is zero.

    Parameters
    ----------
    f : callable
        The model ``f(x, p1, ..., pn, *args)``, written with ``jax.numpy``. It may
        close over JAX arrays, traced or not; they are differentiated too.
    xdata : array_like or pytree of arrays
        The independent variable, passed to ``f`` as it is (in the working dtype).
    ydata : array_like, shape (M,)
        The data.
    p0 : array_like, shape (n,)
        Initial guess; required (it sets the number of parameters).
    sigma : None, scalar, array_like of shape (M,) or (M, M), optional
        Standard deviations or a covariance matrix, as in ``curve_fit``.
    bounds : 2-tuple of array_like or `scipy.optimize.Bounds`, optional
        Lower and upper bounds, each a scalar or shape (n,). None: no bounds.
    method : {'trf', 'dogbox', 'lm'}, optional
        The solver; 'lm' runs ``least_squares(method='lm')`` (no bounds).
    loss : str or callable, optional
        The robust loss, as in ``least_squares`` (a callable must be written with
        ``jax.numpy`` to be differentiated).
    absolute_sigma : bool, optional
        As in ``curve_fit``: keep ``pcov`` in the units of ``sigma`` (no ``chi2/dof``
        scaling).
    check_finite : bool, optional
        Check that the data are finite. Concrete data with NaN or inf raise
        ``ValueError``; traced data give the status ``INVALID_INPUT``.
    args : tuple, optional
        Extra arguments of ``f`` after the parameters: ``f(x, *params, *args)``.
        Each may be any pytree of arrays; they are differentiated and, unlike arrays
        that ``f`` closes over under a transformation, never recompile the solver.
    **options
        ``least_squares``'s options: ``ftol``, ``xtol``, ``gtol``, ``x_scale``,
        ``f_scale``, ``max_nfev`` (or ``maxfev``), ``jacobian_mode``, ``dtype``.
        Options are Python values (static); changing one may compile a new program.

    Returns
    -------
    FitOutput
        ``popt``, ``pcov``, ``cost``, ``status``, ``nfev``, ``njev``, ``success`` and
        ``active_mask``, as JAX arrays.

    Raises
    ------
    ValueError, TypeError
        For invalid options and shapes, and for invalid values when they are
        concrete (``p0`` outside the bounds, ``lb >= ub``, non-finite data), with
        ``curve_fit``'s messages. Traced values that are invalid give a status
        instead, as in ``curve_fit_batch``. A fit that does not converge is not an
        error: see ``status`` and ``success``.

    Notes
    -----
    The working precision is ``dtype`` if given, else JAX's default float: float64
    needs ``jax_enable_x64`` (``jax.config.update('jax_enable_x64', True)`` or the
    ``jax.enable_x64(True)`` context). nlsq never changes that setting here, since
    the fit is part of the caller's computation.

    The derivative of ``popt`` solves ``H dp = -d(grad)/d(theta) . dtheta`` on the free
    parameters, with ``H`` the Hessian of the cost (the Gauss-Newton matrix ``J^T J``
    plus the second-order term of the residuals; for a linear model exactly
    ``J^T J``), so it equals the derivative of re-fitting at perturbed data. A robust
    loss enters through the cost it minimises. Where the cost is flat in some
    direction (parameters the data do not determine) that direction gets a zero
    derivative.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, nlsq
    >>> def model(x, a, b):
    ...     return a * jnp.exp(-b * x)
    >>> x = jnp.linspace(0.0, 4.0, 50)
    >>> y = model(x, 2.0, 0.7)
    >>> with jax.enable_x64(True):
    ...     out = jax.jit(lambda y: nlsq.fit(model, x, y, jnp.array([1.0, 1.0])))(y)
    ...     dpopt_dy = jax.jacrev(lambda y: nlsq.fit(model, x, y, [1.0, 1.0]).popt)(y)
    >>> dpopt_dy.shape
    (2, 50)
    """
    for name, message in _REFUSED.items():
        value = options.pop(name, None)
        if value is not None and value is not False:
            raise (TypeError if name == "full_output" else ValueError)(message)
    if not isinstance(args, tuple):
        raise TypeError("`args` must be a tuple.")
    if not callable(f):
        raise TypeError("`f` must be callable.")
    if options.get("verbose", 0):
        raise ValueError("`verbose` is not supported by nlsq.fit.")
    dtype = _working_dtype(options.get("dtype"))
    options["dtype"] = dtype
    p0 = _as_float(p0, dtype)
    if p0.ndim > 1:
        raise ValueError("`x0` must have at most 1 dimension.")
    p0 = p0.reshape(-1) if p0.ndim == 0 else p0
    n = p0.shape[0]
    lb, ub = _bounds(bounds, n, dtype)
    ydata = _as_float(ydata, dtype)
    if ydata.size == 0:
        raise ValueError("`ydata` must not be empty!")
    xdata = jax.tree.map(lambda leaf: _as_float(leaf, dtype), xdata)
    m = ydata.size
    kind, transform = _weights(sigma, m, dtype)
    validated = _validated(p0, lb, ub, method, dict(options, loss=loss))
    if bounds is None or _is_traced((lb, ub)):
        bounded = bounds is not None
    else:
        bounded = bool(np.any(np.isfinite(lb) | np.isfinite(ub)))
    if validated.method == "lm" and bounded:
        raise ValueError("Method 'lm' doesn't support bounds.")

    if check_finite:
        _check_finite((xdata, ydata, transform))
    model_at, extra, key = _model(f, xdata, p0, args)
    theta = (xdata, ydata, transform) + (() if extra is None else (extra,))
    spec = SolverSpec(
        method=validated.method,
        bounded=bounded,
        loss=validated.loss,
        jac_scale=validated.jac_scale,
        jacobian_mode=validated.jacobian_mode,
        verbose=0,
        with_covariance=True,
        dtype=dtype.name,
        jac_nfev=validated.jac_nfev,
        jac_scheme=validated.jac_scheme,
        diff_step=validated.diff_step,
    )
    model_id = None if key is None else key + (kind,)
    run, finish, whole = cached_program(
        "fit",
        None if model_id is None else (model_id, bool(absolute_sigma), bool(check_finite)),
        spec,
        lambda: _fit_functions(
            f, model_at, model_id, kind, spec, bool(absolute_sigma), bool(check_finite)
        ),
    )
    controls = validated.inputs.controls(dtype)
    with plain_input_errors():
        if _is_traced((p0, lb, ub, theta)):
            return whole(p0, lb, ub, theta, controls)
        # Concrete inputs: the solver program itself (curve_fit's, padded to its size
        # bucket), then the compiled finish.
        return finish(run(p0, lb, ub, (theta, controls)), theta, controls[-1])


def _fit_functions(
    f: Callable,
    model_at: Callable,
    model_id: Any,
    kind: str,
    spec: SolverSpec,
    absolute_sigma: bool,
    check_finite: bool,
) -> tuple[Callable, Callable, Callable]:
    """``(run, finish, whole)`` of one model and static configuration.

    ``run(x0, lb, ub, (theta, controls))`` runs the solver program (from the program
    cache, shared with ``curve_fit``) and returns its summary; ``finish`` computes
    the cost, the covariance and the status from it, differentiably in the solution;
    ``whole`` is both, with the solution differentiated implicitly, as one jitted
    function, so that a transformation of :func:`fit` (``grad``, ``vmap``) compiles
    once per shape.
    """
    dtype = np.dtype(spec.dtype)
    n_controls_scale = -1  # f_scale is the last of the controls
    residual = model_residual(model_at, kind)
    rho = resolve_loss(spec.loss)
    program = single_program(model_id, spec, lambda: build_program(residual, None, spec))

    def run(x0: Array, lb: Array, ub: Array, inputs: tuple) -> Array:
        theta, controls = inputs
        data, n_residuals = theta, None
        padded = _padding(f, model_id, theta[0], theta[1], kind, theta[2], x0)
        if padded is not None:
            data, n_residuals = padded
        # Concrete controls are packed on the host: eager jax.numpy would compile each
        # packing operation. ``controls`` is (ftol, xtol, gtol, max_nfev, x_scale, f_scale).
        xp = jnp if _is_traced((x0, lb, ub, controls, data)) else np
        packed = pack_controls(xp, x0, lb, ub, *controls, n_residuals)
        summary, _, _, _ = program(packed, data, padded=n_residuals is not None)
        return summary[: summary_length(x0.shape[0])]

    def solve(x0: Array, lb: Array, ub: Array, inputs: tuple) -> tuple:
        return _unpack(run(x0, lb, ub, inputs), x0.shape[0])

    def fit_cost(p: Array, inputs: tuple) -> Array:
        theta, controls = inputs
        r = as_residual_vector(residual(p, theta), dtype)
        if rho is None:
            return 0.5 * jnp.dot(r, r)
        return loss_cost(rho, r, controls[n_controls_scale])

    def finish_summary(summary: Array, theta: tuple, f_scale: Array) -> FitOutput:
        n = (summary.shape[0] - len(SCALAR_FIELDS)) // 3
        return finish(*_unpack(summary, n), theta, f_scale, jnp.asarray(False))

    def finish(
        popt: Array, active: Array, counts: tuple, theta: tuple, f_scale: Array, invalid: Array
    ) -> FitOutput:
        status, nfev, njev = counts
        cost, pcov = _cost_and_covariance(residual, popt, theta, spec, rho, f_scale, absolute_sigma)
        status = jnp.where(
            invalid,
            INVALID_INPUT,
            jnp.where(status == INITIAL_NOT_FINITE, NOT_FINITE_AT_P0, status),
        )
        failed = (status == INVALID_INPUT) | (status == NOT_FINITE_AT_P0)
        nan = jnp.asarray(jnp.nan, dtype)
        return FitOutput(
            popt=jnp.where(failed, nan, popt),
            pcov=jnp.where(failed, nan, pcov),
            cost=jnp.where(failed, nan, cost),
            status=status,
            nfev=jnp.where(invalid, 0, nfev),
            njev=jnp.where(invalid, 0, njev),
            success=(status > 0) & ~failed,
            active_mask=active.astype(jnp.int32),
        )

    def whole(p0: Array, lb: Array, ub: Array, theta: tuple, controls: tuple) -> FitOutput:
        invalid = _invalid_input(p0, lb, ub, theta[:3], check_finite)
        # A fit with invalid input still runs (its shapes are fixed), from a feasible
        # start; its results are replaced by NaN.
        x0 = jnp.where(invalid, jnp.clip(p0, lb, ub), p0)
        popt, active, counts = implicit_minimize(
            solve, jax.grad(fit_cost), x0, lb, ub, (theta, controls)
        )
        return finish(popt, active, counts, theta, controls[n_controls_scale], invalid)

    return run, jit_program(finish_summary), jax.jit(whole)


def _unpack(summary: Array, n: int) -> tuple[Array, Array, tuple[Array, Array, Array]]:
    """``(x, active_mask, (status, nfev, njev))`` from a program's summary."""
    scalars = dict(zip(SCALAR_FIELDS, summary[3 * n :], strict=True))
    counts = tuple(scalars[name].astype(jnp.int32) for name in ("status", "nfev", "njev"))
    return summary[:n], summary[2 * n : 3 * n], counts


def _check_finite(data: tuple) -> None:
    """``curve_fit``'s error for concrete data with NaN or inf (traced data are
    checked in the program, into a status)."""
    for leaf in jax.tree.leaves(data):
        if not isinstance(leaf, jax.core.Tracer) and not np.isfinite(leaf).all():
            raise ValueError("array must not contain infs or NaNs")


def _invalid_input(p0: Array, lb: Array, ub: Array, data: tuple, check_finite: bool) -> Array:
    """Whether the fit's values are invalid (traced): ``lb >= ub``, ``p0`` outside
    the bounds, or (``check_finite``) data with NaN or inf."""
    invalid = jnp.any(lb >= ub) | ~jnp.all((p0 >= lb) & (p0 <= ub))
    if check_finite:
        for leaf in jax.tree.leaves(data):
            invalid = invalid | ~jnp.all(jnp.isfinite(leaf))
    return invalid


def _cost_and_covariance(
    residual: Callable,
    popt: Array,
    theta: tuple,
    spec: SolverSpec,
    rho: Any,
    f_scale: Array,
    absolute_sigma: bool,
) -> tuple[Array, Array]:
    """Cost and ``curve_fit``'s ``pcov`` at ``popt``, differentiable in both.

    The Jacobian is the solver's at the solution: weighted, and scaled for a robust
    loss as ``least_squares`` returns it to ``curve_fit``.
    """
    dtype = np.dtype(spec.dtype)

    def fun(p: Array) -> Array:
        return as_residual_vector(residual(p, theta), dtype)

    r = fun(popt)
    m = r.shape[0]
    J = autodiff_jacobian(fun, popt, m, spec.jacobian_mode)(popt)
    if rho is None:
        cost = 0.5 * jnp.dot(r, r)
    else:
        values = evaluate_loss(rho, r, f_scale)
        J, _ = scale_for_robust_loss(J, r, values, jnp.finfo(dtype).eps)
        cost = 0.5 * jnp.sum(values[0])
    pcov, _ = scale_covariances(
        unscaled_covariance(J, m), cost, m, popt.shape[0], absolute_sigma, xp=jnp
    )
    return cost, pcov
