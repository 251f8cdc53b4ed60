"""Dogleg with rectangular trust regions ('dogbox') as one compiled program.

The algorithm is scipy's ``_lsq/dogbox.py`` (Voglis and Lagaris, 2004): the trust
region is a box of half-widths ``Delta * x_scale`` centred on ``x``, and its
intersection with the bounds is again a box, in which a dogleg path from the Cauchy
point to the Gauss-Newton point is followed until it leaves the box. Variables that
sit on a bound with the anti-gradient pointing out of the box are frozen for an
iteration: they take no step and drop out of the Gauss-Newton system.

scipy selects the free variables with boolean indexing, which changes array shapes
from one iteration to the next. Here every array keeps its full size: the columns of
frozen variables are zeroed in the Jacobian and their gradient components set to
zero, which leaves every quantity of the free subproblem unchanged and gives frozen
variables a zero step. Unbounded problems (the static ``bounded`` is False) are the
special case where nothing is ever frozen and the box is the trust region alone.

Both loops are ``lax.while_loop``s with the termination status in the carry, so a
whole fit is a single call into compiled code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import Array, lax

from nlsq.bounds import in_bounds, step_size_to_bound
from nlsq.loss import LossFunction, evaluate_loss, loss_cost, scale_for_robust_loss
from nlsq.solvers.lsmr import LsmrOptions, lsmr
from nlsq.solvers.progress import TracedCallback, callback_halts, report_iteration
from nlsq.solvers.scaling import compute_jac_scale
from nlsq.solvers.termination import (
    CALLBACK_STOP,
    INITIAL_NOT_FINITE,
    RUNNING,
    check_termination,
)
from nlsq.solvers.trf import ResidualFunction, TRFResult, svd_of_scaled_jacobian
from nlsq.solvers.trust_region import (
    build_quadratic_1d,
    evaluate_quadratic,
    minimize_quadratic_1d,
    update_tr_radius,
)


class _OuterState(NamedTuple):
    x: Array
    f: Array  # loss-scaled residuals
    f_true: Array
    J: Array  # loss-scaled Jacobian
    cost: Array
    g: Array  # gradient; frozen components zeroed once an iteration has begun
    g_full: Array  # gradient as it was when the iteration began (reported as grad)
    frozen: Array  # bool: variables left out of this iteration's step
    g_norm: Array
    on_bound: Array  # -1 on the lower bound, 1 on the upper bound, else 0
    scale: Array
    scale_inv: Array
    Delta: Array
    nfev: Array
    njev: Array
    iteration: Array
    status: Array
    actual_reduction: Array
    step_norm: Array
    cost_new: Array  # cost of the last finite trial point (what scipy's callback sees)


class _InnerState(NamedTuple):
    Delta: Array
    actual_reduction: Array
    status: Array
    nfev: Array
    x_new: Array
    f_new: Array
    cost_new: Array
    step_norm: Array
    bound_hits: Array


def gauss_newton_step(J: Array, f: Array, free: Array | None, eps: float) -> Array:
    """Minimum-norm solution of ``J[:, free] p = -f``, zero outside ``free``.

    This is scipy's ``lstsq(J_free, -f, rcond=-1)`` on fixed-size arrays. LAPACK's
    ``gelsd`` with a negative ``rcond`` treats singular values up to ``eps / 2`` (its
    unit roundoff) times the largest as zero, and so does this function.

    Parameters
    ----------
    J : Array, shape (m, n)
        Jacobian (loss-scaled).
    f : Array, shape (m,)
        Residuals (loss-scaled).
    free : Array of bool, shape (n,), or None
        Variables that take part; None means all of them.
    eps : float
        Machine epsilon of the working precision.

    Returns
    -------
    Array, shape (n,)
    """
    n = J.shape[1]
    if free is not None:
        J = jnp.where(free, J, 0.0)
    # A zero column (frozen, or a variable the model ignores) contributes nothing to
    # the minimum-norm solution, but its computed singular value is rounding noise
    # that can pass the cutoff and wreck the step. Each such variable gets its own
    # row instead, decoupled from the rest, with a zero right-hand side and a
    # singular value no larger than the largest of J (so the cutoff is unchanged).
    norms = jnp.linalg.norm(J, axis=0)
    decoupled = norms == 0
    A = jnp.concatenate([J, jnp.diag(jnp.where(decoupled, jnp.max(norms), 0.0))])
    b = jnp.concatenate([-f, jnp.zeros(n, f.dtype)])
    s, V, uf = svd_of_scaled_jacobian(A, b, None)
    kept = s > 0.5 * eps * s[0]
    p = V @ jnp.where(kept, uf / jnp.where(kept, s, 1.0), 0.0)
    # What rounding leaves on the decoupled variables goes.
    return jnp.where(decoupled, 0.0, p)


def lsmr_newton_step(
    J: Any, f: Array, scale: Array, free: Array | None, options: LsmrOptions | None
) -> Array:
    """Gauss-Newton step by LSMR in the scaled variables ``x / scale``, zero outside
    ``free``.

    Frozen variables are kept out of the products ``J^T u`` (their components of
    every LSMR vector are then zero), which is solving with their columns removed.
    An exact solve would not depend on the scaling; LSMR's approximate one does, and
    scipy scales.

    Parameters
    ----------
    J : Array or SparseJacobian
        Jacobian (loss-scaled); anything with ``J @ v`` and ``J.T @ u``.
    f : Array, shape (m,)
        Residuals (loss-scaled).
    scale : Array, shape (n,)
        Variable scales.
    free : Array of bool or None
        Variables that take part; None means all of them.
    options : LsmrOptions or None
        LSMR's options (static); None for the defaults.
    """
    options = options or LsmrOptions()
    n = scale.shape[0]

    def matvec(v: Array) -> Array:
        return J @ (v * scale)

    def rmatvec(u: Array) -> Array:
        r = scale * (J.T @ u)
        return r if free is None else jnp.where(free, r, 0.0)

    solution = lsmr(matvec, rmatvec, f, n, jnp.asarray(options.damp, f.dtype), options)
    step = -solution * scale
    return step if free is None else jnp.where(free, step, 0.0)


def dogleg_step(
    x: Array,
    newton_step: Array,
    g: Array,
    a: Array,
    b: Array,
    tr_bounds: Array,
    lb: Array | None,
    ub: Array | None,
) -> tuple[Array, Array, Array]:
    """Dogleg step inside the box ``[lb - x, ub - x]`` cut by the trust region.

    Parameters
    ----------
    x : Array
        Current point.
    newton_step : Array
        Gauss-Newton step.
    g : Array
        Gradient (zero for frozen variables).
    a, b : Array
        The model along the anti-gradient is ``a t**2 + b t``.
    tr_bounds : Array
        Half-widths of the trust-region box.
    lb, ub : Array or None
        Bounds; None for an unbounded problem, where the box is the trust region.

    Returns
    -------
    step : Array
        The dogleg step.
    bound_hits : Array of int32
        -1 or 1 for the variables whose step ends on the lower or upper bound.
    tr_hit : Array of bool
        Whether the step ends on the trust-region boundary.
    """
    if lb is None:
        lb_total, ub_total = -tr_bounds, tr_bounds
    else:
        lb_centered, ub_centered = lb - x, ub - x
        lb_total = jnp.maximum(lb_centered, -tr_bounds)
        ub_total = jnp.minimum(ub_centered, tr_bounds)
    newton_fits = in_bounds(newton_step, lb_total, ub_total)

    # scipy does not return the plain Cauchy step when it fits: in a box it is
    # worth following the dogleg from the constrained Cauchy point as well.
    to_bounds, _ = step_size_to_bound(jnp.zeros_like(x), -g, lb_total, ub_total)
    t, _ = minimize_quadratic_1d(a, b, 0.0, to_bounds)
    cauchy_step = -t * g
    step_diff = newton_step - cauchy_step
    step_size, hits = step_size_to_bound(cauchy_step, step_diff, lb_total, ub_total)
    dogleg = cauchy_step + step_size * step_diff

    if lb is None:
        bound_hits = jnp.zeros_like(hits)
        tr_hit = jnp.any(hits != 0)
    else:
        # A limit is "original" or "trust region" by exact equality, as in scipy:
        # both are when they coincide.
        lower = hits < 0
        upper = hits > 0
        bound_hits = jnp.where(lower & (lb_total == lb_centered), -1, 0)
        bound_hits = jnp.where(upper & (ub_total == ub_centered), 1, bound_hits)
        tr_hit = jnp.any(lower & (lb_total == -tr_bounds) | upper & (ub_total == tr_bounds))

    return (
        jnp.where(newton_fits, newton_step, dogleg),
        jnp.where(newton_fits, 0, bound_hits).astype(jnp.int32),
        ~newton_fits & tr_hit,
    )


def dogbox(
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
    tr_solver: str = "exact",
    lsmr_options: LsmrOptions | None = None,
    regularize: bool = True,
) -> TRFResult:
    """Minimise ``0.5 * sum(rho(fun(x)**2))`` subject to ``lb <= x <= ub`` by dogbox.

    Meant to be called inside ``jax.jit``; all array arguments may be traced.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> f``, residuals of shape (m,).
    jac : callable
        ``jac(x) -> J``, Jacobian of shape (m, n).
    x0 : Array, shape (n,)
        Initial guess, inside the bounds (it may lie on one).
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
        out of the cost.
    callback : callable, optional
        Hook from :func:`nlsq.solvers.progress.host_callback_hook`, called after
        each iteration with what scipy's dogbox passes (``x``, the loss-scaled
        residuals, the cost of the last trial point, the iteration count and
        ``nfev``); True stops with status -2.
    tr_solver : {'exact', 'lsmr'}
        How the Gauss-Newton step is found (static): a minimum-norm least-squares
        solution from an SVD, or LSMR in the scaled variables, which only needs
        products with ``J`` (a :class:`~nlsq.solvers.sparse.SparseJacobian` too).
    lsmr_options : LsmrOptions, optional
        LSMR's options for ``tr_solver='lsmr'`` (static).
    regularize : bool
        Not used by dogbox (scipy warns and drops it); accepted for a common
        signature with :func:`nlsq.solvers.trf.trf`.

    Returns
    -------
    TRFResult
        ``grad`` and ``optimality`` are those of the last iteration's start, as in
        scipy (after a callback stop they predate the last step).
    """
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    box = (lb, ub) if bounded else (None, None)

    f0 = fun(x0)
    J0 = jac(x0)
    n = x0.shape[0]

    def loss_scaled(J: Array, f: Array) -> tuple[Array, Array, Array]:
        """Cost, Jacobian and residuals after scaling for the robust loss."""
        if loss is None:
            return 0.5 * jnp.dot(f, f), J, f
        rho = evaluate_loss(loss, f, f_scale)
        rho0 = rho[0] if residual_mask is None else jnp.where(residual_mask, rho[0], 0.0)
        J_s, f_s = scale_for_robust_loss(J, f, rho, eps)
        return 0.5 * jnp.sum(rho0), J_s, f_s

    def trial_cost(f: Array) -> Array:
        if loss is None:
            return 0.5 * jnp.dot(f, f)
        return loss_cost(loss, f, f_scale, residual_mask)

    cost, J, f = loss_scaled(J0, f0)
    g = J.T @ f
    if jac_scale:
        scale, scale_inv = compute_jac_scale(J)
    else:
        scale, scale_inv = x_scale, 1 / x_scale

    Delta = jnp.linalg.norm(x0 * scale_inv, ord=jnp.inf)
    Delta = jnp.where(Delta == 0, 1.0, Delta)

    if bounded:
        on_bound = jnp.where(x0 == lb, -1, jnp.where(x0 == ub, 1, 0)).astype(jnp.int32)
    else:
        on_bound = jnp.zeros(n, jnp.int32)

    def begin_iteration(state: _OuterState) -> _OuterState:
        """The top of scipy's loop: freeze variables, gtol test, progress row."""
        if bounded:
            # On a bound, with the anti-gradient pointing out of the box.
            frozen = state.on_bound * state.g < 0
        else:
            frozen = jnp.zeros(n, bool)
        # scipy zeroes g in place: after a rejected step the next iteration starts
        # from this zeroed gradient (and reports it), which the carry reproduces.
        g = jnp.where(frozen, 0.0, state.g)
        g_norm = jnp.linalg.norm(g, ord=jnp.inf)
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
        return state._replace(g=g, g_full=state.g, frozen=frozen, g_norm=g_norm, status=status)

    zero = jnp.zeros((), dtype)
    initial_finite = jnp.all(jnp.isfinite(f0))
    state = _OuterState(
        x=x0,
        f=f,
        f_true=f0,
        J=J,
        cost=cost,
        g=g,
        g_full=g,
        frozen=jnp.zeros(n, bool),
        g_norm=zero,
        on_bound=on_bound,
        scale=scale,
        scale_inv=scale_inv,
        Delta=Delta,
        nfev=jnp.asarray(1),
        njev=jnp.asarray(1),
        iteration=jnp.asarray(0),
        status=jnp.where(initial_finite, RUNNING, INITIAL_NOT_FINITE),
        actual_reduction=zero,
        step_norm=zero,
        cost_new=cost,
    )
    state = lax.cond(initial_finite, begin_iteration, lambda s: s, state)

    def outer_cond(state: _OuterState) -> Array:
        return (state.status == RUNNING) & (state.nfev < max_nfev)

    def outer_body(state: _OuterState) -> _OuterState:
        x, g = state.x, state.g
        free = ~state.frozen if bounded else None
        if tr_solver == "lsmr":
            newton_step = lsmr_newton_step(state.J, state.f, state.scale, free, lsmr_options)
            # g and every step vanish on frozen variables, so the whole J gives the
            # model of the free ones.
            J_free = state.J
        else:
            newton_step = gauss_newton_step(state.J, state.f, free, eps)
            J_free = state.J if free is None else jnp.where(free, state.J, 0.0)
        # The model along the anti-gradient; frozen components of g are already 0.
        a, b, _ = build_quadratic_1d(J_free, g, -g)
        x_norm = jnp.linalg.norm(x)

        def inner_cond(inner: _InnerState) -> Array:
            return (
                (inner.actual_reduction <= 0) & (inner.nfev < max_nfev) & (inner.status == RUNNING)
            )

        def inner_body(inner: _InnerState) -> _InnerState:
            tr_bounds = inner.Delta * state.scale
            step, bound_hits, tr_hit = dogleg_step(x, newton_step, g, a, b, tr_bounds, *box)
            if bounded:
                step = jnp.where(state.frozen, 0.0, step)
            predicted = -evaluate_quadratic(J_free, g, step)
            # scipy clips so that rounding never leaves the box.
            x_new = jnp.clip(x + step, lb, ub) if bounded else x + step
            f_new = fun(x_new)
            step_h_norm = jnp.linalg.norm(step * state.scale_inv, ord=jnp.inf)
            finite = jnp.all(jnp.isfinite(f_new))

            cost_new = trial_cost(f_new)
            actual_reduction = state.cost - cost_new
            Delta_new, ratio = update_tr_radius(
                inner.Delta, actual_reduction, predicted, step_h_norm, tr_hit
            )
            step_norm = jnp.linalg.norm(step)
            status = check_termination(
                actual_reduction, state.cost, step_norm, x_norm, ratio, ftol, xtol
            )
            # A non-finite trial only shrinks the region; unlike TRF, scipy's dogbox
            # updates Delta before its termination test.
            return _InnerState(
                Delta=jnp.where(finite, Delta_new, 0.25 * step_h_norm),
                actual_reduction=jnp.where(finite, actual_reduction, inner.actual_reduction),
                status=jnp.where(finite, status, RUNNING),
                nfev=inner.nfev + 1,
                x_new=x_new,
                f_new=f_new,
                cost_new=jnp.where(finite, cost_new, inner.cost_new),
                step_norm=jnp.where(finite, step_norm, inner.step_norm),
                bound_hits=bound_hits,
            )

        inner = lax.while_loop(
            inner_cond,
            inner_body,
            _InnerState(
                Delta=state.Delta,
                actual_reduction=-jnp.ones((), dtype),
                status=state.status,
                nfev=state.nfev,
                x_new=x,
                f_new=state.f_true,
                cost_new=state.cost_new,
                step_norm=state.step_norm,
                bound_hits=state.on_bound,
            ),
        )
        state = state._replace(
            Delta=inner.Delta,
            nfev=inner.nfev,
            status=inner.status,
            actual_reduction=inner.actual_reduction,
            step_norm=inner.step_norm,
            cost_new=inner.cost_new,
        )

        def accept(state: _OuterState) -> _OuterState:
            x_new = inner.x_new
            on_bound = state.on_bound
            if bounded:
                on_bound = jnp.where(state.frozen, on_bound, inner.bound_hits)
                # Variables that reached a bound sit exactly on it; fun was evaluated
                # before this snap, jac after it (as in scipy).
                x_new = jnp.where(on_bound == -1, lb, jnp.where(on_bound == 1, ub, x_new))
            J_new = jac(x_new)
            _, J_s, f_s = loss_scaled(J_new, inner.f_new)
            if jac_scale:
                scale, scale_inv = compute_jac_scale(J_s, state.scale_inv)
            else:
                scale, scale_inv = state.scale, state.scale_inv
            return state._replace(
                x=x_new,
                f=f_s,
                f_true=inner.f_new,
                J=J_s,
                cost=inner.cost_new,
                g=J_s.T @ f_s,
                on_bound=on_bound,
                scale=scale,
                scale_inv=scale_inv,
                njev=state.njev + 1,
            )

        def reject(state: _OuterState) -> _OuterState:
            return state._replace(actual_reduction=zero, step_norm=zero)

        state = lax.cond(inner.actual_reduction > 0, accept, reject, state)
        state = state._replace(iteration=state.iteration + 1)
        if callback is None:
            return begin_iteration(state)
        halt = callback_halts(
            callback, state.x, state.f, state.cost_new, state.iteration, state.nfev
        )
        state = state._replace(status=jnp.where(halt, CALLBACK_STOP, state.status))
        # scipy breaks right after the callback: no new iteration begins.
        return lax.cond(halt, lambda s: s, begin_iteration, state)

    state = lax.while_loop(outer_cond, outer_body, state)

    return TRFResult(
        x=state.x,
        cost=state.cost,
        fun=state.f_true,
        jac=state.J,
        grad=state.g_full,
        optimality=state.g_norm,
        active_mask=state.on_bound,
        nfev=state.nfev,
        njev=state.njev,
        status=jnp.where(state.status == RUNNING, 0, state.status),
        initial_cost=cost,
    )
