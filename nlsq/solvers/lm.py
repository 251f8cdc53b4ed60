"""Levenberg-Marquardt (MINPACK's ``lmder``) as one compiled program.

This is a port of ``lmder``, following the C translation that scipy calls from
``least_squares(method='lm')``; its helpers ``qrfac``, ``lmpar`` and ``qrsolv`` live in
:mod:`nlsq.solvers.minpack`. The control flow, the order of the tests and their
comparisons are MINPACK's, so iterates, ``nfev``, ``njev`` and the status match scipy up
to rounding; NaN and inf behave as in the C code (a comparison with NaN is false,
``fmax``/``fmin`` skip NaN).

Both MINPACK loops are ``lax.while_loop``s (the outer one evaluates the Jacobian, the
inner one tries steps until one is accepted), so a fit is a single call into compiled
code, and the solver can be ``vmap``-ed over starting points or data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array, lax

from nlsq.solvers.minpack import (
    QRFactors,
    divided,
    enorm,
    lmpar,
    qrfac,
    rounded,
    triu_matvec,
    triu_rmatvec,
)
from nlsq.solvers.termination import INITIAL_NOT_FINITE, RUNNING

ResidualFunction = Callable[[Array], Array]

#: MINPACK's ``factor``: the initial step bound is ``FACTOR * ||diag * x0||``.
FACTOR = 100.0

#: MINPACK's "improper input parameters" (info 0), scipy's status -1.
IMPROPER_INPUT = -1
#: MINPACK info 6: ``ftol`` is too small, no further reduction of the cost is possible.
FTOL_TOO_SMALL = 6
#: MINPACK info 7: ``xtol`` is too small, no further improvement of x is possible.
XTOL_TOO_SMALL = 7
#: MINPACK info 8: ``gtol`` is too small, ``fun`` is orthogonal to the Jacobian columns.
GTOL_TOO_SMALL = 8


# --------------------------------------------------------------------------------------
# lmder
# --------------------------------------------------------------------------------------


class _LMState(NamedTuple):
    x: Array
    f: Array
    fnorm: Array
    J: Array  # last Jacobian evaluated
    jac_current: Array  # J was evaluated at x
    diag: Array
    xnorm: Array
    delta: Array
    par: Array
    iteration: Array  # MINPACK's iter: 1 + number of accepted steps
    nfev: Array
    njev: Array
    status: Array
    qr: QRFactors  # of the last Jacobian evaluated, with the residuals at its point
    #: Strict lower triangle of ``fjac[:n, :n]`` as MINPACK leaves it: the Householder
    #: vectors, until ``lmpar``'s ``qrsolv`` stores ``S^T`` there.
    fjac_lower: Array


class LMResult(NamedTuple):
    """:class:`~nlsq.solvers.trf.TRFResult`'s fields, then MINPACK's factorisation.

    ``fjac``, ``ipvt`` and ``qtf`` are those ``lmder`` returns: the pivoted QR of the
    last Jacobian it evaluated (which precedes the last accepted step when the fit
    stops right after it), from which ``leastsq`` computes ``cov_x``. As in MINPACK,
    the strict lower triangle of ``fjac[:n, :n]`` holds ``S^T`` from the last
    ``qrsolv`` after that factorisation, if there was one (else the Householder
    vectors, which fill the rest of the part below the diagonal).
    """

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
    fjac: Array  # (m, n), MINPACK's layout (scipy's infodict holds its transpose)
    ipvt: Array  # (n,), 0-based
    qtf: Array  # (n,)


def scaled_gradient_norm(qr: QRFactors, fnorm: Array) -> Array:
    """MINPACK's gradient test quantity: the largest ``|cos|`` between f and J's columns.

    Columns of zero norm are skipped, and so is a NaN cosine (``fmax`` semantics).
    """
    cosines = jnp.abs(triu_rmatvec(qr.R, divided(qr.qtf, fnorm)) / qr.acnorm[qr.ipvt])
    valid = (qr.acnorm[qr.ipvt] != 0) & ~jnp.isnan(cosines)
    return jnp.where(fnorm != 0, jnp.max(jnp.where(valid, cosines, 0.0)), 0.0)


def _updated_step_bound(
    delta: Array,
    par: Array,
    ratio: Array,
    actred: Array,
    dirder: Array,
    pnorm: Array,
    fnorm: Array,
    fnorm1: Array,
) -> tuple[Array, Array]:
    """MINPACK's update of the step bound and of the parameter after a trial step."""
    temp = jnp.where(actred < 0, (0.5 * dirder) / (dirder + 0.5 * actred), 0.5)
    temp = jnp.where((0.1 * fnorm1 >= fnorm) | (temp < 0.1), 0.1, temp)
    shrink = ratio <= 0.25
    # A NaN ratio is neither <= 0.25 nor >= 0.75: MINPACK grows only if par == 0.
    grow = ~shrink & ((par == 0) | (ratio >= 0.75))
    new_delta = jnp.where(
        shrink, temp * jnp.fmin(delta, divided(pnorm, 0.1)), jnp.where(grow, pnorm / 0.5, delta)
    )
    new_par = jnp.where(shrink, par / temp, jnp.where(grow, par * 0.5, par))
    return new_delta, new_par


