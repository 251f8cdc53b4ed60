"""Trust-region building blocks: the subproblem, radius update and 1-D quadratics.

Pure ``jax.numpy`` versions of scipy's ``_lsq/common.py`` helpers. Where scipy raises
or branches in Python, these return NaN-safe values and select with ``jnp.where`` so
that they trace under ``jit`` and ``vmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array, lax


class Gram(NamedTuple):
    """``J^T J`` standing in for a Jacobian ``J`` that is never formed.

    The trust-region model only needs quadratic forms ``(J u).(J v) = u^T J^T J v``,
    so the helpers below accept either the dense ``J`` or its Gram matrix: the
    chunked solver (:mod:`nlsq.solvers.gram`) accumulates ``J^T J`` over the data
    and runs the same iteration on it.
    """

    matrix: Array

    def scaled(self, d: Array) -> Gram:
        """The Gram matrix of ``J * d`` (columns scaled by ``d``)."""
        return Gram(d[:, None] * self.matrix * d)


def scale_columns(J: Array | Gram, d: Array) -> Array | Gram:
    """``J * d`` for a dense Jacobian or its :class:`Gram` form."""
    return J.scaled(d) if isinstance(J, Gram) else J * d


def _products(J: Array | Gram, u: Array, v: Array) -> tuple[Array, Array, Array]:
    """``(Ju.Ju, Ju.Jv, Jv.Jv)`` from a dense ``J`` or its :class:`Gram` form."""
    if isinstance(J, Gram):
        Gu, Gv = J.matrix @ u, J.matrix @ v
        return jnp.dot(u, Gu), jnp.dot(u, Gv), jnp.dot(v, Gv)
    Ju, Jv = J @ u, J @ v
    return jnp.dot(Ju, Ju), jnp.dot(Ju, Jv), jnp.dot(Jv, Jv)


def _square_norm(J: Array | Gram, s: Array) -> Array:
    """``||J s||**2`` from a dense ``J`` or its :class:`Gram` form."""
    if isinstance(J, Gram):
        return jnp.dot(s, J.matrix @ s)
    Js = J @ s
    return jnp.dot(Js, Js)


def _phi_and_derivative(alpha: Array, suf: Array, s: Array, Delta: Array) -> tuple[Array, Array]:
    """``phi(alpha) = ||p(alpha)|| - Delta`` and its derivative (More's secular equation)."""
    denom = s**2 + alpha
    p_norm = jnp.linalg.norm(suf / denom)
    phi = p_norm - Delta
    phi_prime = -jnp.sum(suf**2 / denom**3) / p_norm
    return phi, phi_prime


def solve_lsq_trust_region(
    n: int,
    m: int | Array,
    uf: Array,
    s: Array,
    V: Array,
    Delta: Array,
    initial_alpha: Array,
    eps: float,
    rtol: float = 0.01,
    max_iter: int = 10,
) -> tuple[Array, Array]:
    """Solve ``min ||J p + f||`` subject to ``||p|| <= Delta`` from one SVD of ``J``.

    Finds the Levenberg-Marquardt parameter ``alpha`` of More's method by Newton
    iterations on the secular equation, at most ``max_iter`` of them.

    Parameters
    ----------
    n, m : int
        Number of variables and of (real, unpadded) residuals: the rows of the
        unaugmented ``J``. ``m`` may be traced.
    uf : Array
        ``U^T f`` from the SVD ``J = U diag(s) V^T``.
    s : Array
        Singular values in decreasing order.
    V : Array
        Right singular vectors as columns.
    Delta : Array
        Trust-region radius.
    initial_alpha : Array
        Starting ``alpha`` (the value from the previous trial step).
    eps : float
        Machine epsilon of the working precision (rank test).
    rtol : float
        Stop when ``|phi| < rtol * Delta``.
    max_iter : int
        Maximum number of Newton iterations.

    Returns
    -------
    p : Array
        The step.
    alpha : Array
        The Levenberg-Marquardt parameter (0 for the Gauss-Newton step).
    """
    suf = s * uf
    full_rank = (m >= n) & (s[-1] > eps * m * s[0])

    safe_s = jnp.where(s > 0, s, 1.0)
    p_gauss_newton = -V @ (uf / safe_s)
    use_gauss_newton = full_rank & (jnp.linalg.norm(p_gauss_newton) <= Delta)

    alpha_upper = jnp.linalg.norm(suf) / Delta
    phi0, phi0_prime = _phi_and_derivative(jnp.zeros_like(Delta), suf, safe_s, Delta)
    alpha_lower = jnp.where(full_rank, -phi0 / phi0_prime, 0.0)

    def restart_value(lower: Array, upper: Array) -> Array:
        return jnp.maximum(0.001 * upper, jnp.sqrt(lower * upper))

    alpha0 = jnp.where(
        ~full_rank & (initial_alpha == 0),
        restart_value(alpha_lower, alpha_upper),
        initial_alpha,
    )

    def cond(carry: tuple) -> Array:
        it, done, *_ = carry
        return (it < max_iter) & ~done & ~use_gauss_newton

    def body(carry: tuple) -> tuple:
        it, _, alpha, lower, upper = carry
        outside = (alpha < lower) | (alpha > upper)
        alpha = jnp.where(outside, restart_value(lower, upper), alpha)
        phi, phi_prime = _phi_and_derivative(alpha, suf, s, Delta)
        upper = jnp.where(phi < 0, alpha, upper)
        ratio = phi / phi_prime
        lower = jnp.maximum(lower, alpha - ratio)
        alpha = alpha - (phi + Delta) * ratio / Delta
        # scipy updates alpha before testing convergence; keep that order.
        done = jnp.abs(phi) < rtol * Delta
        return it + 1, done, alpha, lower, upper

    init = (jnp.asarray(0), jnp.asarray(False), alpha0, alpha_lower, alpha_upper)
    _, _, alpha, _, _ = lax.while_loop(cond, body, init)

    p = -V @ (suf / (s**2 + alpha))
    p_norm = jnp.linalg.norm(p)
    p = p * jnp.where(p_norm > 0, Delta / jnp.where(p_norm > 0, p_norm, 1.0), 0.0)
    return (
        jnp.where(use_gauss_newton, p_gauss_newton, p),
        jnp.where(use_gauss_newton, 0.0, alpha),
    )


def update_tr_radius(
    Delta: Array,
    actual_reduction: Array,
    predicted_reduction: Array,
    step_norm: Array,
    bound_hit: Array,
) -> tuple[Array, Array]:
    """Update the trust-region radius from the ratio of actual to predicted reduction.

    Returns
    -------
    Delta : Array
        ``0.25 * step_norm`` if the ratio is below 0.25; doubled if it is above 0.75
        and the step reached the trust-region boundary; unchanged otherwise.
    ratio : Array
        ``actual / predicted`` (1 when both are zero, 0 when the prediction is not a
        reduction).
    """
    safe_predicted = jnp.where(predicted_reduction > 0, predicted_reduction, 1.0)
    ratio = jnp.where(
        predicted_reduction > 0,
        actual_reduction / safe_predicted,
        jnp.where((predicted_reduction == 0) & (actual_reduction == 0), 1.0, 0.0),
    )
    Delta = jnp.where(
        ratio < 0.25,
        0.25 * step_norm,
        jnp.where((ratio > 0.75) & bound_hit, 2.0 * Delta, Delta),
    )
    return Delta, ratio


def intersect_trust_region(x: Array, s: Array, Delta: Array) -> tuple[Array, Array]:
    """Both roots ``t`` of ``||x + t s|| = Delta``, smaller first.

    scipy raises when ``s == 0`` or ``x`` is outside the region. Here nothing is
    raised: ``s == 0``, or a line that misses the sphere, gives NaN roots, which
    callers reject by comparison; a point outside gives the real roots of the line.
    """
    a = jnp.dot(s, s)
    b = jnp.dot(x, s)
    c = jnp.dot(x, x) - Delta**2
    d = jnp.sqrt(b * b - a * c)
    q = -(b + jnp.copysign(d, b))
    t1 = q / a
    t2 = c / q
    return jnp.minimum(t1, t2), jnp.maximum(t1, t2)


def build_quadratic_1d(
    J: Array | Gram, g: Array, s: Array, diag: Array | None = None, s0: Array | None = None
) -> tuple[Array, Array, Array]:
    """Coefficients of ``f(t) = a t**2 + b t + c``, the model along ``s0 + t s``.

    The model is ``0.5 ||J y||**2 + g.y + 0.5 y.diag.y`` at ``y = s0 + t s``.
    ``c`` is 0 when ``s0`` is omitted. ``J`` may be a :class:`Gram`.
    """
    if s0 is None:
        a = _square_norm(J, s)
    else:
        uu, uv, a = _products(J, s0, s)
    if diag is not None:
        a = a + jnp.dot(s * diag, s)
    a = 0.5 * a
    b = jnp.dot(g, s)
    if s0 is None:
        return a, b, jnp.zeros_like(a)
    b = b + uv
    c = 0.5 * uu + jnp.dot(g, s0)
    if diag is not None:
        b = b + jnp.dot(s0 * diag, s)
        c = c + 0.5 * jnp.dot(s0 * diag, s0)
    return a, b, c


def minimize_quadratic_1d(
    a: Array, b: Array, lb: Array, ub: Array, c: Array | float = 0.0
) -> tuple[Array, Array]:
    """Minimise ``a t**2 + b t + c`` over ``lb <= t <= ub``.

    Candidates are ``[lb, ub, extremum]`` (the extremum only when ``a != 0`` and it lies
    strictly inside); the first minimiser wins ties, as in scipy.
    """
    safe_a = jnp.where(a != 0, a, 1.0)
    extremum = -0.5 * b / safe_a
    extremum_valid = (a != 0) & (lb < extremum) & (extremum < ub)
    dtype = jnp.result_type(a, b, float)
    t = jnp.stack([jnp.asarray(lb, dtype), jnp.asarray(ub, dtype), extremum.astype(dtype)])
    y = t * (a * t + b) + c
    y = y.at[2].set(jnp.where(extremum_valid, y[2], jnp.inf))
    index = jnp.argmin(y)
    return t[index], y[index]


def evaluate_quadratic(J: Array | Gram, g: Array, s: Array, diag: Array | None = None) -> Array:
    """Value of ``0.5 ||J s||**2 + 0.5 s.diag.s + g.s`` (``J`` may be a :class:`Gram`)."""
    q = _square_norm(J, s)
    if diag is not None:
        q = q + jnp.dot(s * diag, s)
    return 0.5 * q + jnp.dot(s, g)
