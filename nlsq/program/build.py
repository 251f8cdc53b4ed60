"""One program builder and one cache key scheme for every kind of fit.

:func:`program_function` is one whole fit as a traceable function (solver iterations
and covariance). A single fit jits it; a batch vmaps it first; a chunked fit runs the
Gram-form solver over chunks instead. Every compiled program is looked up in the
program cache under ``(kind, model_key, spec)``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nlsq import config
from nlsq.cache import programs
from nlsq.covariance import leastsq_covariance, unscaled_covariance
from nlsq.errors import TraceTimeInputError
from nlsq.finite_diff import (
    difference_steps,
    finite_difference_jacobian,
    minpack_forward_jacobian,
)
from nlsq.host import HostOperator
from nlsq.identity import model_key
from nlsq.jacobian import autodiff_jacobian
from nlsq.loss import resolve_loss
from nlsq.program.callback import dispatch as dispatch_callback
from nlsq.program.compiler import jit_program
from nlsq.program.model import (
    as_residual_vector,
    checked_loss,
    chunk_residual,
    model_jacobian,
    model_residual,
    traced_jacobian,
    traced_model,
)
from nlsq.program.run import pack_summary
from nlsq.program.spec import BatchLayout, LargeSpec, SolverSpec, unpack_controls
from nlsq.program.stored import stored_program
from nlsq.program.streaming import chunk_loader, report_progress
from nlsq.solvers.gram import ChunkSource, covariance_from_gram, trf_chunked
from nlsq.solvers.progress import host_callback_hook
from nlsq.solvers.sparse import (
    Coloring,
    SparseJacobian,
    colored_difference_jacobian,
    colored_jvp_jacobian,
    gram_matrix,
)
from nlsq.solvers.trf import TRFResult, trf

Residual = Callable[[jax.Array, Any], jax.Array]


def program_key(kind: str, model_id: Hashable | None, spec: Hashable) -> Hashable | None:
    """The cache key of a program: ``(kind, model_key, spec)``.

    ``None`` (never cached) when the model has no identity, the cache is disabled or
    the key holds an unhashable value.
    """
    if model_id is None or not config.get("cache_config.enable"):
        return None
    key = (kind, model_id, spec)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def cached_program(
    kind: str, model_id: Hashable | None, spec: Hashable, build: Callable[[], Callable]
) -> Callable:
    """The compiled program for ``(kind, model_id, spec)``, built on first use."""
    return programs.get_or_build(program_key(kind, model_id, spec), build)


def single_program(
    model_id: Hashable | None, spec: SolverSpec, build: Callable[[], Callable]
) -> Callable:
    """The compiled single-fit program (:func:`build_program`) for ``(model_id, spec)``,
    its executables kept on disk between processes (:mod:`nlsq.program.stored`)."""
    key = program_key("single", model_id, spec)
    return programs.get_or_build(key, lambda: stored_program(build(), key))


def solver_for(method: str) -> Callable[..., TRFResult]:
    """The solver function of a least-squares ``method``.

    Every solver takes TRF's arguments and returns a :class:`TRFResult`.
    """
    if method == "trf":
        return trf
    if method == "dogbox":
        from nlsq.solvers.dogbox import dogbox

        return dogbox
    if method == "lm":
        from nlsq.solvers.lm import lm

        return lm
    raise ValueError(f"Unknown method {method!r}.")


def _finite_difference(
    residual: Residual, data: Any, fun: Callable, keep: jax.Array | None, lb, ub, spec: SolverSpec
) -> Callable[[jax.Array], jax.Array]:
    """The Jacobian by the finite-difference scheme of ``spec``.

    Differences are taken of the unchecked residuals, so that a complex step gives
    complex values; ``fun(x)`` (real, checked) supplies ``f(x)``.
    """
    dtype = np.dtype(spec.dtype)

    def raw_fun(x: jax.Array) -> jax.Array:
        f = jnp.atleast_1d(jnp.asarray(residual(x, data)))
        if not jnp.iscomplexobj(x):
            f = f.astype(dtype)
        return f if keep is None else jnp.where(keep, f, 0.0)

    if spec.jac_scheme == "minpack":
        epsfcn = 0.0 if spec.diff_step is None else spec.diff_step

        def jac(x: jax.Array) -> jax.Array:
            return minpack_forward_jacobian(raw_fun, x, fun(x), epsfcn)

        return jac
    rel_step = None if spec.diff_step is None else jnp.asarray(spec.diff_step, dtype)

    def jac(x: jax.Array) -> jax.Array:
        return finite_difference_jacobian(raw_fun, x, fun(x), spec.jac_scheme, rel_step, lb, ub)

    return jac


def _sparse_jacobian(
    residual: Residual,
    jacobian: Residual | None,
    data: Any,
    fun: Callable,
    coloring: Coloring,
    lb: jax.Array,
    ub: jax.Array,
    spec: SolverSpec,
) -> Callable[[jax.Array], SparseJacobian]:
    """The Jacobian on a sparsity pattern: the user's nonzero values, grouped finite
    differences of ``spec.jac_scheme``, or one forward-mode derivative per group."""
    dtype = np.dtype(spec.dtype)
    if jacobian is not None:

        def values_jac(x: jax.Array) -> SparseJacobian:
            values = jnp.asarray(jacobian(x, data)).astype(dtype)
            n = x.shape[0]
            return SparseJacobian(values, coloring.rows, coloring.cols, (coloring.m, n))

        return values_jac
    if spec.jac_scheme is None:
        return colored_jvp_jacobian(fun, coloring)

    def raw_fun(x: jax.Array) -> jax.Array:
        f = jnp.atleast_1d(jnp.asarray(residual(x, data)))
        return f if jnp.iscomplexobj(x) else f.astype(dtype)

    rel_step = None if spec.diff_step is None else jnp.asarray(spec.diff_step, dtype)

    def steps(x: jax.Array, f0: jax.Array) -> Any:
        return difference_steps(x, f0, spec.jac_scheme, rel_step, lb, ub)

    difference = colored_difference_jacobian(raw_fun, coloring, steps, spec.jac_scheme)
    return lambda x: difference(x, fun(x))


def program_function(residual: Residual, jacobian: Residual | None, spec: SolverSpec) -> Callable:
    """One whole fit as a traceable function: solver iterations and, optionally, the
    unscaled covariance. :func:`build_program` jits it; batch fitting vmaps it first.

    Parameters
    ----------
    residual : callable
        ``residual(x, data) -> f`` written with ``jax.numpy``.
    jacobian : callable or None
        ``jacobian(x, data) -> J`` of shape (m, n); ``None`` differentiates
        ``residual`` by autodiff in ``spec.jacobian_mode``.
    spec : SolverSpec
        Static options.

    Returns
    -------
    callable
        ``program(x0, lb, ub, data, ftol, xtol, gtol, max_nfev, x_scale, f_scale,
        n_residuals)`` returning ``(summary, fun, jac, pcov_unscaled or None)`` (see
        :func:`pack_summary`). ``n_residuals`` is ``None``, or the number of real residuals
        when the data were padded to a size bucket. For 'lm' the covariance is
        ``leastsq``'s ``cov_x`` (NaN where ``R`` is singular), paired with MINPACK's
        ``(fjac, ipvt, qtf)`` when ``spec.lm_factors``.
    """
    dtype = np.dtype(spec.dtype)
    loss = resolve_loss(spec.loss)
    if callable(spec.loss):
        loss = checked_loss(loss)

    def program(x0, lb, ub, data, ftol, xtol, gtol, max_nfev, x_scale, f_scale, n_residuals):
        solver_options = {}
        if spec.callback:
            data, token = data
            solver_options["callback"] = host_callback_hook(dispatch_callback, token)
        if spec.jac_nfev:
            solver_options["jac_nfev"] = spec.jac_nfev
        if spec.small_linalg:
            solver_options["small_linalg"] = True
        if spec.tr_solver == "lsmr":
            solver_options.update(
                tr_solver="lsmr", lsmr_options=spec.lsmr_options, regularize=spec.regularize
            )
        if spec.sparsity is not None:
            data, (rows, cols, groups) = data

        def model_residual(x: jax.Array) -> jax.Array:
            return as_residual_vector(residual(x, data), dtype)

        m = jax.eval_shape(model_residual, x0).shape[0]
        n = x0.shape[0]
        # Padded data (size buckets): rows past n_residuals are zeroed, so they add
        # nothing to the cost, the gradient or J^T J.
        keep = None if n_residuals is None else jnp.arange(m) < n_residuals

        def fun(x: jax.Array) -> jax.Array:
            f = model_residual(x)
            return f if keep is None else jnp.where(keep, f, 0.0)

        if spec.sparsity is not None:
            if spec.sparsity[:2] != (m, n):
                raise TraceTimeInputError("`jac_sparsity` has wrong shape.")
            coloring = Coloring(rows, cols, groups, spec.sparsity[2], m)
            user_values = jacobian if spec.jacobian_values else None
            jac = _sparse_jacobian(residual, user_values, data, fun, coloring, lb, ub, spec)
        elif spec.jac_scheme is not None:
            jac = _finite_difference(residual, data, fun, keep, lb, ub, spec)
        elif jacobian is None:
            jac = autodiff_jacobian(fun, x0, m, spec.jacobian_mode)
        else:

            def jac(x: jax.Array) -> jax.Array:
                # scipy reads a callable jac's value as np.atleast_2d(jac(x)).
                J = jacobian(x, data)
                if isinstance(J, HostOperator):
                    # A host LinearOperator: products only (tr_solver='lsmr').
                    return J if keep is None else J * keep[:, None].astype(dtype)
                J = jnp.atleast_2d(jnp.asarray(J)).astype(dtype)
                if J.shape != (m, n):
                    raise TraceTimeInputError(
                        "The return value of `jac` has wrong shape: expected "
                        f"{(m, n)}, actual {J.shape}."
                    )
                return J if keep is None else jnp.where(keep[:, None], J, 0.0)

        raw = solver_for(spec.method)(
            fun,
            jac,
            x0,
            lb,
            ub,
            ftol,
            xtol,
            gtol,
            max_nfev,
            x_scale,
            f_scale,
            bounded=spec.bounded,
            loss=loss,
            jac_scale=spec.jac_scale,
            verbose=spec.verbose,
            residual_mask=keep,
            **solver_options,
        )
        pcov = None
        if spec.with_covariance and spec.method == "lm":
            # leastsq's cov_x, from the factorisation of the last Jacobian evaluated.
            pcov = leastsq_covariance(raw.fjac, raw.ipvt)
            if spec.lm_factors:
                pcov = (pcov, raw.fjac, raw.ipvt, raw.qtf)
        elif spec.with_covariance and isinstance(raw.jac, SparseJacobian):
            # pinv(J^T J) from the n x n Gram matrix: J itself stays sparse.
            pcov = covariance_from_gram(gram_matrix(raw.jac), m)
        elif spec.with_covariance:
            pcov = unscaled_covariance(
                raw.jac, m if n_residuals is None else n_residuals, spec.small_linalg
            )
        return pack_summary(raw), raw.fun, raw.jac, pcov

    return program


def build_program(residual: Residual, jacobian: Residual | None, spec: SolverSpec) -> Callable:
    """The jitted single-fit :func:`program_function`, its small inputs and outputs packed.

    The program takes ``(controls, data, padded)``: ``controls`` from
    :func:`nlsq.program.spec.pack_controls`, ``padded`` (static) whether the last
    control is a real residual count. It returns ``(summary_and_pcov, fun, jac,
    factors)``: the summary vector followed by the flattened covariance, so that one
    fetch brings both, and ``leastsq``'s ``(fjac, ipvt, qtf)`` or None.
    """
    fit = program_function(residual, jacobian, spec)
    dtype = np.dtype(spec.dtype)

    def program(controls: jax.Array, data: Any, padded: bool) -> tuple:
        x0, lb, ub, ftol, xtol, gtol, max_nfev, x_scale, f_scale, n_residuals = unpack_controls(
            controls, dtype, padded
        )
        summary, fun, jac, pcov = fit(
            x0, lb, ub, data, ftol, xtol, gtol, max_nfev, x_scale, f_scale, n_residuals
        )
        factors = None
        if isinstance(pcov, tuple):
            pcov, *factors = pcov
            factors = tuple(factors)
        if pcov is not None:
            summary = jnp.concatenate([summary, pcov.ravel()])
        return summary, fun, jac, factors

    return jax.jit(program, static_argnames="padded")


def batch_program(
    f: Callable, jac: Any, col_deriv: bool, kind: str, spec: SolverSpec, layout: BatchLayout
) -> Callable:
    """The jitted, vmapped fit program, from the program cache."""
    jac_at = traced_jacobian(jac, col_deriv) if callable(jac) else None

    def build() -> Callable:
        residual = model_residual(traced_model(f), kind)
        jacobian = None if jac_at is None else model_jacobian(jac_at, kind)
        fit = program_function(residual, jacobian, spec)
        return jit_program(jax.vmap(fit, in_axes=layout.in_axes()))

    f_key = model_key(f)
    jac_key = model_key(jac) if callable(jac) else jac
    identified = f_key is not None and (not callable(jac) or jac_key is not None)
    key = (f_key, jac_key, col_deriv, kind, layout) if identified else None
    return cached_program("curve_fit_batch", key, spec, build)


def chunked_program(f: Callable, spec: LargeSpec) -> Callable:
    """The jitted chunked (Gram-form) fit program of ``f``, from the program cache."""
    return cached_program("large", model_key(f), spec, lambda: _build_chunked(f, spec))


def _build_chunked(f: Callable, spec: LargeSpec) -> Callable:
    loss = resolve_loss(spec.loss)
    residual = chunk_residual(f, spec.has_sigma)
    layout = spec.layout

    def program(x0, lb, ub, blocks, counts, token, ftol, xtol, gtol, max_nfev, x_scale, f_scale):
        if spec.streamed:
            source = ChunkSource(
                None, counts, chunk_loader(token, spec), layout.n_chunks, layout.chunk_size
            )
        else:
            blocks = tuple(b for b in blocks if b is not None)
            source = ChunkSource(blocks, counts, None, layout.n_chunks, layout.chunk_size)
        hook = host_callback_hook(report_progress, token)
        raw = trf_chunked(
            residual,
            source,
            x0,
            lb,
            ub,
            ftol,
            xtol,
            gtol,
            max_nfev,
            x_scale,
            f_scale,
            bounded=spec.bounded,
            loss=loss,
            jac_scale=spec.jac_scale,
            callback=hook,
        )
        JTJ = raw.jac.matrix
        return {
            "x": raw.x,
            "cost": raw.cost,
            "grad": raw.grad,
            "optimality": raw.optimality,
            "active_mask": raw.active_mask,
            "nfev": raw.nfev,
            "njev": raw.njev,
            "status": raw.status,
            "initial_cost": raw.initial_cost,
            "JTJ": JTJ,
            "pcov": covariance_from_gram(JTJ, jnp.sum(counts)),
        }

    return jit_program(program)