def _trial_status(
    actred: Array,
    prered: Array,
    ratio: Array,
    delta: Array,
    xnorm: Array,
    gnorm: Array,
    nfev: Array,
    ftol: Array,
    xtol: Array,
    max_nfev: Array,
    eps: float,
) -> Array:
    """MINPACK's tests after a trial step, as scipy statuses (``RUNNING`` if none).

    The convergence tests (info 1-3) win over the others; among those (info 5-8) the
    last one that holds wins, as in MINPACK.
    """
    small_reduction = (0.5 * ratio <= 1.0) & (jnp.abs(actred) <= ftol) & (prered <= ftol)
    small_step = delta <= xtol * xnorm
    converged = jnp.where(
        small_reduction & small_step,
        4,
        jnp.where(small_step, 3, jnp.where(small_reduction, 2, RUNNING)),
    )
    stuck = jnp.where(
        gnorm <= eps,
        GTOL_TOO_SMALL,
        jnp.where(
            delta <= eps * xnorm,
            XTOL_TOO_SMALL,
            jnp.where(
                (jnp.abs(actred) <= eps) & (prered <= eps) & (0.5 * ratio <= 1.0),
                FTOL_TOO_SMALL,
                jnp.where(nfev >= max_nfev, 0, RUNNING),
            ),
        ),
    )
    return jnp.where(converged != RUNNING, converged, stuck)


