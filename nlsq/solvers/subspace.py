"""The trust-region subproblem on a 2-D subspace (``tr_solver='lsmr'``).

With ``tr_solver='lsmr'`` TRF does not factor the Jacobian: it solves the scaled
least-squares problem approximately by LSMR, and minimises the quadratic model over
the plane spanned by the scaled gradient and that LSMR step (Byrd, Schnabel and
Shultz). The 2-D problem ``min 0.5 p^T B p + g^T p, ||p|| <= Delta`` is solved
exactly here: the unconstrained minimiser when ``B`` is positive definite and it lies
inside the region, else the global minimiser on the circle ``||p|| = Delta``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import Array, lax

from nlsq.solvers.lsmr import LsmrOptions, lsmr
from nlsq.solvers.trust_region import build_quadratic_1d, minimize_quadratic_1d

#: Iterations of the safeguarded Newton search for the multiplier on the circle; each
#: at least halves the bracket, and Newton converges quadratically once close.
_MULTIPLIER_ITERATIONS = 64


class Subspace(NamedTuple):
    """The 2-D model of one outer iteration: ``p_h = basis @ p_S``."""

    basis: Array  # (n, 2), orthonormal columns
    B: Array  # (2, 2) model matrix S^T (J_h^T J_h + diag) S
    g: Array  # (2,) S^T g_h


def _eigen_2x2(B: Array) -> tuple[Array, Array]:
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric 2 x 2 matrix."""
    a, b, c = B[0, 0], B[0, 1], B[1, 1]
    mean = 0.5 * (a + c)
    radius = jnp.hypot(0.5 * (a - c), b)
    low, high = mean - radius, mean + radius
    # The eigenvector of `low` from the row with the larger entries, which is the
    # better conditioned of the two equivalent choices.
    use_first = jnp.abs(a - low) + jnp.abs(b) >= jnp.abs(c - low) + jnp.abs(b)
    vx = jnp.where(use_first, -b, c - low)
    vy = jnp.where(use_first, a - low, -b)
    norm = jnp.hypot(vx, vy)
    degenerate = norm == 0
    vx = jnp.where(degenerate, 1.0, vx / jnp.where(degenerate, 1.0, norm))
    vy = jnp.where(degenerate, 0.0, vy / jnp.where(degenerate, 1.0, norm))
    Q = jnp.stack([jnp.stack([vx, -vy]), jnp.stack([vy, vx])])
    return jnp.stack([low, high]), Q


def _on_circle(B: Array, g: Array, Delta: Array) -> Array:
    """Global minimiser of ``0.5 p^T B p + g^T p`` subject to ``||p|| = Delta``.

    It is ``p = -(B + lam I)^{-1} g`` with ``lam >= -lambda_min(B)`` chosen so that
    ``||p|| = Delta``; ``||p(lam)||`` decreases in ``lam`` there, so the root is
    bracketed and found by Newton's method on ``1/||p|| - 1/Delta`` with bisection as
    the safeguard. When ``g`` has no component along the lowest eigenvector and
    ``||p(-lambda_min)|| < Delta`` (the hard case), that eigenvector completes the step.
    """
    w, Q = _eigen_2x2(B)
    gt = Q.T @ g
    g_norm = jnp.linalg.norm(g)
    lo = -w[0]
    hi = g_norm / Delta - w[0]

    def p_of(lam: Array) -> Array:
        shifted = w + lam
        return -gt / jnp.where(shifted == 0, jnp.finfo(w.dtype).tiny, shifted)

    def body(_: int, bracket: tuple[Array, Array, Array]) -> tuple[Array, Array, Array]:
        lo, hi, lam = bracket
        p = p_of(lam)
        p_norm = jnp.linalg.norm(p)
        phi = 1 / p_norm - 1 / Delta
        # d||p||/dlam = -sum(p_i^2 / (w_i + lam)) / ||p||.
        dnorm = -jnp.sum(p**2 / (w + lam)) / p_norm
        dphi = -dnorm / p_norm**2
        lo = jnp.where(phi < 0, lam, lo)
        hi = jnp.where(phi >= 0, lam, hi)
        newton = lam - phi / dphi
        inside = (newton > lo) & (newton < hi) & jnp.isfinite(newton)
        return lo, hi, jnp.where(inside, newton, 0.5 * (lo + hi))

    lo, hi, lam = lax.fori_loop(0, _MULTIPLIER_ITERATIONS, body, (lo, hi, 0.5 * (lo + hi)))
    p = p_of(lam)
    # Hard case: along the lowest eigenvector the step is free to reach the circle.
    gap = w[1] - w[0]
    p_hard_second = -gt[1] / jnp.where(gap == 0, 1.0, gap)
    p_hard_second = jnp.where(gap == 0, 0.0, p_hard_second)
    first = jnp.sqrt(jnp.maximum(Delta**2 - p_hard_second**2, 0.0))
    hard = (jnp.abs(gt[0]) <= jnp.finfo(w.dtype).eps * g_norm) & (jnp.abs(p_hard_second) < Delta)
    p = jnp.where(hard, jnp.stack([first, p_hard_second]), p)
    # On the circle exactly, whatever rounding the multiplier carries.
    p_norm = jnp.linalg.norm(p)
    return Q @ (p * (Delta / jnp.where(p_norm == 0, 1.0, p_norm)))


