"""Parameter covariance from the Jacobian at the solution (scipy's rule)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array


def unscaled_covariance(J: Array, n_residuals: Array | int) -> Array:
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

    Returns
    -------
    Array, shape (n, n)
    """
    m, n = J.shape
    eps = jnp.finfo(J.dtype).eps
    factor = jnp.linalg.qr(J, mode="r") if m > n else J
    _, s, VT = jnp.linalg.svd(factor, full_matrices=False)
    threshold = eps * jnp.maximum(n_residuals, n) * s[0]
    kept = s > threshold
    weights = jnp.where(kept, 1 / jnp.where(kept, s, 1.0) ** 2, 0.0)
    return (VT.T * weights) @ VT
