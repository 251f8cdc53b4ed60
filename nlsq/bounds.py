"""Box-constraint helpers shared by the solvers.

Each function is a pure ``jax.numpy`` transcription of the corresponding helper in
scipy's ``_lsq/common.py`` (same formulas, same tie-breaking), written so that it
traces under ``jit`` and ``vmap``: boolean-indexed writes become ``jnp.where``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import Array


def prepare_bounds(bounds: tuple, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Broadcast scalar bounds to ``n`` parameters (eager, NumPy).

    Parameters
    ----------
    bounds : tuple of array_like
        ``(lb, ub)``, each a scalar or an array of length ``n``.
    n : int
        Number of parameters.

    Returns
    -------
    lb, ub : ndarray
        Float64 arrays; scalars are repeated ``n`` times, arrays are returned as given.
    """
    lb, ub = (np.asarray(b, dtype=float) for b in bounds)
    if lb.ndim == 0:
        lb = np.full(n, lb)
    if ub.ndim == 0:
        ub = np.full(n, ub)
    return lb, ub


def in_bounds(x: Array, lb: Array, ub: Array) -> Array:
    """Whether every component of ``x`` lies in the closed box ``[lb, ub]``."""
    return jnp.all((x >= lb) & (x <= ub))


def step_size_to_bound(x: Array, s: Array, lb: Array, ub: Array) -> tuple[Array, Array]:
    """Largest ``t >= 0`` such that ``x + t * s`` stays inside ``[lb, ub]``.

    Parameters
    ----------
    x : Array
        Current point, inside the box.
    s : Array
        Search direction.
    lb, ub : Array
        Bounds.

    Returns
    -------
    min_step : Array
        The step to the first bound met (``inf`` if no bound is met).
    hits : Array
        ``sign(s_i)`` for the components that reach a bound at ``min_step``, else 0.
    """
    nonzero = s != 0
    safe_s = jnp.where(nonzero, s, 1.0)
    steps = jnp.where(nonzero, jnp.maximum((lb - x) / safe_s, (ub - x) / safe_s), jnp.inf)
    min_step = jnp.min(steps)
    hits = jnp.where(steps == min_step, jnp.sign(s), 0.0).astype(jnp.int32)
    return min_step, hits


def find_active_constraints(x: Array, lb: Array, ub: Array, rtol: Array | float) -> Array:
    """Mark the bounds that are active at ``x``.

    Returns an integer array: ``-1`` where the lower bound is active, ``1`` where the
    upper bound is active, ``0`` elsewhere. With ``rtol == 0`` a bound is active only
    when reached exactly; otherwise within ``rtol * max(1, |bound|)`` of it, and only
    when it is the nearer bound (the upper bound wins a tie).
    """
    exact = jnp.where(x <= lb, -1, 0)
    exact = jnp.where(x >= ub, 1, exact)

    lower_dist = x - lb
    upper_dist = ub - x
    lower_threshold = rtol * jnp.maximum(1.0, jnp.abs(lb))
    upper_threshold = rtol * jnp.maximum(1.0, jnp.abs(ub))
    lower_active = jnp.isfinite(lb) & (lower_dist <= jnp.minimum(upper_dist, lower_threshold))
    upper_active = jnp.isfinite(ub) & (upper_dist <= jnp.minimum(lower_dist, upper_threshold))
    relative = jnp.where(lower_active, -1, 0)
    relative = jnp.where(upper_active, 1, relative)

    return jnp.where(rtol == 0, exact, relative).astype(jnp.int32)


def _next_normal_toward(bound: Array, target: Array) -> Array:
    """``nextafter(bound, target)``, but never a subnormal number.

    Compiled CPU code flushes subnormals to zero, so a point moved from a bound of 0
    to ``5e-324`` would still sit on the bound; the smallest normal number does not.
    """
    step = jnp.nextafter(bound, target)
    tiny = jnp.finfo(step.dtype).tiny
    return jnp.where(bound == 0, jnp.sign(target - bound) * tiny, step)


def make_strictly_feasible(x: Array, lb: Array, ub: Array, rstep: float) -> Array:
    """Shift the components of ``x`` that sit on (or beyond) a bound into the interior.

    With ``rstep == 0`` an active component moves to the next representable number
    inside the box (the smallest normal number when the bound is 0); otherwise by
    ``rstep * max(1, |bound|)``. A component that would still be outside the box (a
    very tight box) goes to the box's midpoint.
    """
    lb, ub = jnp.asarray(lb), jnp.asarray(ub)
    active = find_active_constraints(x, lb, ub, rstep)
    if rstep == 0:
        to_lower = _next_normal_toward(lb, ub)
        to_upper = _next_normal_toward(ub, lb)
    else:
        to_lower = lb + rstep * jnp.maximum(1.0, jnp.abs(lb))
        to_upper = ub - rstep * jnp.maximum(1.0, jnp.abs(ub))
    x_new = jnp.where(active == -1, to_lower, x)
    x_new = jnp.where(active == 1, to_upper, x_new)
    tight = (x_new < lb) | (x_new > ub)
    return jnp.where(tight, 0.5 * (lb + ub), x_new)


def cl_scaling_vector(x: Array, g: Array, lb: Array, ub: Array) -> tuple[Array, Array]:
    """Coleman-Li scaling vector ``v`` and its derivative ``dv``.

    ``v_i`` is the distance to the bound the negative gradient points at (1 if that
    bound is infinite); ``dv_i`` is ``d v_i / d x_i`` (``-1``, ``0`` or ``1``).
    """
    toward_upper = (g < 0) & jnp.isfinite(ub)
    toward_lower = (g > 0) & jnp.isfinite(lb)
    v = jnp.where(toward_upper, ub - x, jnp.ones_like(x))
    dv = jnp.where(toward_upper, -1.0, jnp.zeros_like(x))
    v = jnp.where(toward_lower, x - lb, v)
    dv = jnp.where(toward_lower, 1.0, dv)
    return v, dv