def lm(
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
    loss: Callable | None,
    jac_scale: bool,
    verbose: int = 0,
    residual_mask: Array | None = None,
    jac_nfev: int = 0,
) -> LMResult:
    """Minimise ``0.5 * ||fun(x)||**2`` by MINPACK's Levenberg-Marquardt (``lmder``).

    Meant to be called inside ``jax.jit`` (and ``jax.vmap``); all array arguments may
    be traced. The result is scipy's ``least_squares(method='lm')``: MINPACK's final x
    and residuals, the Jacobian at x (evaluated once more when the last one is stale,
    not counted in ``njev``), MINPACK's ``nfev`` and ``njev``, and its ``info`` as a
    scipy status (info 6, 7, 8, which tolerances of at least machine epsilon rule out,
    are returned as 6, 7, 8).

    Parameters
    ----------
    fun : callable
        ``fun(x) -> f``, residuals of shape (m,), ``m >= n``.
    jac : callable
        ``jac(x) -> J``, Jacobian of shape (m, n).
    x0 : Array, shape (n,)
        Initial guess.
    lb, ub : Array, shape (n,)
        Ignored (the method does not support bounds).
    ftol, xtol, gtol : Array
        MINPACK's tolerances.
    max_nfev : Array
        MINPACK's ``maxfev``: budget of function evaluations, the initial one included.
    x_scale : Array, shape (n,)
        Characteristic scale of each variable; MINPACK's ``diag`` is ``1 / x_scale``
        (mode 2). Ignored when ``jac_scale``.
    f_scale : Array
        Ignored (linear loss only).
    bounded : bool
        Must be False.
    loss : callable or None
        Must be None.
    jac_scale : bool
        MINPACK's mode 1: scale variables by the Jacobian's column norms, updated to
        their running maximum (``x_scale='jac'``, static).
    verbose : int
        Ignored (scipy's 'lm' prints no iteration table).
    residual_mask : Array of bool, optional
        Ignored: padded residuals and Jacobian rows are zero, which changes nothing.
    jac_nfev : int
        Function evaluations one Jacobian costs, added to ``nfev`` per Jacobian
        (``n`` reproduces ``lmdif``'s count for a forward-difference Jacobian; static).

    Returns
    -------
    LMResult
        scipy's results, with ``lmder``'s ``fjac``, ``ipvt`` and ``qtf``.
    """
    del lb, ub, f_scale, verbose, residual_mask
    if bounded or loss is not None:
        raise ValueError("Method 'lm' supports neither bounds nor robust losses.")
    dtype = x0.dtype
    eps = float(jnp.finfo(dtype).eps)
    dwarf = float(jnp.finfo(dtype).tiny)
    n = x0.shape[0]

    f0 = fun(x0)
    m = f0.shape[0]
    if m < n:
        raise ValueError(
            "Method 'lm' doesn't work when the number of residuals is less than the "
            "number of variables."
        )
    diag0 = jnp.ones(n, dtype) if jac_scale else 1 / x_scale
    improper = (max_nfev <= 0) | (ftol < 0) | (xtol < 0) | (gtol < 0)
    if not jac_scale:
        improper |= jnp.any(diag0 <= 0)
    initial_finite = jnp.all(jnp.isfinite(f0))
    zero = jnp.zeros((), dtype)
    state = _LMState(
        x=x0,
        f=f0,
        fnorm=enorm(f0),
        J=jnp.zeros((m, n), dtype),
        jac_current=jnp.asarray(False),
        diag=diag0,
        xnorm=zero,
        delta=zero,
        par=zero,
        iteration=jnp.asarray(1),
        # MINPACK rejects improper input before its first evaluation.
        nfev=jnp.where(initial_finite & improper, 0, 1),
        njev=jnp.asarray(0),
        status=jnp.where(
            initial_finite, jnp.where(improper, IMPROPER_INPUT, RUNNING), INITIAL_NOT_FINITE
        ),
        qr=QRFactors(
            R=jnp.zeros((n, n), dtype),
            ipvt=jnp.arange(n),
            acnorm=jnp.zeros(n, dtype),
            qtf=jnp.zeros(n, dtype),
            fjac=jnp.zeros((m, n), dtype),
        ),
        fjac_lower=jnp.zeros((n, n), dtype),
    )

    def outer_cond(s: _LMState) -> Array:
        return s.status == RUNNING

    def outer_body(s: _LMState) -> _LMState:
        J = jac(s.x)
        qr = qrfac(J, s.f, eps)
        first = s.iteration == 1
        diag = s.diag
        if jac_scale:
            diag = jnp.where(first, jnp.where(qr.acnorm == 0, 1.0, qr.acnorm), diag)
        xnorm = jnp.where(first, enorm(diag * s.x), s.xnorm)
        delta = jnp.where(first, jnp.where(FACTOR * xnorm == 0, FACTOR, FACTOR * xnorm), s.delta)
        gnorm = scaled_gradient_norm(qr, s.fnorm)
        if jac_scale:
            diag = jnp.fmax(diag, qr.acnorm)
        s = s._replace(
            J=J,
            jac_current=jnp.asarray(True),
            diag=diag,
            xnorm=xnorm,
            delta=delta,
            nfev=s.nfev + jac_nfev,
            njev=s.njev + 1,
            status=jnp.where(gnorm <= gtol, 1, RUNNING),
            qr=qr,
            fjac_lower=jnp.tril(qr.fjac[:n, :n], -1),
        )

        def inner_cond(carry: tuple[_LMState, Array]) -> Array:
            s, ratio = carry
            return (s.status == RUNNING) & (ratio < 1e-4)

        def inner_body(carry: tuple[_LMState, Array]) -> tuple[_LMState, Array]:
            s, _ = carry
            lmpar_out = lmpar(qr.R, qr.ipvt, s.diag, qr.qtf, s.delta, s.par, dwarf)
            par = lmpar_out.par
            p = -lmpar_out.x
            x_new = s.x + p
            pnorm = enorm(s.diag * p)
            delta = jnp.where(s.iteration == 1, jnp.fmin(s.delta, pnorm), s.delta)
            f_new = fun(x_new)
            nfev = s.nfev + 1
            fnorm1 = enorm(f_new)

            # Scaled actual and predicted reductions, and the directional derivative.
            actred = jnp.where(0.1 * fnorm1 < s.fnorm, 1.0 - rounded((fnorm1 / s.fnorm) ** 2), -1.0)
            temp1 = enorm(triu_matvec(qr.R, p[qr.ipvt])) / s.fnorm
            temp2 = (jnp.sqrt(par) * pnorm) / s.fnorm
            prered = rounded(temp1 * temp1) + rounded(temp2 * temp2) / 0.5
            dirder = -(rounded(temp1 * temp1) + rounded(temp2 * temp2))
            ratio = jnp.where(prered != 0, actred / prered, 0.0)

            delta, par = _updated_step_bound(
                delta, par, ratio, actred, dirder, pnorm, s.fnorm, fnorm1
            )
            accept = ratio >= 1e-4
            x = jnp.where(accept, x_new, s.x)
            xnorm = jnp.where(accept, enorm(s.diag * x_new), s.xnorm)
            status = _trial_status(
                actred, prered, ratio, delta, xnorm, gnorm, nfev, ftol, xtol, max_nfev, eps
            )
            s = s._replace(
                x=x,
                f=jnp.where(accept, f_new, s.f),
                fnorm=jnp.where(accept, fnorm1, s.fnorm),
                jac_current=s.jac_current & ~accept,
                xnorm=xnorm,
                delta=delta,
                par=par,
                iteration=s.iteration + accept,
                nfev=nfev,
                status=status,
                fjac_lower=jnp.where(lmpar_out.solved, jnp.tril(lmpar_out.S.T, -1), s.fjac_lower),
            )
            return s, ratio

        s, _ = lax.while_loop(inner_cond, inner_body, (s, zero))
        return s

    state = lax.while_loop(outer_cond, outer_body, state)

    J = lax.cond(state.jac_current, lambda: state.J, lambda: jac(state.x))
    f = state.f
    grad = J.T @ f
    return LMResult(
        x=state.x,
        cost=0.5 * jnp.dot(f, f),
        fun=f,
        jac=J,
        grad=grad,
        optimality=jnp.linalg.norm(grad, ord=jnp.inf),
        active_mask=jnp.zeros(n, jnp.int32),
        nfev=state.nfev,
        njev=state.njev,
        status=state.status,
        initial_cost=0.5 * jnp.dot(f0, f0),
        fjac=state.qr.fjac.at[:n, :n].set(jnp.triu(state.qr.fjac[:n, :n]) + state.fjac_lower),
        ipvt=state.qr.ipvt,
        qtf=state.qr.qtf,
    )
