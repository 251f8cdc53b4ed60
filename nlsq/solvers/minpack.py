"""MINPACK's building blocks for Levenberg-Marquardt, ported to JAX.

Ports of MINPACK's ``enorm`` (overflow-safe Euclidean norm), ``qrfac`` (Householder
QR with column pivoting), ``qrsolv`` (the damped least-squares solve by Givens
rotations) and ``lmpar`` (the Levenberg-Marquardt parameter), following the C
translation that scipy calls from ``least_squares(method='lm')``, with the triangular
solves and products they share. :mod:`nlsq.solvers.lm` assembles them into ``lmder``.

The arithmetic is MINPACK's operation for operation: sums of products run in MINPACK's
order over selected (not dot-producted) terms, :func:`rounded` keeps XLA from fusing a
product and a sum into one multiply-add, and :func:`divided` keeps it from rewriting
divisions. On CPU, ``qrfac``, ``qrsolv`` and ``lmpar`` then give scipy's results bit for
bit on small problems. What remains is XLA's summation order for long vectors (about 25
terms and more) and :func:`enorm`'s scaling outside the range where squares are safe, so
in general results agree with scipy to rounding. One quirk of scipy's C ``qrfac`` is
reproduced on purpose, because it changes the pivoting of rank-deficient Jacobians (see
:func:`_recomputed_norms`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import Array, lax

# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def rounded(product: Array) -> Array:
    """``product``, rounded on its own before it is added to anything.

    XLA contracts ``a * b + c`` into a fused multiply-add (one rounding); MINPACK rounds
    the product first. The select, which the compiler cannot drop, keeps the two apart
    (it only turns a product of -0.0 into +0.0).
    """
    return jnp.where(product == 0, 0.0, product)


def divided(x: Array, d: Array | float) -> Array:
    """``x / d`` (``d`` a scalar), rounded as MINPACK rounds it.

    XLA rewrites divisions by a broadcast scalar or by a constant into multiplications
    by the reciprocal, and merges chained divisions into one, each a different rounding.
    The barriers hide the denominator and the quotient from those rewrites.
    """
    denominator = jnp.broadcast_to(jnp.asarray(d, x.dtype), jnp.shape(x))
    return lax.optimization_barrier(x / lax.optimization_barrier(denominator))


def enorm(x: Array, where: Array | None = None) -> Array:
    """Overflow-safe Euclidean norm along the first axis, with MINPACK's NaN and inf rules.

    MINPACK's ``enorm`` sums the squares of small, intermediate and large components
    separately, scaling the outer two. In the range where no square over- or underflows
    that is the plain ``sqrt(sum(x**2))`` computed here; outside it the components are
    scaled by the largest one (same value up to rounding). As in MINPACK, a NaN
    component or two infinite ones give NaN and a single infinite one gives inf (which
    decides how ``lmder`` shrinks the step bound after an overflowing trial).

    Parameters
    ----------
    x : Array, shape (k,) or (k, c)
        Vector, or matrix whose columns are measured.
    where : Array of bool, optional
        Components to include, broadcast against ``x``; the others count as zeros.

    Returns
    -------
    Array
        The norm, of shape ``x.shape[1:]``.
    """
    a = jnp.abs(x)
    if where is not None:
        a = jnp.where(where, a, 0.0)
    info = jnp.finfo(a.dtype)
    # Below safe_min the squares lose precision to underflow; above safe_max their sum
    # may overflow.
    safe_min = float(np.sqrt(info.tiny / info.eps))
    safe_max = float(np.sqrt(info.max / x.shape[0]))
    amax = jnp.max(a, axis=0)
    extreme = jnp.isfinite(amax) & (amax > 0) & ((amax < safe_min) | (amax > safe_max))
    scale = jnp.where(extreme, amax, 1.0)
    squares = rounded((a / scale) ** 2)
    norm = scale * jnp.sqrt(jnp.sum(squares, axis=0))
    return jnp.where(jnp.sum(jnp.isinf(a), axis=0) >= 2, jnp.nan, norm)


def _first_index(mask: Array) -> Array:
    """Index of the first True entry of a vector, or its length if there is none."""
    return jnp.where(jnp.any(mask), jnp.argmax(mask), mask.shape[0])


def _unpivot(z: Array, ipvt: Array) -> Array:
    """``x`` with ``x[ipvt[j]] = z[j]``: undo the column pivoting."""
    return jnp.zeros_like(z).at[ipvt].set(z)


def _upper(n: int) -> Array:
    """Mask of the upper triangle (diagonal included) of an n x n matrix."""
    return jnp.arange(n)[:, None] <= jnp.arange(n)[None, :]


# Products are summed element by element, in MINPACK's order, rather than by a dot
# product (which XLA evaluates in its own order, with fused multiply-adds).


def triu_matvec(R: Array, v: Array) -> Array:
    """``triu(R) @ v``."""
    return jnp.sum(jnp.where(_upper(R.shape[0]), rounded(R * v[None, :]), 0.0), axis=1)


def triu_rmatvec(R: Array, w: Array) -> Array:
    """``triu(R).T @ w``."""
    return jnp.sum(jnp.where(_upper(R.shape[0]), rounded(R * w[:, None]), 0.0), axis=0)


# --------------------------------------------------------------------------------------
# qrfac: Householder QR with column pivoting
# --------------------------------------------------------------------------------------


class QRFactors(NamedTuple):
    """What ``lmder`` keeps of the QR factorisation ``J P = Q R``."""

    R: Array  # (n, n) upper triangle (below it: zeros)
    ipvt: Array  # column j of J P is column ipvt[j] of J
    acnorm: Array  # column norms of J, in J's order
    qtf: Array  # first n components of Q^T f
    #: (m, n) MINPACK's ``fjac`` on return: R on and above the diagonal, the
    #: Householder vectors that make up Q strictly below it.
    fjac: Array


def _pivot_column(rdiag: Array, j: Array) -> Array:
    """MINPACK's pivot: the first column ``k >= j`` of largest remaining norm.

    The search keeps ``j`` unless a norm is strictly larger, so a NaN norm is never
    chosen (and a NaN at ``j`` is never replaced).
    """
    k = jnp.arange(rdiag.shape[0])
    candidates = jnp.where((k >= j) & ~jnp.isnan(rdiag), rdiag, -jnp.inf)
    return jnp.where(jnp.isnan(rdiag[j]), j, jnp.argmax(candidates))


def qrfac(J: Array, f: Array, eps: float) -> QRFactors:
    """QR factorisation with column pivoting of ``J``, and ``Q^T f``.

    A port of MINPACK's ``qrfac`` with ``pivot=True``, followed by ``lmder``'s product
    ``Q^T f``: ``f`` rides along as an extra, never pivoted, column, which applies each
    Householder reflection to it exactly as ``lmder`` does afterwards.

    Parameters
    ----------
    J : Array, shape (m, n)
        Jacobian, ``m >= n``.
    f : Array, shape (m,)
        Residuals.
    eps : float
        Machine epsilon (when a downdated column norm has lost its accuracy, it is
        recomputed).

    Returns
    -------
    QRFactors
    """
    m, n = J.shape
    rows = jnp.arange(m)
    cols = jnp.arange(n)
    acnorm = enorm(J)

    def step(j: Array, carry: tuple[Array, Array, Array, Array]):
        A, rdiag, wa, ipvt = carry
        kmax = _pivot_column(rdiag, j)
        perm = jnp.arange(n + 1).at[j].set(kmax).at[kmax].set(j)
        A = A[:, perm]
        rdiag = rdiag.at[kmax].set(rdiag[j])
        wa = wa.at[kmax].set(wa[j])
        ipvt = ipvt[perm[:n]]

        # Householder vector v (rows >= j) that maps column j to -ajnorm e_j.
        below = rows >= j
        ajnorm = enorm(A[:, j], where=below)
        ajnorm_signed = jnp.where(A[j, j] < 0, -ajnorm, ajnorm)
        v = jnp.where(below, divided(A[:, j], ajnorm_signed), 0.0).at[j].add(1.0)

        # Reflect the columns right of j (f included): a_k -= (v.a_k / v_j) v.
        proj = divided(
            jnp.sum(jnp.where(below[:, None], rounded(v[:, None] * A), 0.0), axis=0), v[j]
        )
        right = jnp.arange(n + 1) > j
        reflected = A - jnp.where(
            below[:, None] & right[None, :], rounded(proj[None, :] * v[:, None]), 0.0
        )
        reflected = reflected.at[:, j].set(jnp.where(below, v, A[:, j]))

        # Downdate the remaining column norms; recompute those that lost accuracy.
        update = (cols > j) & (rdiag != 0)
        t = reflected[j, :n] / rdiag
        downdated = rdiag * jnp.sqrt(jnp.fmax(0.0, 1.0 - rounded(t * t)))
        stale = update & (0.05 * (downdated / wa) ** 2 <= eps)
        fresh = lax.cond(
            jnp.any(stale),
            lambda: _recomputed_norms(A, reflected, j),
            lambda: downdated,
        )
        rdiag_new = jnp.where(stale, fresh, jnp.where(update, downdated, rdiag))
        wa_new = jnp.where(stale, fresh, wa)

        # A zero column is left as it is (no reflection, nothing downdated).
        nonzero = ajnorm != 0
        A = jnp.where(nonzero, reflected, A)
        rdiag = jnp.where(nonzero, rdiag_new, rdiag).at[j].set(-ajnorm_signed)
        wa = jnp.where(nonzero, wa_new, wa)
        return A, rdiag, wa, ipvt

    A = jnp.concatenate([J, f[:, None]], axis=1)
    A, rdiag, _, ipvt = lax.fori_loop(0, n, step, (A, acnorm, acnorm, cols))
    R = jnp.triu(A[:n, :n], 1) + jnp.diag(rdiag)
    # lmder overwrites the diagonal (the Householder vectors' leading entries) with R's.
    fjac = A[:, :n].at[cols, cols].set(rdiag)
    return QRFactors(R=R, ipvt=ipvt, acnorm=acnorm, qtf=A[:n, n], fjac=fjac)


def _recomputed_norms(A_before: Array, A_after: Array, j: Array) -> Array:
    """Norms of rows ``j+1:`` of each Jacobian column after step ``j``, as scipy does.

    scipy's C translation of ``qrfac`` hands ``enorm`` one element more than the rows
    ``j+1..m-1`` of column k: the next one in memory, which is row 0 of column k+1 (not
    yet reflected in this step). That element is included here so that pivoting matches
    scipy when a column norm collapses (rank-deficient Jacobians). For the last column
    the extra element lies past the end of the array; it is taken as 0.
    """
    m = A_after.shape[0]
    n = A_after.shape[1] - 1
    rows = jnp.arange(m)
    spill = jnp.concatenate([A_before[0, 1:n], jnp.zeros(1, A_before.dtype)])
    column_rows = jnp.where((rows > j)[:, None], A_after[:, :n], 0.0)
    return enorm(jnp.concatenate([column_rows, spill[None, :]]))


# --------------------------------------------------------------------------------------
# qrsolv and lmpar
# --------------------------------------------------------------------------------------


def _givens(a: Array, b: Array) -> tuple[Array, Array]:
    """MINPACK's rotation ``(cos, sin)`` that zeroes ``b`` against ``a`` (``b != 0``)."""
    use_cotangent = jnp.abs(a) < jnp.abs(b)
    cotan = a / b
    sin_c = 0.5 / jnp.sqrt(0.25 + 0.25 * cotan**2)
    tan = b / a
    cos_t = 0.5 / jnp.sqrt(0.25 + 0.25 * tan**2)
    cos = jnp.where(use_cotangent, sin_c * cotan, cos_t)
    sin = jnp.where(use_cotangent, sin_c, cos_t * tan)
    return cos, sin