def solve_trust_region_2d(B: Array, g: Array, Delta: Array) -> Array:
    """Minimise ``0.5 p^T B p + g^T p`` subject to ``||p|| <= Delta`` in two dimensions.

    The Newton step ``-B^{-1} g`` is taken when ``B`` is positive definite (its
    Cholesky factor exists) and the step lies in the region; otherwise the minimiser
    on the boundary.
    """
    det = B[0, 0] * B[1, 1] - B[0, 1] ** 2
    positive_definite = (B[0, 0] > 0) & (det > 0)
    safe_det = jnp.where(positive_definite, det, 1.0)
    newton = -jnp.stack([B[1, 1] * g[0] - B[0, 1] * g[1], B[0, 0] * g[1] - B[0, 1] * g[0]])
    newton = newton / safe_det
    inside = positive_definite & (jnp.dot(newton, newton) <= Delta**2)
    return jnp.where(inside, newton, _on_circle(B, g, Delta))


def lsmr_subspace(
    J_h: Any,
    f: Array,
    g_h: Array,
    diag_h: Array | None,
    Delta: Array,
    options: LsmrOptions,
    regularize: bool,
) -> Subspace:
    """The 2-D model of one TRF iteration with ``tr_solver='lsmr'``.

    LSMR solves ``min ||J_h p + f||`` (with rows ``diag(sqrt(diag_h + reg))`` under
    ``J_h`` for a bounded problem, or the damping ``sqrt(damp**2 + reg)`` otherwise);
    ``reg`` is scipy's regularization, ``-q_min / Delta**2`` with ``q_min`` the model's
    minimum along the anti-gradient inside the region, which keeps the LSMR step
    within reach of the trust region. The subspace is spanned by ``g_h`` and that
    step, orthonormalised.

    Parameters
    ----------
    J_h : Array or SparseJacobian
        Scaled Jacobian (anything with ``J_h @ v`` and ``J_h.T @ u``).
    f : Array, shape (m,)
        Residuals.
    g_h : Array, shape (n,)
        Scaled gradient.
    diag_h : Array or None
        Coleman-Li diagonal of a bounded problem; None for an unbounded one.
    Delta : Array
        Trust-region radius.
    options : LsmrOptions
        LSMR's options (static).
    regularize : bool
        Add scipy's regularization term (static).
    """
    n = g_h.shape[0]
    dtype = f.dtype
    reg = jnp.zeros((), dtype)
    if regularize:
        a, b, _ = build_quadratic_1d(J_h, g_h, -g_h, diag=diag_h)
        to_tr = Delta / jnp.linalg.norm(g_h)
        _, ag_value = minimize_quadratic_1d(a, b, 0.0, to_tr)
        reg = -ag_value / Delta**2
    if diag_h is None:
        damp = jnp.sqrt(options.damp**2 + reg)
        gn_h = lsmr(lambda v: J_h @ v, lambda u: J_h.T @ u, f, n, damp, options)
    else:
        root = jnp.sqrt(diag_h + reg)
        m = f.shape[0]

        def matvec(v: Array) -> Array:
            return jnp.concatenate([J_h @ v, root * v])

        def rmatvec(u: Array) -> Array:
            return J_h.T @ u[:m] + root * u[m:]

        b = jnp.concatenate([f, jnp.zeros(n, dtype)])
        gn_h = lsmr(matvec, rmatvec, b, n, jnp.asarray(options.damp, dtype), options)
    S, _ = jnp.linalg.qr(jnp.stack([g_h, gn_h], axis=1))
    JS = jnp.stack([J_h @ S[:, 0], J_h @ S[:, 1]], axis=1)
    B = JS.T @ JS
    if diag_h is not None:
        B = B + (S.T * diag_h) @ S
    return Subspace(S, B, S.T @ g_h)
