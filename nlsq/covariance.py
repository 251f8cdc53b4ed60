"""Parameter covariance at the solution, by scipy's rules (curve_fit and leastsq)."""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import Array

from nlsq.small_linalg import householder_r, jacobi_svd


def unscaled_covariance(J: Array, n_residuals: Array | int, small_linalg: bool = False) -> Array:
    """Moore-Penrose inverse of ``J^T J``, dropping negligible singular values.

    Singular values at or below ``eps * max(m, n) * s_max`` are discarded, so a
    rank-deficient Jacobian gives zero variance along its null space instead of an
    overflow. For tall ``J`` the singular values and right vectors are taken from the
    ``R`` factor of a QR factorisation, which is cheaper and identical in exact
    arithmetic.

    Parameters
    ----------
    J : Array, shape (m, n)
        Jacobian of the (weighted) residuals at the solution.
    n_residuals : int or Array
        Number of real residuals (``m``, or fewer when ``J`` has padding rows of
        zeros); it sets the rank threshold.
    small_linalg : bool
        Factorise with :mod:`nlsq.small_linalg` instead of LAPACK (for ``vmap``-ed
        batches of fits with few parameters).

    Returns
    -------
    Array, shape (n, n)
    """
    m, n = J.shape
    eps = jnp.finfo(J.dtype).eps
    if small_linalg and m > n:
        _, s, V = jacobi_svd(householder_r(J))
        VT = V.T
    else:
        factor = jnp.linalg.qr(J, mode="r") if m > n else J
        _, s, VT = jnp.linalg.svd(factor, full_matrices=False)
    threshold = eps * jnp.maximum(n_residuals, n) * s[0]
    kept = s > threshold
    weights = jnp.where(kept, 1 / jnp.where(kept, s, 1.0) ** 2, 0.0)
    return (VT.T * weights) @ VT


def leastsq_covariance(fjac: Array, ipvt: Array) -> Array:
    """``cov_x`` of ``scipy.optimize.leastsq``: ``(J^T J)^-1`` from MINPACK's ``R``.

    With ``J P = Q R`` (column pivoting ``P``), ``(J^T J)^-1 = P R^-1 R^-T P^T``.
    Like scipy, which inverts ``R`` with LAPACK's ``trtri``, there is no rank
    threshold: an exactly zero diagonal element of ``R`` makes the covariance
    undefined (all NaN here, ``None`` in scipy), whereas a merely tiny one gives
    huge variances.

    Parameters
    ----------
    fjac : Array, shape (m, n)
        MINPACK's ``fjac`` (``R`` on and above the diagonal).
    ipvt : Array of int, shape (n,)
        Column pivoting, 0-based: column j of ``J P`` is column ``ipvt[j]`` of ``J``.

    Returns
    -------
    Array, shape (n, n)
    """
    n = ipvt.shape[0]
    R = jnp.triu(fjac[:n, :])
    diagonal = jnp.diagonal(R)
    singular = jnp.any(diagonal == 0)
    # A unit diagonal stands in for the zeros, whose result is discarded anyway.
    safe = R + jnp.diag(jnp.where(diagonal == 0, 1.0, 0.0).astype(R.dtype))
    inverse = jsl.solve_triangular(safe, jnp.eye(n, dtype=R.dtype), lower=False)
    # Row ipvt[j] of P R^-1 is row j of R^-1.
    inverse = jnp.zeros_like(inverse).at[ipvt].set(inverse)
    return jnp.where(singular, jnp.nan, inverse @ inverse.T)