def qrsolv(R: Array, ipvt: Array, d: Array, qtb: Array) -> tuple[Array, Array, Array]:
    """Least-squares solution of ``A x = b, D x = 0`` from the pivoted QR of ``A``.

    A port of MINPACK's ``qrsolv``: each row of ``D P`` is eliminated from
    ``[R; D P]`` by Givens rotations, giving the triangular ``S`` with
    ``P^T (A^T A + D D) P = S^T S``; then ``S z = Q^T b`` is solved (a least-squares
    solution when ``S`` is singular) and ``x = P z``.

    Parameters
    ----------
    R : Array, shape (n, n)
        Upper triangular factor (its lower triangle is ignored).
    ipvt : Array of int, shape (n,)
        Column pivoting of the factorisation.
    d : Array, shape (n,)
        Diagonal of ``D``, in the original column order.
    qtb : Array, shape (n,)
        First n components of ``Q^T b``.

    Returns
    -------
    x : Array, shape (n,)
    sdiag : Array, shape (n,)
        Diagonal of ``S``.
    S : Array, shape (n, n)
        ``S`` in its strict upper triangle (the rest is scratch).
    """
    n = R.shape[0]
    idx = jnp.arange(n)

    def eliminate_row(j: Array, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        S, wa = carry
        row = jnp.where(idx == j, d[ipvt[j]], 0.0)

        def rotate(k: Array, carry: tuple[Array, Array, Array, Array]):
            S, wa, row, qtbpj = carry
            active = row[k] != 0
            cos, sin = _givens(S[k, k], row[k])
            S_k = S[k]
            # Entries left of k are zero in both rows; the row's entry k is eliminated.
            new_S_k = rounded(cos * S_k) + rounded(sin * row)
            new_row = jnp.where(idx > k, rounded(-sin * S_k) + rounded(cos * row), 0.0)
            new_wa_k = rounded(cos * wa[k]) + rounded(sin * qtbpj)
            new_qtbpj = rounded(-sin * wa[k]) + rounded(cos * qtbpj)
            return (
                S.at[k].set(jnp.where(active, new_S_k, S_k)),
                wa.at[k].set(jnp.where(active, new_wa_k, wa[k])),
                jnp.where(active, new_row, row),
                jnp.where(active, new_qtbpj, qtbpj),
            )

        # Rotations k < j meet a zero element of the row: they start at k = j.
        S, wa, _, _ = lax.fori_loop(j, n, rotate, (S, wa, row, jnp.zeros((), R.dtype)))
        return S, wa

    S, wa = lax.fori_loop(0, n, eliminate_row, (jnp.triu(R), qtb))
    # Row j of S is final once row j of D P is eliminated, so its diagonal is sdiag.
    sdiag = jnp.diagonal(S)

    nsing = _first_index(sdiag == 0)
    wa = jnp.where(idx < nsing, wa, 0.0)

    def back_substitute(k: Array, z: Array) -> Array:
        j = n - 1 - k
        terms = jnp.where((idx > j) & (idx < nsing), rounded(S[j] * z), 0.0)
        z_j = (z[j] - jnp.sum(terms)) / sdiag[j]
        return jnp.where(j < nsing, z.at[j].set(z_j), z)

    z = lax.fori_loop(0, n, back_substitute, wa)
    return _unpivot(z, ipvt), sdiag, S


def _gauss_newton(R: Array, qtb: Array) -> tuple[Array, Array]:
    """``R z = Q^T b`` by column-oriented back substitution (least squares if singular).

    Returns ``z`` (pivoted order) and ``nsing``, the rank of ``R`` as MINPACK counts it:
    the index of its first zero diagonal element.
    """
    n = R.shape[0]
    idx = jnp.arange(n)
    nsing = _first_index(jnp.diagonal(R) == 0)

    def body(k: Array, z: Array) -> Array:
        j = n - 1 - k
        z_j = z[j] / R[j, j]
        updated = (z - jnp.where(idx < j, rounded(R[:, j] * z_j), 0.0)).at[j].set(z_j)
        return jnp.where(j < nsing, updated, z)

    z = lax.fori_loop(0, n, body, jnp.where(idx < nsing, qtb, 0.0))
    return z, nsing


def _solve_transposed(R: Array, b: Array) -> Array:
    """``R^T y = b`` by forward substitution (row-oriented, as in ``lmpar``)."""
    n = R.shape[0]
    idx = jnp.arange(n)

    def body(j: Array, y: Array) -> Array:
        partial = jnp.sum(jnp.where(idx < j, rounded(R[:, j] * y), 0.0))
        return y.at[j].set((y[j] - partial) / R[j, j])

    return lax.fori_loop(0, n, body, b)


def _solve_transposed_columns(S: Array, sdiag: Array, b: Array) -> Array:
    """``S^T y = b`` by column-oriented forward substitution (``lmpar``'s Newton step)."""
    n = S.shape[0]
    idx = jnp.arange(n)

    def body(j: Array, y: Array) -> Array:
        y_j = y[j] / sdiag[j]
        return (y - jnp.where(idx > j, rounded(S[j] * y_j), 0.0)).at[j].set(y_j)

    return lax.fori_loop(0, n, body, b)


class _ParState(NamedTuple):
    par: Array
    parl: Array
    paru: Array
    fp: Array
    x: Array
    S: Array
    iteration: Array
    done: Array


class LMPar(NamedTuple):
    """What :func:`lmpar` returns."""

    x: Array
    par: Array
    #: ``S`` of the last ``qrsolv`` call (strict upper triangle); MINPACK leaves its
    #: transpose in the strict lower triangle of ``R``'s storage.
    S: Array
    #: Whether ``qrsolv`` was called at all (not when the Gauss-Newton step fits).
    solved: Array


def lmpar(
    R: Array, ipvt: Array, diag: Array, qtb: Array, delta: Array, par: Array, dwarf: float
) -> LMPar:
    """MINPACK's ``lmpar``: the Levenberg-Marquardt parameter for the bound ``delta``.

    Finds ``par >= 0`` such that ``x`` solving ``A x = b, sqrt(par) D x = 0`` in the
    least-squares sense has ``||D x||`` within 10% of ``delta`` (or ``par = 0`` when the
    Gauss-Newton step is already shorter than ``1.1 delta``), by at most 10 safeguarded
    Newton iterations on ``||D x(par)|| - delta``.

    Parameters
    ----------
    R, ipvt, qtb : Array
        Pivoted QR of ``A`` and the first n components of ``Q^T b``.
    diag : Array, shape (n,)
        Diagonal of ``D``.
    delta : Array
        Step bound.
    par : Array
        Initial estimate of the parameter (the previous one).
    dwarf : float
        Smallest positive normal number of the dtype.

    Returns
    -------
    LMPar
    """
    z, nsing = _gauss_newton(R, qtb)
    x = _unpivot(z, ipvt)
    wa2 = diag * x
    dxnorm = enorm(wa2)
    fp = dxnorm - delta
    gauss_newton_ok = fp <= 0.1 * delta

    # Lower bound parl from the Newton step at par = 0 (zero if R is singular).
    n = R.shape[0]
    wa1 = _solve_transposed(R, diag[ipvt] * divided(wa2[ipvt], dxnorm))
    temp = enorm(wa1)
    parl = jnp.where(nsing == n, divided(divided(divided(fp, delta), temp), temp), 0.0)

    # Upper bound paru from the gradient.
    gnorm = enorm(triu_rmatvec(R, qtb) / diag[ipvt])
    paru = gnorm / delta
    paru = jnp.where(paru == 0, dwarf / jnp.fmin(delta, 0.1), paru)

    par = jnp.fmin(jnp.fmax(par, parl), paru)
    par = jnp.where(par == 0, gnorm / dxnorm, par)

    def cond(s: _ParState) -> Array:
        return ~s.done

    def body(s: _ParState) -> _ParState:
        iteration = s.iteration + 1
        par = jnp.where(s.par == 0, jnp.fmax(dwarf, s.paru * 0.001), s.par)
        x, sdiag, S = qrsolv(R, ipvt, jnp.sqrt(par) * diag, qtb)
        wa2 = diag * x
        dxnorm = enorm(wa2)
        fp = dxnorm - delta
        done = (
            (jnp.abs(fp) <= 0.1 * delta)
            | ((s.parl == 0) & (fp <= s.fp) & (s.fp < 0))
            | (iteration == 10)
        )
        # Newton correction.
        wa1 = _solve_transposed_columns(S, sdiag, diag[ipvt] * divided(wa2[ipvt], dxnorm))
        temp = enorm(wa1)
        parc = divided(divided(divided(fp, delta), temp), temp)
        parl = jnp.where(fp > 0, jnp.fmax(s.parl, par), s.parl)
        paru = jnp.where(fp < 0, jnp.fmin(s.paru, par), s.paru)
        next_par = jnp.fmax(parl, par + parc)
        return _ParState(
            par=jnp.where(done, par, next_par),
            parl=parl,
            paru=paru,
            fp=fp,
            x=x,
            S=S,
            iteration=iteration,
            done=done,
        )

    state = lax.while_loop(
        cond,
        body,
        _ParState(
            par=par,
            parl=parl,
            paru=paru,
            fp=fp,
            x=x,
            S=jnp.zeros_like(R),
            iteration=jnp.zeros((), jnp.int32),
            done=gauss_newton_ok,
        ),
    )
    return LMPar(
        x=state.x,
        par=jnp.where(gauss_newton_ok, 0.0, state.par),
        S=state.S,
        solved=~gauss_newton_ok,
    )
