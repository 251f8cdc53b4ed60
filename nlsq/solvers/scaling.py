"""Variable scaling from the Jacobian (``x_scale='jac'``)."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array

from nlsq.solvers.sparse import SparseJacobian
from nlsq.solvers.trust_region import Gram


def compute_jac_scale(
    J: Array | Gram | SparseJacobian, scale_inv_old: Array | None = None
) -> tuple[Array, Array]:
    """Scale variables by the inverse column norms of the Jacobian.

    Parameters
    ----------
    J : Array, shape (m, n), or Gram
        Jacobian, or its Gram matrix (column norms from its diagonal).
    scale_inv_old : Array, shape (n,), optional
        Column norms used so far. When given the norms never decrease (scipy's rule,
        which keeps the scaling from oscillating); when absent, zero norms become 1.

    Returns
    -------
    scale, scale_inv : Array
        ``1 / norms`` and ``norms``.
    """
    if isinstance(J, Gram):
        scale_inv = jnp.sqrt(jnp.diag(J.matrix))
    elif isinstance(J, SparseJacobian):
        scale_inv = J.column_norms()
    else:
        scale_inv = jnp.sqrt(jnp.sum(J**2, axis=0))
    if scale_inv_old is None:
        scale_inv = jnp.where(scale_inv == 0, 1.0, scale_inv)
    else:
        scale_inv = jnp.maximum(scale_inv, scale_inv_old)
    return 1 / scale_inv, scale_inv
