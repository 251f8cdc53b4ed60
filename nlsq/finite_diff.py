"""Finite-difference Jacobians that reproduce scipy's, step for step, in JAX.

:func:`finite_difference_jacobian` is scipy's dense ``approx_derivative`` for
``jac='2-point' | '3-point' | 'cs'`` (what ``least_squares`` uses, with ``diff_step``
as ``rel_step``); :func:`minpack_forward_jacobian` is MINPACK's ``fdjac2`` (what
``leastsq`` and ``curve_fit(method='lm')`` use when no Jacobian is given). Both take
the same steps and difference formulas as scipy, so the same model gives the same
Jacobian to rounding of the model's own evaluations.

Everything is traceable: ``x``, ``f0``, the bounds, ``rel_step`` and ``epsfcn`` may be
traced under :func:`jax.jit` or batched under :func:`jax.vmap`; only shapes and dtypes
are static. The ``n`` (or ``2 n``) perturbed points are evaluated in one
``jax.vmap(fun)`` call: a ``jax.numpy`` model becomes one batched computation, and a
host model behind :func:`jax.pure_callback` needs ``vmap_method='sequential'`` (or a
batch-aware method), which calls it once per point.

Float64 is the reference precision (``least_squares`` always works in float64). With
float32 inputs the steps follow scipy's float32 rules, but scipy measures the
effective step in float64 where this module stays in float32.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array
from jax.typing import ArrayLike, DTypeLike

SCHEMES = ("2-point", "3-point", "cs")

# Power of machine epsilon in the default relative step: error-optimal for a
# first-order (forward, complex-step) or second-order (central) formula.
_EPS_EXPONENT = {"2-point": 0.5, "3-point": 1 / 3, "cs": 0.5}


def check_scheme(scheme: str) -> None:
    """Raise unless ``scheme`` is one of :data:`SCHEMES`.

    Raises
    ------
    ValueError
        If ``scheme`` is not '2-point', '3-point' or 'cs'.
    """
    if scheme not in SCHEMES:
        raise ValueError(
            f"Unknown finite-difference scheme {scheme!r}; "
            f"expected one of {', '.join(repr(s) for s in SCHEMES)}."
        )


def default_relative_step(
    scheme: str, x_dtype: DTypeLike = np.float64, f_dtype: DTypeLike | None = None
) -> float:
    """scipy's default relative step for ``scheme`` and the dtypes of ``x`` and ``f``.

    ``EPS**(1/2)`` for '2-point' and 'cs', ``EPS**(1/3)`` for '3-point', where EPS is the
    machine epsilon of ``x_dtype`` (float64 if it is not floating), or of ``f_dtype``
    when that is a narrower floating type.

    Parameters
    ----------
    scheme : {'2-point', '3-point', 'cs'}
        Finite-difference scheme.
    x_dtype : dtype, optional
        Dtype of the parameters.
    f_dtype : dtype, optional
        Dtype of the residuals; None ignores it.

    Returns
    -------
    float
        The relative step, rounded in the precision scipy computes it in.

    Raises
    ------
    ValueError
        If ``scheme`` is unknown.
    """
    check_scheme(scheme)
    x_dtype = np.dtype(x_dtype)
    eps = np.finfo(np.float64).eps
    if np.issubdtype(x_dtype, np.inexact):
        eps = np.finfo(x_dtype).eps
        if f_dtype is not None:
            f_dtype = np.dtype(f_dtype)
            if np.issubdtype(f_dtype, np.inexact) and f_dtype.itemsize < x_dtype.itemsize:
                eps = np.finfo(f_dtype).eps
    # NumPy scalar power, so a float32 epsilon gives scipy's float32-rounded step.
    return float(eps ** _EPS_EXPONENT[scheme])


def _rounded(product: Array) -> Array:
    """``product``, rounded to its dtype before it takes part in an addition.

    XLA's code generator may contract ``a * b + c`` into one fused multiply-add, which
    rounds once where NumPy rounds twice: the perturbed point then differs from scipy's
    by an ulp. A select that the compiler cannot fold keeps the product separate.
    """
    return jnp.where(jnp.isnan(product), jnp.nan, product)


def _divide_rows(numerator: Array, denominator: Array) -> Array:
    """Row ``j`` of ``numerator`` (k, m) divided by ``denominator[j]``, by true division.

    XLA rewrites division by a broadcast vector into multiplication by its reciprocal,
    which rounds twice. A divisor that is not a plain broadcast keeps the division (a
    NaN numerator gives NaN either way).
    """
    divisor = jnp.where(jnp.isnan(numerator), jnp.nan, denominator[:, None])
    return numerator / divisor


def _sign(x: Array) -> Array:
    """+1 for ``x >= 0`` (zero included, unlike ``jnp.sign``), else -1."""
    return jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)


def absolute_step(x: Array, rel_step: ArrayLike | None, default_rel_step: float) -> Array:
    """scipy's absolute step ``h`` (``_compute_absolute_step``).

    Without ``rel_step``: ``h = default_rel_step * sign(x) * max(1, |x|)``. With it:
    ``h = rel_step * sign(x) * |x|``, except where that step is lost when added to ``x``
    (``x == 0``, ``rel_step == 0`` or too small), which fall back to the default rule.
    ``sign(0)`` is +1.

    Parameters
    ----------
    x : Array, shape (n,)
        Point of differentiation.
    rel_step : array_like or None
        Relative step, scalar or shape (n,) (``diff_step`` of ``least_squares``).
    default_rel_step : float
        See :func:`default_relative_step`.

    Returns
    -------
    Array, shape (n,)
        Signed step; negative ``x`` steps backward.
    """
    sign = _sign(x)
    default = _rounded(default_rel_step * sign * jnp.maximum(1.0, jnp.abs(x)))
    if rel_step is None:
        return default
    requested = _rounded(jnp.asarray(rel_step, x.dtype) * sign * jnp.abs(x))
    lost = (x + requested) - x == 0
    return jnp.where(lost, default, requested)


def _unbounded(lb: Array, ub: Array) -> Array:
    """Whether no variable has a finite bound (scipy then skips all adjustment)."""
    return jnp.all((lb == -jnp.inf) & (ub == jnp.inf))


def adjust_forward_step(x: Array, h: Array, lb: Array, ub: Array) -> Array:
    """One-sided step ``h`` kept inside ``[lb, ub]`` (scipy's '1-sided' adjustment).

    A step that leaves the bounds is flipped if the full step fits on the other side;
    if it fits on neither side, it becomes the distance to the farther bound.

    Parameters
    ----------
    x, h, lb, ub : Array, shape (n,)
        Point, desired signed step and bounds (``±inf`` for none).

    Returns
    -------
    Array, shape (n,)
        Adjusted signed step.
    """
    lower_dist = x - lb
    upper_dist = ub - x
    violated = ((x + h) < lb) | ((x + h) > ub)
    fitting = jnp.abs(h) <= jnp.maximum(lower_dist, upper_dist)
    adjusted = jnp.where(violated & fitting, -h, h)
    forward = (upper_dist >= lower_dist) & ~fitting
    backward = (upper_dist < lower_dist) & ~fitting
    adjusted = jnp.where(forward, upper_dist, adjusted)
    adjusted = jnp.where(backward, -lower_dist, adjusted)
    return jnp.where(_unbounded(lb, ub), h, adjusted)


def adjust_central_step(x: Array, h: Array, lb: Array, ub: Array) -> tuple[Array, Array]:
    """Step and scheme for '3-point' differences inside ``[lb, ub]`` (scipy's '2-sided').

    The central scheme is kept where ``x ± |h|`` fits. Elsewhere a one-sided 3-point
    scheme (points ``x + h``, ``x + 2 h``) toward the farther bound is used, its step
    shrunk so that ``2 |h|`` fits; if that shrinks it below the distance to the nearer
    bound, a central scheme with that distance as step is used instead.

    Parameters
    ----------
    x, h, lb, ub : Array, shape (n,)
        Point, desired step (its sign is ignored) and bounds (``±inf`` for none).

    Returns
    -------
    h : Array, shape (n,)
        Adjusted step: positive for central and forward, negative for backward.
    one_sided : Array of bool, shape (n,)
        Where the one-sided scheme is used.
    """
    h = jnp.abs(h)
    lower_dist = x - lb
    upper_dist = ub - x
    central = (lower_dist >= h) & (upper_dist >= h)
    forward = (upper_dist >= lower_dist) & ~central
    backward = (upper_dist < lower_dist) & ~central
    adjusted = jnp.where(forward, jnp.minimum(h, 0.5 * upper_dist), h)
    adjusted = jnp.where(backward, -jnp.minimum(h, 0.5 * lower_dist), adjusted)
    one_sided = forward | backward
    min_dist = jnp.minimum(upper_dist, lower_dist)
    shrunk_central = ~central & (jnp.abs(adjusted) <= min_dist)
    adjusted = jnp.where(shrunk_central, min_dist, adjusted)
    one_sided = one_sided & ~shrunk_central
    unbounded = _unbounded(lb, ub)
    return jnp.where(unbounded, h, adjusted), one_sided & ~unbounded


def _perturbed(x: Array, delta: Array) -> Array:
    """Rows ``x`` with coordinate ``j`` of row ``j`` replaced by ``x[j] + delta[j]``."""
    eye = jnp.eye(x.shape[0], dtype=bool)
    return jnp.where(eye, x + delta, x)


def _evaluate(fun: Callable[[Array], Array], points: Array) -> Array:
    """``fun`` at each row of ``points``: shape (rows, m), one batched call."""
    return jax.vmap(lambda point: jnp.atleast_1d(fun(point)))(points)


def _two_point(fun: Callable[[Array], Array], x: Array, f0: Array, h: Array) -> Array:
    """Forward/backward differences, divided by the step ``x`` actually moved."""
    f = _evaluate(fun, _perturbed(x, h))
    dx = (x + h) - x
    return _divide_rows(f - f0, dx)


def _three_point(
    fun: Callable[[Array], Array], x: Array, f0: Array, h: Array, one_sided: Array
) -> Array:
    """Central differences, or second-order one-sided ones where ``one_sided``."""
    n = x.shape[0]
    first = _perturbed(x, jnp.where(one_sided, h, -h))
    second = _perturbed(x, jnp.where(one_sided, 2 * h, h))
    f = _evaluate(fun, jnp.concatenate([first, second]))
    f1, f2 = f[:n], f[n:]
    side = one_sided[:, None]
    df = jnp.where(side, (_rounded(-3.0 * f0) + 4 * f1) - f2, f2 - f1)
    dx = jnp.where(one_sided, (x + 2 * h) - x, (x + h) - (x - h))
    return _divide_rows(df, dx)


def _complex_step(fun: Callable[[Array], Array], x: Array, h: Array) -> Array:
    """Complex-step derivatives ``Im f(x + i h e_j) / h``."""
    n = x.shape[0]
    imaginary = jnp.where(jnp.eye(n, dtype=bool), h, jnp.zeros_like(h))
    points = jax.lax.complex(jnp.broadcast_to(x, (n, n)), imaginary)
    return _divide_rows(jnp.imag(_evaluate(fun, points)), h)


def _as_float(x: ArrayLike) -> Array:
    """``x`` as a 1-D floating array (default float dtype for integers)."""
    x = jnp.atleast_1d(jnp.asarray(x))
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _bound(value: ArrayLike | None, fill: float, x: Array) -> Array:
    """A bound broadcast to ``x``'s shape and dtype; None means ``fill`` (±inf)."""
    value = fill if value is None else value
    return jnp.broadcast_to(jnp.asarray(value, x.dtype), x.shape)


def finite_difference_jacobian(
    fun: Callable[[Array], Array],
    x: ArrayLike,
    f0: ArrayLike | None = None,
    scheme: str = "2-point",
    rel_step: ArrayLike | None = None,
    lb: ArrayLike | None = None,
    ub: ArrayLike | None = None,
) -> Array:
    """Jacobian of ``fun`` at ``x`` by scipy's finite differences (``approx_derivative``).

    Same default relative steps, absolute steps, bound handling and difference
    formulas as scipy's dense ``approx_derivative(fun, x, method=scheme,
    rel_step=rel_step, f0=f0, bounds=(lb, ub))``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> f`` with ``x`` of shape (n,) and ``f`` of shape (m,); traced by
        ``jax.vmap``. For ``scheme='cs'`` it is called with complex ``x`` and must be
        analytic in it (no ``abs``, ``jnp.real``, comparisons on ``x`` ...), returning
        complex values.
    x : array_like, shape (n,)
        Point of differentiation, inside the bounds (not checked: it may be traced).
    f0 : array_like, shape (m,), optional
        ``fun(x)``, if already known; computed otherwise. Its dtype enters the default
        step as in scipy. Unused by central and complex-step differences.
    scheme : {'2-point', '3-point', 'cs'}, optional
        Forward (backward for negative ``x`` or at an upper bound), central (one-sided
        of second order near a bound) or complex-step differences.
    rel_step : array_like, optional
        Relative step, scalar or shape (n,): ``least_squares``' ``diff_step``. None
        gives scipy's default, see :func:`default_relative_step`.
    lb, ub : array_like, optional
        Bounds, scalar or shape (n,); None or ``∓inf`` for none. Steps are kept inside
        them ('cs' ignores them: its points have real part ``x``).

    Returns
    -------
    Array, shape (m, n)
        The Jacobian (also 2-D for ``m = 1``, where scipy returns shape (n,)).

    Raises
    ------
    ValueError
        If ``scheme`` is unknown.

    Notes
    -----
    ``fun`` is evaluated at ``n`` points ('2-point', 'cs') or ``2 n`` points ('3-point')
    in a single ``jax.vmap`` call, as scipy does when ``f0`` is given. A host function
    behind ``jax.pure_callback`` must use ``vmap_method='sequential'`` (or one that
    accepts a batch). Under :func:`jax.jit`, ``fun`` and ``scheme`` are static, and so
    is whether ``rel_step`` is None.
    """
    check_scheme(scheme)
    x = _as_float(x)
    f0 = jnp.atleast_1d(fun(x) if f0 is None else jnp.asarray(f0))
    h = absolute_step(x, rel_step, default_relative_step(scheme, x.dtype, f0.dtype))
    if scheme == "cs":
        return _complex_step(fun, x, h).T
    lb = _bound(lb, -jnp.inf, x)
    ub = _bound(ub, jnp.inf, x)
    if scheme == "2-point":
        rows = _two_point(fun, x, f0, adjust_forward_step(x, h, lb, ub))
    else:
        rows = _three_point(fun, x, f0, *adjust_central_step(x, h, lb, ub))
    return rows.T


def minpack_step(x: Array, epsfcn: ArrayLike) -> Array:
    """MINPACK's forward step ``h_j = sqrt(max(epsfcn, EPS)) * |x_j|`` (``fdjac2``).

    Where that is zero (``x_j == 0``) the step is ``sqrt(max(epsfcn, EPS))`` itself.

    Parameters
    ----------
    x : Array, shape (n,)
        Floating point of differentiation; EPS is the machine epsilon of its dtype.
    epsfcn : float or scalar Array
        Relative error of the function values; values below EPS count as EPS.

    Returns
    -------
    Array, shape (n,)
        Positive steps.
    """
    step = jnp.sqrt(jnp.maximum(jnp.asarray(epsfcn, x.dtype), np.finfo(x.dtype).eps))
    h = _rounded(step * jnp.abs(x))
    return jnp.where(h == 0, step, h)


def minpack_forward_jacobian(
    fun: Callable[[Array], Array],
    x: ArrayLike,
    f0: ArrayLike | None = None,
    epsfcn: ArrayLike | None = None,
) -> Array:
    """Jacobian of ``fun`` at ``x`` by MINPACK's forward differences (``fdjac2``).

    Column ``j`` is ``(fun(x + h_j e_j) - f0) / h_j`` with
    ``h_j = sqrt(max(epsfcn, EPS)) * |x_j|``, or ``sqrt(max(epsfcn, EPS))`` where that
    is zero; EPS is the machine epsilon of ``x``. Always a forward step, divided by
    ``h_j`` itself (not by the step ``x`` actually moved, unlike scipy's '2-point').
    This is the Jacobian of ``scipy.optimize.leastsq`` and ``curve_fit(method='lm')``
    without ``Dfun``/``jac``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> f``, shapes (n,) -> (m,); traced by ``jax.vmap``.
    x : array_like, shape (n,)
        Point of differentiation.
    f0 : array_like, shape (m,), optional
        ``fun(x)``, if already known; computed otherwise.
    epsfcn : float or scalar Array, optional
        Relative error of the function values. None gives ``leastsq``'s default, the
        machine epsilon of ``f0``'s dtype.

    Returns
    -------
    Array, shape (m, n)
        The Jacobian.
    """
    x = _as_float(x)
    f0 = jnp.atleast_1d(fun(x) if f0 is None else jnp.asarray(f0))
    if epsfcn is None:
        # leastsq's default: the epsilon of the residuals' dtype (float64 if not floating).
        f_dtype = f0.dtype if jnp.issubdtype(f0.dtype, jnp.floating) else np.float64
        epsfcn = float(np.finfo(f_dtype).eps)
    h = minpack_step(x, epsfcn)
    f = _evaluate(fun, _perturbed(x, h))
    return _divide_rows(f - f0, h).T


def difference_steps(
    x: Array,
    f0: Array,
    scheme: str,
    rel_step: ArrayLike | None,
    lb: ArrayLike | None,
    ub: ArrayLike | None,
) -> Array | tuple[Array, Array]:
    """The signed absolute steps of :func:`finite_difference_jacobian`, inside the bounds.

    For grouped (sparse) differences, which perturb several variables at once with
    these same steps. '3-point' returns ``(h, one_sided)``; '2-point' and 'cs' the
    steps ``h`` ('cs' ignores the bounds).
    """
    check_scheme(scheme)
    h = absolute_step(x, rel_step, default_relative_step(scheme, x.dtype, f0.dtype))
    if scheme == "cs":
        return h
    lb = _bound(lb, -jnp.inf, x)
    ub = _bound(ub, jnp.inf, x)
    if scheme == "2-point":
        return adjust_forward_step(x, h, lb, ub)
    return adjust_central_step(x, h, lb, ub)
