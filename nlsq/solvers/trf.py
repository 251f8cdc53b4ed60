"""Trust Region Reflective (TRF) algorithm as one compiled program.

The algorithm is scipy's ``_lsq/trf.py`` (Branch, Coleman and Li, 1999): each outer
iteration computes the Coleman-Li scaling and one SVD of the scaled Jacobian; an inner
loop then tries trust-region steps, one function evaluation each, until the cost
decreases, a termination test passes or the evaluation budget runs out. Unbounded
problems are the special case ``lb = -inf, ub = inf`` where the scaling is the
identity and the box never cuts a step; the static ``bounded`` flag skips that work.

Both loops are ``lax.while_loop``s and the termination status lives in the carry, so
a whole fit is a single call into compiled code with no host round-trip per iteration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array, lax

from nlsq.bounds import cl_scaling_vector, find_active_constraints, make_strictly_feasible
from nlsq.loss import LossFunction, evaluate_loss, loss_cost, scale_for_robust_loss
from nlsq.small_linalg import householder_r, jacobi_svd
from nlsq.solvers.lsmr import LsmrOptions
from nlsq.solvers.progress import TracedCallback, callback_halts, report_iteration
from nlsq.solvers.scaling import compute_jac_scale
from nlsq.solvers.step import select_step
from nlsq.solvers.subspace import lsmr_subspace, solve_trust_region_2d
from nlsq.solvers.termination import (
    CALLBACK_STOP,
    INITIAL_NOT_FINITE,
    RUNNING,
    check_termination,
)
from nlsq.solvers.trust_region import (
    Gram,
    evaluate_quadratic,
    scale_columns,
    solve_lsq_trust_region,
    update_tr_radius,
)

ResidualFunction = Callable[[Array], Array]


class Linearization(NamedTuple):
    """The problem at an accepted point: what one outer TRF iteration needs.

    A dense linearization holds the residuals and the Jacobian; a chunked one
    (:mod:`nlsq.solvers.gram`) holds ``J^T J`` as a :class:`Gram` and empty
    residual arrays, since the iteration only uses ``J`` through quadratic forms and
    ``J^T f``.
    """

    f_true: Array  # residuals (shape (0,) for a Gram linearization)
    cost: Array
    J: Array | Gram  # loss-scaled Jacobian, or its Gram matrix
    f: Array  # loss-scaled residuals (shape (0,) for a Gram linearization)
    g: Array  # gradient J^T f
    finite: Array  # all residuals finite


class Trial(NamedTuple):
    """The residuals at a trial point, reduced to what the inner loop tests."""

    f_true: Array  # residuals (shape (0,) when they are not kept)
    cost: Array
    finite: Array


#: ``linearize(x, f_true or None) -> Linearization``; ``f_true`` saves re-evaluating
#: residuals that a trial already computed (ignored when the representation cannot).
Linearize = Callable[[Array, Array | None], Linearization]
#: ``evaluate(x) -> Trial``.
Evaluate = Callable[[Array], Trial]


class TRFResult(NamedTuple):
    """Raw solver output (arrays); the API turns it into an ``OptimizeResult``."""

    x: Array
    cost: Array
    fun: Array
    jac: Array
    grad: Array
    optimality: Array
    active_mask: Array
    nfev: Array
    njev: Array
    status: Array
    initial_cost: Array


class _OuterState(NamedTuple):
    x: Array
    f: Array  # loss-scaled residuals
    f_true: Array
    J: Array  # loss-scaled Jacobian
    cost: Array
    g: Array
    scale: Array
    scale_inv: Array
    Delta: Array
    alpha: Array
    g_norm: Array
    nfev: Array
    njev: Array
    iteration: Array
    status: Array
    actual_reduction: Array
    step_norm: Array


class _InnerState(NamedTuple):
    Delta: Array
    alpha: Array
    actual_reduction: Array
    status: Array
    nfev: Array
    x_new: Array
    f_new: Array
    cost_new: Array
    step_norm: Array


def svd_of_scaled_jacobian(
    J_h: Array, f: Array, diag_h: Array | None, small_linalg: bool = False
) -> tuple[Array, Array, Array]:
    """SVD quantities ``(s, V, U^T f_aug)`` of ``[J_h; diag(sqrt(diag_h))]``.

    When the matrix has at least as many rows as columns, it is first reduced by a
    QR factorisation of ``[A | f_aug]`` (only ``R`` is formed: its last column holds
    ``Q^T f_aug``), and the small ``n x n`` factor is decomposed. This gives the same
    singular values and step as a direct SVD at a fraction of the cost for ``m >> n``.
    ``small_linalg`` takes both factorisations from :mod:`nlsq.small_linalg`, which
    vectorise across a ``vmap``-ed batch instead of calling LAPACK once per member.
    """
    n = J_h.shape[1]
    if diag_h is not None:
        A = jnp.concatenate([J_h, jnp.diag(jnp.sqrt(diag_h))])
        b = jnp.concatenate([f, jnp.zeros(n, f.dtype)])
    else:
        A, b = J_h, f
    if A.shape[0] > n and small_linalg:
        R_aug = householder_r(jnp.concatenate([A, b[:, None]], axis=1))
        U, s, V = jacobi_svd(R_aug[:n, :n])
        return s, V, U.T @ R_aug[:n, n]
    if A.shape[0] > n:
        R_aug = jnp.linalg.qr(jnp.concatenate([A, b[:, None]], axis=1), mode="r")
        R, qtb = R_aug[:n, :n], R_aug[:n, n]
        U, s, Vt = jnp.linalg.svd(R, full_matrices=False)
        return s, Vt.T, U.T @ qtb
    U, s, Vt = jnp.linalg.svd(A, full_matrices=False)
    return s, Vt.T, U.T @ b


def svd_from_gram(
    G_h: Array, g_h: Array, diag_h: Array | None, eps: float
) -> tuple[Array, Array, Array]:
    """SVD quantities ``(s, V, U^T b)`` of ``A = [J_h; diag(sqrt(diag_h))]`` from
    ``G_h = J_h^T J_h`` and ``g_h = J_h^T f`` alone.

    ``A^T A = V diag(s**2) V^T`` (an eigendecomposition) and ``U^T b = V^T A^T b / s``
    with ``A^T b = g_h`` (the rows of ``diag_h`` have zero right-hand side). An
    eigenvalue of ``A^T A`` is only known to about ``n * eps`` times the largest, so
    smaller ones are set to zero: those directions then count as rank deficient
    (Levenberg-Marquardt steps) instead of giving a spurious Gauss-Newton step.
    """
    n = G_h.shape[0]
    AtA = G_h if diag_h is None else G_h + jnp.diag(diag_h)
    w, V = jnp.linalg.eigh(AtA)
    w, V = w[::-1], V[:, ::-1]
    kept = w > 10 * n * eps * w[0]
    s = jnp.where(kept, jnp.sqrt(jnp.where(kept, w, 1.0)), 0.0)
    uf = jnp.where(kept, (V.T @ g_h) / jnp.where(kept, s, 1.0), 0.0)
    return s, V, uf


def _trust_region_svd(
    J_h: Array | Gram,
    f: Array,
    g_h: Array,
    diag_h: Array | None,
    eps: float,
    small_linalg: bool = False,
) -> tuple[Array, Array, Array, Array | Gram, Array | None]:
    """SVD quantities ``(s, V, U^T f_aug)`` and the quadratic model's matrix and diagonal.

    For a dense ``J_h`` the model ``0.5 ||A p||**2 + g_h.p`` of the augmented matrix
    ``A = [J_h; diag(sqrt(diag_h))]`` is evaluated through ``S V^T`` (``n x n``, same
    ``A^T A``) instead of the ``m x n`` ``J_h`` and ``diag_h``: the step selection then
    costs ``O(n**2)`` instead of ``O(m n)`` per product. A :class:`Gram` stays as it is
    (its eigendecomposition drops tiny eigenvalues, which the model must keep).
    """
    if isinstance(J_h, Gram):
        s, V, uf = svd_from_gram(J_h.matrix, g_h, diag_h, eps)
        return s, V, uf, J_h, diag_h
    s, V, uf = svd_of_scaled_jacobian(J_h, f, diag_h, small_linalg)
    return s, V, uf, s[:, None] * V.T, None


def trf(
    fun: ResidualFunction,
    jac: ResidualFunction,
    x0: Array,
    lb: Array,
    ub: Array,
    ftol: Array,
    xtol: Array,
    gtol: Array,
    max_nfev: Array,
    x_scale: Array,
    f_scale: Array,
    *,
    bounded: bool,
    loss: LossFunction | None,
    jac_scale: bool,
    verbose: int = 0,
    residual_mask: Array | None = None,
    callback: TracedCallback | None = None,
    small_linalg: bool = False,
    tr_solver: str = "exact",
    lsmr_options: LsmrOptions | None = None,
    regularize: bool = True,
) -> TRFResult:
    """Minimise ``0.5 * sum(rho(fun(x)**2))`` subject to ``lb <= x <= ub``.

    Meant to be called inside ``jax.jit``; all array arguments may be traced.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> f``, residuals of shape (m,).
    jac : callable
        ``jac(x) -> J``, Jacobian of shape (m, n).
    x0 : Array, shape (n,)
        Initial guess, inside the bounds.
    lb, ub : Array, shape (n,)
        Bounds (ignored when ``bounded`` is False).
    ftol, xtol, gtol : Array
        Tolerances (0 disables a test).
    max_nfev : Array
        Budget of function evaluations (the initial one included).
    x_scale : Array, shape (n,)
        Characteristic scale of each variable (ignored when ``jac_scale``).
    f_scale : Array
        Soft margin between inlier and outlier residuals (robust losses only).
    bounded : bool
        Whether any bound is finite (static).
    loss : callable or None
        ``rho(z)`` returning shape (3, m), or None for the linear loss (static).
    jac_scale : bool
        Scale variables by the Jacobian's column norms (``x_scale='jac'``, static).
    verbose : int
        2 prints scipy's per-iteration table from inside the compiled loop (static).
    residual_mask : Array of bool, shape (m,), optional
        Real residuals when the data were padded; ``fun`` and ``jac`` must already
        be zero on the padding. The mask keeps a callable loss with ``rho(0) != 0``
        out of the cost, and sets the ``m`` of the rank test.
    callback : callable, optional
        Hook from :func:`nlsq.solvers.progress.host_callback_hook`, called after
        each iteration; True stops with status -2.
    small_linalg : bool
        Factorise with :mod:`nlsq.small_linalg` instead of LAPACK (static; for
        ``vmap``-ed batches of fits with few parameters).
    tr_solver : {'exact', 'lsmr'}
        Trust-region subproblem solver (static): an SVD of the scaled Jacobian, or
        scipy's LSMR step on a 2-D subspace, which only needs products with ``J``
        and so also takes a :class:`~nlsq.solvers.sparse.SparseJacobian`.
    lsmr_options : LsmrOptions, optional
        LSMR's options for ``tr_solver='lsmr'`` (static).
    regularize : bool
        scipy's ``tr_options['regularize']`` for ``tr_solver='lsmr'`` (static).

    Returns
    -------
    TRFResult
    """
    eps = jnp.finfo(x0.dtype).eps
    n_residuals = None if residual_mask is None else jnp.sum(residual_mask)

    def masked(rho0: Array) -> Array:
        return rho0 if residual_mask is None else jnp.where(residual_mask, rho0, 0.0)

    def linearize(x: Array, f_true: Array | None) -> Linearization:
        """Cost, Jacobian and residuals after scaling for the robust loss."""
        f_true = fun(x) if f_true is None else f_true
        J = jac(x)
        finite = jnp.all(jnp.isfinite(f_true))
        if loss is None:
            return Linearization(
                f_true, 0.5 * jnp.dot(f_true, f_true), J, f_true, J.T @ f_true, finite
            )
        rho = evaluate_loss(loss, f_true, f_scale)
        J_s, f_s = scale_for_robust_loss(J, f_true, rho, eps)
        return Linearization(f_true, 0.5 * jnp.sum(masked(rho[0])), J_s, f_s, J_s.T @ f_s, finite)

    def evaluate(x: Array) -> Trial:
        f = fun(x)
        if loss is None:
            cost = 0.5 * jnp.dot(f, f)
        else:
            cost = loss_cost(loss, f, f_scale, residual_mask)
        return Trial(f, cost, jnp.all(jnp.isfinite(f)))

    return trf_loop(
        linearize,
        evaluate,
        x0,
        n_residuals,
        lb,
        ub,
        ftol,
        xtol,
        gtol,
        max_nfev,
        x_scale,
        bounded=bounded,
        jac_scale=jac_scale,
        verbose=verbose,
        callback=callback,
        small_linalg=small_linalg,
        tr_solver=tr_solver,
        lsmr_options=lsmr_options,
        regularize=regularize,
    )


def trf_loop(
    linearize: Linearize,
    evaluate: Evaluate,
    x0: Array,
    n_residuals: Array | int | None,
    lb: Array,
    ub: Array,
    ftol: Array,
    xtol: Array,
    gtol: Array,
    max_nfev: Array,
    x_scale: Array,
    *,
    bounded: bool,
    jac_scale: bool,
    verbose: int = 0,
    callback: TracedCallback | None = None,
    small_linalg: bool = False,
    tr_solver: str = "exact",
    lsmr_options: LsmrOptions | None = None,
    regularize: bool = True,
) -> TRFResult:
    """The TRF iteration on any Jacobian representation.

    :func:`trf` runs it on a dense Jacobian; :mod:`nlsq.solvers.gram` on ``J^T J``
    accumulated over chunks of data. The representation only enters through
    ``linearize``, ``evaluate`` and the helpers that accept a :class:`Gram`.

    Parameters
    ----------
    linearize : callable
        ``linearize(x, f_true or None) -> Linearization`` (loss-scaled).
    evaluate : callable
        ``evaluate(x) -> Trial``: cost and finiteness at a trial point.
    x0 : Array, shape (n,)
        Initial guess, inside the bounds.
    n_residuals : int, Array or None
        Number of real residuals (the ``m`` of the rank test); None: the length
        of the residuals.
    lb, ub, ftol, xtol, gtol, max_nfev, x_scale, bounded, jac_scale, verbose, callback
    small_linalg
        As for :func:`trf`.
    tr_solver, lsmr_options, regularize
        As for :func:`trf`.

    Returns
    -------
    TRFResult
        ``fun`` and ``jac`` are those of the final :class:`Linearization`.
    """
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    n = x0.shape[0]
    if bounded:
        x0 = make_strictly_feasible(x0, lb, ub, rstep=1e-10)

    def scaling_vector(x: Array, g: Array) -> tuple[Array, Array]:
        if bounded:
            return cl_scaling_vector(x, g, lb, ub)
        return jnp.ones_like(x), jnp.zeros_like(x)

    initial = linearize(x0, None)
    cost, J, f, g = initial.cost, initial.J, initial.f, initial.g
    if n_residuals is None:
        n_residuals = initial.f_true.shape[0]
    if jac_scale:
        scale, scale_inv = compute_jac_scale(J)
    else:
        scale, scale_inv = x_scale, 1 / x_scale

    v, dv = scaling_vector(x0, g)
    v = jnp.where(dv != 0, v * scale_inv, v)
    Delta = jnp.linalg.norm(x0 * scale_inv / jnp.sqrt(v))
    Delta = jnp.where(Delta == 0, 1.0, Delta)

    def with_gradient_test(state: _OuterState) -> _OuterState:
        """The test scipy runs at the top of each iteration (it overrides ftol/xtol)."""
        v, _ = scaling_vector(state.x, state.g)
        g_norm = jnp.linalg.norm(state.g * v, ord=jnp.inf)
        # scipy's gtol test overrides an ftol/xtol stop.
        status = jnp.where(g_norm < gtol, 1, state.status)
        if verbose == 2:
            report_iteration(
                state.iteration,
                state.nfev,
                state.cost,
                state.actual_reduction,
                state.step_norm,
                g_norm,
            )
        return state._replace(g_norm=g_norm, status=status)

    zero = jnp.zeros((), dtype)
    initial_finite = initial.finite
    state = _OuterState(
        x=x0,
        f=f,
        f_true=initial.f_true,
        J=J,
        cost=cost,
        g=g,
        scale=scale,
        scale_inv=scale_inv,
        Delta=Delta,
        alpha=zero,
        g_norm=zero,
        nfev=jnp.asarray(1),
        njev=jnp.asarray(1),
        iteration=jnp.asarray(0),
        status=jnp.where(initial_finite, RUNNING, INITIAL_NOT_FINITE),
        actual_reduction=zero,
        step_norm=zero,
    )
    state = lax.cond(initial_finite, with_gradient_test, lambda s: s, state)

    def outer_cond(state: _OuterState) -> Array:
        return (state.status == RUNNING) & (state.nfev < max_nfev)

    def outer_body(state: _OuterState) -> _OuterState:
        x, g = state.x, state.g
        v, dv = scaling_vector(x, g)
        v = jnp.where(dv != 0, v * state.scale_inv, v)
        d = jnp.sqrt(v) * state.scale
        g_h = d * g
        J_h = scale_columns(state.J, d)
        diag_h = g * dv * state.scale if bounded else None
        if tr_solver == "lsmr":
            subspace = lsmr_subspace(
                J_h, state.f, g_h, diag_h, state.Delta, lsmr_options or LsmrOptions(), regularize
            )
            J_model, diag_model = J_h, diag_h

            def trust_region_step(Delta: Array, alpha: Array) -> tuple[Array, Array]:
                return subspace.basis @ solve_trust_region_2d(subspace.B, subspace.g, Delta), alpha

        else:
            s, V, uf, J_model, diag_model = _trust_region_svd(
                J_h, state.f, g_h, diag_h, eps, small_linalg
            )

            def trust_region_step(Delta: Array, alpha: Array) -> tuple[Array, Array]:
                return solve_lsq_trust_region(n, n_residuals, uf, s, V, Delta, alpha, eps)

        theta = jnp.maximum(0.995, 1 - state.g_norm)
        x_norm = jnp.linalg.norm(x)

        def inner_cond(inner: _InnerState) -> Array:
            return (
                (inner.actual_reduction <= 0) & (inner.nfev < max_nfev) & (inner.status == RUNNING)
            )

        def inner_body(inner: _InnerState) -> _InnerState:
            p_h, alpha = trust_region_step(inner.Delta, inner.alpha)
            if bounded:
                p = d * p_h
                step, step_h, predicted = select_step(
                    x, J_model, diag_model, g_h, p, p_h, d, inner.Delta, lb, ub, theta
                )
                x_new = make_strictly_feasible(x + step, lb, ub, rstep=0)
            else:
                step_h = p_h
                predicted = -evaluate_quadratic(J_model, g_h, step_h, diag=diag_model)
                step = d * step_h
                x_new = x + step
            trial = evaluate(x_new)
            f_new, cost_new, finite = trial
            step_h_norm = jnp.linalg.norm(step_h)
            actual_reduction = state.cost - cost_new
            Delta_new, ratio = update_tr_radius(
                inner.Delta,
                actual_reduction,
                predicted,
                step_h_norm,
                step_h_norm > 0.95 * inner.Delta,
            )
            step_norm = jnp.linalg.norm(step)
            status = check_termination(
                actual_reduction, state.cost, step_norm, x_norm, ratio, ftol, xtol
            )
            stopped = status != RUNNING
            # A non-finite trial only shrinks the region; a stopping trial keeps
            # Delta and alpha as they were (scipy breaks before updating them).
            Delta_next = jnp.where(
                finite, jnp.where(stopped, inner.Delta, Delta_new), 0.25 * step_h_norm
            )
            alpha_next = jnp.where(finite & ~stopped, alpha * inner.Delta / Delta_new, alpha)
            return _InnerState(
                Delta=Delta_next,
                alpha=alpha_next,
                actual_reduction=jnp.where(finite, actual_reduction, inner.actual_reduction),
                status=jnp.where(finite, status, RUNNING),
                nfev=inner.nfev + 1,
                x_new=x_new,
                f_new=f_new,
                cost_new=cost_new,
                step_norm=jnp.where(finite, step_norm, inner.step_norm),
            )

        inner = lax.while_loop(
            inner_cond,
            inner_body,
            _InnerState(
                Delta=state.Delta,
                alpha=state.alpha,
                actual_reduction=-jnp.ones((), dtype),
                status=state.status,
                nfev=state.nfev,
                x_new=x,
                f_new=state.f_true,
                cost_new=state.cost,
                step_norm=state.step_norm,
            ),
        )
        state = state._replace(
            Delta=inner.Delta,
            alpha=inner.alpha,
            nfev=inner.nfev,
            status=inner.status,
            actual_reduction=inner.actual_reduction,
            step_norm=inner.step_norm,
        )

        def accept(state: _OuterState) -> _OuterState:
            _, _, J_s, f_s, g_new, _ = linearize(inner.x_new, inner.f_new)
            if jac_scale:
                scale, scale_inv = compute_jac_scale(J_s, state.scale_inv)
            else:
                scale, scale_inv = state.scale, state.scale_inv
            return state._replace(
                x=inner.x_new,
                f=f_s,
                f_true=inner.f_new,
                J=J_s,
                cost=inner.cost_new,
                g=g_new,
                scale=scale,
                scale_inv=scale_inv,
                njev=state.njev + 1,
            )

        def reject(state: _OuterState) -> _OuterState:
            return state._replace(actual_reduction=zero, step_norm=zero)

        state = lax.cond(inner.actual_reduction > 0, accept, reject, state)
        state = state._replace(iteration=state.iteration + 1)
        if callback is not None:
            halt = callback_halts(
                callback, state.x, state.f_true, state.cost, state.iteration, state.nfev
            )
            state = state._replace(status=jnp.where(halt, CALLBACK_STOP, state.status))
            # scipy leaves the loop right after a callback stop: no gradient test,
            # no progress row.
            return lax.cond(halt, lambda s: s, with_gradient_test, state)
        return with_gradient_test(state)

    state = lax.while_loop(outer_cond, outer_body, state)

    status = jnp.where(state.status == RUNNING, 0, state.status)
    if bounded:
        active_mask = find_active_constraints(state.x, lb, ub, xtol)
    else:
        active_mask = jnp.zeros(n, jnp.int32)
    return TRFResult(
        x=state.x,
        cost=state.cost,
        fun=state.f_true,
        jac=state.J,
        grad=state.g,
        optimality=state.g_norm,
        active_mask=active_mask,
        nfev=state.nfev,
        njev=state.njev,
        status=status,
        initial_cost=cost,
    )
