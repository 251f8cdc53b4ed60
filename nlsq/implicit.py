"""Derivatives of a bound-constrained minimiser by the implicit function theorem.

At a solution ``x*(theta)`` of ``min_x cost(x, theta)`` subject to ``lb <= x <= ub``,
the free coordinates satisfy the optimality condition ``g(x*, theta) = 0`` with
``g = grad_x cost``, and the coordinates at an active bound equal that bound. Differentiating
both gives the tangent of the solution without differentiating the solver's iterations::

    dx_a = dlb_a or dub_a                                   (active coordinates)
    H_ff dx_f = -(d_theta g_f . dtheta + H_fa dx_a)         (free coordinates)

with ``H = d_x g`` the Hessian of the cost. For a least-squares cost
``0.5 * sum(r**2)`` it is the Gauss-Newton matrix ``J^T J`` plus the second-order
term ``sum(r_i * hess(r_i))``, which vanishes for a linear model (then
``dx = -(J^T J)^-1 J^T dr``) and for zero residuals; keeping it makes the derivative
exact (equal to that of re-solving at perturbed data) for any residuals. A robust
loss enters through ``cost`` itself, so its weighting is consistent with the solver.

The rule is a ``jax.custom_jvp``: forward mode uses it directly and reverse mode
transposes its tangent, which is linear (one ``jvp`` of ``g`` and a product with a
pseudo-inverse of ``H_ff`` computed from primal values only).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

#: ``solve(x0, lb, ub, theta) -> (x, active, aux)``: the solution, the active bounds
#: (-1 lower, +1 upper, 0 free; any dtype) and non-differentiated outputs.
Solve = Callable[[Array, Array, Array, Any], tuple[Array, Array, Any]]
#: ``gradient(x, theta) -> g``: the gradient of the cost with respect to ``x``.
Gradient = Callable[[Array, Any], Array]


def symmetric_pinv(H: Array) -> Array:
    """Pseudo-inverse of a symmetric matrix, dropping eigenvalues at rounding level.

    Eigenvalues with ``|w| <= eps * n * max|w|`` are discarded, so a singular system
    (parameters the data do not determine) gives a zero derivative along its null
    space instead of an overflow.
    """
    n = H.shape[0]
    w, V = jnp.linalg.eigh(H)
    threshold = jnp.finfo(H.dtype).eps * n * jnp.max(jnp.abs(w))
    kept = jnp.abs(w) > threshold
    inverse = jnp.where(kept, 1 / jnp.where(kept, w, 1.0), 0.0)
    return (V * inverse) @ V.T


def implicit_tangent(
    gradient: Gradient,
    x: Array,
    active: Array,
    theta: Any,
    dlb: Array,
    dub: Array,
    dtheta: Any,
) -> Array:
    """The tangent ``dx`` of the solution (see the module docstring).

    Parameters
    ----------
    gradient : callable
        ``gradient(x, theta)``.
    x : Array, shape (n,)
        The solution.
    active : Array, shape (n,)
        -1 where the lower bound is active, +1 the upper, 0 free.
    theta : pytree
        The data the solution depends on.
    dlb, dub : Array, shape (n,)
        Tangents of the bounds.
    dtheta : pytree
        Tangent of ``theta``.

    Returns
    -------
    Array, shape (n,)
    """
    free = active == 0
    dx_active = jnp.where(active < 0, dlb, jnp.where(active > 0, dub, 0.0)).astype(x.dtype)
    # One jvp gives d_theta g . dtheta + H[:, a] dx_a for every row.
    _, rhs = jax.jvp(gradient, (x, theta), (dx_active, dtheta))
    H = jax.jacfwd(gradient)(x, theta)
    both_free = free[:, None] & free[None, :]
    H_ff = jnp.where(both_free, H, jnp.eye(x.shape[0], dtype=H.dtype))
    dx_free = -(symmetric_pinv(H_ff) @ jnp.where(free, rhs, 0.0))
    return jnp.where(free, dx_free, dx_active)


def _zero_tangent(value: Any) -> Any:
    value = jnp.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.inexact):
        return jnp.zeros_like(value)
    return np.zeros(value.shape, dtype=jax.dtypes.float0)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _minimize(solve: Solve, gradient: Gradient, x0: Array, lb: Array, ub: Array, theta: Any):
    return solve(x0, lb, ub, theta)


@_minimize.defjvp
def _minimize_jvp(solve: Solve, gradient: Gradient, primals: tuple, tangents: tuple):
    x0, lb, ub, theta = primals
    _, dlb, dub, dtheta = tangents
    # Through _minimize again, so that higher derivatives are implicit too.
    x, active, aux = _minimize(solve, gradient, x0, lb, ub, theta)
    dx = implicit_tangent(gradient, x, active, theta, dlb, dub, dtheta)
    zeros = jax.tree.map(_zero_tangent, (active, aux))
    return (x, active, aux), (dx, *zeros)


def implicit_minimize(
    solve: Solve, gradient: Gradient, x0: Array, lb: Array, ub: Array, theta: Any
) -> tuple[Array, Array, Any]:
    """``solve(x0, lb, ub, theta)``, differentiable in ``lb``, ``ub`` and ``theta``
    by the implicit function theorem at its solution.

    ``x`` does not depend on ``x0`` at a solution (its derivative is zero); the
    active set and ``aux`` have zero derivatives. ``solve`` and ``gradient`` must take
    every array that should carry a derivative through ``theta`` (or the bounds),
    not through a closure.

    Parameters
    ----------
    solve : callable
        ``solve(x0, lb, ub, theta) -> (x, active, aux)``.
    gradient : callable
        ``gradient(x, theta)``, the gradient of the minimised cost in ``x``.
    x0, lb, ub : Array, shape (n,)
        Starting point and bounds.
    theta : pytree of arrays
        Everything else the solution depends on.

    Returns
    -------
    x : Array, shape (n,)
    active : Array, shape (n,)
    aux : pytree
    """
    return _minimize(solve, gradient, x0, lb, ub, theta)
