"""Step selection of the trust-region-reflective algorithm for bounded problems."""

from __future__ import annotations

import jax.numpy as jnp
from jax import Array, lax

from nlsq.bounds import in_bounds, step_size_to_bound
from nlsq.solvers.trust_region import (
    Gram,
    build_quadratic_1d,
    evaluate_quadratic,
    intersect_trust_region,
    minimize_quadratic_1d,
)


def _reflective_candidates(
    x: Array,
    J_h: Array | Gram,
    diag_h: Array | None,
    g_h: Array,
    p: Array,
    p_h: Array,
    d: Array,
    Delta: Array,
    lb: Array,
    ub: Array,
    theta: Array,
) -> tuple[Array, Array, Array]:
    """Best of the shortened, reflected and Cauchy steps when ``x + p`` leaves the box."""
    p_stride, hits = step_size_to_bound(x, p, lb, ub)

    # Reflected direction: flip the components that hit a bound.
    r_h = jnp.where(hits != 0, -p_h, p_h)
    r = d * r_h

    # The trust-region step shortened to the first bound met.
    p = p * p_stride
    p_h = p_h * p_stride
    x_on_bound = x + p

    _, to_tr = intersect_trust_region(p_h, r_h, Delta)
    to_bound, _ = step_size_to_bound(x_on_bound, r, lb, ub)
    r_stride = jnp.minimum(to_bound, to_tr)
    positive = r_stride > 0
    safe_r_stride = jnp.where(positive, r_stride, 1.0)
    r_stride_l = jnp.where(positive, (1 - theta) * p_stride / safe_r_stride, 0.0)
    r_stride_u = jnp.where(positive, jnp.where(r_stride == to_bound, theta * to_bound, to_tr), -1.0)
    a, b, c = build_quadratic_1d(J_h, g_h, r_h, diag=diag_h, s0=p_h)
    t, r_value = minimize_quadratic_1d(a, b, r_stride_l, r_stride_u, c=c)
    r_h = p_h + t * r_h
    r = d * r_h
    r_value = jnp.where(r_stride_l <= r_stride_u, r_value, jnp.inf)

    # Step back from the bound so the iterate stays strictly feasible.
    p = p * theta
    p_h = p_h * theta
    p_value = evaluate_quadratic(J_h, g_h, p_h, diag=diag_h)

    # Cauchy step: along the scaled anti-gradient, inside the region and the box.
    ag_h = -g_h
    ag = d * ag_h
    to_tr = Delta / jnp.linalg.norm(ag_h)
    to_bound, _ = step_size_to_bound(x, ag, lb, ub)
    ag_stride_u = jnp.where(to_bound < to_tr, theta * to_bound, to_tr)
    a, b, _ = build_quadratic_1d(J_h, g_h, ag_h, diag=diag_h)
    ag_stride, ag_value = minimize_quadratic_1d(a, b, 0.0, ag_stride_u)
    ag_h = ag_h * ag_stride
    ag = ag * ag_stride

    # Ties go to the Cauchy step, as in scipy.
    choose_p = (p_value < r_value) & (p_value < ag_value)
    choose_r = (r_value < p_value) & (r_value < ag_value)
    step = jnp.where(choose_p, p, jnp.where(choose_r, r, ag))
    step_h = jnp.where(choose_p, p_h, jnp.where(choose_r, r_h, ag_h))
    value = jnp.where(choose_p, p_value, jnp.where(choose_r, r_value, ag_value))
    return step, step_h, -value


def select_step(
    x: Array,
    J_h: Array | Gram,
    diag_h: Array | None,
    g_h: Array,
    p: Array,
    p_h: Array,
    d: Array,
    Delta: Array,
    lb: Array,
    ub: Array,
    theta: Array,
) -> tuple[Array, Array, Array]:
    """Choose the step of a bounded TRF iteration.

    Parameters
    ----------
    x : Array
        Current point (strictly feasible).
    J_h, diag_h, g_h : Array
        Scaled Jacobian, diagonal of the Coleman-Li term and scaled gradient. The
        model only uses ``J_h`` through ``J_h^T J_h``, so any matrix with the same
        Gram matrix will do (TRF passes the ``n x n`` factor ``S V^T`` of the
        augmented matrix ``[J_h; diag(sqrt(diag_h))]`` with ``diag_h`` None), or a
        :class:`~nlsq.solvers.trust_region.Gram`.
    p, p_h : Array
        Trust-region step in the original and the scaled variables.
    d : Array
        Scaling, ``p = d * p_h``.
    Delta : Array
        Trust-region radius.
    lb, ub : Array
        Bounds.
    theta : Array
        Fraction of the distance to a bound a step may cover.

    Returns
    -------
    step, step_h : Array
        Chosen step in original and scaled variables.
    predicted_reduction : Array
        Decrease of the quadratic model along the chosen step.
    """
    return lax.cond(
        in_bounds(x + p, lb, ub),
        lambda: (p, p_h, -evaluate_quadratic(J_h, g_h, p_h, diag=diag_h)),
        lambda: _reflective_candidates(x, J_h, diag_h, g_h, p, p_h, d, Delta, lb, ub, theta),
    )
