"""Small dense factorisations written with element-wise ``jax.numpy`` operations.

Under ``jax.vmap``, ``jnp.linalg.qr`` and ``jnp.linalg.svd`` become one LAPACK call per
batch member on CPU, which dominates a batch of many tiny fits. These versions use only
element-wise arithmetic and reductions over the (static, small) matrix dimensions, so
that a vmapped batch runs each step once for all its members, vectorised across them.
They are meant for a few columns (tens at most): the QR is unrolled over the columns
and the SVD runs cyclic Jacobi sweeps over all column pairs.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array, lax

#: Jacobi sweeps at most; cyclic Jacobi converges quadratically, in well under ten
#: sweeps for the sizes this module is meant for.
MAX_SWEEPS = 30


def householder_r(A: Array) -> Array:
    """The ``R`` factor of ``A = Q R`` (``k x k``) by Householder reflections.

    The columns are kept as separate vectors, so that every step is an element-wise
    update and a reduction over the rows, with no slicing or scattering of a matrix.

    Parameters
    ----------
    A : Array, shape (m, k)
        With ``m >= k``.

    Returns
    -------
    Array, shape (k, k)
        Upper triangular; it may differ from LAPACK's by the signs of its rows.
    """
    m, k = A.shape
    columns = [A[:, j] for j in range(k)]
    rows = jnp.arange(m)
    for j in range(k):
        x = jnp.where(rows >= j, columns[j], 0.0)
        alpha = jnp.sqrt(jnp.sum(x * x))
        sign = jnp.where(columns[j][j] >= 0, 1.0, -1.0).astype(A.dtype)
        v = x + jnp.where(rows == j, sign * alpha, 0.0)
        vv = jnp.sum(v * v)
        beta = jnp.where(vv > 0, 2 / jnp.where(vv > 0, vv, 1.0), 0.0)
        # Columns left of j are already reduced (zero below the diagonal): left alone.
        for c in range(j, k):
            columns[c] = columns[c] - (beta * jnp.sum(columns[c] * v)) * v
    return jnp.triu(jnp.stack([c[:k] for c in columns], axis=1))


def _jacobi_sweep(W: list, V: list, tol: Array) -> tuple[list, list, Array]:
    """One cyclic sweep of one-sided (Hestenes) Jacobi rotations over column pairs.

    ``W`` and ``V`` are lists of columns. Returns them rotated and the largest cosine
    between two columns of ``W`` met in the sweep (before rotating them).
    """
    n = len(W)
    worst = jnp.zeros((), W[0].dtype)
    for p in range(n - 1):
        for q in range(p + 1, n):
            wp, wq = W[p], W[q]
            alpha = jnp.sum(wp * wp)
            beta = jnp.sum(wq * wq)
            gamma = jnp.sum(wp * wq)
            scale = jnp.sqrt(alpha * beta)
            cosine = jnp.where(scale > 0, jnp.abs(gamma) / jnp.where(scale > 0, scale, 1.0), 0.0)
            worst = jnp.maximum(worst, cosine)
            rotate = cosine > tol
            safe_gamma = jnp.where(rotate, gamma, 1.0)
            zeta = (beta - alpha) / (2 * safe_gamma)
            t = jnp.where(zeta >= 0, 1.0, -1.0) / (jnp.abs(zeta) + jnp.hypot(1.0, zeta))
            t = jnp.where(rotate, t, 0.0)
            c = 1 / jnp.sqrt(1 + t * t)
            s = c * t
            W[p], W[q] = c * wp - s * wq, s * wp + c * wq
            V[p], V[q] = c * V[p] - s * V[q], s * V[p] + c * V[q]
    return W, V, worst


def jacobi_svd(R: Array) -> tuple[Array, Array, Array]:
    """Singular value decomposition ``R = U diag(s) V^T`` of a small square matrix.

    One-sided Jacobi: rotations ``V`` orthogonalise the columns of ``R V = U diag(s)``
    until every pair's cosine is below ``n * eps``; the singular values are then the
    column norms, to high relative accuracy.

    Parameters
    ----------
    R : Array, shape (n, n)

    Returns
    -------
    U : Array, shape (n, n)
        Left singular vectors as columns; zero where ``s`` is zero.
    s : Array, shape (n,)
        Singular values in decreasing order.
    V : Array, shape (n, n)
        Right singular vectors as columns.
    """
    n = R.shape[1]
    tol = n * jnp.finfo(R.dtype).eps

    def cond(carry: tuple) -> Array:
        _, _, worst, sweeps = carry
        return (worst > tol) & (sweeps < MAX_SWEEPS)

    def body(carry: tuple) -> tuple:
        W, V, _, sweeps = carry
        W, V, worst = _jacobi_sweep(list(W), list(V), tol)
        return tuple(W), tuple(V), worst, sweeps + 1

    eye = jnp.eye(n, dtype=R.dtype)
    columns = tuple(R[:, j] for j in range(n)), tuple(eye[:, j] for j in range(n))
    start = (*columns, jnp.asarray(jnp.inf, R.dtype), jnp.asarray(0))
    W, V, _, _ = lax.while_loop(cond, body, start) if n > 1 else start
    W, V = jnp.stack(W, axis=1), jnp.stack(V, axis=1)
    s = jnp.sqrt(jnp.sum(W * W, axis=0))
    order = jnp.argsort(-s)
    s, W, V = s[order], W[:, order], V[:, order]
    U = jnp.where(s > 0, W / jnp.where(s > 0, s, 1.0), 0.0)
    return U, s, V
