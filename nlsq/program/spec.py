"""What a compiled program is made of: its static specs (the cache key) and dynamic inputs.

Everything that changes the traced program goes into a spec and so into the cache key;
everything else (data, starting point, bounds, tolerances, scales, evaluation budget)
is an argument of the jitted program, so new values never trigger a compile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nlsq.loss import LossFunction
from nlsq.solvers.lsmr import LsmrOptions


@dataclass(frozen=True)
class SolverSpec:
    """Static configuration of a compiled program (part of the cache key)."""

    method: str
    bounded: bool
    loss: str | LossFunction
    jac_scale: bool
    jacobian_mode: str
    verbose: int
    with_covariance: bool
    dtype: str
    #: A user callback runs after each iteration; ``data`` is then ``(data, token)``
    #: with the token of :func:`nlsq.api.callback.callback_fit`.
    callback: bool = False
    #: Function evaluations one Jacobian costs (counted in nfev by MINPACK's lmdif).
    jac_nfev: int = 0
    #: Finite differences instead of ``jacobian``/autodiff: '2-point', '3-point',
    #: 'cs' (scipy's schemes, relative step ``diff_step``) or 'minpack' (MINPACK's
    #: forward difference, ``diff_step`` is ``epsfcn``).
    jac_scheme: str | None = None
    diff_step: float | tuple[float, ...] | None = None
    #: 'lm' with covariance: also return MINPACK's ``(fjac, ipvt, qtf)`` with it
    #: (``curve_fit(method='lm', full_output=True)``).
    lm_factors: bool = False
    #: 'trf' factorises with :mod:`nlsq.small_linalg` instead of LAPACK (vectorised
    #: across a vmapped batch of fits with few parameters).
    small_linalg: bool = False
    #: Trust-region subproblem solver of 'trf' and 'dogbox': 'exact' or 'lsmr', with
    #: LSMR's options and scipy's ``regularize``.
    tr_solver: str = "exact"
    lsmr_options: LsmrOptions | None = None
    regularize: bool = True
    #: A sparse Jacobian: ``(m, n, n_groups)`` of its pattern, whose index arrays
    #: ``(rows, cols, groups)`` then come with the data as ``(data, pattern)``.
    #: Without a ``jacobian`` it is formed from one derivative per column group.
    sparsity: tuple[int, int, int] | None = None
    #: ``jacobian`` returns the pattern's nonzero values (a sparse host Jacobian).
    jacobian_values: bool = False


#: Counts are capped here: float64 holds every integer below it exactly, and no fit
#: evaluates that often.
_COUNT_CAP = 2.0**53


def pack_controls(xp: Any, x0, lb, ub, ftol, xtol, gtol, max_nfev, x_scale, f_scale, n_residuals):
    """A program's inputs in one vector: ``x0, lb, ub, x_scale``, then ``ftol, xtol,
    gtol, f_scale, max_nfev, n_residuals`` (0 for None), float64 where 64-bit mode is on.

    Each argument of a compiled call is a separate transfer, which costs more than the
    solve itself for a small fit. ``xp`` is NumPy (on the host) or ``jax.numpy``
    (traced, for :func:`nlsq.fit`); :func:`unpack_controls` reads it in the program.
    """
    real = xp.result_type(float)
    missing = 0 if n_residuals is None else n_residuals
    scalars = xp.asarray([ftol, xtol, gtol, f_scale, max_nfev, missing], dtype=real)
    counts = xp.minimum(scalars[4:], _COUNT_CAP)
    vectors = [xp.asarray(v, dtype=real).reshape(-1) for v in (x0, lb, ub, x_scale)]
    return xp.concatenate([*vectors, scalars[:4], counts])


def unpack_controls(controls: jax.Array, dtype: np.dtype, padded: bool) -> tuple:
    """The program's inputs from :func:`pack_controls`, traced.

    Returns ``(x0, lb, ub, ftol, xtol, gtol, max_nfev, x_scale, f_scale, n_residuals)``
    in the working ``dtype`` (the counts int64; ``n_residuals`` None unless ``padded``):
    the same values as :meth:`SolverInputs.controls` gives on the host, since a cast
    rounds alike on either side.
    """
    n = (controls.shape[0] - 6) // 4
    x0, lb, ub, x_scale = (controls[i * n : (i + 1) * n].astype(dtype) for i in range(4))
    ftol, xtol, gtol, f_scale = (controls[4 * n + i].astype(dtype) for i in range(4))
    max_nfev = controls[4 * n + 4].astype(jnp.int64)
    n_residuals = controls[4 * n + 5].astype(jnp.int64) if padded else None
    return x0, lb, ub, ftol, xtol, gtol, max_nfev, x_scale, f_scale, n_residuals


@dataclass(frozen=True)
class SolverInputs:
    """Dynamic inputs of a compiled program (never part of the cache key)."""

    x0: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    ftol: float
    xtol: float
    gtol: float
    max_nfev: int
    x_scale: np.ndarray
    f_scale: float

    def packed(self, n_residuals: int | None) -> np.ndarray:
        """Every input in one float64 vector (see :func:`pack_controls`)."""
        return pack_controls(
            np,
            self.x0,
            self.lb,
            self.ub,
            self.ftol,
            self.xtol,
            self.gtol,
            self.max_nfev,
            self.x_scale,
            self.f_scale,
            n_residuals,
        )

    def controls(self, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """``(ftol, xtol, gtol, max_nfev, x_scale, f_scale)`` as the program takes them:
        arrays in the working ``dtype`` (``max_nfev`` int64)."""
        return (
            np.asarray(self.ftol, dtype),
            np.asarray(self.xtol, dtype),
            np.asarray(self.gtol, dtype),
            np.asarray(self.max_nfev, np.int64),
            self.x_scale.astype(dtype),
            np.asarray(self.f_scale, dtype),
        )


@dataclass(frozen=True)
class Layout:
    """``n_blocks`` blocks of ``n_chunks`` chunks of ``chunk_size`` points."""

    n_blocks: int
    n_chunks: int
    chunk_size: int


@dataclass(frozen=True)
class LargeSpec:
    """Static configuration of a chunked program (part of its cache key)."""

    bounded: bool
    loss: str | LossFunction
    jac_scale: bool
    dtype: str
    streamed: bool
    has_sigma: bool
    lead: tuple
    layout: Layout


@dataclass(frozen=True)
class BatchLayout:
    """Which program inputs carry a batch axis (part of the cache key)."""

    x_per_fit: bool
    sigma_per_fit: bool
    bounds_per_fit: bool
    padded: bool

    def in_axes(self) -> tuple:
        data_axes = (0 if self.x_per_fit else None, 0, 0 if self.sigma_per_fit else None)
        bounds = 0 if self.bounds_per_fit else None
        residuals = 0 if self.padded else None
        return (0, bounds, bounds, data_axes, None, None, None, None, None, None, residuals)
