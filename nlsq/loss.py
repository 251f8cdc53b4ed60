"""Robust loss functions ``rho(z)`` with ``z = (f / f_scale)**2``.

Each built-in loss returns an array of shape ``(3, m)``: the value and the first and
second derivatives with respect to ``z``. The formulas are scipy's.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
from jax import Array

LossFunction = Callable[[Array], Array]


def huber(z: Array) -> Array:
    """Huber loss: quadratic for ``z <= 1``, linear in ``|f|`` beyond."""
    quadratic = z <= 1
    safe_z = jnp.where(quadratic, 1.0, z)
    rho0 = jnp.where(quadratic, z, 2 * jnp.sqrt(safe_z) - 1)
    rho1 = jnp.where(quadratic, 1.0, safe_z**-0.5)
    rho2 = jnp.where(quadratic, 0.0, -0.5 * safe_z**-1.5)
    return jnp.stack([rho0, rho1, rho2])


def soft_l1(z: Array) -> Array:
    """Smooth approximation of the absolute value: ``2 * (sqrt(1 + z) - 1)``."""
    t = 1 + z
    return jnp.stack([2 * (jnp.sqrt(t) - 1), t**-0.5, -0.5 * t**-1.5])


def cauchy(z: Array) -> Array:
    """Cauchy loss: ``log(1 + z)``."""
    t = 1 + z
    return jnp.stack([jnp.log1p(z), 1 / t, -1 / t**2])


def arctan(z: Array) -> Array:
    """Arctangent loss: ``arctan(z)``, bounded by ``pi / 2``."""
    t = 1 + z**2
    return jnp.stack([jnp.arctan(z), 1 / t, -2 * z / t**2])


BUILTIN_LOSSES: dict[str, LossFunction | None] = {
    "linear": None,
    "huber": huber,
    "soft_l1": soft_l1,
    "cauchy": cauchy,
    "arctan": arctan,
}


def resolve_loss(loss: str | LossFunction) -> LossFunction | None:
    """The ``rho(z)`` function for a loss name or callable; ``None`` for 'linear'."""
    if callable(loss):
        return loss
    return BUILTIN_LOSSES[loss]


def evaluate_loss(rho_fn: LossFunction, f: Array, f_scale: Array) -> Array:
    """``rho`` at the residuals ``f``, scaled back to residual units (shape ``(3, m)``)."""
    z = (f / f_scale) ** 2
    rho = rho_fn(z)
    return jnp.stack([rho[0] * f_scale**2, rho[1], rho[2] / f_scale**2])


def loss_cost(rho_fn: LossFunction, f: Array, f_scale: Array, mask: Array | None = None) -> Array:
    """Robust cost ``0.5 * f_scale**2 * sum(rho(z))`` without the derivatives.

    ``mask`` (optional, boolean) keeps only the residuals it marks.
    """
    z = (f / f_scale) ** 2
    rho0 = rho_fn(z)[0]
    if mask is not None:
        rho0 = jnp.where(mask, rho0, 0.0)
    return 0.5 * f_scale**2 * jnp.sum(rho0)


def scale_for_robust_loss(J: Array, f: Array, rho: Array, eps: float) -> tuple[Array, Array]:
    """Rescale ``J`` and ``f`` so that Gauss-Newton on them minimises the robust cost.

    Parameters
    ----------
    J : Array, shape (m, n)
        Jacobian of the residuals.
    f : Array, shape (m,)
        Residuals.
    rho : Array, shape (3, m)
        Loss value and derivatives at ``f`` (from :func:`evaluate_loss`).
    eps : float
        Floor for the weights, which keeps them positive.

    Returns
    -------
    J_scaled, f_scaled : Array
    """
    weight = rho[1] + 2 * rho[2] * f**2
    weight = jnp.sqrt(jnp.where(weight < eps, eps, weight))
    return J * weight[:, None], rho[1] * f / weight
