"""LSMR (Fong and Saunders, 2011) as a traceable, matrix-free iteration.

Solves ``min ||A x - b||**2 + damp**2 ||x||**2`` with ``A`` known only through
``matvec(v) = A v`` and ``rmatvec(u) = A^T u``, so the same code serves a dense
Jacobian, a sparse one or an operator. The recurrences, the stopping tests and their
order are those of the published algorithm (and of scipy's ``lsmr``, whose defaults
the options keep), so that a trust-region step computed from it matches scipy's to
rounding. The loop is a ``lax.while_loop``: the number of iterations is data
dependent and the whole solve stays inside the compiled program.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jax import Array, lax

MatVec = Callable[[Array], Array]


class LsmrOptions(NamedTuple):
    """scipy's ``lsmr`` options (``maxiter`` None: ``min(m, n)``); static.

    ``damp`` is the user's damping (``tr_options``); :func:`lsmr` takes the damping it
    applies as an argument, since TRF adds its regularization to it.
    """

    damp: float = 0.0
    atol: float = 1e-6
    btol: float = 1e-6
    conlim: float = 1e8
    maxiter: int | None = None


def sym_ortho(a: Array, b: Array) -> tuple[Array, Array, Array]:
    """A Givens rotation ``(c, s, r)`` with ``[c s; -s c] [a; b] = [r; 0]``.

    The stable form of Golub and Van Loan: the ratio is taken of the smaller by the
    larger entry, and ``r`` keeps the sign that makes ``c`` and ``s`` continuous.
    """
    abs_a, abs_b = jnp.abs(a), jnp.abs(b)
    safe_a = jnp.where(a == 0, 1.0, a)
    safe_b = jnp.where(b == 0, 1.0, b)
    # |b| > |a|: tau = a / b.
    tau_b = a / safe_b
    s_b = jnp.sign(b) / jnp.sqrt(1 + tau_b * tau_b)
    c_b = s_b * tau_b
    r_b = b / jnp.where(s_b == 0, 1.0, s_b)
    # |a| >= |b|: tau = b / a.
    tau_a = b / safe_a
    c_a = jnp.sign(a) / jnp.sqrt(1 + tau_a * tau_a)
    s_a = c_a * tau_a
    r_a = a / jnp.where(c_a == 0, 1.0, c_a)
    b_larger = abs_b > abs_a
    c = jnp.where(b_larger, c_b, c_a)
    s = jnp.where(b_larger, s_b, s_a)
    r = jnp.where(b_larger, r_b, r_a)
    # Exact zeros: the rotation is the identity or a swap.
    c = jnp.where(b == 0, jnp.sign(a), jnp.where(a == 0, 0.0, c))
    s = jnp.where(b == 0, 0.0, jnp.where(a == 0, jnp.sign(b), s))
    r = jnp.where(b == 0, abs_a, jnp.where(a == 0, abs_b, r))
    return c, s, r


class _State(NamedTuple):
    itn: Array
    istop: Array
    u: Array
    v: Array
    x: Array
    h: Array
    hbar: Array
    alpha: Array
    alphabar: Array
    rho: Array
    rhobar: Array
    cbar: Array
    sbar: Array
    zetabar: Array
    zeta: Array
    betadd: Array
    betad: Array
    rhodold: Array
    tautildeold: Array
    thetatilde: Array
    d: Array
    normA2: Array
    maxrbar: Array
    minrbar: Array


def _norm(v: Array) -> Array:
    return jnp.sqrt(jnp.dot(v, v))


def lsmr(
    matvec: MatVec, rmatvec: MatVec, b: Array, n: int, damp: Array, options: LsmrOptions
) -> Array:
    """Least-squares solution of ``A x = b`` (damped by ``options.damp``).

    Parameters
    ----------
    matvec, rmatvec : callable
        ``v -> A v`` (shape (m,)) and ``u -> A^T u`` (shape (n,)).
    b : Array, shape (m,)
        Right-hand side.
    n : int
        Number of unknowns.
    damp : Array
        Damping factor (may be traced).
    options : LsmrOptions
        Tolerances and iteration limit (static; its ``damp`` is not used here).

    Returns
    -------
    x : Array, shape (n,)
    """
    m = b.shape[0]
    dtype = b.dtype
    maxiter = min(m, n) if options.maxiter is None else int(options.maxiter)
    damp = jnp.asarray(damp, dtype)
    atol, btol = options.atol, options.btol
    ctol = 1 / options.conlim if options.conlim > 0 else 0.0
    one = jnp.ones((), dtype)
    zero = jnp.zeros((), dtype)

    normb = _norm(b)
    beta = normb
    u = jnp.where(beta > 0, b / jnp.where(beta > 0, beta, 1.0), b)
    v = jnp.where(beta > 0, rmatvec(u), jnp.zeros(n, dtype))
    alpha = _norm(v)
    v = jnp.where(alpha > 0, v / jnp.where(alpha > 0, alpha, 1.0), v)

    state = _State(
        itn=jnp.asarray(0),
        # Nothing to do when A^T b = 0 or b = 0: x = 0 is the solution.
        istop=jnp.where((alpha * beta == 0) | (normb == 0) | (maxiter <= 0), 0, -1),
        u=u,
        v=v,
        x=jnp.zeros(n, dtype),
        h=v,
        hbar=jnp.zeros(n, dtype),
        alpha=alpha,
        alphabar=alpha,
        rho=one,
        rhobar=one,
        cbar=one,
        sbar=zero,
        zetabar=alpha * beta,
        zeta=zero,
        betadd=beta,
        betad=zero,
        rhodold=one,
        tautildeold=zero,
        thetatilde=zero,
        d=zero,
        normA2=alpha * alpha,
        maxrbar=zero,
        minrbar=jnp.asarray(1e100, dtype),
    )

    def cond(s: _State) -> Array:
        return s.istop < 0

    def body(s: _State) -> _State:
        itn = s.itn + 1
        # Bidiagonalization: the next u and v.
        u = matvec(s.v) - s.alpha * s.u
        beta = _norm(u)
        positive = beta > 0
        u = jnp.where(positive, u / jnp.where(positive, beta, 1.0), u)
        v_next = rmatvec(u) - beta * s.v
        alpha_next = _norm(v_next)
        v_next = jnp.where(
            alpha_next > 0, v_next / jnp.where(alpha_next > 0, alpha_next, 1.0), v_next
        )
        v = jnp.where(positive, v_next, s.v)
        alpha = jnp.where(positive, alpha_next, s.alpha)

        # Rotation that eliminates the damping term.
        chat, shat, alphahat = sym_ortho(s.alphabar, damp)
        # Rotation P_k that turns the lower bidiagonal into upper.
        c, sn, rho = sym_ortho(alphahat, beta)
        thetanew = sn * alpha
        alphabar = c * alpha
        # Rotation Pbar_k.
        rhobarold = s.rhobar
        zetaold = s.zeta
        thetabar = s.sbar * rho
        rhotemp = s.cbar * rho
        cbar, sbar, rhobar = sym_ortho(s.cbar * rho, thetanew)
        zeta = cbar * s.zetabar
        zetabar = -sbar * s.zetabar
        # Update h, hbar and x.
        hbar = s.h - (thetabar * rho / (s.rho * rhobarold)) * s.hbar
        x = s.x + (zeta / (rho * rhobar)) * hbar
        h = v - (thetanew / rho) * s.h

        # Estimate of ||r||.
        betaacute = chat * s.betadd
        betacheck = -shat * s.betadd
        betahat = c * betaacute
        betadd = -sn * betaacute
        thetatildeold = s.thetatilde
        ctildeold, stildeold, rhotildeold = sym_ortho(s.rhodold, thetabar)
        thetatilde = stildeold * rhobar
        rhodold = ctildeold * rhobar
        betad = -stildeold * s.betad + ctildeold * betahat
        tautildeold = (zetaold - thetatildeold * s.tautildeold) / rhotildeold
        taud = (zeta - thetatilde * tautildeold) / rhodold
        d = s.d + betacheck * betacheck
        normr = jnp.sqrt(d + (betad - taud) ** 2 + betadd * betadd)

        # Estimates of ||A|| and cond(A).
        normA2 = s.normA2 + beta * beta
        normA = jnp.sqrt(normA2)
        normA2 = normA2 + alpha * alpha
        maxrbar = jnp.maximum(s.maxrbar, rhobarold)
        minrbar = jnp.where(itn > 1, jnp.minimum(s.minrbar, rhobarold), s.minrbar)
        condA = jnp.maximum(maxrbar, rhotemp) / jnp.minimum(minrbar, rhotemp)

        # Stopping tests, the later ones taking precedence.
        normar = jnp.abs(zetabar)
        normx = _norm(x)
        test1 = normr / normb
        normA_normr = normA * normr
        test2 = jnp.where(
            normA_normr != 0, normar / jnp.where(normA_normr != 0, normA_normr, 1.0), jnp.inf
        )
        test3 = 1 / condA
        t1 = test1 / (1 + normA * normx / normb)
        rtol = btol + atol * normA * normx / normb
        istop = jnp.where(itn >= maxiter, 7, -1)
        istop = jnp.where(1 + test3 <= 1, 6, istop)
        istop = jnp.where(1 + test2 <= 1, 5, istop)
        istop = jnp.where(1 + t1 <= 1, 4, istop)
        istop = jnp.where(test3 <= ctol, 3, istop)
        istop = jnp.where(test2 <= atol, 2, istop)
        istop = jnp.where(test1 <= rtol, 1, istop)
        return _State(
            itn=itn,
            istop=istop,
            u=u,
            v=v,
            x=x,
            h=h,
            hbar=hbar,
            alpha=alpha,
            alphabar=alphabar,
            rho=rho,
            rhobar=rhobar,
            cbar=cbar,
            sbar=sbar,
            zetabar=zetabar,
            zeta=zeta,
            betadd=betadd,
            betad=betad,
            rhodold=rhodold,
            tautildeold=tautildeold,
            thetatilde=thetatilde,
            d=d,
            normA2=normA2,
            maxrbar=maxrbar,
            minrbar=minrbar,
        )

    return lax.while_loop(cond, body, state).x
